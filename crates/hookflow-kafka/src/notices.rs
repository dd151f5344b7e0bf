//! Publishes destination notices ([`DestinationNotice`]: a destination failing, disabled
//! for it, enabled again) on the outcomes topic, keyed by team id like the summaries, so a
//! product reading its teams' outcomes reads their notices in the same place.
//!
//! A notice that cannot be sent (the broker down past librdkafka's own retries and
//! `outcomes.send_timeout_ms`) is tried a few more times, then logged and counted: a notice
//! is information, and the state it reports (a destination disabled or enabled) is kept
//! elsewhere and shown by the API.

use std::time::Duration;

use hookflow_core::notice::DestinationNotice;
use hookflow_telemetry::names;
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};

use crate::outcomes::OutcomeSettings;

/// Tries of one notice.
const TRIES: u32 = 3;

/// Sends notices to the outcomes topic.
#[derive(Clone)]
pub struct NoticePublisher {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl NoticePublisher {
    /// A publisher to `settings.topic`; `None` when it is empty (outcomes turned off).
    /// Fails at once on a bad client setting.
    pub fn new(
        config: &ClientConfig,
        settings: &OutcomeSettings,
    ) -> Result<Option<Self>, rdkafka::error::KafkaError> {
        if settings.topic.is_empty() {
            return Ok(None);
        }
        Ok(Some(NoticePublisher {
            producer: crate::client::create(config.clone().set("acks", "all"))?,
            topic: settings.topic.clone(),
            timeout: settings.send_timeout,
        }))
    }

    /// Sends `notice`, retrying a little; whether it was sent.
    pub async fn publish(&self, notice: &DestinationNotice) -> bool {
        let kind = notice.kind.as_str();
        let key = notice.team_id.to_string();
        let Ok(payload) = serde_json::to_vec(notice) else {
            return false;
        };
        for attempt in 1..=TRIES {
            let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
            match self.producer.send(record, self.timeout).await {
                Ok(_) => {
                    metrics::counter!(names::NOTICES, "type" => kind, "result" => "sent")
                        .increment(1);
                    return true;
                }
                Err((error, _)) if attempt < TRIES => {
                    tracing::debug!(%error, attempt, "notice not sent; retrying");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
                Err((error, _)) => {
                    metrics::counter!(names::NOTICES, "type" => kind, "result" => "error")
                        .increment(1);
                    tracing::error!(%error, notice = %notice.id, r#type = kind, team_id = notice.team_id, destination = %notice.destination_id, "notice not sent");
                }
            }
        }
        false
    }
}
