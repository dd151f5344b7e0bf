//! Destinations: where a team wants its action-matched events delivered, and which of them
//! match a given event.
//!
//! - this file: the validated model ([`Destination`]) and why a destination is refused;
//! - [`spec`]: the wire form, as written in a destinations file or sent to the admin API,
//!   and its redaction;
//! - [`validate`]: from a spec to a destination, naming the field at fault;
//! - [`catalog`]: sets of destinations, looked up by team and id, swapped whole on reload.

mod catalog;
mod spec;
#[cfg(test)]
mod tests;
mod validate;

use url::Url;
use uuid::Uuid;

pub use catalog::{DestinationCatalog, DestinationSet, LiveDestinations, specs_from_toml};
pub use spec::{DestinationSpec, OAuth2Spec};
pub use validate::{ValidationRules, is_valid_destination_id};

use crate::{
    breaker::BreakerPolicy,
    credentials::{OAuth2Client, SecretHeaders, SigningSecret},
    endpoint::{EndpointKey, EndpointLimits},
    event::{ActionMatchedEvent, ActionRef},
    format::Format,
    retry::RetryPolicy,
    tls::DestinationTls,
};

/// Default per-attempt timeout when a destination sets none.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The longest per-attempt timeout a destination may ask for.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// The longest a destination may ask to fail before it is disabled: 30 days.
pub const MAX_AUTO_DISABLE_AFTER_MS: u64 = 30 * 86_400_000;

/// One destination of one team.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// Unique id; part of every delivery id (`[A-Za-z0-9_.-]`, 1 to 64 characters).
    pub id: String,
    /// The destination's immutable identity, assigned by the PostgreSQL catalog when it is
    /// created (a file names one only if it copies it). Ids are freed on delete and may be
    /// taken again, by any team; a uid never is, so a deleted and recreated destination is
    /// another one.
    pub uid: Option<Uuid>,
    /// The team whose events go here.
    pub team_id: i64,
    /// Where deliveries are POSTed.
    pub url: Url,
    /// Action ids this destination wants; empty means every action of the team.
    pub actions: Vec<i64>,
    /// Whether deliveries go out.
    pub state: DestinationState,
    /// The body's format.
    pub format: Format,
    /// The message template of the messaging formats (the default when `None`).
    pub template: Option<String>,
    /// Extra request headers, for example an auth header; treated as secrets.
    pub headers: SecretHeaders,
    /// Signing secrets: the current one first, then the previous one during a rotation.
    /// Without any, deliveries are sent unsigned.
    pub secrets: Vec<SigningSecret>,
    /// Total timeout of one attempt, in milliseconds.
    pub timeout_ms: u64,
    /// The endpoint whose limits and breaker this destination shares.
    pub endpoint: EndpointKey,
    /// The destination's own limits for its endpoint, where it sets them.
    pub limits: LimitOverrides,
    /// The destination's own retry schedule, where it sets one.
    pub retry_schedule_ms: Option<Vec<u64>>,
    /// The destination's own maximum delivery age, where it sets one.
    pub max_age_ms: Option<u64>,
    /// How long its endpoint must fail every attempt before it is disabled, where it sets
    /// its own ([`crate::streak`]).
    pub auto_disable_after_ms: Option<u64>,
    /// The deployment's named egress proxy its deliveries leave through (`http.proxies`);
    /// the deployment's default proxy, if any, when `None`.
    pub proxy: Option<Box<str>>,
    /// Its TLS options: the client certificate it presents, the CAs it trusts.
    pub tls: Option<Box<DestinationTls>>,
    /// Its OAuth2 client: each attempt carries a bearer token the client got.
    pub oauth2: Option<Box<OAuth2Client>>,
    /// Whether it is the team's operational webhook: it receives the team's destination
    /// notices ([`crate::notice`]) and no events, and is never auto-disabled (a notice of
    /// its own failing could only fail to reach it).
    pub notices: bool,
}

/// Whether a destination's deliveries go out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DestinationState {
    /// Deliveries go out.
    #[default]
    Enabled,
    /// Deliveries wait (deferred, not failed) until it is resumed.
    Paused,
    /// Deliveries end with outcome `destination_disabled`, for this reason.
    Disabled(String),
}

/// Limits a destination sets for its endpoint; the rest come from the deployment's
/// defaults. Destinations sharing an endpoint must agree on them.
///
/// Most destinations set none, and the catalog holds one of these per destination: the
/// values are boxed, and absent when none is set (8 bytes in place of 72).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LimitOverrides(Option<Box<LimitValues>>);

/// The values of [`LimitOverrides`]: each `None` where the deployment's default applies.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LimitValues {
    /// Requests per second across all workers.
    pub rate_per_second: Option<f64>,
    /// Burst across all workers.
    pub burst: Option<u32>,
    /// Attempts in flight per worker.
    pub max_in_flight: Option<u32>,
    /// The breaker's minimum attempts in its window.
    pub breaker_min_attempts: Option<u32>,
    /// The breaker's failure ratio.
    pub breaker_failure_ratio: Option<f64>,
    /// The breaker's first cooldown, milliseconds.
    pub breaker_cooldown_ms: Option<u64>,
}

