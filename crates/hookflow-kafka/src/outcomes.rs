//! Publishes per-team delivery outcomes: every window, the worker's
//! [`OutcomeAggregator`] is drained and each summary is sent as JSON to the outcomes topic,
//! keyed by team id so one team's summaries stay in order on one partition.
//!
//! Summaries that cannot be sent (the broker is down) are kept and sent with the next
//! window, up to [`MAX_PENDING`]; beyond that the oldest are dropped and counted. On
//! shutdown the current window is closed and sent once more.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use hookflow_core::{
    outcomes::{OutcomeAggregator, OutcomeSummary},
    sync::LockUnpoisoned,
};
use hookflow_telemetry::names;
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Summaries kept while the broker is unreachable.
pub const MAX_PENDING: usize = 10_000;

/// `[outcomes]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeSettings {
    /// Topic of the summaries; empty to publish none.
    pub topic: String,
    /// Length of one window.
    #[serde(rename = "window_ms", with = "hookflow_core::millis")]
    pub window: Duration,
    /// How long to wait for the broker to acknowledge one summary.
    #[serde(rename = "send_timeout_ms", with = "hookflow_core::millis")]
    pub send_timeout: Duration,
}

/// The aggregator the delivery worker records into, shared with the publisher.
pub type SharedAggregator = Arc<Mutex<OutcomeAggregator>>;

/// Sends the summaries of every window to the outcomes topic.
pub struct OutcomePublisher {
    producer: FutureProducer,
    settings: OutcomeSettings,
}

impl OutcomePublisher {
    /// A publisher with the given client settings; fails at once on a bad client setting.
    pub fn new(
        config: &ClientConfig,
        settings: &OutcomeSettings,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(OutcomePublisher {
            producer: crate::client::create(config.clone().set("acks", "all"))?,
            settings: settings.clone(),
        })
    }

    /// Drains `aggregator` every window into the topic until `stop`, then once more.
    pub async fn run(self, aggregator: SharedAggregator, stop: CancellationToken) {
        let timeout = self.settings.send_timeout;
        let mut pending: VecDeque<OutcomeSummary> = VecDeque::new();
        let mut tick = tokio::time::interval(self.settings.window);
        tick.tick().await;
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.cancelled() => true,
            };
            let closed = lock(&aggregator).drain(chrono::Utc::now());
            pending.extend(closed);
            while pending.len() > MAX_PENDING {
                pending.pop_front();
                metrics::counter!(names::OUTCOME_SUMMARIES, "result" => "dropped").increment(1);
            }
            send_pending(&self.producer, &self.settings.topic, &mut pending, timeout).await;
            if stopping {
                if !pending.is_empty() {
                    tracing::warn!(
                        unsent = pending.len(),
                        "outcome summaries not sent before shutdown"
                    );
                }
                return;
            }
        }
    }
}

/// Sends summaries in order and stops at the first failure, keeping it and the rest.
async fn send_pending(
    producer: &FutureProducer,
    topic: &str,
    pending: &mut VecDeque<OutcomeSummary>,
    timeout: Duration,
) {
    while let Some(summary) = pending.front() {
        let key = summary.team_id.to_string();
        let payload = match serde_json::to_vec(summary) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "cannot serialize an outcome summary; dropped");
                pending.pop_front();
                continue;
            }
        };
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        match producer.send(record, timeout).await {
            Ok(_) => {
                metrics::counter!(names::OUTCOME_SUMMARIES, "result" => "sent").increment(1);
                pending.pop_front();
            }
            Err((error, _)) => {
                metrics::counter!(names::OUTCOME_SUMMARIES, "result" => "error").increment(1);
                tracing::warn!(%error, kept = pending.len(), "cannot publish outcome summaries; retrying next window");
                return;
            }
        }
    }
}

fn lock(aggregator: &SharedAggregator) -> std::sync::MutexGuard<'_, OutcomeAggregator> {
    aggregator.lock_unpoisoned()
}
