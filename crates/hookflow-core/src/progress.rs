//! How far one delivery has got, and what it does next.
//!
//! The delivery workflow keeps one [`DeliveryProgress`]: the attempts made, when the
//! delivery started, the last attempt's report and the deferrals since it. After every
//! step it asks [`DeliveryProgress::after`] whether to wait or to finish. When a run has
//! written as much history as its [`HistoryBound`] allows, the workflow continues as new
//! and hands the progress to the next run, so the retry schedule, the maximum age and the
//! result hold across runs however long the delivery waits. Pure, so it is tested here
//! without Temporal.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    attempt::{AttemptErrorKind, AttemptReport, AttemptStep},
    delivery::WorkflowRevision,
    endpoint::DeferralReason,
    outcomes::{DeliveryOutcome, DeliveryResult, FinishedDelivery},
    retry::{RetryDecision, RetryPolicy},
};

/// A delivery's state between steps, carried from one workflow run to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryProgress {
    /// When the delivery's first run started, in milliseconds since the epoch (workflow
    /// time). The maximum age counts from here, across runs.
    pub started_at_ms: u64,
    /// HTTP attempts made so far.
    pub attempts: u32,
    /// The last attempt's report.
    pub last_report: Option<AttemptReport>,
    /// Deferrals since the last attempt (the back-off grows with them).
    pub deferrals_in_a_row: u32,
    /// Why the last deferral was made, for the note when the delivery gives up deferred.
    pub last_deferral: Option<DeferralReason>,
    /// Runs before the current one (0 in the first run).
    pub runs_before: u32,
    /// The bytes of one attempt's recorded input, as the first run of a delivery of
    /// revision `activity_attempts` computed them to size its runs: recorded when it
    /// continues as new, so the next runs size themselves by the same number, whatever
    /// today's serialisation of the input gives (absent in every other delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_input_bytes: Option<usize>,
}

/// What the workflow does after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then make the next attempt.
    Wait(Duration),
    /// The delivery is over.
    Finish {
        /// How it ended.
        outcome: DeliveryOutcome,
        /// Why, where the last attempt does not say it.
        note: Option<String>,
    },
}

impl DeliveryProgress {
    /// A delivery that starts now (`now_ms`, workflow time).
    pub fn new(started_at_ms: u64) -> Self {
        DeliveryProgress {
            started_at_ms,
            attempts: 0,
            last_report: None,
            deferrals_in_a_row: 0,
            last_deferral: None,
            runs_before: 0,
            attempt_input_bytes: None,
        }
    }

    /// The number of the next attempt (1 for the first).
    pub fn next_attempt(&self) -> u32 {
        self.attempts + 1
    }

    /// How much of the maximum age under `policy` is left at `now_ms` (workflow time).
    pub fn age_left_ms(&self, policy: &RetryPolicy, now_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(self.started_at_ms);
        policy.max_age_ms.saturating_sub(elapsed)
    }

    /// Whether the delivery is waiting because its endpoint's breaker is open (the last step
    /// was a deferral for that), so that the breaker's closing may end the wait early.
    pub fn waiting_for_breaker(&self) -> bool {
        self.deferrals_in_a_row > 0 && self.last_deferral == Some(DeferralReason::BreakerOpen)
    }

    /// The progress to hand to the next run of a delivery of `revision` whose attempt
    /// inputs are `attempt_input_bytes` long: a delivery of `activity_attempts` records
    /// that size, so its next runs read it rather than compute it again.
    pub fn continued(&self, revision: WorkflowRevision, attempt_input_bytes: usize) -> Self {
        DeliveryProgress {
            runs_before: self.runs_before + 1,
            attempt_input_bytes: match revision {
                WorkflowRevision::ActivityAttempts => Some(attempt_input_bytes),
                WorkflowRevision::LocalAttempts => None,
            },
            ..self.clone()
        }
    }

