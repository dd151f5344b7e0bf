//! The delivery workflow: deterministic, so it may only use the workflow context for time,
//! randomness and waiting (`ctx.timer`), never tokio or the system clock.
//!
//! It makes one HTTP attempt per activity and decides what to do next with the pure
//! [`RetryPolicy::decide`]; waits between attempts are durable timers, so a restart of every
//! hookflow process loses nothing and a retrying delivery holds no worker slot. An attempt
//! the endpoint's gate deferred (rate limit, concurrency cap, open breaker) is not an
//! attempt: the workflow waits it out on a timer ([`RetryPolicy::after_deferral`]) and asks
//! again, within the same maximum age.
// The Temporal macros generate undocumented items beside the documented methods.
#![allow(missing_docs)]

use std::time::{Duration, SystemTime};

use hookflow_core::{
    AttemptErrorKind, AttemptReport, AttemptStep, DeliveryInput, DeliveryOutcome, DeliveryResult,
    RetryDecision, RetryPolicy,
};
use temporalio_common::RetryPolicy as ActivityRetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, LocalActivityOptions, TimerResult,
    WorkflowCancellationToken, WorkflowContext, WorkflowResult,
};

use crate::{
    activities::{AttemptInput, DeliveryActivities, OutcomeInput},
    search_attributes,
};

/// Longest an attempt activity may run: the largest destination timeout, plus connect time
/// and slack.
pub const ATTEMPT_ACTIVITY_TIMEOUT: Duration = Duration::from_secs(90);
/// An attempt whose worker stopped heartbeating this long ago is failed and retried by the
/// workflow (the activity heartbeats every [`crate::activities::HEARTBEAT_INTERVAL`]).
pub const ATTEMPT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Delivers one event to one destination.
#[workflow]
#[derive(Default)]
pub struct DeliveryWorkflow;

#[workflow_methods]
impl DeliveryWorkflow {
    /// Attempts, waits, attempts again, until delivered, refused, out of attempts or
    /// cancelled; the result says which.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: DeliveryInput,
    ) -> WorkflowResult<DeliveryResult> {
        let started = ctx.workflow_time().unwrap_or(SystemTime::UNIX_EPOCH);
        let policy: RetryPolicy = input.retry.clone();
        let mut attempt: u32 = 0;
        let mut last: Option<AttemptReport> = None;
        let mut deferrals_in_a_row: u32 = 0;
        let mut last_deferral = None;
        // Every way out of the loop names the outcome and, where the last attempt does not
        // say it, why.
        let (outcome, note) = loop {
            let step = match ctx
                .execute_activity(
                    DeliveryActivities::attempt,
                    AttemptInput {
                        delivery: input.clone(),
                        attempt: attempt + 1,
                    },
                    attempt_options(),
                )
                .await
            {
                Ok(step) => step,
                Err(ActivityExecutionError::Cancelled(_)) => {
                    break (DeliveryOutcome::Cancelled, None);
                }
                // The activity itself failed (its worker died, or it overran its timeout):
                // to the delivery that is one failed attempt, retried on the same schedule.
                Err(error) => AttemptStep::Attempted(AttemptReport::failed(
                    AttemptErrorKind::Other,
                    error.to_string(),
                    0,
                )),
            };
            let now = ctx.workflow_time().unwrap_or(started);
            let elapsed = now.duration_since(started).unwrap_or_default();
            let decision = match step {
                AttemptStep::Attempted(report) => {
                    attempt += 1;
                    deferrals_in_a_row = 0;
                    let decision = policy.decide(attempt, &report, elapsed, ctx.random::<f64>());
                    last = Some(report);
                    decision
                }
                AttemptStep::Deferred(deferral) => {
                    deferrals_in_a_row += 1;
                    last_deferral = Some(deferral.reason);
                    let random = ctx.random::<f64>();
                    policy.after_deferral(&deferral, deferrals_in_a_row, elapsed, random)
                }
                AttemptStep::DestinationDisabled(reason) => {
                    let note = format!("destination disabled: {reason}");
                    break (DeliveryOutcome::DestinationDisabled, Some(note));
                }
                AttemptStep::DestinationDeleted => {
                    let note = format!("destination {} was deleted", input.destination_id);
                    break (DeliveryOutcome::DestinationDeleted, Some(note));
                }
            };
            match decision {
                RetryDecision::Delivered => break (DeliveryOutcome::Delivered, None),
                RetryDecision::FailPermanently => break (DeliveryOutcome::FailedPermanently, None),
                RetryDecision::GiveUp if deferrals_in_a_row > 0 => {
                    // Out of time while the endpoint's gate kept it waiting: say so.
                    let reason = last_deferral.map_or("deferred", |r| r.as_str());
                    let note = format!("maximum age reached while deferred ({reason})");
                    break (DeliveryOutcome::GaveUp, Some(note));
                }
                RetryDecision::GiveUp => break (DeliveryOutcome::GaveUp, None),
                RetryDecision::RetryAfter(delay) => {
                    if ctx.timer(delay).await == TimerResult::Cancelled {
                        break (DeliveryOutcome::Cancelled, None);
                    }
                }
            }
        };
        ctx.upsert_search_attributes([
            search_attributes::OUTCOME.value_set(outcome.as_str().to_owned())
        ]);
        // Counted by a local activity: it runs once per delivery, and replays of this
        // workflow read its marker instead of counting again.
        let last_error = note.or_else(|| {
            last.as_ref()
                .filter(|r| !matches!(r.status, Some(200..=299)))
                .map(AttemptReport::describe)
        });
        let failed = !matches!(
            outcome,
            DeliveryOutcome::Delivered | DeliveryOutcome::Cancelled
        );
        // Metrics are not worth failing a finished delivery over: the result is ignored.
        let _ = ctx
            .execute_local_activity(
                DeliveryActivities::record_outcome,
                OutcomeInput {
                    team_id: input.event.team_id,
                    destination_id: input.destination_id.clone(),
                    outcome,
                    attempts: attempt,
                    error_kind: last
                        .as_ref()
                        .filter(|_| failed)
                        .map(|r| r.class().to_owned()),
                    last_error: last_error.clone().filter(|_| failed),
                },
                outcome_options(),
            )
            .await;
        Ok(DeliveryResult {
            outcome,
            attempts: attempt,
            last_status: last.as_ref().and_then(|r| r.status),
            last_error,
        })
    }
}

/// One attempt per activity: Temporal must not retry it, the workflow does.
fn attempt_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(ATTEMPT_ACTIVITY_TIMEOUT)
        .heartbeat_timeout(ATTEMPT_HEARTBEAT_TIMEOUT)
        .retry_policy(ActivityRetryPolicy::builder().maximum_attempts(1).build())
        .build()
}

/// The outcome is counted even when the workflow was cancelled: the local activity gets a
/// cancellation token of its own.
fn outcome_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(5))
        .retry_policy(ActivityRetryPolicy::builder().maximum_attempts(3).build())
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}
