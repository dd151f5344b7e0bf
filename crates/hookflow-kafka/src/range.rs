//! Reading a time range of the events topic again, for a replay: on each partition, from
//! the first message at or after `since` up to the first message at or after `until` (or
//! the partition's end when the reader opened), by message timestamp.
//!
//! Where a partition's range starts is found with `offsets_for_times`; the messages'
//! own timestamps then decide, so the range is the same on a broker whose time index is
//! wrong (tansu's in-memory storage answers offset 0 for any time): messages before the
//! first one at or after `since` are passed over, and a partition ends at its first message
//! at or after `until`, which is where Kafka's `offsets_for_times(until)` would put it.
//!
//! Where a range ends is not taken from the high watermark alone: the embedded broker
//! (tansu) reports a partition's watermark as its last batch's first offset + 1, so a reader
//! that stopped there would miss the rest of that batch. The watermark read at open is only
//! where a partition *may* end: past it, a message stamped before the reader opened (or
//! before `until`) is still read, and a partition is done at its first message at or after
//! `until` (or, open-ended, stamped at or after the open), or once it has been quiet for
//! [`QUIET`] with the broker answering that nothing lies past what was read.
//!
//! A reader belongs to a job and commits its progress under a consumer group the caller
//! names for the job (`<kafka.group_id>-replay-<team>-<job>`), never the live group's. Opening the same job again
//! resumes after the last committed message. Partitions are assigned, not subscribed, so
//! two readers of one job do not rebalance each other, and a reader never joins the live
//! group. Messages are found by timestamp, so on a topic with producer-set timestamps a
//! message produced late into a partition may fall outside a range it belongs to in time.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaError,
};

use crate::KafkaSettings;

/// How long a metadata, offsets or commit request to the broker may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`RangeReader::next_batch`] waits for a message before checking whether the
/// remaining partitions are done (their last offsets may be transaction markers that are
/// never delivered).
const POLL: Duration = Duration::from_millis(500);
/// How long a partition read up to its watermark must bring nothing before the broker is
/// asked whether it holds more: many fetch round trips (a fetch waits 50 ms by default), so
/// what the broker held is in by then.
const QUIET: Duration = Duration::from_secs(1);
/// How long that question may take: a broker that does not answer keeps the partition open.
const END_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The time range of a replay, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// The first instant replayed.
    pub since_ms: i64,
    /// The first instant not replayed; `None`: up to what the topic held at open (messages
    /// stamped before the reader opened).
    pub until_ms: Option<i64>,
}

/// Why a range cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// The broker refused or did not answer.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: &'static str,
        /// The broker's error.
        source: KafkaError,
    },
    /// The topic does not exist or has no partitions.
    #[error("kafka: topic `{0}` has no partitions (does it exist?)")]
    NoTopic(String),
}

fn kafka(context: &'static str) -> impl FnOnce(KafkaError) -> RangeError {
    move |source| RangeError::Kafka { context, source }
}

/// One message of the range.
#[derive(Debug, Clone)]
pub struct RangeMessage {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its payload.
    pub payload: Option<Vec<u8>>,
}

/// Where one partition's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// The next offset to read.
    next: i64,
    /// The partition's high watermark when the reader opened: where it may end (see the
    /// module documentation), not where it must.
    end: i64,
    /// Whether a message at or after `since` was met (or the job is resuming): every
    /// message from there on is in the range until one at or after `until`.
    reached: bool,
}

/// What a partition's message is to the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before the range's start: passed over.
    Before,
    /// In the range.
    In,
    /// At or past its end: the partition is done.
    Past,
}

impl Span {
    /// Places the partition's next message (at `offset`, with `timestamp_ms` when it has
    /// one) in `range`, read by a reader opened at `opened_at_ms`, and moves past it unless
    /// it is past the end.
    fn place(
        &mut self,
        offset: i64,
        timestamp_ms: Option<i64>,
        range: TimeRange,
        opened_at_ms: i64,
    ) -> Place {
        let after_until = matches!(
            (timestamp_ms, range.until_ms),
            (Some(at), Some(until)) if at >= until
        );
        // Past the watermark read at open, only a message that was there before the open
        // belongs to the range: one stamped earlier (a broker that reported the watermark
        // short). One without a stamp cannot tell, and is left out as Kafka would.
        let after_open = offset >= self.end && timestamp_ms.is_none_or(|at| at >= opened_at_ms);
        if after_until || after_open {
            return Place::Past;
        }
        self.next = offset + 1;
        if !self.reached && timestamp_ms.is_some_and(|at| at < range.since_ms) {
            return Place::Before;
        }
        self.reached = true;
        Place::In
    }