    /// Takes in what the attempt activity did at `now_ms` (workflow time) and decides what
    /// comes next under `policy`. `random` is uniform in `[0, 1)`, drawn by the workflow.
    pub fn after(
        &mut self,
        step: AttemptStep,
        policy: &RetryPolicy,
        now_ms: u64,
        random: f64,
    ) -> Next {
        let elapsed = Duration::from_millis(now_ms.saturating_sub(self.started_at_ms));
        let decision = match step {
            AttemptStep::Attempted(report) => {
                self.attempts += 1;
                self.deferrals_in_a_row = 0;
                let decision = policy.decide(self.attempts, &report, elapsed, random);
                self.last_report = Some(report);
                decision
            }
            AttemptStep::Deferred(deferral) => {
                self.deferrals_in_a_row += 1;
                self.last_deferral = Some(deferral.reason);
                policy.after_deferral(&deferral, self.deferrals_in_a_row, elapsed, random)
            }
            AttemptStep::DestinationDisabled(reason) => {
                return finish(
                    DeliveryOutcome::DestinationDisabled,
                    Some(format!("destination disabled: {reason}")),
                );
            }
            AttemptStep::DestinationDeleted => {
                let note = "the destination was deleted".to_owned();
                return finish(DeliveryOutcome::DestinationDeleted, Some(note));
            }
        };
        match decision {
            RetryDecision::Delivered => finish(DeliveryOutcome::Delivered, None),
            RetryDecision::FailPermanently => finish(DeliveryOutcome::FailedPermanently, None),
            RetryDecision::GiveUp if self.deferrals_in_a_row > 0 => {
                // Out of time while the endpoint's gate kept it waiting: say so.
                let reason = self
                    .last_deferral
                    .map_or("deferred", DeferralReason::as_str);
                let note = format!("maximum age reached while deferred ({reason})");
                finish(DeliveryOutcome::GaveUp, Some(note))
            }
            RetryDecision::GiveUp => finish(DeliveryOutcome::GaveUp, None),
            RetryDecision::RetryAfter(delay) => Next::Wait(delay),
        }
    }

    /// The attempt activity itself failed (its worker died, or it overran its timeout): to
    /// the delivery that is one failed attempt, retried on the same schedule.
    pub fn after_activity_failure(
        &mut self,
        error: String,
        policy: &RetryPolicy,
        now_ms: u64,
        random: f64,
    ) -> Next {
        let report = AttemptReport::failed(AttemptErrorKind::Other, error, 0);
        self.after(AttemptStep::Attempted(report), policy, now_ms, random)
    }

    /// The workflow's result for a delivery that ended as `outcome`.
    pub fn result(&self, outcome: DeliveryOutcome, note: Option<String>) -> DeliveryResult {
        let last_error = note.or_else(|| {
            self.last_report
                .as_ref()
                .filter(|r| !r.is_success())
                .map(AttemptReport::describe)
        });
        DeliveryResult {
            outcome,
            attempts: self.attempts,
            last_status: self.last_report.as_ref().and_then(|r| r.status),
            last_error,
        }
    }

    /// What the outcome counters and the per-team summaries record of a delivery of
    /// `team_id` to `destination_id` that ended with `result`.
    pub fn finished(
        &self,
        team_id: i64,
        destination_id: &str,
        result: &DeliveryResult,
    ) -> FinishedDelivery {
        let failed = !matches!(
            result.outcome,
            DeliveryOutcome::Delivered | DeliveryOutcome::Cancelled
        );
        FinishedDelivery {
            team_id,
            destination_id: destination_id.to_owned(),
            outcome: result.outcome,
            attempts: self.attempts,
            error_kind: self
                .last_report
                .as_ref()
                .filter(|_| failed)
                .map(|r| r.class().to_owned()),
            last_error: result.last_error.clone().filter(|_| failed),
        }
    }
}

fn finish(outcome: DeliveryOutcome, note: Option<String>) -> Next {
    Next::Finish { outcome, note }
}

/// How much history one workflow run may write before it continues as new: at most
/// `max_rounds` attempts (each a round of six history events with its wait, seven when a
/// `breaker_closed` signal ends the wait, eleven as an activity task), and no more than
/// `max_input_bytes` of activity-task inputs, each of which carries the event (a local
/// attempt's marker does not). Temporal terminates a run past
/// 51,200 events or 50 MB, and warns at a fifth of that; the defaults (100 rounds, 4 MiB)
/// stay far below the warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryBound {
    /// Attempt activities (attempts and deferrals) per run.
    pub max_rounds: u32,
    /// Bytes of activity input per run.
    pub max_input_bytes: u64,
}

impl Default for HistoryBound {
    fn default() -> Self {
        HistoryBound {
            max_rounds: 100,
            max_input_bytes: 4 * 1024 * 1024,
        }
    }
}

