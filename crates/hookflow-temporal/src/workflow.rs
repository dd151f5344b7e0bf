//! The delivery workflow: deterministic, so it may only use the workflow context for time,
//! randomness and waiting (`ctx.timer`), never tokio or the system clock.
//!
//! It makes one HTTP attempt per activity and lets the pure [`DeliveryProgress`] decide
//! what to do next; waits between attempts are durable timers, so a restart of every
//! hookflow process loses nothing and a retrying delivery holds no worker slot.
//!
//! Deliveries started now ([`WorkflowRevision::LocalAttempts`]) make each attempt a local
//! activity: the worker runs it inside the workflow task and records one marker, so a
//! first-try delivery is a single workflow task of eight history events, and each later
//! round (wait, attempt) six, against eleven for an activity task. A worker that dies
//! mid-attempt is noticed by the workflow task timeout, and the attempt runs again on
//! another worker, as a heartbeat timeout did for the activity. Deliveries recorded under
//! [`WorkflowRevision::ActivityAttempts`] keep running attempts as activity tasks.
//!
//! An attempt the endpoint's gate deferred (rate limit, concurrency cap, open breaker, paused
//! destination) is not an attempt: the workflow waits it out on a timer and asks again,
//! within the same maximum age. A delivery deferred by an open breaker (local attempts only)
//! waits until the breaker closes: the gate defers it up to the breaker's longest cooldown,
//! and the attempt whose probe closes the breaker signals it ([`DeliveryWorkflow::breaker_closed`]),
//! which cancels the timer. An endpoint that stays down thus costs a waiting delivery one
//! workflow task per longest cooldown, not one per probe.
//!
//! History stays bounded however long a delivery waits: after the rounds its
//! [`HistoryBound`] allows, a run continues as new with its progress, so the attempts, the
//! start time (and with it the maximum age) and the last report carry over.
//!
//! Changing what this code decides changes what replay of in-flight histories expects:
//! follow the versioning rule in docs/workflow-changes.md, and `tests/histories/` replays recorded
//! deliveries against it.
// The Temporal macros generate undocumented items beside the documented methods.
#![allow(missing_docs)]

use std::time::{Duration, SystemTime};

use hookflow_core::{
    DeliveryInput, DeliveryOutcome, DeliveryProgress, DeliveryResult, Next, WorkflowRevision,
};
use temporalio_common::RetryPolicy as ActivityRetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, CancellableFuture, ContinueAsNewOptions,
    LocalActivityOptions, SyncWorkflowContext, TimerResult, WorkflowCancellationToken,
    WorkflowContext, WorkflowResult, workflows::select,
};

use crate::{
    activities::{AttemptInput, DeliveryActivities},
    search_attributes,
};

/// Longest an attempt activity may run: the largest destination timeout, plus connect time
/// and slack.
pub const ATTEMPT_ACTIVITY_TIMEOUT: Duration = Duration::from_secs(90);
/// An attempt whose worker stopped heartbeating this long ago is failed and retried by the
/// workflow (the activity heartbeats every [`crate::activities::ACTIVITY_HEARTBEAT_INTERVAL`]).
pub const ATTEMPT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Delivers one event to one destination.
#[workflow]
#[derive(Default)]
pub struct DeliveryWorkflow {
    /// The endpoint's breaker closed since the current round's attempt began.
    breaker_closed: bool,
}

