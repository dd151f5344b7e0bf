//! A destination's failure streak: how long its endpoint has failed every attempt, and
//! what that calls for: a warning once it has failed for the warning time, and an automatic
//! disable once it has failed for the disable time with at least the minimum attempts.
//!
//! Pure logic. Each worker counts its attempts in an [`AttemptBatch`] and now and then
//! applies the batch to the streak shared by every worker ([`FailureStreak::apply`]); a
//! success anywhere ends the streak, and so does a quiet spell as long as the warning time
//! (a destination paused, or without deliveries, for a day starts afresh). Each streak's
//! warning and disable are called for once, whichever worker applies the batch that
//! crosses the line, so one notice goes out.
//!
//! What counts ([`counts_as`]): a 2xx is a success; what the breaker counts against the
//! endpoint (5xx, 429, timeouts, refused connections) and what it refuses for good (3xx,
//! 4xx but 408) are failures; a 408 and a request never sent (the SSRF guard, an invalid
//! request) count for nothing.

use serde::{Deserialize, Serialize};

use crate::attempt::{AttemptReport, AttemptVerdict};

/// Whether `report` counts as a failure (`Some(true)`), a success (`Some(false)`), or not
/// at all (`None`) in its destination's streak.
pub fn counts_as(report: &AttemptReport) -> Option<bool> {
    match report.verdict() {
        AttemptVerdict::Delivered => Some(false),
        AttemptVerdict::EndpointFailing | AttemptVerdict::Refused => Some(true),
        AttemptVerdict::TryAgain | AttemptVerdict::NotSent => None,
    }
}

/// When a failing destination is warned about and disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreakPolicy {
    /// Failing this long (milliseconds) calls for a warning.
    pub warn_after_ms: u64,
    /// Failing this long (milliseconds), with at least `min_attempts`, disables it.
    pub disable_after_ms: u64,
    /// The failed attempts a disable needs at least.
    pub min_attempts: u64,
}

/// What one worker saw of a destination's attempts since its last flush: the last success,
/// and the failures after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptBatch {
    last_success_ms: Option<u64>,
    first_failure_ms: Option<u64>,
    last_failure_ms: u64,
    failures: u64,
}

impl AttemptBatch {
    /// Counts an attempt made at `at_ms` (milliseconds since the epoch).
    pub fn record(&mut self, at_ms: u64, failed: bool) {
        if failed {
            self.first_failure_ms.get_or_insert(at_ms);
            self.last_failure_ms = self.last_failure_ms.max(at_ms);
            self.failures += 1;
        } else {
            // The failures before a success are no part of any streak.
            self.last_success_ms = Some(self.last_success_ms.map_or(at_ms, |s| s.max(at_ms)));
            self.first_failure_ms = None;
            self.last_failure_ms = 0;
            self.failures = 0;
        }
    }

    /// The failures it counts (after its last success).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Whether it saw no attempt.
    pub fn is_empty(&self) -> bool {
        self.last_success_ms.is_none() && self.failures == 0
    }

    /// Adds `later`, a batch of attempts made after these (a batch that could not be
    /// flushed is put back in front of the one counted since).
    pub fn absorb_later(&mut self, later: AttemptBatch) {
        if let Some(success) = later.last_success_ms {
            // These failures came before that success: no part of any streak.
            *self = AttemptBatch {
                last_success_ms: Some(self.last_success_ms.map_or(success, |s| s.max(success))),
                ..later
            };
        } else if later.failures > 0 {
            self.first_failure_ms = self.first_failure_ms.or(later.first_failure_ms);
            self.last_failure_ms = self.last_failure_ms.max(later.last_failure_ms);
            self.failures += later.failures;
        }
    }
}

/// The streak every worker shares (in Redis, as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureStreak {
    /// The latest success any worker reported (milliseconds since the epoch).
    #[serde(default)]
    pub last_success_ms: Option<u64>,
    /// The first failure after it; `None` while the endpoint is not failing.
    #[serde(default)]
    pub failing_since_ms: Option<u64>,
    /// Failed attempts since then.
    #[serde(default)]
    pub attempts: u64,
    /// The latest of those failures.
    #[serde(default)]
    pub last_failure_ms: Option<u64>,
    /// Whether this streak's warning was called for.
    #[serde(default)]
    pub warned: bool,
    /// Whether this streak's disable was called for.
    #[serde(default)]
    pub disabled: bool,
}

