//! Reading a time range of the events topic again, for a replay: on each partition, from
//! the first message at or after `since` to the last before `until` (or the partition's end
//! when the reader opened), found with `offsets_for_times` by message timestamp.
//!
//! A reader belongs to a job and commits its progress under a consumer group of the job's
//! own (`<kafka.group_id>-replay-<job>`), never the live group's. Opening the same job again
//! resumes after the last committed message. Partitions are assigned, not subscribed, so
//! two readers of one job do not rebalance each other, and a reader never joins the live
//! group. Messages are found by timestamp, so on a topic with producer-set timestamps a
//! message produced late into a partition may fall outside a range it belongs to in time.

use std::{collections::BTreeMap, time::Duration};

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

/// The time range of a replay, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// The first instant replayed.
    pub since_ms: i64,
    /// The first instant not replayed; `None`: up to what the topic held at open.
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
#[derive(Debug, Clone, Copy)]
struct Span {
    /// The next offset to read.
    next: i64,
    /// The first offset past the range.
    end: i64,
}

/// See the module documentation.
pub struct RangeReader {
    consumer: StreamConsumer,
    topic: String,
    /// The partitions not yet read to their end.
    open: BTreeMap<i32, Span>,
    total: u64,
}

impl RangeReader {
    /// Opens job `job`'s reader of `range` on the events topic: where each partition's
    /// range starts (or where the job stopped) and ends.
    pub async fn open(
        settings: &KafkaSettings,
        job: &str,
        range: TimeRange,
    ) -> Result<RangeReader, RangeError> {
        let mut config = settings.consumer_config();
        config
            .set("group.id", format!("{}-replay-{job}", settings.group_id))
            .set("auto.offset.reset", "earliest");
        let consumer: StreamConsumer =
            crate::client::create(&config).map_err(kafka("creating the replay consumer"))?;
        let topic = settings.topic.clone();
        // The broker calls below block: off the async threads.
        tokio::task::spawn_blocking(move || {
            let open = spans(&consumer, &topic, range)?;
            let total = open.values().map(|s| (s.end - s.next) as u64).sum();
            let mut assignment = TopicPartitionList::new();
            for (partition, span) in &open {
                assignment
                    .add_partition_offset(&topic, *partition, Offset::Offset(span.next))
                    .map_err(kafka("assigning partitions"))?;
            }
            consumer
                .assign(&assignment)
                .map_err(kafka("assigning partitions"))?;
            Ok(RangeReader {
                consumer,
                topic,
                open,
                total,
            })
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
    }

    /// How many offsets the range had left when the reader opened (transaction markers
    /// included, so slightly more than messages on a transactional topic).
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
                    let Some(span) = self.open.get_mut(&partition) else {
                        continue;
                    };
                    if message.offset() >= span.end {
                        self.open.remove(&partition);
                        continue;
                    }
                    span.next = message.offset() + 1;
                    if span.next >= span.end {
                        self.open.remove(&partition);
                    }
                    batch.push(RangeMessage {
                        partition,
                        offset: message.offset(),
                        payload: message.payload().map(<[u8]>::to_vec),
                    });
                }
                Ok(Err(error)) => {
                    // librdkafka retries on its own; a broker that is down shows here.
                    tracing::warn!(%error, "replay: reading the events topic");
                    tokio::time::sleep(POLL).await;
                }
                Err(_) if batch.is_empty() => self.close_finished()?,
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Drops the partitions whose fetch position passed the end of the range without a
    /// message there (the range ended on a transaction marker or a compacted gap).
    fn close_finished(&mut self) -> Result<(), RangeError> {
        let positions = self
            .consumer
            .position()
            .map_err(kafka("reading positions"))?;
        for element in positions.elements_for_topic(&self.topic) {
            if let (Offset::Offset(position), Some(span)) =
                (element.offset(), self.open.get(&element.partition()))
                && position >= span.end
            {
                self.open.remove(&element.partition());
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

/// Each partition's span of `range`, starting after the job's committed progress.
fn spans<C: Consumer>(
    consumer: &C,
    topic: &str,
    range: TimeRange,
) -> Result<BTreeMap<i32, Span>, RangeError> {
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
    let mut spans = BTreeMap::new();
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
        if let Some(Offset::Offset(done)) = committed.get(&partition) {
            next = next.max(*done);
        }
        let end = ends
            .as_ref()
            .map_or(high, |ends| offset_or_high(ends.get(&partition)))
            .min(high);
        if next < end {
            spans.insert(partition, Span { next, end });
        }
    }
    Ok(spans)
}
