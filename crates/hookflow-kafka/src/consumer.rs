//! The consumer loop: receives messages, processes them concurrently (bounded), and commits
//! each partition's offsets only up to its lowest unfinished message.
//!
//! At-least-once: an offset is committed only after every delivery its message needs is
//! started or found existing (or the message is skipped or dead-lettered). Temporal's
//! workflow-id dedupe turns the re-consumption that at-least-once allows into exactly one
//! delivery per (event, destination). On shutdown and on partition revocation, in-flight
//! messages finish and their offsets are committed before the partitions are let go.

use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use hookflow_core::{DeliveryScheduler, FieldError, sync::LockUnpoisoned};
use hookflow_telemetry::{health::HealthHandle, names};
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
};
use serde::Deserialize;
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    backoff::{Backoff, StartBackoff},
    dead_letter::{DeadLetter, DeadLetterProducer},
    offsets::{OffsetTracker, Partition},
    pipeline::{MessageOutcome, Pipeline},
};

/// Kafka settings (`[kafka]` in the configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    /// The topic of action-matched events.
    pub topic: String,
    /// Where messages that cannot be delivered go.
    pub dead_letter_topic: String,
    /// Consumer group id.
    pub group_id: String,
    /// Where a new group starts reading.
    pub offset_reset: OffsetReset,
    /// Messages processed at once, across partitions.
    pub max_messages_in_flight: usize,
    /// Workflow starts in flight at once.
    pub max_starts_in_flight: usize,
    /// How often finished offsets are committed.
    #[serde(rename = "commit_interval_ms", with = "hookflow_core::millis")]
    pub commit_interval: Duration,
    /// Group session timeout.
    #[serde(rename = "session_timeout_ms", with = "hookflow_core::millis")]
    pub session_timeout: Duration,
    /// Group heartbeat interval.
    #[serde(rename = "heartbeat_interval_ms", with = "hookflow_core::millis")]
    pub heartbeat_interval: Duration,
    /// How long shutdown and revocation wait for in-flight messages.
    #[serde(rename = "drain_timeout_ms", with = "hookflow_core::millis")]
    pub drain_timeout: Duration,
    /// First wait before retrying a workflow start that failed.
    #[serde(rename = "start_retry_initial_ms", with = "hookflow_core::millis")]
    pub start_retry_initial: Duration,
    /// Longest wait between start retries.
    #[serde(rename = "start_retry_max_ms", with = "hookflow_core::millis")]
    pub start_retry_max: Duration,
    /// How long to wait for the broker to acknowledge a dead letter.
    #[serde(rename = "dead_letter_timeout_ms", with = "hookflow_core::millis")]
    pub dead_letter_timeout: Duration,
    /// How much of the payload a dead letter keeps when the full copy is refused as too
    /// large, in bytes.
    #[serde(default = "default_dead_letter_truncated_bytes")]
    pub dead_letter_truncated_bytes: usize,
    /// Extra librdkafka settings for consumer and producer (`security.protocol`, `sasl.*`, …).
    #[serde(default)]
    pub client: ClientProperties,
}

/// Where a new consumer group starts reading (`kafka.offset_reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// The oldest message the topic keeps.
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

impl OffsetReset {
    /// librdkafka's `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// Extra librdkafka properties (`[kafka.client]`). Values may be credentials
/// (`sasl.password`, `ssl.key.password`), so its `Debug` shows the keys only.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct ClientProperties(pub BTreeMap<String, String>);

impl std::fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

fn default_dead_letter_truncated_bytes() -> usize {
    64 * 1024
}

impl KafkaSettings {
    /// Checks `[kafka]`; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.brokers.trim().is_empty() {
            return Err(FieldError::new("brokers", "must name at least one broker"));
        }
        if self.topic.is_empty()
            || self.dead_letter_topic.is_empty()
            || self.topic == self.dead_letter_topic
        {
            return Err(FieldError::new(
                "dead_letter_topic",
                "must be set and differ from kafka.topic",
            ));
        }
        if self.max_messages_in_flight == 0 {
            return Err(FieldError::new(
                "max_messages_in_flight",
                "must be greater than 0",
            ));
        }
        if self.max_starts_in_flight == 0 {
            return Err(FieldError::new(
                "max_starts_in_flight",
                "must be greater than 0",
            ));
        }
        if self.heartbeat_interval >= self.session_timeout {
            return Err(FieldError::new(
                "heartbeat_interval_ms",
                "must be less than kafka.session_timeout_ms",
            ));
        }
        Ok(())
    }

    /// The librdkafka settings shared by the consumer and the dead-letter producer.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.client.0 {
            config.set(key, value);
        }
        config
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", self.offset_reset.as_str())
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                self.heartbeat_interval.as_millis().to_string(),
            )
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        config
    }
}

/// How often librdkafka reports statistics (partition lag), in milliseconds.
const STATISTICS_INTERVAL_MS: &str = "5000";

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
        for topic in statistics.topics.values() {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(names::CONSUMER_LAG, "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
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
        commit(consumer, &self.shared, CommitMode::Sync);
        let mut tracker = self.shared.tracker();
        for partition in &partitions {
            tracker.forget(partition);
        }
    }
}

