//! Endpoint isolation: what stands between a delivery attempt and its endpoint, so that a
//! slow, failing or rate-limiting endpoint costs every other endpoint nothing.
//!
//! [`EndpointGate::enter`] asks, in order, the endpoint's concurrency cap (this worker),
//! its rate limit (split across workers) and its circuit breaker (shared through Redis).
//! Any refusal is a [`Deferral`] returned at once: no request is made and no worker slot is
//! held; the workflow waits on a durable timer and tries again. Of the deliveries an open
//! breaker refuses, one per probe time comes back to probe; the others that can be woken
//! (a [`Waiter`]) are parked on the endpoint ([`BreakerWaiters`]) and wait up to the
//! breaker's longest cooldown: [`EndpointGate::leave`] reports the attempt's result to the
//! breaker and, when that closed it, hands back the deliveries still parked for the caller
//! to wake.
//! [`EndpointGate::evict_idle`] (run by [`EndpointGate::sweep`]) drops what the gate keeps for endpoints not attempted lately,
//! so memory follows the endpoints in use, not every endpoint ever seen.

mod breakers;
mod bulkhead;
mod disabled;
mod limiter;
mod streaks;
mod waiters;
mod workers;

use std::{
    fmt::Write as _,
    sync::{Arc, atomic::AtomicU32},
    time::Duration,
};

pub use breakers::SharedBreakers;
pub use bulkhead::{Bulkheads, Slot};
pub use disabled::{DisabledDestinations, Disablement, disabled_key};
use hookflow_core::{
    AttemptReport, AttemptVerdict, Deferral, DeferralReason, Destination, EndpointKey,
    EndpointLimits, EndpointStanding, FieldError, Standing,
    breaker::{Admission, BreakerPolicy},
};
use hookflow_telemetry::{
    names,
    ops::{LiveSeries, label_value},
};
pub use limiter::EndpointRateLimiter;
use serde::Deserialize;
pub use streaks::{AutoDisableSettings, FailureStreaks, Flushed};
pub use waiters::BreakerWaiters;
pub use workers::WorkerRegistry;

use hookflow_runtime::RedisLink;

/// A half-open probe's lease is its destination's timeout plus this, covering connect
/// time; after the lease another worker may probe.
const PROBE_LEASE_SLACK: Duration = Duration::from_secs(5);
/// What a parked delivery's wait leaves of its age, at least: the time the attempt that
/// parks it takes, so it never gives up in the task that parked it.
const AGE_MARGIN: Duration = Duration::from_secs(2);

/// `[isolation]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationSettings {
    /// Default requests per second of an endpoint, across all workers.
    pub rate_per_second: f64,
    /// Default burst of an endpoint, across all workers.
    pub burst: u32,
    /// Default attempts in flight per endpoint per worker.
    pub max_in_flight: u32,
    /// How long a worker trusts its copy of a shared closed breaker.
    #[serde(rename = "breaker_cache_ms", with = "hookflow_core::millis")]
    pub breaker_cache: Duration,
    /// How long an attempt at the concurrency cap waits in the worker for a place to free
    /// before it is deferred (at most 5 s: it runs inside a workflow task).
    #[serde(
        rename = "concurrency_wait_ms",
        with = "hookflow_core::millis",
        default = "default_concurrency_wait"
    )]
    pub concurrency_wait: Duration,
    /// How long an attempt refused by the concurrency cap waits.
    #[serde(rename = "concurrency_retry_ms", with = "hookflow_core::millis")]
    pub concurrency_retry: Duration,
    /// An endpoint not attempted for this long loses its local bulkhead, limiter and
    /// breaker copy (a shared breaker's state stays in Redis).
    #[serde(
        rename = "idle_eviction_ms",
        with = "hookflow_core::millis",
        default = "default_idle_eviction"
    )]
    pub idle_eviction: Duration,
    /// No longer read: every host's endpoints are kept per team (an earlier version kept
    /// them per team on these hosts only). Accepted so older files still load.
    #[serde(default)]
    pub shared_hosts: Option<Vec<String>>,
    /// Attempts in flight at once to one host, all teams together, per worker.
    #[serde(
        default = "default_host_max_in_flight",
        alias = "shared_host_max_in_flight"
    )]
    pub host_max_in_flight: u32,
    /// The most of a host's concurrency one team may take (0 to 1).
    #[serde(default = "default_host_team_share", alias = "shared_host_team_share")]
    pub host_team_share: f64,
    /// `[isolation.breaker]`
    pub breaker: BreakerPolicy,
}

