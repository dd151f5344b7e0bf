//! End-to-end tests against the real stack: a tansu broker and a Temporal dev server shared
//! by this binary, real HTTP receivers, and the real `hookflow` binary.

mod admin;
mod api_fuzz;
mod architecture;
mod auto_disable;
mod breaker_store;
mod cancel;
mod catalog;
mod codec;
mod configuration;
mod crash;
mod dashboards;
mod dead_letters;
mod delivery;
mod deployment;
mod egress;
mod erasure;
mod exactly_once;
mod faults;
mod health;
mod histories;
mod history;
mod isolation;
mod mtls;
mod oauth2;
mod outcomes;
mod recovery;
mod retries;
mod secrets;
mod signatures;
mod ssrf;
mod start_errors;
mod team_tokens;
mod tenancy;
