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
//! large, the letter goes without payload, and then its key is cut the same way
//! (`hookflow-key-truncated`). The source coordinates in the headers locate the whole
//! message on the events topic for as long as it retains it.

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
/// On a letter whose key was truncated too: the original key's length in bytes.
pub const HEADER_KEY_TRUNCATED: &str = "hookflow-key-truncated";

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
    /// when it is refused as too large: its payload first, then its key.
    pub async fn send(
        &self,
        letter: &DeadLetter<'_>,
        timeout: Duration,
    ) -> Result<(), DeadLetterError> {
        let (payload, key) = (
            letter.payload.unwrap_or_default(),
            letter.key.unwrap_or_default(),
        );
        let mut cut = Cut {
            payload: payload.len(),
            key: key.len(),
        };
        loop {
            match self.produce(letter, cut, timeout).await {
                Err(error) if is_too_large(&error) => {
                    let Some(next) = cut.smaller(self.truncated_bytes) else {
                        return Err(error.into());
                    };
                    tracing::warn!(
                        offset = letter.offset,
                        partition = letter.partition,
                        payload_bytes = payload.len(),
                        keep_bytes = next.payload,
                        key_bytes = key.len(),
                        keep_key_bytes = next.key,
                        %error,
                        "dead letter refused as too large; sending it truncated"
                    );
                    cut = next;
                }
                Err(error) => return Err(error.into()),
                Ok(()) => {
                    if cut.payload < payload.len() || cut.key < key.len() {
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
        cut: Cut,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let (payload, key) = (
            letter.payload.unwrap_or_default(),
            letter.key.unwrap_or_default(),
        );
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let (payload_bytes, key_bytes) = (payload.len().to_string(), key.len().to_string());
        let mut headers = OwnedHeaders::new();
        let mut fields = vec![
            (HEADER_ERROR, letter.reason),
            (HEADER_ERROR_KIND, letter.kind.as_str()),
            (HEADER_SOURCE_TOPIC, letter.topic),
            (HEADER_SOURCE_PARTITION, &partition),
            (HEADER_SOURCE_OFFSET, &offset),
        ];
        if cut.payload < payload.len() {
            fields.push((HEADER_TRUNCATED, &payload_bytes));
        }
        if cut.key < key.len() {
            fields.push((HEADER_KEY_TRUNCATED, &key_bytes));
        }
        for (key, value) in fields {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if letter.key.is_some() {
            record = record.key(&key[..cut.key]);
        }
        if letter.payload.is_some() {
            record = record.payload(&payload[..cut.payload]);
        }
        self.producer
            .send(record, timeout)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

/// How much of a dead letter's payload and key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    payload: usize,
    key: usize,
}

impl Cut {
    /// The next smaller letter after one refused as too large: the payload cut to
    /// `prefix` bytes, then to none, then the key the same way; `None` when nothing is
    /// left to cut (the headers alone are too large).
    fn smaller(self, prefix: usize) -> Option<Cut> {
        let shorter = |bytes: usize| if bytes > prefix { prefix } else { 0 };
        if self.payload > 0 {
            Some(Cut {
                payload: shorter(self.payload),
                ..self
            })
        } else if self.key > 0 {
            Some(Cut {
                key: shorter(self.key),
                ..self
            })
        } else {
            None
        }
    }
}

/// Whether the producer or the broker refused the message for its size.
fn is_too_large(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_too_large_loses_its_payload_then_its_key() {
        let whole = Cut {
            payload: 1_000,
            key: 2_000,
        };
        let steps: Vec<Cut> = std::iter::successors(Some(whole), |c| c.smaller(100)).collect();
        let sizes: Vec<(usize, usize)> = steps.iter().map(|c| (c.payload, c.key)).collect();
        assert_eq!(
            sizes,
            [(1_000, 2_000), (100, 2_000), (0, 2_000), (0, 100), (0, 0)]
        );
        let small = Cut {
            payload: 50,
            key: 0,
        };
        assert_eq!(small.smaller(100).map(|c| c.payload), Some(0));
    }
}
