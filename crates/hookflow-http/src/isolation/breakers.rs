//! Circuit breakers shared by every worker through Redis, with a short-lived local copy so
//! Redis is not on every attempt's path, and a per-process fallback while Redis is down.
//!
//! Each endpoint's [`BreakerState`] lives in one Redis hash (`<prefix>:breaker:<endpoint>`,
//! fields `v` = version and `s` = JSON state). A change is read → applied with the pure
//! state machine → written back by a Lua compare-and-set on the version, retried on
//! conflict ([`change_shared_json`]); so the one half-open probe is claimed by exactly one worker.
//!
//! On the attempt path: a closed breaker whose local copy is younger than `cache_ttl` admits
//! without Redis. Results are counted locally and flushed at the next sync, except when
//! they would trip the breaker or are a probe's result: those are written at once, so an
//! open breaker reaches the other workers within one round trip.
//!
//! A local copy unused for the idle time is dropped: with Redis the shared state stays
//! there and is read again on the next attempt; without Redis the local copy is the only
//! one, so it is dropped only when closed (a new entry starts closed).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use hookflow_core::{
    EndpointKey, Standing,
    breaker::{Admission, BreakerPolicy, BreakerState, Counts, Phase, Transition},
    sync::LockUnpoisoned,
};
use hookflow_telemetry::names;

// Breaker times are shared between hosts: wall-clock, not monotonic.
use hookflow_runtime::{LinkError, RedisLink, change_shared_json, unix_now_ms};

/// How long an untouched breaker's state stays in Redis.
const STATE_TTL_MS: u64 = 24 * 3_600 * 1_000;
struct Entry {
    state: BreakerState,
    synced_at: Option<Instant>,
    pending: Counts,
    last_used: Instant,
    /// Whether the last attempt this process made failed (`None`: none made yet).
    last_failed: Option<bool>,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            state: BreakerState::default(),
            synced_at: None,
            pending: Counts::default(),
            last_used: Instant::now(),
            last_failed: None,
        }
    }
}

/// The breakers of every endpoint this worker has attempted.
pub struct SharedBreakers {
    redis: Option<RedisLink>,
    cache_ttl: Duration,
    entries: Mutex<HashMap<EndpointKey, Entry>>,
}

impl SharedBreakers {
    /// Breakers shared through `redis` when given (else per process),
    /// trusting a local copy for `cache_ttl`.
    pub fn new(redis: Option<RedisLink>, cache_ttl: Duration) -> Self {
        // Every possible transition and phase is exported from the start at 0, so rates and
        // alerts see a series before the first trip rather than nothing.
        for phase in Phase::ALL {
            metrics::gauge!(names::BREAKERS, "state" => phase.as_str()).set(0.0);
        }
        for (from, to) in [
            (Phase::Closed, Phase::Open),
            (Phase::Open, Phase::HalfOpen),
            (Phase::HalfOpen, Phase::Closed),
            (Phase::HalfOpen, Phase::Open),
        ] {
            metrics::counter!(names::BREAKER_TRANSITIONS, "from" => from.as_str(), "to" => to.as_str())
                .absolute(0);
        }
        SharedBreakers {
            redis,
            cache_ttl,
            entries: Mutex::default(),
        }
    }

    /// Asks `endpoint`'s breaker whether an attempt may go now. A probe holds its lease for
    /// `probe_lease`, after which another worker may probe.
    pub async fn admit(
        &self,
        endpoint: &EndpointKey,
        policy: &BreakerPolicy,
        probe_lease: Duration,
    ) -> Admission {
        let now = unix_now_ms();
        let cached = {
            let mut entries = self.lock();
            let entry = entry(&mut entries, endpoint);
            let fresh = entry
                .synced_at
                .is_some_and(|at| at.elapsed() < self.cache_ttl);
            // An open breaker's refusal holds whatever its copy's age: nothing ends a
            // cooldown early. A half-open one's does not: another worker's probe may have
            // closed it since, and refusing on until the probe's lease ends would keep this
            // worker's deliveries back long after the endpoint recovered.
            let holds = |a: &Admission| {
                fresh
                    || self.redis.is_none()
                    || (matches!(a, Admission::Deny { .. }) && entry.state.phase == Phase::Open)
            };
            entry.state.peek(now).filter(holds)
        };
        if let Some(admission) = cached {
            return admission;
        }
        self.admit_now(endpoint, policy, probe_lease).await
    }

