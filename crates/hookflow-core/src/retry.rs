//! What the delivery does after an attempt: the retry policy and its decisions.
//!
//! The delivery workflow owns the retry schedule: each activity makes exactly one attempt
//! and returns an [`AttemptReport`](crate::attempt::AttemptReport); [`RetryPolicy::decide`]
//! turns it into the next step.
//! The decision is a pure function of the report, the attempt number, the elapsed time and
//! a random number the workflow draws deterministically, so replay gives the same schedule.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    FieldError,
    attempt::{AttemptReport, AttemptVerdict},
    endpoint::{Deferral, DeferralBackoff},
};

/// How the delivery of one (event, destination) pair is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Waits before the 2nd, 3rd, … attempt, in milliseconds. Its length + 1 is the most
    /// attempts a delivery makes.
    pub schedule_ms: Vec<u64>,
    /// Each wait is scaled by a random factor in `1 ± jitter` (0 to 1), so deliveries that
    /// failed together do not retry together.
    pub jitter: f64,
    /// No attempt starts later than this after the first one, in milliseconds.
    pub max_age_ms: u64,
    /// A `Retry-After` longer than this is clamped to it, in milliseconds.
    pub max_retry_after_ms: u64,
    /// The first wait of a rate-limit, concurrency-cap or pause deferral, in milliseconds;
    /// it doubles with every deferral in a row up to `deferral_backoff_max_ms`.
    #[serde(default = "default_deferral_backoff_initial_ms")]
    pub deferral_backoff_initial_ms: u64,
    /// The longest wait of such a deferral, in milliseconds.
    #[serde(default = "default_deferral_backoff_max_ms")]
    pub deferral_backoff_max_ms: u64,
}

// Defaults for inputs recorded before the deferral back-off became configurable, so their
// histories replay with the waits they were made with.
fn default_deferral_backoff_initial_ms() -> u64 {
    250
}

fn default_deferral_backoff_max_ms() -> u64 {
    30_000
}

impl Default for RetryPolicy {
    /// 5s, 30s, 2m, 10m, 30m, 1h, 2h with 20% jitter, for at most 24h; Retry-After up to 1h.
    fn default() -> Self {
        RetryPolicy {
            schedule_ms: [5, 30, 120, 600, 1_800, 3_600, 7_200]
                .iter()
                .map(|s| s * 1_000)
                .collect(),
            jitter: 0.2,
            max_age_ms: 24 * 3_600 * 1_000,
            max_retry_after_ms: 3_600 * 1_000,
            deferral_backoff_initial_ms: default_deferral_backoff_initial_ms(),
            deferral_backoff_max_ms: default_deferral_backoff_max_ms(),
        }
    }
}

/// What the workflow does after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    /// The endpoint accepted the delivery.
    Delivered,
    /// The endpoint (or the guard) refused it for good; retrying cannot help.
    FailPermanently,
    /// Try again after this long.
    RetryAfter(Duration),
    /// Retryable, but the attempts or the maximum age are spent.
    GiveUp,
}