impl HistoryBound {
    /// The rounds one run may make when each activity input is `input_bytes` long: at
    /// least one, so every run makes progress.
    pub fn rounds_per_run(&self, input_bytes: usize) -> u32 {
        let by_bytes = self.max_input_bytes / (input_bytes.max(1) as u64);
        by_bytes.clamp(1, u64::from(self.max_rounds.max(1))) as u32
    }

    /// The budget of one run whose activity inputs are `input_bytes` long.
    pub fn run_budget(&self, input_bytes: usize) -> RunBudget {
        RunBudget {
            rounds_left: self.rounds_per_run(input_bytes),
        }
    }
}

/// The rounds (attempt activities) one workflow run may still make before it continues as
/// new, so its history stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunBudget {
    rounds_left: u32,
}

impl RunBudget {
    /// Takes one round; `false` when the run has none left and must continue as new.
    pub fn take_round(&mut self) -> bool {
        match self.rounds_left.checked_sub(1) {
            Some(left) => {
                self.rounds_left = left;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Deferral;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule_ms: vec![1_000, 1_000],
            jitter: 0.0,
            max_age_ms: 10_000,
            ..RetryPolicy::default()
        }
    }

    fn status(s: u16) -> AttemptStep {
        AttemptStep::Attempted(AttemptReport::response(s, None, 1))
    }

    fn paused() -> AttemptStep {
        AttemptStep::Deferred(Deferral {
            reason: DeferralReason::Paused,
            wait_ms: 1_000,
        })
    }

    #[test]
    fn retries_on_the_schedule_and_counts_attempts() {
        let p = policy();
        let mut progress = DeliveryProgress::new(1_000);
        assert_eq!(progress.next_attempt(), 1);
        assert_eq!(
            progress.after(status(503), &p, 1_000, 0.5),
            Next::Wait(Duration::from_secs(1))
        );
        assert_eq!(progress.next_attempt(), 2);
        assert_eq!(
            progress.after(status(200), &p, 2_000, 0.5),
            Next::Finish {
                outcome: DeliveryOutcome::Delivered,
                note: None
            }
        );
        let result = progress.result(DeliveryOutcome::Delivered, None);
        assert_eq!(result.attempts, 2);
        assert_eq!(result.last_status, Some(200));
        assert_eq!(result.last_error, None);
    }

    #[test]
    fn an_activity_attempts_run_records_its_attempt_input_size_for_the_next() {
        let progress = DeliveryProgress::new(0);
        let next = progress.continued(WorkflowRevision::ActivityAttempts, 811);
        assert_eq!((next.runs_before, next.attempt_input_bytes), (1, Some(811)));
        let json = serde_json::to_value(&next).expect("json");
        assert_eq!(json["attempt_input_bytes"], 811);
        let local = progress.continued(WorkflowRevision::LocalAttempts, 811);
        assert_eq!(local.attempt_input_bytes, None);
        let json = serde_json::to_value(&local).expect("json");
        assert!(
            json.get("attempt_input_bytes").is_none(),
            "not written: {json}"
        );
    }

    #[test]
    fn deferrals_are_not_attempts_and_the_age_counts_from_the_first_run() {
        let p = policy();
        let mut progress = DeliveryProgress::new(0);
        assert!(matches!(
            progress.after(paused(), &p, 0, 0.0),
            Next::Wait(_)
        ));
        // Continued as new: the next run starts from the carried progress.
        let mut next_run = progress.continued(WorkflowRevision::LocalAttempts, 0);
        assert_eq!(next_run.runs_before, 1);
        assert_eq!(next_run.attempts, 0);
        assert_eq!(next_run.attempt_input_bytes, None);
        assert_eq!(
            next_run.after(paused(), &p, 9_500, 0.0),
            Next::Finish {
                outcome: DeliveryOutcome::GaveUp,
                note: Some("maximum age reached while deferred (paused)".into())
            }
        );
        let result = next_run.result(DeliveryOutcome::GaveUp, None);
        assert_eq!(result.attempts, 0);
    }

    #[test]
    fn a_breaker_deferral_is_a_wait_for_the_breaker_until_the_next_attempt() {
        let p = policy();
        let mut progress = DeliveryProgress::new(1_000);
        assert_eq!(progress.age_left_ms(&p, 4_000), 7_000);
        assert_eq!(progress.age_left_ms(&p, 20_000), 0);
        assert!(!progress.waiting_for_breaker());
        let breaker = AttemptStep::Deferred(Deferral {
            reason: DeferralReason::BreakerOpen,
            wait_ms: 1_000,
        });
        progress.after(breaker, &p, 1_000, 0.0);
        assert!(progress.waiting_for_breaker());
        progress.after(paused(), &p, 1_000, 0.0);
        assert!(!progress.waiting_for_breaker(), "a pause is not woken");
        progress.after(status(503), &p, 1_000, 0.0);
        assert!(!progress.waiting_for_breaker(), "a retry is not woken");
    }

    #[test]
    fn an_attempt_resets_the_deferral_back_off() {
        let p = policy();
        let mut progress = DeliveryProgress::new(0);
        progress.after(paused(), &p, 0, 0.0);
        progress.after(paused(), &p, 0, 0.0);
        assert_eq!(progress.deferrals_in_a_row, 2);
        progress.after(status(503), &p, 0, 0.0);
        assert_eq!(progress.deferrals_in_a_row, 0);
        assert_eq!(progress.attempts, 1);
    }

    #[test]
    fn failures_are_described_and_recorded_for_the_outcome_counters() {
        let p = policy();
        let mut progress = DeliveryProgress::new(0);
        progress.after(status(503), &p, 0, 0.0);
        progress.after(status(503), &p, 0, 0.0);
        assert_eq!(
            progress.after(status(503), &p, 0, 0.0),
            Next::Finish {
                outcome: DeliveryOutcome::GaveUp,
                note: None
            }
        );
        let result = progress.result(DeliveryOutcome::GaveUp, None);
        assert_eq!(result.last_error.as_deref(), Some("HTTP 503"));
        let finished = progress.finished(7, "d-1", &result);
        assert_eq!(finished.attempts, 3);
        assert_eq!(finished.error_kind.as_deref(), Some("5xx"));
        assert_eq!(finished.last_error.as_deref(), Some("HTTP 503"));

        let mut cancelled = DeliveryProgress::new(0);
        cancelled.after(status(503), &p, 0, 0.0);
        let result = cancelled.result(DeliveryOutcome::Cancelled, None);
        let finished = cancelled.finished(7, "d-1", &result);
        assert_eq!((finished.error_kind, finished.last_error), (None, None));
    }

    #[test]
    fn a_dead_worker_is_one_failed_attempt() {
        let p = policy();
        let mut progress = DeliveryProgress::new(0);
        let next = progress.after_activity_failure("heartbeat timeout".into(), &p, 0, 0.0);
        assert_eq!(next, Next::Wait(Duration::from_secs(1)));
        assert_eq!(progress.attempts, 1);
        assert_eq!(
            progress
                .result(DeliveryOutcome::GaveUp, None)
                .last_error
                .as_deref(),
            Some("other: heartbeat timeout")
        );
    }

    #[test]
    fn a_deleted_or_disabled_destination_ends_the_delivery_with_the_reason() {
        let p = policy();
        let mut progress = DeliveryProgress::new(0);
        assert_eq!(
            progress.after(AttemptStep::DestinationDeleted, &p, 0, 0.0),
            Next::Finish {
                outcome: DeliveryOutcome::DestinationDeleted,
                note: Some("the destination was deleted".into())
            }
        );
        assert_eq!(
            progress.after(AttemptStep::DestinationDisabled("410".into()), &p, 0, 0.0),
            Next::Finish {
                outcome: DeliveryOutcome::DestinationDisabled,
                note: Some("destination disabled: 410".into())
            }
        );
    }

    #[test]
    fn the_history_bound_limits_rounds_by_count_and_by_bytes() {
        let bound = HistoryBound::default();
        assert_eq!(bound.rounds_per_run(2_000), 100);
        assert_eq!(bound.rounds_per_run(1_000_000), 4);
        assert_eq!(bound.rounds_per_run(10_000_000), 1, "never less than one");
        let tiny = HistoryBound {
            max_rounds: 0,
            max_input_bytes: 0,
        };
        assert_eq!(tiny.rounds_per_run(10), 1);
        let mut budget = bound.run_budget(1_000_000);
        let taken = std::iter::from_fn(|| budget.take_round().then_some(())).count();
        assert_eq!(
            taken, 4,
            "a run takes exactly its rounds, then continues as new"
        );
    }
}