    /// Asks `endpoint`'s breaker as it is now, past this process's copy (read from Redis
    /// when shared), whether an attempt may go.
    pub async fn admit_now(
        &self,
        endpoint: &EndpointKey,
        policy: &BreakerPolicy,
        probe_lease: Duration,
    ) -> Admission {
        let lease_ms = probe_lease.as_millis() as u64;
        self.change(endpoint, policy, |state, now| state.admit(now, lease_ms))
            .await
    }

    /// `endpoint`'s standing from this process's copy, without Redis: struggling while its
    /// breaker is not closed or when the last attempt here failed.
    pub fn standing(&self, endpoint: &EndpointKey) -> Standing {
        let entries = self.lock();
        let Some(entry) = entries.get(endpoint) else {
            return Standing::Unknown;
        };
        match (entry.state.phase, entry.last_failed) {
            (Phase::Open | Phase::HalfOpen, _) | (Phase::Closed, Some(true)) => {
                Standing::Struggling
            }
            (Phase::Closed, Some(false)) => Standing::Healthy,
            (Phase::Closed, None) => Standing::Unknown,
        }
    }

    /// Reports the result of an attempt that `admit` let through as `admission`; `true`
    /// when it closed the breaker (a probe that succeeded).
    pub async fn record(
        &self,
        endpoint: &EndpointKey,
        policy: &BreakerPolicy,
        admission: Admission,
        failed: bool,
    ) -> bool {
        match admission {
            Admission::Probe => {
                entry(&mut self.lock(), endpoint).last_failed = Some(failed);
                self.change(endpoint, policy, |state, now| {
                    let transition = state.record_probe(policy, now, failed);
                    let closed = transition.is_some_and(|t| t.to == Phase::Closed);
                    (closed, transition)
                })
                .await
            }
            Admission::Allow => {
                let would_trip = {
                    let mut entries = self.lock();
                    let entry = entry(&mut entries, endpoint);
                    entry.last_failed = Some(failed);
                    entry.pending.add(Counts::one(failed));
                    let mut preview = entry.state.clone();
                    preview
                        .record(policy, unix_now_ms(), entry.pending)
                        .is_some()
                };
                if would_trip || self.redis.is_none() {
                    self.change(endpoint, policy, |_, _| ((), None)).await;
                }
                false
            }
            Admission::Deny { .. } => false,
        }
    }

    /// Applies the pending counts and then `op` to the shared state (or, without Redis, to
    /// the local one), keeps the result as the local copy and reports transitions.
    async fn change<R>(
        &self,
        endpoint: &EndpointKey,
        policy: &BreakerPolicy,
        mut op: impl FnMut(&mut BreakerState, u64) -> (R, Option<Transition>),
    ) -> R {
        let pending = {
            let mut entries = self.lock();
            std::mem::take(&mut entry(&mut entries, endpoint).pending)
        };
        let mut apply = |state: &mut BreakerState, now: u64| {
            let tripped = state.record(policy, now, pending);
            let (result, transition) = op(state, now);
            (result, [tripped, transition])
        };
        if let Some(redis) = &self.redis {
            match self.change_shared(redis, endpoint, &mut apply).await {
                Ok((state, result, transitions)) => {
                    self.keep(endpoint, state, transitions);
                    return result;
                }
                Err(error) => {
                    tracing::debug!(%error, endpoint = %endpoint, "breaker change applied locally");
                }
            }
        }
        let mut entries = self.lock();
        let entry = entry(&mut entries, endpoint);
        let mut state = entry.state.clone();
        let (result, transitions) = apply(&mut state, unix_now_ms());
        entry.set_state(state);
        drop(entries);
        report(endpoint, transitions);
        result
    }

