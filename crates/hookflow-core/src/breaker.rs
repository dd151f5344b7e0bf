//! The circuit breaker of one endpoint, as a pure state machine over explicit timestamps.
//!
//! Closed → open when, in a rolling window, at least `min_attempts` attempts were made and
//! at least `failure_ratio` of them failed. Open for a cooldown that doubles on every trip
//! in a row, up to `max_cooldown_ms`. Then half-open: exactly one attempt (the probe) is let
//! through, holding a lease so that a probe whose worker died does not wedge the breaker; a
//! successful probe closes it, a failed one re-opens it with a longer cooldown.
//!
//! The state is plain serializable data and every method takes the time as an argument, so
//! the same code runs on a worker's local copy, on the copy shared through Redis (read,
//! changed here, written back with compare-and-set), and in tests on an invented clock.

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// When a breaker trips and how long it stays open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerPolicy {
    /// Length of the rolling window of attempt results, in milliseconds.
    pub window_ms: u64,
    /// Fewest attempts in the window before the failure ratio can trip the breaker.
    pub min_attempts: u32,
    /// Share of failed attempts (0 to 1) in the window that trips the breaker.
    pub failure_ratio: f64,
    /// Cooldown after the first trip, in milliseconds; doubled on every trip in a row.
    pub cooldown_ms: u64,
    /// The longest cooldown, in milliseconds.
    pub max_cooldown_ms: u64,
}

/// The longest first cooldown a policy may set: 7 days.
pub const MAX_COOLDOWN_MS: u64 = 7 * 24 * 3_600 * 1_000;

impl Default for BreakerPolicy {
    /// Trips at 50% failures of at least 10 attempts in 30 s; open for 5 s, doubling to 5 min.
    fn default() -> Self {
        BreakerPolicy {
            window_ms: 30_000,
            min_attempts: 10,
            failure_ratio: 0.5,
            cooldown_ms: 5_000,
            max_cooldown_ms: 300_000,
        }
    }
}

impl BreakerPolicy {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.window_ms == 0 {
            return Err(FieldError::new("window_ms", "must be at least 1"));
        }
        if self.min_attempts == 0 {
            return Err(FieldError::new("min_attempts", "must be at least 1"));
        }
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(FieldError::new(
                "failure_ratio",
                "must be above 0 and at most 1",
            ));
        }
        if !(1..=MAX_COOLDOWN_MS).contains(&self.cooldown_ms) {
            return Err(FieldError::new("cooldown_ms", "must be 1 ms to 7 days"));
        }
        if self.max_cooldown_ms < self.cooldown_ms {
            return Err(FieldError::new(
                "max_cooldown_ms",
                "must be at least cooldown_ms",
            ));
        }
        Ok(())
    }

    /// The cooldown of trip number `trips` in a row (1 for the first).
    pub fn cooldown_after(&self, trips: u32) -> u64 {
        crate::doubling::doubled(
            self.cooldown_ms,
            trips.saturating_sub(1),
            self.max_cooldown_ms,
        )
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Attempts go through; results are counted.
    #[default]
    Closed,
    /// Attempts are refused until the cooldown ends.
    Open,
    /// One probe is out; everything else is refused until it reports.
    HalfOpen,
}

impl Phase {
    /// Every phase, for metrics.
    pub const ALL: [Phase; 3] = [Phase::Closed, Phase::Open, Phase::HalfOpen];

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half_open",
        }
    }
}

/// Successes and failures counted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Attempts the endpoint answered without a failure status.
    pub successes: u32,
    /// Attempts that timed out, could not connect, or got 5xx or 429.
    pub failures: u32,
}

impl Counts {
    /// One attempt's result: a failure or not.
    pub fn one(failed: bool) -> Counts {
        if failed {
            Counts {
                successes: 0,
                failures: 1,
            }
        } else {
            Counts {
                successes: 1,
                failures: 0,
            }
        }
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: Counts) {
        self.successes = self.successes.saturating_add(other.successes);
        self.failures = self.failures.saturating_add(other.failures);
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.successes == 0 && self.failures == 0
    }
}

/// Attempt results in two adjacent fixed windows; the previous window is weighted by how
/// much of it still overlaps the rolling window ending now.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RollingCounts {
    /// Start of the current fixed window, in milliseconds since the epoch.
    pub start_ms: u64,
    /// Counts of the current fixed window.
    pub current: Counts,
    /// Counts of the fixed window before it.
    pub previous: Counts,
}

