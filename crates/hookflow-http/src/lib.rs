//! hookflow's outbound HTTP. [`DeliveryClient::attempt`] makes exactly one request and
//! reports what happened as an [`hookflow_core::AttemptReport`]; the delivery workflow owns
//! every retry. The client never follows redirects and never connects to a loopback,
//! private, link-local, multicast or unspecified address unless its host is allow-listed.

mod client;
mod retry_after;
mod ssrf;

pub use client::{AttemptRequest, DeliveryClient, HttpSettings};
pub use ssrf::{AddressGuard, is_forbidden_ip};