    async fn change_shared<R>(
        &self,
        redis: &RedisLink,
        endpoint: &EndpointKey,
        apply: &mut impl FnMut(&mut BreakerState, u64) -> (R, [Option<Transition>; 2]),
    ) -> Result<(BreakerState, R, [Option<Transition>; 2]), LinkError> {
        let key = redis.key(&["breaker", endpoint.as_str()]);
        let (after, (result, transitions)) =
            change_shared_json(redis, &key, STATE_TTL_MS, |state: &mut BreakerState| {
                apply(state, unix_now_ms())
            })
            .await?;
        Ok((after, result, transitions))
    }

    fn keep(
        &self,
        endpoint: &EndpointKey,
        state: BreakerState,
        transitions: [Option<Transition>; 2],
    ) {
        let mut entries = self.lock();
        let entry = entry(&mut entries, endpoint);
        entry.set_state(state);
        entry.synced_at = Some(Instant::now());
        report(endpoint, transitions);
    }

    /// The `k` endpoints whose breakers have been open longest, with how long (longest
    /// first), from this process's copies. Only copies within the cooldown or probe lease
    /// they know of count: past it, another worker may have closed the breaker since, so a
    /// closed breaker is reported at most one cooldown after it closed.
    pub fn longest_open(&self, k: usize) -> Vec<(EndpointKey, Duration)> {
        let now = unix_now_ms();
        let mut open: Vec<(EndpointKey, Duration)> = self
            .lock()
            .iter()
            .filter(|(_, entry)| now < entry.state.until_ms)
            .filter_map(|(endpoint, entry)| {
                let open_for = entry.state.open_for_ms(now)?;
                Some((endpoint.clone(), Duration::from_millis(open_for)))
            })
            .collect();
        open.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        open.truncate(k);
        open
    }

    /// Drops the local copies unused for `idle` (without Redis: only closed ones); how
    /// many are left.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let shared = self.redis.is_some();
        let mut entries = self.lock();
        entries.retain(|_, entry| {
            let keep =
                entry.last_used.elapsed() < idle || !(shared || entry.state.phase == Phase::Closed);
            if !keep {
                metrics::gauge!(names::BREAKERS, "state" => entry.state.phase.as_str())
                    .decrement(1.0);
            }
            keep
        });
        entries.shrink_to_fit();
        entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointKey, Entry>> {
        self.entries.lock_unpoisoned()
    }
}

/// The entry of `endpoint`, marked used now; a new one counts as a closed breaker in the
/// gauge.
fn entry<'a>(
    entries: &'a mut HashMap<EndpointKey, Entry>,
    endpoint: &EndpointKey,
) -> &'a mut Entry {
    let entry = entries.entry(endpoint.clone()).or_insert_with(|| {
        metrics::gauge!(names::BREAKERS, "state" => Phase::Closed.as_str()).increment(1.0);
        Entry::default()
    });
    entry.last_used = Instant::now();
    entry
}

impl Entry {
    /// Replaces the local copy, moving the endpoint between the gauge's phases (kept up to
    /// date on every change instead of recounted, so a change costs the same with many
    /// endpoints).
    fn set_state(&mut self, state: BreakerState) {
        if state.phase != self.state.phase {
            metrics::gauge!(names::BREAKERS, "state" => self.state.phase.as_str()).decrement(1.0);
            metrics::gauge!(names::BREAKERS, "state" => state.phase.as_str()).increment(1.0);
        }
        self.state = state;
    }
}