impl RetryPolicy {
    /// Checks the deployment's policy (`[retry]`); the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(FieldError::new("jitter", "must be between 0 and 1"));
        }
        if self.max_age_ms == 0 {
            return Err(FieldError::new("max_age_ms", "must be greater than 0"));
        }
        if self.deferral_backoff_initial_ms == 0
            || self.deferral_backoff_max_ms < self.deferral_backoff_initial_ms
        {
            return Err(FieldError::new(
                "deferral_backoff_max_ms",
                "must be at least deferral_backoff_initial_ms, which must be greater than 0",
            ));
        }
        Ok(())
    }

    /// The next step after attempt number `attempt` (1-based) reported `report`,
    /// `elapsed` after the first attempt started. `random` is uniform in `[0, 1)`.
    pub fn decide(
        &self,
        attempt: u32,
        report: &AttemptReport,
        elapsed: Duration,
        random: f64,
    ) -> RetryDecision {
        match report.verdict() {
            AttemptVerdict::Delivered => return RetryDecision::Delivered,
            verdict if !verdict.is_retryable() => return RetryDecision::FailPermanently,
            _ => {}
        }
        let Some(&base_ms) = self.schedule_ms.get(attempt.saturating_sub(1) as usize) else {
            return RetryDecision::GiveUp;
        };
        let factor = 1.0 + self.jitter.clamp(0.0, 1.0) * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        let jittered_ms = (base_ms as f64 * factor).round() as u64;
        // Retry-After is a floor: the endpoint asked us not to come back sooner.
        let retry_after_ms = report
            .retry_after_ms
            .map_or(0, |ms| ms.min(self.max_retry_after_ms));
        let delay = Duration::from_millis(jittered_ms.max(retry_after_ms));
        if elapsed + delay > Duration::from_millis(self.max_age_ms) {
            return RetryDecision::GiveUp;
        }
        RetryDecision::RetryAfter(delay)
    }

    /// The next step after the `in_a_row`-th deferral since the last attempt, `elapsed`
    /// after the first attempt started: wait it out ([`Deferral::delay`]), unless that
    /// passes the maximum age. `random` is uniform in `[0, 1)`.
    pub fn after_deferral(
        &self,
        deferral: &Deferral,
        in_a_row: u32,
        elapsed: Duration,
        random: f64,
    ) -> RetryDecision {
        let backoff = DeferralBackoff {
            initial_ms: self.deferral_backoff_initial_ms,
            max_ms: self.deferral_backoff_max_ms,
        };
        let delay = deferral.delay(&backoff, random, in_a_row);
        if elapsed + delay > Duration::from_millis(self.max_age_ms) {
            return RetryDecision::GiveUp;
        }
        RetryDecision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt::AttemptErrorKind;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule_ms: vec![1_000, 2_000],
            jitter: 0.5,
            max_age_ms: 10_000,
            max_retry_after_ms: 4_000,
            ..RetryPolicy::default()
        }
    }

    fn status(s: u16) -> AttemptReport {
        AttemptReport::response(s, None, 1)
    }

    #[test]
    fn classifies_statuses() {
        let p = policy();
        for s in [200, 201, 204, 299] {
            assert_eq!(
                p.decide(1, &status(s), Duration::ZERO, 0.5),
                RetryDecision::Delivered,
                "{s}"
            );
        }
        for s in [301, 302, 400, 401, 404, 410, 422] {
            assert_eq!(
                p.decide(1, &status(s), Duration::ZERO, 0.5),
                RetryDecision::FailPermanently,
                "{s}"
            );
        }
        for s in [408, 429, 500, 502, 503] {
            assert_eq!(
                p.decide(1, &status(s), Duration::ZERO, 0.5),
                RetryDecision::RetryAfter(Duration::from_secs(1)),
                "{s}"
            );
        }
    }

    #[test]
    fn classifies_errors() {
        let p = policy();
        let retry = RetryDecision::RetryAfter(Duration::from_secs(1));
        for kind in [
            AttemptErrorKind::Timeout,
            AttemptErrorKind::Connect,
            AttemptErrorKind::Other,
        ] {
            assert_eq!(
                p.decide(1, &AttemptReport::failed(kind, "x", 1), Duration::ZERO, 0.5),
                retry
            );
        }
        for kind in [AttemptErrorKind::Blocked, AttemptErrorKind::Invalid] {
            assert_eq!(
                p.decide(1, &AttemptReport::failed(kind, "x", 1), Duration::ZERO, 0.5),
                RetryDecision::FailPermanently
            );
        }
    }

    #[test]
    fn follows_the_schedule_then_gives_up() {
        let p = policy();
        assert_eq!(
            p.decide(2, &status(503), Duration::ZERO, 0.5),
            RetryDecision::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(3, &status(503), Duration::ZERO, 0.5),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy();
        assert_eq!(
            p.decide(1, &status(503), Duration::ZERO, 0.0),
            RetryDecision::RetryAfter(Duration::from_millis(500))
        );
        assert_eq!(
            p.decide(1, &status(503), Duration::ZERO, 0.999_999),
            RetryDecision::RetryAfter(Duration::from_millis(1_500))
        );
    }

    #[test]
    fn one_table_says_what_every_attempt_means_for_delivery_and_endpoint() {
        use AttemptVerdict::*;
        let response = |s| AttemptReport::response(s, None, 1);
        let error = |k| AttemptReport::failed(k, "x", 1);
        let cases = [
            (response(200), Delivered),
            (response(204), Delivered),
            (response(500), EndpointFailing),
            (response(503), EndpointFailing),
            (response(429), EndpointFailing),
            (response(408), TryAgain),
            (response(301), Refused),
            (response(400), Refused),
            (response(404), Refused),
            (response(410), Refused),
            (error(AttemptErrorKind::Timeout), EndpointFailing),
            (error(AttemptErrorKind::Connect), EndpointFailing),
            (error(AttemptErrorKind::Other), EndpointFailing),
            (error(AttemptErrorKind::Token), EndpointFailing),
            (error(AttemptErrorKind::Tls), Refused),
            (error(AttemptErrorKind::Blocked), NotSent),
            (error(AttemptErrorKind::Invalid), NotSent),
        ];
        for (report, verdict) in cases {
            assert_eq!(report.verdict(), verdict, "{}", report.describe());
            let decision = policy().decide(1, &report, Duration::ZERO, 0.5);
            let expected = match verdict {
                Delivered => RetryDecision::Delivered,
                EndpointFailing | TryAgain => RetryDecision::RetryAfter(Duration::from_secs(1)),
                Refused | NotSent => RetryDecision::FailPermanently,
            };
            assert_eq!(decision, expected, "{}", report.describe());
        }
    }

    #[test]
    fn retry_after_is_a_floor_clamped_to_the_maximum() {
        let p = policy();
        let asked = |ms| AttemptReport::response(429, Some(ms), 1);
        assert_eq!(
            p.decide(1, &asked(3_000), Duration::ZERO, 0.5),
            RetryDecision::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            p.decide(1, &asked(100), Duration::ZERO, 0.5),
            RetryDecision::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            p.decide(1, &asked(60_000), Duration::ZERO, 0.5),
            RetryDecision::RetryAfter(Duration::from_secs(4))
        );
    }

    #[test]
    fn gives_up_when_the_next_attempt_would_pass_the_maximum_age() {
        let p = policy();
        assert_eq!(
            p.decide(1, &status(503), Duration::from_millis(9_500), 0.5),
            RetryDecision::GiveUp
        );
        assert_eq!(
            p.decide(1, &status(503), Duration::from_millis(9_000), 0.5),
            RetryDecision::RetryAfter(Duration::from_secs(1))
        );
    }

    #[test]
    fn deferrals_wait_but_respect_the_maximum_age() {
        let p = policy();
        let deferral = Deferral {
            reason: crate::endpoint::DeferralReason::BreakerOpen,
            wait_ms: 2_000,
        };
        assert_eq!(
            p.after_deferral(&deferral, 1, Duration::from_millis(7_000), 0.0),
            RetryDecision::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            p.after_deferral(&deferral, 1, Duration::from_millis(8_500), 0.0),
            RetryDecision::GiveUp
        );
    }
}
