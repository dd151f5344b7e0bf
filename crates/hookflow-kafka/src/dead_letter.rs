//! The dead-letter producer: a message that cannot be delivered (not JSON, breaks the
//! contract, cannot be started) is copied, key and payload unchanged, to the dead-letter
//! topic with the reason in headers, so it never blocks its partition and can be inspected
//! or replayed later.
//!
//! A copy the producer or the broker refuses as too large (the dead-letter topic may
//! accept less than the events topic, and the headers add to the message) would otherwise
//! be retried forever and stop the partition's commits. It is sent again as a truncated
//! letter: the same headers, the first [`DeadLetterProducer::truncated_bytes`] of the
//! payload, and `hookflow-truncated` saying how long the payload was; if even that is too
//! large, the letter goes without payload. The source coordinates in the headers locate the
//! whole message on the events topic for as long as it retains it.

use std::time::Duration;

use hookflow_telemetry::names;
use rdkafka::{
    ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::pipeline::DeadLetterKind;

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
/// On a truncated letter: the original payload's length in bytes.
pub const HEADER_TRUNCATED: &str = "hookflow-truncated";

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
    pub kind: DeadLetterKind,
    /// The reason.
    pub reason: &'a str,
}

/// Why a dead letter was not written.
#[derive(Debug, thiserror::Error)]
#[error("dead letter not acknowledged: {0}")]
pub struct DeadLetterError(#[from] KafkaError);

/// Produces dead letters.
#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: FutureProducer,
    topic: String,
    truncated_bytes: usize,
}

impl DeadLetterProducer {
    /// A producer to `topic` with the given client settings; a letter too large for the
    /// topic keeps the first `truncated_bytes` of its payload.
    pub fn new(
        config: &ClientConfig,
        topic: impl Into<String>,
        truncated_bytes: usize,
    ) -> Result<Self, KafkaError> {
        let producer = crate::client::create(
            config
                .clone()
                .set("enable.idempotence", "true")
                .set("acks", "all"),
        )?;
        Ok(DeadLetterProducer {
            producer,
            topic: topic.into(),
            truncated_bytes,
        })
    }

    /// How much of a payload a truncated letter keeps.
    pub fn truncated_bytes(&self) -> usize {
        self.truncated_bytes
    }

    /// Sends one dead letter and waits for the broker's acknowledgement, truncating it
    /// when it is refused as too large.
    pub async fn send(
        &self,
        letter: &DeadLetter<'_>,
        timeout: Duration,
    ) -> Result<(), DeadLetterError> {
        let full = letter.payload.unwrap_or_default();
        let mut keep = full.len();
        loop {
            let truncated = keep < full.len();
            match self
                .produce(letter, &full[..keep], truncated, timeout)
                .await
            {
                Err(error) if is_too_large(&error) && keep > 0 => {
                    let next = if keep > self.truncated_bytes {
                        self.truncated_bytes
                    } else {
                        0
                    };
                    tracing::warn!(
                        offset = letter.offset,
                        partition = letter.partition,
                        payload_bytes = full.len(),
                        keep_bytes = next,
                        %error,
                        "dead letter refused as too large; sending it truncated"
                    );
                    keep = next;
                }
                Err(error) => return Err(error.into()),
                Ok(()) => {
                    if truncated {
                        metrics::counter!(names::CONSUMER_DEAD_LETTERS_TRUNCATED).increment(1);
                    }
                    return Ok(());
                }
            }
        }
    }

    async fn produce(
        &self,
        letter: &DeadLetter<'_>,
        payload: &[u8],
        truncated: bool,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let original_bytes = letter.payload.map_or(0, <[u8]>::len).to_string();
        let mut headers = OwnedHeaders::new();
        let mut fields = vec![
            (HEADER_ERROR, letter.reason),
            (HEADER_ERROR_KIND, letter.kind.as_str()),
            (HEADER_SOURCE_TOPIC, letter.topic),
            (HEADER_SOURCE_PARTITION, &partition),
            (HEADER_SOURCE_OFFSET, &offset),
        ];
        if truncated {
            fields.push((HEADER_TRUNCATED, &original_bytes));
        }
        for (key, value) in fields {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        if letter.payload.is_some() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, timeout)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

/// Whether the producer or the broker refused the message for its size.
fn is_too_large(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}