fn report(endpoint: &EndpointKey, transitions: [Option<Transition>; 2]) {
    for t in transitions.into_iter().flatten() {
        metrics::counter!(names::BREAKER_TRANSITIONS, "from" => t.from.as_str(), "to" => t.to.as_str())
            .increment(1);
        tracing::warn!(endpoint = %endpoint, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trips at half of `min_attempts` or more failed, open for a minute.
    fn policy(min_attempts: u32) -> BreakerPolicy {
        BreakerPolicy {
            window_ms: 30_000,
            min_attempts,
            failure_ratio: 0.5,
            cooldown_ms: 60_000,
            max_cooldown_ms: 60_000,
        }
    }

    #[tokio::test]
    async fn an_endpoints_standing_follows_its_last_attempt_and_its_breaker() {
        let breakers = SharedBreakers::new(None, Duration::from_secs(1));
        let policy = policy(3);
        let endpoint = EndpointKey::custom(1, "e").expect("key");
        let lease = Duration::from_secs(5);
        assert_eq!(breakers.standing(&endpoint), Standing::Unknown);
        let attempt = async |failed| {
            let admission = breakers.admit(&endpoint, &policy, lease).await;
            breakers.record(&endpoint, &policy, admission, failed).await;
        };
        attempt(false).await;
        assert_eq!(breakers.standing(&endpoint), Standing::Healthy);
        attempt(true).await;
        assert_eq!(breakers.standing(&endpoint), Standing::Struggling);
        attempt(false).await;
        assert_eq!(breakers.standing(&endpoint), Standing::Healthy);
        // Two failures more trip it: struggling while open, whatever the last attempt was.
        attempt(true).await;
        attempt(true).await;
        let refused = breakers.admit(&endpoint, &policy, lease).await;
        assert!(matches!(refused, Admission::Deny { .. }));
        breakers.record(&endpoint, &policy, refused, false).await;
        assert_eq!(breakers.standing(&endpoint), Standing::Struggling);
    }

    #[tokio::test]
    async fn the_longest_open_breakers_are_named_longest_first_and_closed_ones_not() {
        let breakers = SharedBreakers::new(None, Duration::from_secs(1));
        let policy = policy(2);
        let lease = Duration::from_secs(5);
        let key = |name: &str| EndpointKey::custom(7, name).expect("key");
        let trip = async |endpoint: &EndpointKey, failed: bool| {
            for _ in 0..2 {
                let admission = breakers.admit(endpoint, &policy, lease).await;
                breakers.record(endpoint, &policy, admission, failed).await;
            }
        };
        trip(&key("first"), true).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        trip(&key("second"), true).await;
        trip(&key("third"), true).await;
        trip(&key("healthy"), false).await;

        let named = breakers.longest_open(2);
        let names: Vec<&str> = named.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["team=7 first", "team=7 second"]);
        assert!(named[0].1 >= named[1].1 + Duration::from_millis(20));
        assert_eq!(
            breakers.longest_open(10).len(),
            3,
            "the closed breaker is not named"
        );
    }

    #[tokio::test]
    async fn without_redis_only_closed_breakers_are_evicted() {
        let breakers = SharedBreakers::new(None, Duration::from_secs(1));
        let policy = policy(2);
        let (failing, healthy) = (
            EndpointKey::custom(1, "failing").expect("key"),
            EndpointKey::custom(1, "healthy").expect("key"),
        );
        let lease = Duration::from_secs(5);
        for (endpoint, failed) in [(&failing, true), (&healthy, false)] {
            for _ in 0..2 {
                let admission = breakers.admit(endpoint, &policy, lease).await;
                breakers.record(endpoint, &policy, admission, failed).await;
            }
        }
        assert!(matches!(
            breakers.admit(&failing, &policy, lease).await,
            Admission::Deny { .. }
        ));
        assert_eq!(
            breakers.evict_idle(Duration::from_secs(60)),
            2,
            "not idle yet"
        );
        assert_eq!(
            breakers.evict_idle(Duration::ZERO),
            1,
            "the open breaker is this process's only copy: kept"
        );
        assert!(matches!(
            breakers.admit(&failing, &policy, lease).await,
            Admission::Deny { .. }
        ));
    }
}