impl RollingCounts {
    fn roll(&mut self, window_ms: u64, now_ms: u64) {
        if now_ms < self.start_ms.saturating_add(window_ms) {
            return;
        }
        let windows_passed = (now_ms - self.start_ms) / window_ms;
        self.previous = if windows_passed == 1 {
            self.current
        } else {
            Counts::default()
        };
        self.current = Counts::default();
        self.start_ms += windows_passed * window_ms;
    }

    /// Weighted (successes, failures) in the window ending at `now_ms`.
    fn weighted(&self, window_ms: u64, now_ms: u64) -> (f64, f64) {
        let elapsed = now_ms.saturating_sub(self.start_ms).min(window_ms) as f64;
        let weight = 1.0 - elapsed / window_ms as f64;
        (
            self.current.successes as f64 + self.previous.successes as f64 * weight,
            self.current.failures as f64 + self.previous.failures as f64 * weight,
        )
    }
}

/// What the breaker says to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead (closed).
    Allow,
    /// Go ahead as the one half-open probe; report the result with
    /// [`BreakerState::record_probe`].
    Probe,
    /// Not before this time (milliseconds since the epoch).
    Deny {
        /// When the breaker may admit again.
        until_ms: u64,
    },
}

/// A change of phase, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The phase before.
    pub from: Phase,
    /// The phase after.
    pub to: Phase,
}

/// One endpoint's breaker.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BreakerState {
    /// Where it is.
    pub phase: Phase,
    /// Results counted while closed.
    pub window: RollingCounts,
    /// Trips in a row without a successful probe; sets the cooldown.
    pub trips: u32,
    /// Open: end of the cooldown. Half-open: end of the probe's lease. Milliseconds since
    /// the epoch.
    pub until_ms: u64,
    /// When it last tripped from closed (milliseconds since the epoch; 0 while closed). Kept
    /// through failed probes, so it says how long the endpoint has been fenced off. States
    /// written before the field existed read 0: the next trip sets it.
    #[serde(default)]
    pub opened_at_ms: u64,
}

impl BreakerState {
    /// How long it has been open or half-open at `now_ms`; `None` while closed (or when
    /// the trip time is unknown: a state written before it was recorded).
    pub fn open_for_ms(&self, now_ms: u64) -> Option<u64> {
        (self.phase != Phase::Closed && self.opened_at_ms != 0)
            .then(|| now_ms.saturating_sub(self.opened_at_ms))
    }

    /// What an attempt would be told now, without changing anything: `None` when the answer
    /// needs a change of state (the cooldown or a probe's lease is over, so this attempt may
    /// become the probe), which must then go through [`BreakerState::admit`] on the shared
    /// copy.
    pub fn peek(&self, now_ms: u64) -> Option<Admission> {
        match self.phase {
            Phase::Closed => Some(Admission::Allow),
            Phase::Open | Phase::HalfOpen if now_ms < self.until_ms => Some(Admission::Deny {
                until_ms: self.until_ms,
            }),
            Phase::Open | Phase::HalfOpen => None,
        }
    }

    /// Admits or refuses one attempt at `now_ms`. Once the cooldown (or the previous probe's
    /// lease) is over, the first caller becomes the probe and holds it for `probe_lease_ms`.
    pub fn admit(&mut self, now_ms: u64, probe_lease_ms: u64) -> (Admission, Option<Transition>) {
        if let Some(admission) = self.peek(now_ms) {
            return (admission, None);
        }
        let from = self.phase;
        self.phase = Phase::HalfOpen;
        self.until_ms = now_ms.saturating_add(probe_lease_ms);
        let transition = (from != Phase::HalfOpen).then_some(Transition {
            from,
            to: Phase::HalfOpen,
        });
        (Admission::Probe, transition)
    }

    /// Counts results of ordinary (non-probe) attempts; may trip a closed breaker. Results
    /// arriving while open or half-open come from attempts admitted before the trip and
    /// are ignored.
    pub fn record(
        &mut self,
        policy: &BreakerPolicy,
        now_ms: u64,
        counts: Counts,
    ) -> Option<Transition> {
        if self.phase != Phase::Closed {
            return None;
        }
        if self.window.start_ms == 0 {
            self.window.start_ms = now_ms;
        }
        self.window.roll(policy.window_ms, now_ms);
        self.window.current.add(counts);
        let (successes, failures) = self.window.weighted(policy.window_ms, now_ms);
        let total = successes + failures;
        if total >= f64::from(policy.min_attempts) && failures / total >= policy.failure_ratio {
            return Some(self.trip(policy, now_ms));
        }
        None
    }