fn default_host_max_in_flight() -> u32 {
    40
}

fn default_host_team_share() -> f64 {
    0.25
}

fn default_concurrency_wait() -> Duration {
    Duration::from_millis(250)
}

/// The longest [`IsolationSettings::concurrency_wait`]: well inside a workflow task's
/// timeout (10 s), which the wait runs in.
const MAX_CONCURRENCY_WAIT: Duration = Duration::from_secs(5);

fn default_idle_eviction() -> Duration {
    Duration::from_secs(10 * 60)
}

impl IsolationSettings {
    /// Checks `[isolation]` and `[isolation.breaker]`; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.default_limits().validate()?;
        self.breaker.validate().map_err(|e| {
            let field = match e.field {
                "window_ms" => "breaker.window_ms",
                "min_attempts" => "breaker.min_attempts",
                "failure_ratio" => "breaker.failure_ratio",
                "cooldown_ms" => "breaker.cooldown_ms",
                _ => "breaker.max_cooldown_ms",
            };
            FieldError::new(field, e.problem)
        })?;
        if self.concurrency_wait > MAX_CONCURRENCY_WAIT {
            return Err(FieldError::new(
                "concurrency_wait_ms",
                "must be at most 5000",
            ));
        }
        if self.host_max_in_flight == 0 {
            return Err(FieldError::new("host_max_in_flight", "must be at least 1"));
        }
        if !(self.host_team_share > 0.0 && self.host_team_share <= 1.0) {
            return Err(FieldError::new(
                "host_team_share",
                "must be above 0 and at most 1",
            ));
        }
        Ok(())
    }

    /// The most attempts one team may have in flight to one host, per worker: its share of
    /// the host's concurrency, at least one.
    pub fn team_share_of_host(&self) -> u32 {
        let share = f64::from(self.host_max_in_flight) * self.host_team_share;
        (share.ceil() as u32).clamp(1, self.host_max_in_flight.max(1))
    }

    /// The default limits of an endpoint.
    pub fn default_limits(&self) -> EndpointLimits {
        EndpointLimits {
            rate_per_second: self.rate_per_second,
            burst: self.burst,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// An attempt let through the gate; hand it back with [`EndpointGate::leave`].
pub struct Pass {
    admission: Admission,
    /// The endpoint's breaker policy, worked out once per attempt.
    policy: BreakerPolicy,
    _slot: Slot,
    /// The attempt's place in its host's bulkhead.
    _host_slot: Slot,
    _in_flight: InFlight,
}

/// One attempt in `hookflow_attempts_in_flight`, though it holds a place in two bulkheads.
struct InFlight;

impl InFlight {
    fn new() -> Self {
        metrics::gauge!(names::ATTEMPTS_IN_FLIGHT).increment(1);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(names::ATTEMPTS_IN_FLIGHT).decrement(1);
    }
}

/// A delivery that can be woken when its endpoint's breaker closes.
#[derive(Debug, Clone, Copy)]
pub struct Waiter<'a> {
    /// Its workflow id, which the closing attempt's worker signals.
    pub workflow_id: &'a str,
    /// How much of its maximum age is left: it must wake by itself within that.
    pub age_left: Duration,
    /// Whether it comes back from a wait for the breaker, so it may still be parked.
    pub after_breaker_wait: bool,
}

/// The concurrency caps, rate limiters and breakers of every endpoint.
pub struct EndpointGate {
    idle_eviction: Duration,
    host_max_in_flight: u32,
    team_share_of_host: u32,
    defaults: EndpointLimits,
    breaker: BreakerPolicy,
    endpoint_labels: bool,
    concurrency_wait: Duration,
    concurrency_retry: Duration,
    bulkheads: Bulkheads,
    limiter: EndpointRateLimiter,
    breakers: SharedBreakers,
    waiters: BreakerWaiters,
}

impl EndpointGate {
    /// A gate with `settings`, sharing breakers through `redis` when given and splitting
    /// rates by the live-worker count in `workers`.
    pub fn new(
        settings: &IsolationSettings,
        redis: Option<RedisLink>,
        workers: Arc<AtomicU32>,
    ) -> Self {
        for reason in DeferralReason::ALL {
            metrics::counter!(names::DEFERRALS, "reason" => reason.as_str()).absolute(0);
        }
        EndpointGate {
            idle_eviction: settings.idle_eviction,
            host_max_in_flight: settings.host_max_in_flight,
            team_share_of_host: settings.team_share_of_host(),
            defaults: settings.default_limits(),
            breaker: settings.breaker.clone(),
            endpoint_labels: false,
            concurrency_wait: settings.concurrency_wait,
            concurrency_retry: settings.concurrency_retry,
            bulkheads: Bulkheads::default(),
            limiter: EndpointRateLimiter::new(workers),
            breakers: SharedBreakers::new(redis.clone(), settings.breaker_cache),
            waiters: BreakerWaiters::new(redis),
        }
    }

    /// Also counts failed attempts per endpoint (`hookflow_endpoint_failures_total`), an
    /// unbounded label the operator must opt into (`telemetry.endpoint_labels`).
    pub fn with_endpoint_labels(mut self, on: bool) -> Self {
        self.endpoint_labels = on;
        self
    }

    /// Lets an attempt to `destination` through, or says how long to defer it. A `waiter`
    /// refused by an open breaker is parked on the endpoint and deferred past the probe
    /// (see [`EndpointGate::refused`]).
    pub async fn enter(
        &self,
        destination: &Destination,
        waiter: Option<Waiter<'_>>,
    ) -> Result<Pass, Deferral> {
        let endpoint = &destination.endpoint;
        // Back from a breaker wait (by its timer or a signal), a delivery leaves the parked
        // set first: from here this task may complete it, and a signal arriving meanwhile
        // would fail that completion.
        if let Some(waiter) = waiter.filter(|w| w.after_breaker_wait) {
            self.waiters.unpark(endpoint, waiter.workflow_id).await;
        }
        let limits = destination.limits.over(self.defaults);
        let at_cap = || deferred(DeferralReason::ConcurrencyCap, self.concurrency_retry);
        // A team's endpoint takes at most the team's share of its host, and all teams
        // together at most the host's cap.
        let max_in_flight = limits.max_in_flight.min(self.team_share_of_host);
        let slot = self
            .bulkheads
            .enter(endpoint, max_in_flight, self.concurrency_wait)
            .await
            .ok_or_else(at_cap)?;
        let host_slot = self
            .bulkheads
            .enter(
                &destination.host(),
                self.host_max_in_flight,
                self.concurrency_wait,
            )
            .await
            .ok_or_else(at_cap)?;
        if let Err(wait) = self.limiter.check(endpoint, &limits) {
            return Err(deferred(DeferralReason::RateLimited, wait));
        }
        let lease = Duration::from_millis(destination.timeout_ms) + PROBE_LEASE_SLACK;
        let policy = destination.limits.breaker_over(&self.breaker);
        let admission = match self.breakers.admit(endpoint, &policy, lease).await {
            Admission::Deny { until_ms } => {
                self.refused(endpoint, &policy, lease, until_ms, waiter)
                    .await?
            }
            admission => admission,
        };
        Ok(Pass {
            admission,
            policy,
            _slot: slot,
            _host_slot: host_slot,
            _in_flight: InFlight::new(),
        })
    }

    /// How a delivery refused by `endpoint`'s open breaker until `until_ms` waits. One that
    /// can be woken (`waiter`) and is not this process's probe for that time is parked until
    /// the breaker closes (see [`wait_for_close`]), unless that wait would outlast its age.
    /// Parked, it asks the breaker again: a probe may have closed it (and taken the parked
    /// deliveries) between the refusal and the parking, and nobody would wake it then; it
    /// goes ahead with that admission instead.
    async fn refused(
        &self,
        endpoint: &EndpointKey,
        policy: &BreakerPolicy,
        lease: Duration,
        until_ms: u64,
        waiter: Option<Waiter<'_>>,
    ) -> Result<Admission, Deferral> {
        let now = hookflow_runtime::unix_now_ms();
        let probe_in = Duration::from_millis(until_ms.saturating_sub(now));
        let refused = || deferred(DeferralReason::BreakerOpen, probe_in);
        let Some(waiter) = waiter else {
            return Err(refused());
        };
        let wait = wait_for_close(probe_in, policy, waiter.age_left);
        // Parked and then giving up in the same workflow task, it could be signalled while
        // that task completes it: only a wait it outlives, with a margin for the time the
        // attempt itself takes, parks it.
        let longest =
            Duration::from_millis(Deferral::longest_breaker_wait_ms(wait.as_millis() as u64));
        let outlives_age = longest + AGE_MARGIN > waiter.age_left;
        if outlives_age || self.waiters.claims_probe(endpoint, until_ms) {
            return Err(refused());
        }
        if !self.waiters.park(endpoint, waiter.workflow_id).await {
            return Err(refused());
        }
        match self.breakers.admit_now(endpoint, policy, lease).await {
            Admission::Deny { .. } => Err(deferred(DeferralReason::BreakerOpen, wait)),
            admission => {
                self.waiters.unpark(endpoint, waiter.workflow_id).await;
                Ok(admission)
            }
        }
    }

    /// Reports the result of an attempt that [`EndpointGate::enter`] let through. When it
    /// closed the endpoint's breaker, the workflow ids of the deliveries still parked for
    /// that, for the caller to wake; else none.
    pub async fn leave(
        &self,
        destination: &Destination,
        pass: Pass,
        report: &AttemptReport,
    ) -> Vec<String> {
        let failed = match report.verdict() {
            AttemptVerdict::EndpointFailing => true,
            AttemptVerdict::Delivered | AttemptVerdict::TryAgain | AttemptVerdict::Refused => false,
            // The request never left: nothing to learn about the endpoint.
            AttemptVerdict::NotSent => return Vec::new(),
        };
        if failed && self.endpoint_labels {
            let endpoint = destination.endpoint.to_string();
            metrics::counter!(names::ENDPOINT_FAILURES, "endpoint_key" => endpoint).increment(1);
        }
        let closed = self
            .breakers
            .record(&destination.endpoint, &pass.policy, pass.admission, failed)
            .await;
        if closed {
            self.waiters.take_parked(&destination.endpoint).await
        } else {
            Vec::new()
        }
    }
}

impl EndpointStanding for EndpointGate {
    /// The breaker's standing, and struggling while the endpoint is at its concurrency cap
    /// (a delivery started now would only wait or be deferred).
    fn standing(&self, endpoint: &EndpointKey) -> Standing {
        if self.bulkheads.is_full(endpoint) {
            return Standing::Struggling;
        }
        self.breakers.standing(endpoint)
    }
}

impl EndpointGate {
    /// Drops the bulkheads, limiters and breaker copies of endpoints not attempted for
    /// `idle` (each keeps what it must: attempts in flight, a bucket not yet refilled, an
    /// unshared breaker that is not closed); how many entries are left in all.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        self.bulkheads.evict_idle(idle)
            + self.limiter.evict_idle(idle)
            + self.breakers.evict_idle(idle)
            + self.waiters.evict_idle(idle)
    }

    /// Evicts idle entries every half of the configured idle time, until `shutdown`.
    pub async fn sweep(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let interval = (self.idle_eviction / 2).max(Duration::from_secs(1));
        hookflow_runtime::every(interval, &shutdown, || {
            let left = self.evict_idle(self.idle_eviction);
            tracing::debug!(entries = left, "idle endpoint state evicted");
            std::future::ready(())
        })
        .await;
    }
}

