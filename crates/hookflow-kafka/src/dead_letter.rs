//! The dead-letter producer: a message that cannot be delivered (not JSON, breaks the
//! contract, cannot be started) is copied, key and payload unchanged, to the dead-letter
//! topic with the reason in headers, so it never blocks its partition and can be inspected
//! or replayed later.

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

/// Header with the human-readable reason.
pub const HEADER_ERROR: &str = "hookflow-error";
/// Header with the stable reason label (`not_json`, `contract`, …).
pub const HEADER_ERROR_KIND: &str = "hookflow-error-kind";
/// Headers locating the original message.
pub const HEADER_SOURCE_TOPIC: &str = "hookflow-source-topic";
/// See [`HEADER_SOURCE_TOPIC`].
pub const HEADER_SOURCE_PARTITION: &str = "hookflow-source-partition";
/// See [`HEADER_SOURCE_TOPIC`].
pub const HEADER_SOURCE_OFFSET: &str = "hookflow-source-offset";

/// A message to dead-letter.
pub struct DeadLetter<'a> {
    /// Where it came from.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its payload.
    pub payload: Option<&'a [u8]>,
    /// The reason label.
    pub kind: &'a str,
    /// The reason.
    pub reason: &'a str,
}

/// Produces dead letters.
#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterProducer {
    /// A producer to `topic` with the given client settings.
    pub fn new(
        config: &ClientConfig,
        topic: impl Into<String>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = config
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(DeadLetterProducer {
            producer,
            topic: topic.into(),
        })
    }

    /// Sends one dead letter and waits for the broker's acknowledgement.
    pub async fn send(&self, letter: &DeadLetter<'_>, timeout: Duration) -> Result<(), String> {
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_ERROR,
                value: Some(letter.reason),
            })
            .insert(Header {
                key: HEADER_ERROR_KIND,
                value: Some(letter.kind),
            })
            .insert(Header {
                key: HEADER_SOURCE_TOPIC,
                value: Some(letter.topic),
            })
            .insert(Header {
                key: HEADER_SOURCE_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: HEADER_SOURCE_OFFSET,
                value: Some(&offset),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        if let Some(payload) = letter.payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, timeout)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }
}