    /// Reports the probe's result: success closes the breaker, failure re-opens it with the
    /// next, longer cooldown. Ignored unless half-open.
    pub fn record_probe(
        &mut self,
        policy: &BreakerPolicy,
        now_ms: u64,
        failed: bool,
    ) -> Option<Transition> {
        if self.phase != Phase::HalfOpen {
            return None;
        }
        if failed {
            return Some(self.trip(policy, now_ms));
        }
        *self = BreakerState::default();
        Some(Transition {
            from: Phase::HalfOpen,
            to: Phase::Closed,
        })
    }

    fn trip(&mut self, policy: &BreakerPolicy, now_ms: u64) -> Transition {
        let from = self.phase;
        self.trips = self.trips.saturating_add(1);
        if from == Phase::Closed || self.opened_at_ms == 0 {
            self.opened_at_ms = now_ms;
        }
        self.phase = Phase::Open;
        self.until_ms = now_ms.saturating_add(policy.cooldown_after(self.trips));
        self.window = RollingCounts::default();
        Transition {
            from,
            to: Phase::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: u64 = 2_000;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            window_ms: 10_000,
            min_attempts: 4,
            failure_ratio: 0.5,
            cooldown_ms: 1_000,
            max_cooldown_ms: 3_000,
        }
    }

    fn failures(n: u32) -> Counts {
        Counts {
            successes: 0,
            failures: n,
        }
    }

    fn successes(n: u32) -> Counts {
        Counts {
            successes: n,
            failures: 0,
        }
    }

    fn open_at(now: u64) -> BreakerState {
        let mut b = BreakerState::default();
        b.record(&policy(), now, failures(4));
        assert_eq!(b.phase, Phase::Open);
        b
    }

    #[test]
    fn stays_closed_below_the_minimum_attempts_or_the_ratio() {
        let p = policy();
        let mut b = BreakerState::default();
        assert_eq!(b.record(&p, 1_000, failures(3)), None, "3 < min_attempts");
        assert_eq!(b.record(&p, 1_001, successes(4)), None, "3 of 7 < 50%");
        assert_eq!(b.phase, Phase::Closed);
        assert_eq!(b.admit(1_002, LEASE), (Admission::Allow, None));
    }

    #[test]
    fn trips_at_the_failure_ratio_and_refuses_until_the_cooldown_ends() {
        let p = policy();
        let mut b = BreakerState::default();
        b.record(&p, 1_000, successes(2));
        let t = b.record(&p, 1_500, failures(2));
        assert_eq!(
            t,
            Some(Transition {
                from: Phase::Closed,
                to: Phase::Open
            })
        );
        assert_eq!((b.phase, b.until_ms, b.trips), (Phase::Open, 2_500, 1));
        assert_eq!(b.peek(2_499), Some(Admission::Deny { until_ms: 2_500 }));
        assert_eq!(
            b.admit(2_499, LEASE),
            (Admission::Deny { until_ms: 2_500 }, None)
        );
        assert_eq!(
            b.peek(2_500),
            None,
            "the cooldown is over: a probe must be claimed"
        );
    }

    #[test]
    fn old_results_leave_the_rolling_window() {
        let p = policy();
        let mut b = BreakerState::default();
        b.record(&p, 1_000, failures(3));
        // Two windows later the three failures no longer count: one more is 1 of 1 < 4.
        assert_eq!(b.record(&p, 21_000, failures(1)), None);
        // Half a window after a window of 3 failures, they count half: 1.5 + 2 = 3.5 < 4.
        let mut b = BreakerState::default();
        b.record(&p, 1_000, failures(3));
        assert_eq!(b.record(&p, 16_000, failures(2)), None);
        assert!(b.record(&p, 16_000, failures(1)).is_some(), "1.5 + 3 >= 4");
    }