/// Commits every partition's finished offsets.
fn commit<C: Consumer<RebalanceContext>>(consumer: &C, shared: &Shared, mode: CommitMode) {
    let offsets = shared.tracker().take_commits();
    if offsets.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in &offsets {
        if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::error!(%error, "cannot build the commit list");
            return;
        }
    }
    match consumer.commit(&list, mode) {
        Ok(()) => metrics::counter!(names::CONSUMER_COMMITS, "result" => "ok").increment(1),
        Err(error) => {
            metrics::counter!(names::CONSUMER_COMMITS, "result" => "error").increment(1);
            tracing::warn!(%error, "offset commit failed; it will be retried");
            shared.tracker().commit_failed(&offsets);
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
    let dead_letter_timeout = settings.dead_letter_timeout;
    let permits = Arc::new(Semaphore::new(settings.max_messages_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut commit_tick = tokio::time::interval(settings.commit_interval);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::spawn(probe_broker(
        consumer.clone(),
        settings.topic.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    tracing::info!(topic = %settings.topic, group = %settings.group_id, "consumer started");

    loop {
        health.beat();
        // Wait for room before receiving, so at most max_messages_in_flight are held. The
        // receive completes in the same poll as its permit's wait, so a commit tick that
        // wins the race never drops a received message.
        let next = async {
            let permit = permits.clone().acquire_owned().await.ok()?;
            Some((permit, consumer.recv().await))
        };
        let (permit, message) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = commit_tick.tick() => {
                commit(consumer.as_ref(), &shared, CommitMode::Async);
                while tasks.try_join_next().is_some() {}
                continue;
            }
            next = next => match next {
                Some(next) => next,
                None => break,
            },
        };
        let message = match message {
            Ok(message) => message.detach(),
            Err(error) => {
                tracing::warn!(%error, "kafka receive error");
                continue;
            }
        };
        let partition: Partition = (message.topic().to_owned(), message.partition());
        let offset = message.offset();
        shared.tracker().begin(&partition, offset);
        metrics::gauge!(names::CONSUMER_MESSAGES_IN_FLIGHT).increment(1.0);
        let (pipeline, shared, dead_letters, shutdown) = (
            pipeline.clone(),
            shared.clone(),
            dead_letters.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let outcome = pipeline
                .process(message.payload(), message.timestamp().to_millis())
                .await;
            let done = match &outcome {
                MessageOutcome::Interrupted => false,
                MessageOutcome::Started { .. } => true,
                MessageOutcome::Skipped { reason } => {
                    metrics::counter!(names::CONSUMER_SKIPPED, "reason" => *reason).increment(1);
                    true
                }
                MessageOutcome::DeadLetter { kind, reason } => {
                    let letter = DeadLetter {
                        topic: message.topic(),
                        partition: message.partition(),
                        offset,
                        key: message.key(),
                        payload: message.payload(),
                        kind,
                        reason,
                    };
                    tracing::warn!(partition = letter.partition, offset, kind, reason = %reason, "dead-lettering message");
                    let sent = send_dead_letter(&dead_letters, &letter, dead_letter_timeout, &shutdown).await;
                    if sent {
                        metrics::counter!(names::CONSUMER_DEAD_LETTERS, "reason" => *kind).increment(1);
                    }
                    sent
                }
            };
            metrics::counter!(names::CONSUMER_MESSAGES, "outcome" => outcome.label()).increment(1);
            metrics::gauge!(names::CONSUMER_MESSAGES_IN_FLIGHT).decrement(1.0);
            // A message that is not done keeps its offset unfinished, so no commit passes it
            // and it is consumed again after the restart.
            if done {
                shared.finish(&partition, offset);
            }
        });
    }

    tracing::info!(
        in_flight = shared.tracker().total_in_flight(),
        "consumer stopping; draining in-flight messages"
    );
    let drained = tokio::time::timeout(shared.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "messages still in flight after the drain timeout; they will be consumed again"
        );
    }
    commit(consumer.as_ref(), &shared, CommitMode::Sync);
    consumer.unsubscribe();
    tracing::info!("consumer stopped");
    Ok(())
}

/// Every few seconds, asks the broker for the topic's metadata and reports the answer.
async fn probe_broker(
    consumer: Arc<StreamConsumer<RebalanceContext>>,
    topic: String,
    health: HealthHandle,
    shutdown: CancellationToken,
) {
    const INTERVAL: Duration = Duration::from_secs(5);
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
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
    }
}

/// Sends a dead letter, retrying until the broker takes it or shutdown comes.
async fn send_dead_letter(
    producer: &DeadLetterProducer,
    letter: &DeadLetter<'_>,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(StartBackoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(10),
    });
    loop {
        match producer.send(letter, timeout).await {
            Ok(()) => return true,
            Err(error) => tracing::warn!(%error, "dead letter not acknowledged; retrying"),
        }
        if !backoff.wait(shutdown).await {
            return false;
        }
    }
}