#[workflow_methods]
impl DeliveryWorkflow {
    /// Attempts, waits, attempts again, until delivered, refused, out of attempts or
    /// cancelled; the result says which.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        mut input: DeliveryInput,
    ) -> WorkflowResult<DeliveryResult> {
        let now_ms = |ctx: &WorkflowContext<Self>| millis(ctx.workflow_time());
        let mut progress = input
            .progress
            .take()
            .unwrap_or_else(|| DeliveryProgress::new(now_ms(ctx)));
        // Each round's activity task records its input, which carries the event: its size
        // bounds the rounds of this run, so history bytes stay bounded too. A local
        // attempt's marker records only the step, so only the round count bounds those.
        // The first run computes the size (its inputs serialise as they were recorded:
        // `tests/replay.rs`); it travels in the progress to the runs after it, which use it
        // as recorded rather than computing it again.
        let recorded_input_bytes = match input.revision {
            WorkflowRevision::ActivityAttempts => {
                progress.attempt_input_bytes.unwrap_or_else(|| {
                    serde_json::to_vec(&AttemptInput {
                        delivery: input.clone(),
                        attempt: 0,
                        age_left_ms: None,
                        after_breaker_wait: false,
                    })
                    .map_or(0, |bytes| bytes.len())
                })
            }
            WorkflowRevision::LocalAttempts => 0,
        };
        let mut budget = input.history.run_budget(recorded_input_bytes);
        let (outcome, note) = loop {
            // Only a closing after this round's attempt began ends its wait.
            if ctx.state(|w| w.breaker_closed) {
                ctx.state_mut(|w| w.breaker_closed = false);
            }
            if ctx.continue_as_new_suggested() || !budget.take_round() {
                input.progress = Some(progress.continued(input.revision, recorded_input_bytes));
                ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
                unreachable!("continue_as_new always ends the run");
            }
            let age_left_ms = match input.revision {
                WorkflowRevision::ActivityAttempts => None,
                WorkflowRevision::LocalAttempts => {
                    Some(progress.age_left_ms(&input.retry, now_ms(ctx)))
                }
            };
            let attempt = AttemptInput {
                delivery: input.clone(),
                attempt: progress.next_attempt(),
                age_left_ms,
                after_breaker_wait: age_left_ms.is_some() && progress.waiting_for_breaker(),
            };
            let attempted = match input.revision {
                WorkflowRevision::ActivityAttempts => {
                    ctx.execute_activity(DeliveryActivities::attempt, attempt, attempt_options())
                        .await
                }
                WorkflowRevision::LocalAttempts => {
                    ctx.execute_local_activity(
                        DeliveryActivities::attempt,
                        attempt,
                        local_attempt_options(),
                    )
                    .await
                }
            };
            let (now, random) = (now_ms(ctx), ctx.random::<f64>());
            let next = match attempted {
                Ok(step) => progress.after(step, &input.retry, now, random),
                Err(ActivityExecutionError::Cancelled(_)) => {
                    break (DeliveryOutcome::Cancelled, None);
                }
                Err(error) => {
                    progress.after_activity_failure(error.to_string(), &input.retry, now, random)
                }
            };
            match next {
                Next::Finish { outcome, note } => break (outcome, note),
                Next::Wait(delay) => {
                    let waited = if progress.waiting_for_breaker() {
                        wait_for_breaker(ctx, delay).await
                    } else {
                        ctx.timer(delay).await
                    };
                    if waited == TimerResult::Cancelled {
                        break (DeliveryOutcome::Cancelled, None);
                    }
                }
            }
        };
        ctx.upsert_search_attributes([
            search_attributes::OUTCOME.value_set(outcome.as_str().to_owned())
        ]);
        let result = progress.result(outcome, note);
        // Counted by a local activity: it runs once per delivery, and replays of this
        // workflow read its marker instead of counting again. Metrics are not worth
        // failing a finished delivery over: the result is ignored.
        let finished = progress.finished(input.event.team_id, &input.destination_id, &result);
        let _ = ctx
            .execute_local_activity(
                DeliveryActivities::record_outcome,
                finished,
                outcome_options(),
            )
            .await;
        Ok(result)
    }

    /// The endpoint's breaker closed: a delivery waiting for that goes on now. Sent by the
    /// worker whose probe closed it, to every delivery the gate deferred for it.
    #[signal(name = "breaker_closed")]
    pub fn breaker_closed(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.breaker_closed = true;
    }
}

/// Waits `delay`, or less if the breaker closes first (the timer is cancelled then, and the
/// wait counts as fired). `Cancelled` only when the workflow was cancelled.
async fn wait_for_breaker(ctx: &WorkflowContext<DeliveryWorkflow>, delay: Duration) -> TimerResult {
    let timer = ctx.timer(delay);
    let closed = ctx.wait_condition(|w| w.breaker_closed);
    futures::pin_mut!(timer, closed);
    select! {
        fired = timer.as_mut() => fired,
        closed = closed => match closed {
            Ok(()) => {
                timer.cancel();
                TimerResult::Fired
            }
            Err(_) => TimerResult::Cancelled,
        },
    }
}

/// Milliseconds since the epoch of a workflow time.
fn millis(time: Option<SystemTime>) -> u64 {
    time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// One attempt per activity: Temporal must not retry it, the workflow does.
fn attempt_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(ATTEMPT_ACTIVITY_TIMEOUT)
        .heartbeat_timeout(ATTEMPT_HEARTBEAT_TIMEOUT)
        .retry_policy(ActivityRetryPolicy::builder().maximum_attempts(1).build())
        .build()
}

/// One attempt per local activity, for the same reason; the input (which carries the event)
/// stays out of the marker, as it defaults to.
fn local_attempt_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(ATTEMPT_ACTIVITY_TIMEOUT)
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