    /// Whether the partition may be done when its fetch position is `position`: read up to
    /// the watermark of the open (and so, on Kafka, to the range's end).
    fn at_end(&self, position: i64) -> bool {
        self.next.max(position) >= self.end
    }
}

/// See the module documentation.
pub struct RangeReader {
    consumer: Arc<StreamConsumer>,
    topic: String,
    range: TimeRange,
    /// When the reader opened, in milliseconds since the epoch: an open-ended range holds
    /// what was produced before.
    opened_at_ms: i64,
    /// The partitions not yet read to their end, and when each last brought a message (or
    /// the reader opened).
    open: BTreeMap<i32, (Span, Instant)>,
    total: u64,
}

impl RangeReader {
    /// Opens a reader of `range` on the events topic that keeps its progress under consumer
    /// group `group` (the job's own): where each partition's range starts (or where the job
    /// stopped) and may end.
    pub async fn open(
        settings: &KafkaSettings,
        group: &str,
        range: TimeRange,
    ) -> Result<RangeReader, RangeError> {
        let mut config = settings.consumer_config();
        config
            .set("group.id", group)
            .set("auto.offset.reset", "earliest");
        let consumer: StreamConsumer =
            crate::client::create(&config).map_err(kafka("creating the replay consumer"))?;
        let topic = settings.topic.clone();
        let opened_at_ms = chrono::Utc::now().timestamp_millis();
        // The broker calls below block: off the async threads.
        tokio::task::spawn_blocking(move || {
            let (spans, total) = spans(&consumer, &topic, range)?;
            let mut assignment = TopicPartitionList::new();
            for (partition, span) in &spans {
                assignment
                    .add_partition_offset(&topic, *partition, Offset::Offset(span.next))
                    .map_err(kafka("assigning partitions"))?;
            }
            consumer
                .assign(&assignment)
                .map_err(kafka("assigning partitions"))?;
            let now = Instant::now();
            Ok(RangeReader {
                consumer: Arc::new(consumer),
                topic,
                range,
                opened_at_ms,
                open: spans
                    .into_iter()
                    .map(|(p, span)| (p, (span, now)))
                    .collect(),
                total,
            })
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
    }

    /// How many offsets the range had left when the reader opened, as far as the broker's
    /// time index and watermarks tell (transaction markers included, so slightly more than
    /// messages on a transactional topic; up to the partitions' ends where the index is
    /// wrong; fewer than are read where the watermark is short, as on the embedded broker).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether every partition was read to the end of the range.
    pub fn is_done(&self) -> bool {
        self.open.is_empty()
    }

    /// Up to `max` messages of the range: waits for at least one, unless the range is done
    /// (then the batch is empty).
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<RangeMessage>, RangeError> {
        let mut batch = Vec::new();
        while batch.len() < max && !self.open.is_empty() {
            let wait = if batch.is_empty() {
                POLL
            } else {
                Duration::ZERO
            };
            match tokio::time::timeout(wait, self.consumer.recv()).await {
                Ok(Ok(message)) => {
                    let partition = message.partition();
                    let Some((span, heard_at)) = self.open.get_mut(&partition) else {
                        continue;
                    };
                    *heard_at = Instant::now();
                    let timestamp = message.timestamp().to_millis();
                    let place =
                        span.place(message.offset(), timestamp, self.range, self.opened_at_ms);
                    if place == Place::In {
                        batch.push(RangeMessage {
                            partition,
                            offset: message.offset(),
                            payload: message.payload().map(<[u8]>::to_vec),
                        });
                    }
                    if place == Place::Past {
                        self.close(partition);
                    }
                }
                Ok(Err(error)) => {
                    // librdkafka retries on its own; a broker that is down shows here.
                    tracing::warn!(%error, "replay: reading the events topic");
                    tokio::time::sleep(POLL).await;
                }
                Err(_) if batch.is_empty() => self.close_finished().await?,
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Stops reading `partition`: its range is read. It is paused, so messages produced
    /// after the range do not keep the reader busy.
    fn close(&mut self, partition: i32) {
        self.open.remove(&partition);
        let mut paused = TopicPartitionList::new();
        paused.add_partition(&self.topic, partition);
        if let Err(error) = self.consumer.pause(&paused) {
            tracing::debug!(%error, partition, "replay: pausing a finished partition");
        }
    }

    /// Closes the partitions read up to the watermark of the open that brought nothing for
    /// [`QUIET`], when the broker answers that nothing lies past what was read (a range that
    /// ends on a transaction marker or a compacted gap, or a partition the range has no
    /// message of). A broker that does not answer keeps them open.
    async fn close_finished(&mut self) -> Result<(), RangeError> {
        let positions: BTreeMap<i32, i64> = self
            .consumer
            .position()
            .map_err(kafka("reading positions"))?
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(position) => Some((e.partition(), position)),
                _ => None,
            })
            .collect();
        let quiet: Vec<(i32, i64)> = self
            .open
            .iter()
            .filter_map(|(partition, (span, heard_at))| {
                let position = span
                    .next
                    .max(positions.get(partition).copied().unwrap_or(0));
                (span.at_end(position) && heard_at.elapsed() >= QUIET)
                    .then_some((*partition, position))
            })
            .collect();
        for (partition, position) in quiet {
            let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
            // A broker request: off the async threads.
            let watermarks = tokio::task::spawn_blocking(move || {
                consumer.fetch_watermarks(&topic, partition, END_CHECK_TIMEOUT)
            })
            .await
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
            match watermarks {
                Ok((_, high)) if position >= high => self.close(partition),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, partition, "replay: asking whether a partition is read");
                }
            }
        }
        Ok(())
    }

    /// Commits the job's progress: past every message of `batch`, which must be done. The
    /// commit is sent in the background: a job stopped right after may read its last batch
    /// again when resumed, which starts nothing twice.
    pub async fn commit(&self, batch: &[RangeMessage]) -> Result<(), RangeError> {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for message in batch {
            let entry = next.entry(message.partition).or_default();
            *entry = (*entry).max(message.offset + 1);
        }
        if next.is_empty() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets
                .add_partition_offset(&self.topic, partition, Offset::Offset(offset))
                .map_err(kafka("committing progress"))?;
        }
        self.consumer
            .commit(&offsets, CommitMode::Async)
            .map_err(kafka("committing progress"))
    }
}

