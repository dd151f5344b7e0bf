//! The consumer loop: receives messages, processes them concurrently (bounded), and commits
//! each partition's offsets only up to its lowest unfinished message.
//!
//! At-least-once: an offset is committed only after every delivery its message needs is
//! started or found existing (or the message is skipped or dead-lettered). Temporal's
//! workflow-id dedupe turns the re-consumption that at-least-once allows into exactly one
//! delivery per (event, destination). On shutdown and on partition revocation, in-flight
//! messages finish and their offsets are committed before the partitions are let go.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use hookflow_core::{DeliveryScheduler, sync::LockUnpoisoned};
use hookflow_runtime::{Backoff, BackoffPolicy};
use hookflow_telemetry::{health::HealthHandle, names};
use rdkafka::{
    ClientContext, Message, Offset, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::{KafkaError, KafkaResult},
    message::OwnedMessage,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    dead_letter::{DeadLetter, DeadLetterProducer},
    offsets::{OffsetTracker, Partition},
    pipeline::{MessageDisposition, Pipeline},
    settings::KafkaSettings,
};

/// Why the consumer could not run.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The client could not be created (bad settings).
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
}

/// State shared between the loop, the message tasks and the rebalance callback.
struct Shared {
    tracker: Mutex<OffsetTracker>,
    changed: Condvar,
    drain_timeout: Duration,
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        // A panic while holding the lock cannot leave the tracker half-updated in a way that
        // loses messages (at worst it re-offers a commit), so a poisoned lock is recovered.
        self.tracker.lock_unpoisoned()
    }

    fn finish(&self, partition: &Partition, offset: i64) {
        self.tracker().finish(partition, offset);
        self.changed.notify_all();
    }

    /// Blocks until no message of `partitions` is in flight, or the drain timeout passes.
    fn wait_drained(&self, partitions: &[Partition]) {
        let deadline = Instant::now() + self.drain_timeout;
        let mut tracker = self.tracker();
        while partitions.iter().any(|p| tracker.in_flight(p) > 0) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                tracing::warn!(
                    "messages still in flight after the drain timeout; they will be consumed again"
                );
                return;
            };
            tracker = self
                .changed
                .wait_timeout(tracker, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The consumer's context: commits a revoked partition's finished offsets before it goes.
struct RebalanceContext {
    shared: Arc<Shared>,
}

impl ClientContext for RebalanceContext {
    /// librdkafka's periodic statistics: exports each assigned partition's lag (high
    /// watermark minus committed offset; unknown lags are skipped).
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    lag(name, *partition).set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let partitions: Vec<Partition> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        tracing::info!(
            partitions = partitions.len(),
            "partitions revoked; draining in-flight messages"
        );
        // This callback runs inside the consumer's poll on a runtime thread; let the runtime
        // move its other tasks elsewhere while it waits for the message tasks to finish.
        let wait = || self.shared.wait_drained(&partitions);
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
        commit(consumer, &self.shared);
        let mut tracker = self.shared.tracker();
        for partition in &partitions {
            tracker.forget(partition);
            // Its lag is its new owner's to report: summed over processes, the lag of
            // every partition counts once.
            lag(&partition.0, partition.1).set(0.0);
        }
    }
}

/// The lag gauge of one partition.
fn lag(topic: &str, partition: i32) -> metrics::Gauge {
    metrics::gauge!(names::CONSUMER_LAG, "topic" => topic.to_owned(), "partition" => partition.to_string())
}

/// Commits every partition's finished offsets and waits for the broker's answer (it
/// blocks: off the async threads). An asynchronous commit would return before the answer,
/// and a refusal would go unnoticed, its offsets never offered again.
fn commit<C: Consumer<RebalanceContext>>(consumer: &C, shared: &Shared) {
    let offsets = shared.tracker().take_commits();
    if offsets.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in &offsets {
        if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::error!(%error, "cannot build the commit list");
            shared.tracker().commit_failed(&offsets);
            return;
        }
    }
    answered(shared, &offsets, consumer.commit(&list, CommitMode::Sync));
}

/// The broker's answer to a commit of `offsets`: counted, and a refused commit's offsets
/// are offered again by the next one.
fn answered(shared: &Shared, offsets: &BTreeMap<Partition, i64>, result: KafkaResult<()>) {
    match result {
        Ok(()) => metrics::counter!(names::CONSUMER_COMMITS, "result" => "ok").increment(1),
        Err(error) => {
            metrics::counter!(names::CONSUMER_COMMITS, "result" => "error").increment(1);
            tracing::warn!(%error, "offset commit failed; it will be retried");
            shared.tracker().commit_failed(offsets);
        }
    }
}

