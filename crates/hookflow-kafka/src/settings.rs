//! `[kafka]`: the brokers, topics and consumer group, the consumer's limits and timeouts,
//! and the librdkafka properties shared by the consumer and the dead-letter producer.

use std::{collections::BTreeMap, time::Duration};

use hookflow_core::FieldError;
use rdkafka::ClientConfig;
use serde::Deserialize;

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

    /// The librdkafka settings every client shares: the consumer, the dead-letter producer
    /// and the outcomes publisher. In `[kafka.client]` keys, `_` stands for `.`: an
    /// environment variable cannot hold a dot, so `HOOKFLOW_KAFKA__CLIENT__SASL_PASSWORD`
    /// sets `sasl.password` (no librdkafka property has an `_` in its name).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.client.0 {
            config.set(key.replace('_', "."), value);
        }
        config
    }

    pub(crate) fn consumer_config(&self) -> ClientConfig {
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
        if config.get(FETCH_WAIT_MAX).is_none() {
            config.set(FETCH_WAIT_MAX, FETCH_WAIT_MAX_MS);
        }
        config
    }
}

/// How often librdkafka reports statistics (partition lag), in milliseconds.
const STATISTICS_INTERVAL_MS: &str = "5000";

/// The longest a fetch waits for data, unless `[kafka.client]` sets it. Kafka answers a
/// fetch as soon as data arrives, so there this only paces idle fetches (librdkafka's
/// default is 500 ms); some Kafka-compatible brokers (tansu, the local stack's) answer only
/// when the wait ends, and there it is the delivery latency at low load: measured on the
/// local stack, p50 from produce to receipt about 60 ms with the default, 17 ms with 10 ms.
const FETCH_WAIT_MAX: &str = "fetch.wait.max.ms";
const FETCH_WAIT_MAX_MS: &str = "50";

#[cfg(test)]
mod tests {
    use rdkafka::producer::BaseProducer;

    use super::*;

    fn settings(client: &[(&str, &str)]) -> KafkaSettings {
        let defaults: toml::Table =
            toml::from_str(include_str!("../../../config/default.toml")).expect("defaults");
        let mut kafka: KafkaSettings = defaults["kafka"].clone().try_into().expect("[kafka]");
        kafka.client = ClientProperties(
            client
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        kafka
    }

    #[test]
    fn sasl_over_tls_is_built_in_and_underscored_keys_name_dotted_properties() {
        // As `HOOKFLOW_KAFKA__CLIENT__SASL_PASSWORD` arrives: lower-cased, with `_`.
        let kafka = settings(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "hookflow"),
            ("sasl_password", "from-the-environment"),
        ]);
        let config = kafka.client_config();
        assert_eq!(config.get("sasl.password"), Some("from-the-environment"));
        assert_eq!(config.get("sasl_password"), None);
        // librdkafka refuses SASL_SSL and SCRAM unless it was built with OpenSSL.
        let producer = crate::client::create::<BaseProducer>(&config);
        assert!(producer.is_ok(), "{:?}", producer.err());
    }

    #[test]
    fn the_consumer_fetch_wait_is_short_unless_configured() {
        let config = settings(&[]).consumer_config();
        assert_eq!(config.get("fetch.wait.max.ms"), Some(FETCH_WAIT_MAX_MS));
        let config = settings(&[("fetch_wait_max_ms", "500")]).consumer_config();
        assert_eq!(config.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(settings(&[]).client_config().get("fetch.wait.max.ms"), None);
    }
}
