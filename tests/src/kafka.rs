//! Producing test messages and reading the dead-letter topic.

use std::time::Duration;

use rdkafka::{
    ClientConfig, Message,
    consumer::{Consumer, StreamConsumer},
    message::Headers,
    producer::{FutureProducer, FutureRecord},
};

/// Produces raw payloads to `topic`, in order, each acknowledged before the next. Messages
/// up to 10 MB are allowed, as an events topic configured for large events would.
pub async fn produce(brokers: &str, topic: &str, payloads: &[Vec<u8>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    for payload in payloads {
        producer
            .send(
                FutureRecord::<(), [u8]>::to(topic).payload(payload.as_slice()),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// A message read back, with its headers.
#[derive(Debug)]
pub struct ReadMessage {
    /// The key (empty when it has none).
    pub key: Vec<u8>,
    /// The payload.
    pub payload: Vec<u8>,
    /// Headers as (name, value) pairs.
    pub headers: Vec<(String, String)>,
}

impl ReadMessage {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads every message of `topic` that arrives within `window` (from the beginning).
pub async fn read_all(brokers: &str, topic: &str, window: Duration) -> Vec<ReadMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", crate::unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok(message)) = tokio::time::timeout_at(deadline, consumer.recv()).await {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        messages.push(ReadMessage {
            key: message.key().unwrap_or_default().to_vec(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    messages
}

/// Produces raw payloads to `topic` in batches: every message is handed to the producer
/// before any is acknowledged, keyed by `keys` (which spread them over the partitions), and
/// the producer lingers so that several go in one produce request, as an upstream pipeline
/// under load sends them.
pub async fn produce_batched(brokers: &str, topic: &str, messages: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "200")
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    let sends = messages.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic)
                .key(key.as_str())
                .payload(payload.as_slice()),
            Duration::from_secs(10),
        )
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| e).expect("produce");
    }
}