/// Consumes the events topic until `shutdown` is cancelled, then drains and commits.
///
/// `health` hears a beat on every turn of the loop (at least every commit interval) and,
/// every few seconds, whether the broker answers a metadata request for the topic.
pub async fn run<S: DeliveryScheduler>(
    settings: &KafkaSettings,
    pipeline: Arc<Pipeline<S>>,
    health: HealthHandle,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let mut consumer = ConsumerLoop::subscribe(settings, pipeline, health, shutdown)?;
    consumer.receive_until_shutdown().await;
    consumer.drain_and_commit().await;
    Ok(())
}

/// The consumer's state, in the order it is used: subscribe, receive until shutdown (each
/// message handled in a task of its own), drain the tasks, commit, unsubscribe.
struct ConsumerLoop<S: DeliveryScheduler> {
    consumer: Arc<StreamConsumer<RebalanceContext>>,
    /// Offsets in flight and finished; shared with the rebalance callback.
    shared: Arc<Shared>,
    /// At most `kafka.max_messages_in_flight` messages are held at once.
    permits: Arc<Semaphore>,
    /// Messages received while every place was held, in order.
    held: VecDeque<OwnedMessage>,
    /// The periodic commit in flight, if any.
    committing: Option<tokio::task::JoinHandle<()>>,
    /// The message tasks.
    tasks: JoinSet<()>,
    commit_tick: tokio::time::Interval,
    handler: Arc<MessageHandler<S>>,
    health: HealthHandle,
    shutdown: CancellationToken,
}

impl<S: DeliveryScheduler> ConsumerLoop<S> {
    /// Creates the consumer and the dead-letter producer, subscribes to the topic and starts
    /// probing the broker.
    fn subscribe(
        settings: &KafkaSettings,
        pipeline: Arc<Pipeline<S>>,
        health: HealthHandle,
        shutdown: CancellationToken,
    ) -> Result<Self, ConsumerError> {
        let shared = Arc::new(Shared {
            tracker: Mutex::new(OffsetTracker::default()),
            changed: Condvar::new(),
            drain_timeout: settings.drain_timeout,
        });
        let consumer: Arc<StreamConsumer<RebalanceContext>> =
            Arc::new(crate::client::create_with_context(
                &settings.consumer_config(),
                RebalanceContext {
                    shared: shared.clone(),
                },
            )?);
        consumer.subscribe(&[&settings.topic])?;
        let dead_letters = DeadLetterProducer::new(
            &settings.client_config(),
            &settings.dead_letter_topic,
            settings.dead_letter_truncated_bytes,
        )?;
        let mut commit_tick = tokio::time::interval(settings.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::spawn(probe_broker(
            consumer.clone(),
            settings.topic.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        tracing::info!(topic = %settings.topic, group = %settings.group_id, "consumer started");
        let handler = MessageHandler {
            pipeline,
            shared: shared.clone(),
            dead_letters,
            dead_letter_timeout: settings.dead_letter_timeout,
            shutdown: shutdown.clone(),
        };
        Ok(ConsumerLoop {
            consumer,
            shared,
            permits: Arc::new(Semaphore::new(settings.max_messages_in_flight.max(1))),
            held: VecDeque::new(),
            committing: None,
            tasks: JoinSet::new(),
            commit_tick,
            handler: Arc::new(handler),
            health,
            shutdown,
        })
    }

    /// Receives messages and hands each to a task of its own, committing finished offsets
    /// on every tick, until shutdown.
    async fn receive_until_shutdown(&mut self) {
        loop {
            self.health.beat();
            // Wait for room before receiving, so at most max_messages_in_flight are held.
            let permit = match self.permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::Closed) => return,
                Err(TryAcquireError::NoPermits) => match self.wait_for_room().await {
                    Some(permit) => permit,
                    None => return,
                },
            };
            // Messages received while there was no room go first, in order.
            if let Some(message) = self.held.pop_front() {
                if self.is_assigned(&message) {
                    self.hand_over(permit, message);
                }
                continue;
            }
            // The receive is polled in the same poll as the commit tick: a tick that wins
            // the race never drops a received message.
            let message = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.commit_tick.tick() => {
                    self.commit_in_background();
                    while self.tasks.try_join_next().is_some() {}
                    continue;
                }
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => self.hand_over(permit, message.detach()),
                Err(error) => tracing::warn!(%error, "kafka receive error"),
            }
        }
    }

