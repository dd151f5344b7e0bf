//! hookflow's Kafka side: the consumer that turns action-matched events into delivery
//! starts ([`consumer::run`]), the per-message logic ([`pipeline::Pipeline`]), offset
//! tracking that never commits past unfinished work ([`offsets::OffsetTracker`]), and the
//! dead-letter producer ([`dead_letter::DeadLetterProducer`]), and the publisher of per-team
//! delivery outcomes ([`outcomes::OutcomePublisher`]) and of destination notices
//! ([`notices::NoticePublisher`]), and the reader of a time range for
//! replays ([`range::RangeReader`]). Starts wait for a place in flight in the order of their
//! endpoint's standing ([`start_queue::StartQueue`]).

pub mod client;
pub mod consumer;
pub mod dead_letter;
pub mod notices;
pub mod offsets;
pub mod outcomes;
pub mod pipeline;
pub mod range;
pub mod settings;
pub mod start_gate;
pub mod start_queue;

pub use consumer::ConsumerError;
pub use pipeline::{MessageDisposition, Pipeline};
pub use settings::{KafkaSettings, OffsetReset};