    #[test]
    fn open_time_counts_from_the_first_trip_through_failed_probes_until_closed() {
        let p = policy();
        let mut b = open_at(1_000);
        assert_eq!(b.open_for_ms(1_500), Some(500));
        assert_eq!(b.admit(2_000, LEASE).0, Admission::Probe);
        assert_eq!(b.open_for_ms(2_500), Some(1_500), "half-open still counts");
        b.record_probe(&p, 3_000, true);
        assert_eq!(b.phase, Phase::Open);
        assert_eq!(
            b.open_for_ms(4_000),
            Some(3_000),
            "a failed probe keeps the trip time"
        );
        assert_eq!(b.admit(6_000, LEASE).0, Admission::Probe);
        b.record_probe(&p, 6_100, false);
        assert_eq!((b.phase, b.open_for_ms(7_000)), (Phase::Closed, None));
        // A state written before the field existed reads 0: unknown until its next trip.
        let mut old: BreakerState =
            serde_json::from_str(r#"{"phase":"open","window":{"start_ms":0,"previous":{"successes":0,"failures":0},"current":{"successes":0,"failures":0}},"trips":1,"until_ms":5000}"#)
                .expect("a state without opened_at_ms");
        assert_eq!(old.open_for_ms(4_000), None);
        old.admit(5_000, LEASE);
        old.record_probe(&p, 5_100, true);
        assert_eq!(old.open_for_ms(6_100), Some(1_000));
    }

    #[test]
    fn exactly_one_probe_after_the_cooldown() {
        let mut b = open_at(1_000);
        let (first, t) = b.admit(2_000, LEASE);
        assert_eq!(first, Admission::Probe);
        assert_eq!(
            t,
            Some(Transition {
                from: Phase::Open,
                to: Phase::HalfOpen
            })
        );
        assert_eq!(
            b.admit(2_001, LEASE),
            (Admission::Deny { until_ms: 4_000 }, None),
            "a second attempt waits for the probe"
        );
        assert_eq!(b.admit(3_999, LEASE).0, Admission::Deny { until_ms: 4_000 });
    }

    #[test]
    fn a_lost_probe_lets_another_through_after_its_lease() {
        let mut b = open_at(1_000);
        assert_eq!(b.admit(2_000, LEASE).0, Admission::Probe);
        assert_eq!(b.admit(4_000, LEASE), (Admission::Probe, None));
        assert_eq!(b.until_ms, 6_000);
    }

    #[test]
    fn a_successful_probe_closes_and_resets() {
        let p = policy();
        let mut b = open_at(1_000);
        b.admit(2_000, LEASE);
        assert_eq!(
            b.record_probe(&p, 2_100, false),
            Some(Transition {
                from: Phase::HalfOpen,
                to: Phase::Closed
            })
        );
        assert_eq!(b, BreakerState::default());
        assert_eq!(b.admit(2_101, LEASE).0, Admission::Allow);
    }

    #[test]
    fn a_failed_probe_reopens_with_a_doubled_cooldown_up_to_the_cap() {
        let p = policy();
        let mut b = open_at(1_000); // trip 1: 1 s
        b.admit(2_000, LEASE);
        assert_eq!(
            b.record_probe(&p, 2_000, true),
            Some(Transition {
                from: Phase::HalfOpen,
                to: Phase::Open
            })
        );
        assert_eq!((b.trips, b.until_ms), (2, 4_000), "trip 2: 2 s");
        b.admit(4_000, LEASE);
        b.record_probe(&p, 4_000, true);
        assert_eq!(
            (b.trips, b.until_ms),
            (3, 7_000),
            "trip 3: 4 s capped to 3 s"
        );
        b.admit(7_000, LEASE);
        b.record_probe(&p, 7_000, false);
        assert_eq!(b.trips, 0, "closing forgets the trips");
        b.record(&p, 8_000, failures(4));
        assert_eq!(
            b.until_ms, 9_000,
            "the next trip starts from the first cooldown"
        );
    }

    #[test]
    fn results_of_attempts_admitted_before_a_trip_are_ignored() {
        let p = policy();
        let mut b = open_at(1_000);
        assert_eq!(b.record(&p, 1_100, successes(50)), None);
        assert_eq!(b.phase, Phase::Open);
        assert_eq!(b.record_probe(&p, 1_100, false), None, "no probe is out");
        assert_eq!(b.phase, Phase::Open);
    }

    #[test]
    fn policy_validation_names_the_field() {
        let mut p = policy();
        p.failure_ratio = 0.0;
        assert_eq!(p.validate().unwrap_err().field, "failure_ratio");
        let mut p = policy();
        p.max_cooldown_ms = 10;
        assert_eq!(p.validate().unwrap_err().field, "max_cooldown_ms");
        let mut p = policy();
        p.cooldown_ms = MAX_COOLDOWN_MS + 1;
        p.max_cooldown_ms = p.cooldown_ms;
        assert_eq!(p.validate().unwrap_err().field, "cooldown_ms");
        assert_eq!(policy().validate(), Ok(()));
    }
}