    /// Every place is held (Temporal is slow or down): pauses the assigned partitions and
    /// keeps polling until a place frees, then resumes them. Polling goes on so the group
    /// does not take this consumer for dead after `max.poll.interval.ms` and rebalance its
    /// partitions away; commits go on. A message that arrives anyway (fetched before the
    /// pause, or from a partition assigned meanwhile) is held for its turn and its partition
    /// paused. `None` when shutdown came first.
    async fn wait_for_room(&mut self) -> Option<OwnedSemaphorePermit> {
        self.pause(self.consumer.assignment().ok());
        tracing::info!(
            in_flight = self.shared.tracker().total_in_flight(),
            "every place in flight is held: partitions paused until one frees"
        );
        let permit = loop {
            self.health.beat();
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = self.commit_tick.tick() => {
                    self.commit_in_background();
                    while self.tasks.try_join_next().is_some() {}
                }
                permit = self.permits.clone().acquire_owned() => break permit.ok()?,
                message = self.consumer.recv() => match message {
                    Ok(message) => {
                        let mut partition = TopicPartitionList::new();
                        partition.add_partition(message.topic(), message.partition());
                        self.pause(Some(partition));
                        self.held.push_back(message.detach());
                    }
                    Err(error) => tracing::warn!(%error, "kafka receive error"),
                },
            }
        };
        if let Ok(assignment) = self.consumer.assignment()
            && let Err(error) = self.consumer.resume(&assignment)
        {
            tracing::warn!(%error, "resuming the partitions");
        }
        Some(permit)
    }

    /// Commits what finished, on a blocking thread, unless the last commit is still out.
    fn commit_in_background(&mut self) {
        if self.committing.as_ref().is_some_and(|c| !c.is_finished()) {
            return;
        }
        let (consumer, shared) = (self.consumer.clone(), self.shared.clone());
        self.committing = Some(tokio::task::spawn_blocking(move || {
            commit(consumer.as_ref(), &shared);
        }));
    }

    fn pause(&self, partitions: Option<TopicPartitionList>) {
        if let Some(partitions) = partitions
            && let Err(error) = self.consumer.pause(&partitions)
        {
            tracing::warn!(%error, "pausing the partitions");
        }
    }

    /// Whether `message`'s partition is still this consumer's (one held while a rebalance
    /// took it away belongs to its new owner, which reads it from the last commit).
    fn is_assigned(&self, message: &OwnedMessage) -> bool {
        self.consumer.assignment().is_ok_and(|assignment| {
            assignment
                .find_partition(message.topic(), message.partition())
                .is_some()
        })
    }

    /// Hands `message` to a task of its own, which holds `permit` until it is done.
    fn hand_over(&mut self, permit: OwnedSemaphorePermit, message: OwnedMessage) {
        let partition: Partition = (message.topic().to_owned(), message.partition());
        self.shared.tracker().begin(&partition, message.offset());
        metrics::gauge!(names::CONSUMER_MESSAGES_IN_FLIGHT).increment(1.0);
        let handler = self.handler.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            handler.handle(message, partition).await;
        });
    }

    /// Lets in-flight messages finish (up to the drain timeout), commits what finished and
    /// leaves the group.
    async fn drain_and_commit(mut self) {
        tracing::info!(
            in_flight = self.shared.tracker().total_in_flight(),
            "consumer stopping; draining in-flight messages"
        );
        let drained = tokio::time::timeout(self.shared.drain_timeout, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "messages still in flight after the drain timeout; they will be consumed again"
            );
        }
        if let Some(committing) = self.committing.take() {
            let _ = committing.await;
        }
        let (consumer, shared) = (self.consumer.clone(), self.shared.clone());
        let _ = tokio::task::spawn_blocking(move || commit(consumer.as_ref(), &shared)).await;
        self.consumer.unsubscribe();
        tracing::info!("consumer stopped");
    }
}

/// What happens to one received message: the pipeline's disposition, a dead letter if it asks
/// for one, the metrics, and its offset marked finished, unless shutdown interrupted it.
struct MessageHandler<S: DeliveryScheduler> {
    pipeline: Arc<Pipeline<S>>,
    shared: Arc<Shared>,
    dead_letters: DeadLetterProducer,
    dead_letter_timeout: Duration,
    shutdown: CancellationToken,
}