/// What applying a batch calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreakCall {
    /// Warn: the destination has failed for the warning time.
    Warn,
    /// Disable it: it has failed for the disable time, with the minimum attempts.
    Disable,
}

impl FailureStreak {
    /// Applies `batch` at `now_ms` under `policy`; what it newly calls for. A success later
    /// than the streak's first failure ends the streak; failures no later than the latest
    /// success are not counted.
    pub fn apply(
        &mut self,
        batch: &AttemptBatch,
        policy: &StreakPolicy,
        now_ms: u64,
    ) -> Option<StreakCall> {
        if let Some(success) = batch
            .last_success_ms
            .filter(|&s| self.last_success_ms.is_none_or(|last| s > last))
            // A healthy destination's success changes nothing stored (no write).
            .filter(|_| self.failing_since_ms.is_some() || batch.failures > 0)
        {
            self.last_success_ms = Some(success);
            if self.failing_since_ms.is_some_and(|since| since <= success) {
                *self = FailureStreak {
                    last_success_ms: Some(success),
                    ..FailureStreak::default()
                };
            }
        }
        if let Some(first) = batch.first_failure_ms
            && self
                .last_success_ms
                .is_none_or(|last| batch.last_failure_ms > last)
        {
            let first = self
                .last_success_ms
                .map_or(first, |last| first.max(last.saturating_add(1)));
            // A quiet spell as long as the warning time ends a streak: a destination paused
            // or idle for days is not disabled at its first failure after.
            if self
                .last_failure_ms
                .is_some_and(|last| first.saturating_sub(last) >= policy.warn_after_ms)
            {
                *self = FailureStreak {
                    last_success_ms: self.last_success_ms,
                    ..FailureStreak::default()
                };
            }
            self.failing_since_ms = Some(self.failing_since_ms.map_or(first, |s| s.min(first)));
            self.last_failure_ms = Some(
                self.last_failure_ms
                    .map_or(batch.last_failure_ms, |l| l.max(batch.last_failure_ms)),
            );
            self.attempts += batch.failures;
        }
        let failing_for = now_ms.saturating_sub(self.failing_since_ms?);
        if !self.disabled
            && failing_for >= policy.disable_after_ms
            && self.attempts >= policy.min_attempts
        {
            self.disabled = true;
            return Some(StreakCall::Disable);
        }
        if !self.warned && !self.disabled && failing_for >= policy.warn_after_ms {
            self.warned = true;
            return Some(StreakCall::Warn);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: StreakPolicy = StreakPolicy {
        warn_after_ms: 1_000,
        disable_after_ms: 5_000,
        min_attempts: 3,
    };

    fn failures(times: &[u64]) -> AttemptBatch {
        let mut batch = AttemptBatch::default();
        for &at in times {
            batch.record(at, true);
        }
        batch
    }

    #[test]
    fn a_streak_warns_once_then_disables_once() {
        let mut streak = FailureStreak::default();
        assert_eq!(streak.apply(&failures(&[100]), &POLICY, 200), None);
        assert_eq!(streak.failing_since_ms, Some(100));
        assert_eq!(
            streak.apply(&failures(&[900]), &POLICY, 1_200),
            Some(StreakCall::Warn)
        );
        assert_eq!(streak.apply(&failures(&[1_700]), &POLICY, 2_000), None);
        assert_eq!(
            streak.apply(&failures(&[2_500, 3_300, 4_100, 4_900]), &POLICY, 5_200),
            Some(StreakCall::Disable)
        );
        assert_eq!(streak.attempts, 7);
        assert_eq!(streak.apply(&failures(&[5_600]), &POLICY, 6_000), None);
    }

    #[test]
    fn a_quiet_spell_as_long_as_the_warning_time_starts_a_new_streak() {
        let mut streak = FailureStreak::default();
        streak.apply(&failures(&[100, 900]), &POLICY, 1_000);
        // Paused, say: no attempt for the warning time, then a failure.
        assert_eq!(streak.apply(&failures(&[1_900]), &POLICY, 1_900), None);
        assert_eq!(
            (streak.failing_since_ms, streak.attempts, streak.warned),
            (Some(1_900), 1, false)
        );
    }

    #[test]
    fn a_batch_put_back_keeps_only_what_a_later_success_leaves() {
        let mut put_back = failures(&[100, 200]);
        put_back.absorb_later(failures(&[300]));
        let mut streak = FailureStreak::default();
        streak.apply(&put_back, &POLICY, 400);
        assert_eq!((streak.failing_since_ms, streak.attempts), (Some(100), 3));

        let mut put_back = failures(&[100, 200]);
        let mut later = AttemptBatch::default();
        later.record(300, false);
        later.record(400, true);
        put_back.absorb_later(later);
        let mut streak = FailureStreak::default();
        streak.apply(&put_back, &POLICY, 500);
        assert_eq!(
            (
                streak.last_success_ms,
                streak.failing_since_ms,
                streak.attempts
            ),
            (Some(300), Some(400), 1)
        );
    }

    #[test]
    fn a_healthy_destinations_success_changes_nothing_stored() {
        let mut streak = FailureStreak::default();
        let mut success = AttemptBatch::default();
        success.record(100, false);
        assert_eq!(streak.apply(&success, &POLICY, 200), None);
        assert_eq!(streak, FailureStreak::default());
    }

    #[test]
    fn a_disable_needs_the_minimum_attempts_however_long_it_failed() {
        let mut streak = FailureStreak::default();
        streak.apply(&failures(&[0]), &POLICY, 0);
        assert_eq!(
            streak.apply(&failures(&[900]), &POLICY, 1_000),
            Some(StreakCall::Warn)
        );
        // 6 s of failing, but two attempts only.
        assert_eq!(streak.apply(&AttemptBatch::default(), &POLICY, 6_000), None);
        assert_eq!(
            streak.apply(&failures(&[1_700]), &POLICY, 6_100),
            Some(StreakCall::Disable)
        );
    }

    #[test]
    fn a_success_anywhere_ends_the_streak_but_not_one_that_began_after_it() {
        let mut streak = FailureStreak::default();
        streak.apply(&failures(&[100, 200]), &POLICY, 300);
        // Another worker's success at 250, flushed late: the streak began before it.
        let mut success = AttemptBatch::default();
        success.record(250, false);
        assert_eq!(streak.apply(&success, &POLICY, 2_000), None);
        assert_eq!(streak.failing_since_ms, None);
        assert_eq!(streak.attempts, 0);
        // A failure from before that success, flushed later still, starts nothing.
        assert_eq!(streak.apply(&failures(&[240]), &POLICY, 2_100), None);
        assert_eq!(streak.failing_since_ms, None);
        // A failure after it starts a new streak; an older success flushed later keeps it.
        streak.apply(&failures(&[3_000]), &POLICY, 3_000);
        let mut older = AttemptBatch::default();
        older.record(2_900, false);
        streak.apply(&older, &POLICY, 3_100);
        assert_eq!(streak.failing_since_ms, Some(3_000));
        assert_eq!(streak.last_success_ms, Some(2_900));
    }

    #[test]
    fn a_batch_keeps_only_the_failures_after_its_last_success() {
        let mut batch = AttemptBatch::default();
        batch.record(10, true);
        batch.record(20, false);
        batch.record(30, true);
        batch.record(40, true);
        let mut streak = FailureStreak::default();
        streak.apply(&batch, &POLICY, 50);
        assert_eq!(
            (
                streak.last_success_ms,
                streak.failing_since_ms,
                streak.attempts
            ),
            (Some(20), Some(30), 2)
        );
        assert!(AttemptBatch::default().is_empty());
        assert!(!batch.is_empty());
    }
}
