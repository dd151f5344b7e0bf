//! hookflow on Temporal. One [`workflow::DeliveryWorkflow`] per (event, destination) pair,
//! started by [`starter::TemporalScheduler`] under the delivery id so a duplicate start is a
//! no-op; the workflow runs one [`activities::DeliveryActivities::attempt`] per HTTP attempt
//! and owns the retry schedule on durable timers. [`ownership`] finds which workflow carries a
//! team's delivery when another team's holds its id; [`deliveries`] lists and stops them
//! for the admin API; [`recovery`] runs failed ones again.

pub mod actions;
pub mod activities;
pub mod codec;
pub mod connection;
pub mod deliveries;
pub mod erasure;
pub mod ownership;
pub mod recovery;
pub mod search_attributes;
pub mod starter;
pub mod worker;
pub mod workflow;

pub use connection::{TemporalError, TemporalSettings, connect};
pub use starter::TemporalScheduler;
pub use temporalio_client::Client;