impl<S: DeliveryScheduler> MessageHandler<S> {
    async fn handle(&self, message: OwnedMessage, partition: Partition) {
        let offset = message.offset();
        let disposition = self
            .pipeline
            .process(message.payload(), message.timestamp().to_millis())
            .await;
        let done = match &disposition {
            MessageDisposition::Interrupted => false,
            MessageDisposition::Started { .. } => true,
            MessageDisposition::Skipped { reason } => {
                metrics::counter!(names::CONSUMER_SKIPPED, "reason" => reason.as_str())
                    .increment(1);
                true
            }
            MessageDisposition::DeadLetter { kind, reason } => {
                let letter = DeadLetter {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset,
                    key: message.key(),
                    payload: message.payload(),
                    kind: *kind,
                    reason,
                };
                self.dead_letter(&letter).await
            }
        };
        // A dead letter shutdown cut short was not sent: the message is consumed again.
        let label = if done {
            disposition.label()
        } else {
            MessageDisposition::Interrupted.label()
        };
        metrics::counter!(names::CONSUMER_MESSAGES, "outcome" => label).increment(1);
        metrics::gauge!(names::CONSUMER_MESSAGES_IN_FLIGHT).decrement(1.0);
        // A message that is not done keeps its offset unfinished, so no commit passes it and
        // it is consumed again after the restart.
        if done {
            self.shared.finish(&partition, offset);
        }
    }

    /// Sends a dead letter, retrying until the broker takes it or shutdown comes; whether
    /// it was sent.
    async fn dead_letter(&self, letter: &DeadLetter<'_>) -> bool {
        tracing::warn!(
            partition = letter.partition,
            offset = letter.offset,
            kind = letter.kind.as_str(),
            reason = %letter.reason,
            "dead-lettering message"
        );
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        });
        loop {
            match self
                .dead_letters
                .send(letter, self.dead_letter_timeout)
                .await
            {
                Ok(()) => {
                    metrics::counter!(names::CONSUMER_DEAD_LETTERS, "reason" => letter.kind.as_str())
                        .increment(1);
                    return true;
                }
                Err(error) => tracing::warn!(%error, "dead letter not acknowledged; retrying"),
            }
            if !backoff.wait(&self.shutdown).await {
                return false;
            }
        }
    }
}

/// Every few seconds, asks the broker for the topic's metadata and reports the answer.
async fn probe_broker(
    consumer: Arc<StreamConsumer<RebalanceContext>>,
    topic: String,
    health: HealthHandle,
    shutdown: CancellationToken,
) {
    const INTERVAL: Duration = Duration::from_secs(5);
    hookflow_runtime::every(INTERVAL, &shutdown, || async {
        let (consumer, probed) = (consumer.clone(), topic.clone());
        // fetch_metadata blocks: keep it off the runtime's worker threads.
        let answer = tokio::task::spawn_blocking(move || {
            consumer
                .fetch_metadata(Some(&probed), INTERVAL)
                .map(|m| m.topics().iter().any(|t| t.error().is_none()))
        })
        .await;
        match answer {
            Ok(Ok(true)) => health.set_ready(true, ""),
            Ok(Ok(false)) => {
                health.set_ready(false, format!("kafka: topic {topic} is not available"))
            }
            Ok(Err(error)) => health.set_ready(false, format!("kafka: {error}")),
            Err(error) => health.set_ready(false, format!("kafka probe: {error}")),
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    fn shared() -> Shared {
        Shared {
            tracker: Mutex::new(OffsetTracker::default()),
            changed: Condvar::new(),
            drain_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_commit_the_broker_refused_is_offered_again() {
        let shared = shared();
        let partition: Partition = ("events".into(), 0);
        let sent = {
            let mut tracker = shared.tracker();
            tracker.begin(&partition, 41);
            tracker.finish(&partition, 41);
            let sent = tracker.take_commits();
            assert_eq!(sent.get(&partition), Some(&42));
            assert!(tracker.take_commits().is_empty(), "marked committed");
            sent
        };
        let refused = KafkaError::ConsumerCommit(RDKafkaErrorCode::RequestTimedOut);
        answered(&shared, &sent, Err(refused));
        let again = shared.tracker().take_commits();
        assert_eq!(again.get(&partition), Some(&42), "offered again");
        answered(&shared, &again, Ok(()));
        assert!(shared.tracker().take_commits().is_empty());
    }
}