/// `hookflow_breaker_open_seconds`: the breakers this process knows open longest, by
/// endpoint, so an alert can name each endpoint fenced off too long.
impl LiveSeries for EndpointGate {
    fn render(&self, out: &mut String) {
        let name = names::BREAKER_OPEN_SECONDS;
        let _ = writeln!(
            out,
            "# HELP {name} How long each of the {} longest-open breakers this process knows has been open since it tripped.\n# TYPE {name} gauge",
            names::OPEN_BREAKERS_NAMED
        );
        for (endpoint, open_for) in self.breakers.longest_open(names::OPEN_BREAKERS_NAMED) {
            let _ = writeln!(
                out,
                "{name}{{endpoint_key=\"{}\"}} {:.3}",
                label_value(endpoint.as_str()),
                open_for.as_secs_f64()
            );
        }
    }
}

/// How long a delivery refused by an open breaker waits when the breaker's closing wakes it:
/// up to the breaker's longest cooldown, so an endpoint that stays down costs it one workflow
/// task per longest cooldown rather than one per probe; never less than until the probe. The
/// workflow adds a spread of up to half the wait, and the delivery must wake by itself
/// within its maximum age (less [`AGE_MARGIN`]), so the wait is at most two thirds
/// of that (unless the probe is later still; the delivery then gives up, as it would have).
fn wait_for_close(probe_in: Duration, policy: &BreakerPolicy, age_left: Duration) -> Duration {
    Duration::from_millis(policy.max_cooldown_ms)
        .min(age_left.saturating_sub(AGE_MARGIN) * 2 / 3)
        .max(probe_in)
}