/// Each partition's span of `range`, starting after the job's committed progress, and how
/// many offsets they hold as far as the broker's time index and watermarks tell. Every
/// partition has one, even where the start is at the watermark: a broker that reports the
/// watermark short may hold more.
fn spans<C: Consumer>(
    consumer: &C,
    topic: &str,
    range: TimeRange,
) -> Result<(BTreeMap<i32, Span>, u64), RangeError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), BROKER_TIMEOUT)
        .map_err(kafka("reading the topic's metadata"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(RangeError::NoTopic(topic.to_owned()));
    }
    let at = |ms: i64| -> Result<BTreeMap<i32, Offset>, RangeError> {
        let mut query = TopicPartitionList::new();
        for partition in &partitions {
            query
                .add_partition_offset(topic, *partition, Offset::Offset(ms))
                .map_err(kafka("finding offsets by time"))?;
        }
        let found = consumer
            .offsets_for_times(query, BROKER_TIMEOUT)
            .map_err(kafka("finding offsets by time"))?;
        Ok(found
            .elements_for_topic(topic)
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect())
    };
    let starts = at(range.since_ms)?;
    let ends = match range.until_ms {
        Some(until) => Some(at(until)?),
        None => None,
    };
    let mut committed_query = TopicPartitionList::new();
    for partition in &partitions {
        committed_query.add_partition(topic, *partition);
    }
    let committed: BTreeMap<i32, Offset> = consumer
        .committed_offsets(committed_query, BROKER_TIMEOUT)
        .map_err(kafka("reading the job's progress"))?
        .elements_for_topic(topic)
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    let (mut spans, mut total) = (BTreeMap::new(), 0);
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, BROKER_TIMEOUT)
            .map_err(kafka("reading the partition's offsets"))?;
        // No message at or after the instant: the range starts (or ends) at the end.
        let offset_or_high = |found: Option<&Offset>| match found {
            Some(Offset::Offset(offset)) => *offset,
            _ => high,
        };
        let mut next = offset_or_high(starts.get(&partition)).max(low);
        let resuming = match committed.get(&partition) {
            Some(Offset::Offset(done)) => {
                next = next.max(*done);
                true
            }
            _ => false,
        };
        // The messages' timestamps end the range (see the module documentation); the
        // index only estimates where, for the count. An end it puts at or before the
        // start is not believed: that is the broken index's answer.
        let estimated_end = match ends
            .as_ref()
            .map(|ends| offset_or_high(ends.get(&partition)))
        {
            Some(end) if end > next => end.min(high),
            _ => high,
        };
        total += estimated_end.saturating_sub(next).max(0) as u64;
        spans.insert(
            partition,
            Span {
                next,
                end: high,
                reached: resuming,
            },
        );
    }
    Ok((spans, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: TimeRange = TimeRange {
        since_ms: 1_000,
        until_ms: Some(2_000),
    };
    /// When the reader opened, after every stamp in these tests but the ones past it.
    const OPENED: i64 = 3_000;

    fn span(next: i64, end: i64) -> Span {
        Span {
            next,
            end,
            reached: false,
        }
    }

    #[test]
    fn messages_before_the_first_one_at_since_are_passed_over() {
        // A broker whose time index answered offset 0 for `since`.
        let mut s = span(0, 10);
        assert_eq!(s.place(0, Some(500), RANGE, OPENED), Place::Before);
        assert_eq!(s.place(1, Some(999), RANGE, OPENED), Place::Before);
        assert_eq!(s.place(2, Some(1_000), RANGE, OPENED), Place::In);
        // Once in the range, a late-stamped message is in it too, as Kafka's
        // offsets_for_times would have it.
        assert_eq!(s.place(3, Some(900), RANGE, OPENED), Place::In);
        assert_eq!(s.place(4, None, RANGE, OPENED), Place::In);
        assert_eq!(s.next, 5);
    }

    #[test]
    fn a_partition_ends_at_its_first_message_at_until() {
        let mut s = span(0, 10);
        assert_eq!(s.place(0, Some(1_500), RANGE, OPENED), Place::In);
        assert_eq!(s.place(1, Some(2_000), RANGE, OPENED), Place::Past);
        assert_eq!(s.next, 1, "the message past the end is not read");
    }

    #[test]
    fn past_a_short_watermark_messages_from_before_the_open_are_still_read() {
        // The embedded broker reported offset 9's batch (9..=12) as ending at 10.
        let open_ended = TimeRange {
            until_ms: None,
            ..RANGE
        };
        let mut s = span(8, 10);
        assert_eq!(s.place(8, Some(2_500), open_ended, OPENED), Place::In);
        assert_eq!(s.place(9, Some(2_500), open_ended, OPENED), Place::In);
        assert!(s.at_end(0), "read up to the watermark: it may end here");
        assert_eq!(s.place(10, Some(2_600), open_ended, OPENED), Place::In);
        assert_eq!(s.place(12, Some(2_999), open_ended, OPENED), Place::In);
        assert_eq!(s.next, 13);
        // Produced after the open: not what the topic held then.
        assert_eq!(s.place(13, Some(OPENED), open_ended, OPENED), Place::Past);
        assert_eq!(s.place(13, None, open_ended, OPENED), Place::Past);
        assert_eq!(s.next, 13);

        // With an end, the stamps past the watermark decide the same way.
        let mut s = span(8, 10);
        assert_eq!(s.place(10, Some(1_500), RANGE, OPENED), Place::In);
        assert_eq!(s.place(11, Some(2_000), RANGE, OPENED), Place::Past);
    }

    #[test]
    fn before_the_watermark_an_open_ended_range_takes_every_stamp() {
        // A producer's clock ahead of the reader's does not end the range early.
        let open_ended = TimeRange {
            until_ms: None,
            ..RANGE
        };
        let mut s = span(0, 10);
        assert_eq!(s.place(0, Some(i64::MAX), open_ended, OPENED), Place::In);
        assert_eq!(s.place(1, None, open_ended, OPENED), Place::In);
        assert!(!s.at_end(0));
        assert!(s.at_end(10), "the fetch position passed markers up to it");
    }

    #[test]
    fn a_resumed_job_takes_every_message_after_its_progress() {
        let mut s = Span {
            reached: true,
            ..span(5, 10)
        };
        assert_eq!(s.place(5, Some(500), RANGE, OPENED), Place::In);
    }
}