impl LimitOverrides {
    /// Overrides of these values (none held when every value is `None`).
    pub fn new(values: LimitValues) -> LimitOverrides {
        LimitOverrides((values != LimitValues::default()).then(|| Box::new(values)))
    }

    /// The values, `None` where the deployment's default applies.
    pub fn values(&self) -> LimitValues {
        self.0.as_deref().copied().unwrap_or_default()
    }

    /// These overrides on top of the deployment's breaker policy (a longer first cooldown
    /// raises the cap with it).
    pub fn breaker_over(&self, defaults: &BreakerPolicy) -> BreakerPolicy {
        let overrides = self.values();
        let cooldown_ms = overrides
            .breaker_cooldown_ms
            .unwrap_or(defaults.cooldown_ms);
        BreakerPolicy {
            min_attempts: overrides
                .breaker_min_attempts
                .unwrap_or(defaults.min_attempts),
            failure_ratio: overrides
                .breaker_failure_ratio
                .unwrap_or(defaults.failure_ratio),
            cooldown_ms,
            max_cooldown_ms: defaults.max_cooldown_ms.max(cooldown_ms),
            ..defaults.clone()
        }
    }

    /// These overrides on top of `defaults`.
    pub fn over(&self, defaults: EndpointLimits) -> EndpointLimits {
        let overrides = self.values();
        EndpointLimits {
            rate_per_second: overrides
                .rate_per_second
                .unwrap_or(defaults.rate_per_second),
            burst: overrides.burst.unwrap_or(defaults.burst),
            max_in_flight: overrides.max_in_flight.unwrap_or(defaults.max_in_flight),
        }
    }
}

/// The longest wait of a retry schedule and the longest maximum age: 7 days.
pub const MAX_RETRY_MS: u64 = 7 * 24 * 3_600 * 1_000;
/// The most entries a retry schedule may have.
pub const MAX_RETRY_ENTRIES: usize = 30;

impl Destination {
    /// The host (`scheme://host:port`) the endpoint is on: what all teams send it at once
    /// is capped, and each team takes at most a share of that. Derived when asked, not
    /// held: the catalog keeps one destination per row.
    pub fn host(&self) -> EndpointKey {
        EndpointKey::of_url(&self.url)
    }

    /// Whether its client certificate, if it has one, is valid at `now` (unix seconds).
    /// Checked where a certificate is written (the admin API, `check-config`); a
    /// certificate already stored is read whatever its dates, so it expiring fails its
    /// deliveries with this error rather than removing the destination.
    pub fn check_certificate_current(&self, now: i64) -> Result<(), DestinationError> {
        match &self.tls {
            Some(tls) => tls
                .check_current(now)
                .map_err(|e| DestinationError::Invalid {
                    destination: self.id.clone(),
                    field: e.field.name(),
                    problem: e.problem,
                }),
            None => Ok(()),
        }
    }

    /// The deployment's retry policy with this destination's overrides.
    pub fn retry_policy(&self, deployment: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            schedule_ms: self
                .retry_schedule_ms
                .clone()
                .unwrap_or_else(|| deployment.schedule_ms.clone()),
            max_age_ms: self.max_age_ms.unwrap_or(deployment.max_age_ms),
            ..deployment.clone()
        }
    }

    /// The actions of `event` that this destination wants, or `None` when it wants none
    /// of them (or belongs to another team).
    pub fn matching_actions(&self, event: &ActionMatchedEvent) -> Option<Vec<ActionRef>> {
        if self.team_id != event.team_id || self.notices {
            return None;
        }
        let wanted: Vec<ActionRef> = event
            .matched_actions
            .iter()
            .filter(|action| self.actions.is_empty() || self.actions.contains(&action.id))
            .cloned()
            .collect();
        (!wanted.is_empty()).then_some(wanted)
    }
}

/// Why a destination, or a destinations file, was refused (by the file store, the Redis
/// store or the admin API).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    /// The file is not valid TOML of the expected shape.
    #[error("destinations file: {0}")]
    Syntax(String),
    /// One destination has an invalid field.
    #[error("destination {destination}: field `{field}` {problem}")]
    Invalid {
        /// The destination's id, or its position when the id itself is at fault.
        destination: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Two destinations share an id.
    #[error("destination id `{0}` is used more than once")]
    DuplicateId(String),
    /// Two destinations share an endpoint but set different limits for it.
    #[error(
        "destinations {first} and {second} share endpoint {endpoint} but set different limits; \
         give them the same rate_per_second, burst, max_in_flight and breaker_*, or their own \
         endpoint_key"
    )]
    ConflictingLimits {
        /// The shared endpoint.
        endpoint: String,
        /// The first destination of the endpoint.
        first: String,
        /// The destination that disagrees with it.
        second: String,
    },
}