fn deferred(reason: DeferralReason, wait: Duration) -> Deferral {
    Deferral {
        reason,
        wait_ms: wait.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use hookflow_core::{DestinationSpec, ValidationRules};

    use super::*;

    fn settings() -> IsolationSettings {
        IsolationSettings {
            rate_per_second: 1_000.0,
            burst: 1_000,
            max_in_flight: 10,
            breaker_cache: Duration::from_secs(1),
            concurrency_wait: Duration::ZERO,
            concurrency_retry: Duration::from_secs(1),
            idle_eviction: Duration::from_secs(60),
            shared_hosts: None,
            host_max_in_flight: 4,
            host_team_share: 0.5,
            breaker: BreakerPolicy::default(),
        }
    }

    fn destination(team_id: i64, id: &str) -> Destination {
        let spec: DestinationSpec = serde_json::from_value(serde_json::json!({
            "id": id, "team_id": team_id, "url": format!("https://hooks.example.com/{id}"),
        }))
        .expect("spec");
        spec.validate_one(&ValidationRules::default())
            .expect("valid")
    }

    #[tokio::test]
    async fn a_team_takes_at_most_its_share_of_a_hosts_concurrency() {
        let gate = EndpointGate::new(&settings(), None, Arc::new(AtomicU32::new(1)));
        let (a, b, c) = (
            destination(1, "a"),
            destination(2, "b"),
            destination(3, "c"),
        );
        assert_ne!(a.endpoint, b.endpoint, "one endpoint per team on a host");
        let first_a = gate.enter(&a, None).await.ok();
        let second_a = gate.enter(&a, None).await.ok();
        assert!(first_a.is_some() && second_a.is_some());
        let refused = gate.enter(&a, None).await.err().map(|d| d.reason);
        assert_eq!(
            refused,
            Some(DeferralReason::ConcurrencyCap),
            "team 1 has its half"
        );
        let team_b: Vec<Pass> = [
            gate.enter(&b, None).await.ok(),
            gate.enter(&b, None).await.ok(),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(team_b.len(), 2, "team 2 still gets its share");
        let refused = gate.enter(&c, None).await.err().map(|d| d.reason);
        assert_eq!(
            refused,
            Some(DeferralReason::ConcurrencyCap),
            "the host is full"
        );
        drop(first_a);
        assert!(
            gate.enter(&c, None).await.is_ok(),
            "a freed place goes to the next team"
        );
    }
}
