//! hookflow's outbound HTTP. [`DeliveryClient::send`] makes exactly one request and
//! reports what happened as an [`hookflow_core::AttemptReport`]; the delivery workflow owns
//! every retry. The client never follows redirects and never connects to a loopback,
//! private, link-local, multicast or unspecified address unless its host is allow-listed.
//!
//! [`isolation`] keeps endpoints apart: per-endpoint concurrency caps, rate limits and
//! circuit breakers shared between workers through [`RedisLink`]. [`ActivityMemo`] keeps a
//! local activity's effect (a request sent) from happening twice when its workflow task is
//! retried.

mod activity_memo;
mod client;
pub mod egress;
pub mod isolation;
mod oauth2;
mod per_destination;
mod retry_after;
mod ssrf;

pub use activity_memo::ActivityMemo;
pub use client::{AttemptRequest, DeliveryClient, HttpSettings};
pub use ssrf::{AddressGuard, is_forbidden_ip};
