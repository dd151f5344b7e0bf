//! The attempt activity: resolves the destination at attempt time (so URL and secret
//! changes apply to pending retries and secrets never enter workflow history; only the
//! destination of the event's team with the uid the delivery recorded), renders and
//! signs the body, asks the endpoint's gate (concurrency cap, rate limit, breaker), and
//! makes exactly one HTTP request, or returns at once with a deferral.
//!
//! A delivery that can be woken (it says how much of its age is left) and is refused by an
//! open breaker is parked on the endpoint; the attempt whose probe closes the breaker
//! signals each delivery still parked ([`crate::workflow::DeliveryWorkflow::breaker_closed`])
//! in the background.
//!
//! Both local activities keep what they did in an [`ActivityMemo`]: one run again because
//! its workflow task failed after it ran answers with its first result, so no request is
//! sent twice and no delivery counted twice.
// The Temporal macros generate undocumented items beside the documented methods.
#![allow(missing_docs)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use hookflow_core::{
    AttemptErrorKind, AttemptReport, AttemptStep, Deferral, DeferralReason, DeliveryInput,
    DestinationCatalog, DestinationState,
    outcomes::{FinishedDelivery, OutcomeAggregator},
    request::prepare,
    sync::LockUnpoisoned,
};
use hookflow_http::{
    ActivityMemo, DeliveryClient,
    isolation::{DisabledDestinations, EndpointGate, FailureStreaks, Waiter},
};
use hookflow_telemetry::names;
use serde::{Deserialize, Serialize};
use temporalio_client::WorkflowSignalOptions;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::Instrument;

use crate::workflow::DeliveryWorkflow;

/// How often a running attempt tells Temporal its worker is alive.
pub const ACTIVITY_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Signals in flight at once when a closed breaker wakes its waiters.
const WAKE_CONCURRENCY: usize = 16;

/// The input of one attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptInput {
    /// The delivery being attempted.
    pub delivery: DeliveryInput,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// How much of the delivery's maximum age is left, given by deliveries that listen for
    /// [`DeliveryWorkflow::breaker_closed`]: an open breaker then defers them until it
    /// closes (or, at the latest, past its longest cooldown). Absent in attempts recorded
    /// before, which wait for each probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_left_ms: Option<u64>,
    /// Whether the delivery comes back from a wait for its endpoint's breaker, so it may be
    /// parked on the endpoint: the gate takes it out before anything else, so the attempt
    /// that closes the breaker never signals it while this task may complete it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_breaker_wait: bool,
}

/// What the outcome activity records: the finished delivery (ids, outcome, attempts and,
/// for a failure, the last attempt's kind and description; never a secret or a body).
pub type OutcomeInput = FinishedDelivery;

/// What the attempt activity needs: the HTTP client, the destination store, the endpoint
/// gate and the registry of disabled destinations.
pub struct DeliveryActivities {
    client: DeliveryClient,
    destinations: Arc<dyn DestinationCatalog>,
    gate: Arc<EndpointGate>,
    disabled: Arc<DisabledDestinations>,
    outcomes: Option<Arc<Mutex<OutcomeAggregator>>>,
    streaks: Option<Arc<FailureStreaks>>,
    memo: ActivityMemo,
    site_url: String,
}

impl DeliveryActivities {
    /// Activities that deliver with `client` to destinations from `destinations`, through
    /// `gate`, skipping destinations in `disabled`.
    pub fn new(
        client: DeliveryClient,
        destinations: Arc<dyn DestinationCatalog>,
        gate: Arc<EndpointGate>,
        disabled: Arc<DisabledDestinations>,
    ) -> Self {
        DeliveryActivities {
            client,
            destinations,
            gate,
            disabled,
            outcomes: None,
            streaks: None,
            memo: ActivityMemo::new(None),
            site_url: String::new(),
        }
    }

    /// Keeps what local activities did in `memo` (shared through Redis), so one run again
    /// after its workflow task failed does not act twice; by default in this process only.
    pub fn with_memo(mut self, memo: ActivityMemo) -> Self {
        self.memo = memo;
        self
    }

    /// Links in messages point to `site_url` (for example `https://app.example.com`).
    pub fn with_site_url(mut self, site_url: &str) -> Self {
        self.site_url = site_url.trim_end_matches('/').to_owned();
        self
    }

    /// Also counts every attempt's result into `streaks`, so a destination whose endpoint
    /// keeps failing is warned about and disabled.
    pub fn with_streaks(mut self, streaks: Arc<FailureStreaks>) -> Self {
        self.streaks = Some(streaks);
        self
    }

    /// Also aggregates finished deliveries into `outcomes` for the per-team outcomes topic.
    pub fn with_outcomes(mut self, outcomes: Arc<Mutex<OutcomeAggregator>>) -> Self {
        self.outcomes = Some(outcomes);
        self
    }

    /// The step of one attempt, run by the activity `ctx`: the destination resolved and
    /// checked, the gate passed (or a deferral), the request sent. An attempt that closed
    /// its endpoint's breaker wakes the deliveries waiting for that.
    async fn attempt_step(&self, input: &AttemptInput, ctx: &ActivityContext) -> AttemptStep {
        let delivery = &input.delivery;
        // Ids are freed on delete and may be taken again by any team: a destination that is
        // not the one this delivery was planned for (another team's, or a recreated one) is
        // as good as deleted. Its URL and secret must never see this delivery.
        let destination = self
            .destinations
            .get(delivery.event.team_id, &delivery.destination_id)
            .filter(|d| delivery.was_planned_for(d));
        let Some(destination) = destination else {
            return AttemptStep::DestinationDeleted;
        };
        match &destination.state {
            DestinationState::Enabled => {}
            // A pause has no end the gate knows: the wait follows the deferral back-off.
            DestinationState::Paused => {
                return deferred(Deferral {
                    reason: DeferralReason::Paused,
                    wait_ms: 0,
                });
            }
            DestinationState::Disabled(reason) => {
                return AttemptStep::DestinationDisabled(reason.clone());
            }
        }
        if let Some(disabled) = self.disabled.check(&destination).await {
            return AttemptStep::DestinationDisabled(disabled.reason);
        }
        let timestamp = chrono::Utc::now().timestamp();
        let request = match prepare(&destination, delivery, &self.site_url, timestamp) {
            Ok(request) => request,
            Err(error) => {
                let report = AttemptReport::failed(AttemptErrorKind::Invalid, error.to_string(), 0);
                return AttemptStep::Attempted(report);
            }
        };
        let waiter = ctx
            .info()
            .workflow_id
            .as_deref()
            .zip(input.age_left_ms)
            .map(|(workflow_id, age_left_ms)| Waiter {
                workflow_id,
                age_left: Duration::from_millis(age_left_ms),
                after_breaker_wait: input.after_breaker_wait,
            });
        let pass = match self.gate.enter(&destination, waiter).await {
            Ok(pass) => pass,
            Err(deferral) => return deferred(deferral),
        };
        let report = self.client.send_to(&destination, request).await;
        metrics::counter!(names::DELIVERY_ATTEMPTS, "class" => report.class()).increment(1);
        metrics::histogram!(names::DELIVERY_ATTEMPT_DURATION)
            .record(report.duration_ms as f64 / 1000.0);
        tracing::debug!(status = ?report.status, class = report.class(), duration_ms = report.duration_ms, "attempt finished");
        // A notices destination is never auto-disabled: a notice of its own failing could
        // only fail to reach it.
        if let (Some(streaks), false) = (&self.streaks, destination.notices) {
            streaks.record(&destination, &report);
        }
        let to_wake = self.gate.leave(&destination, pass, &report).await;
        wake(ctx, to_wake);
        if let (true, Some(produced_ms)) = (report.is_success(), delivery.produced_at_ms) {
            let latency_ms = chrono::Utc::now().timestamp_millis() - produced_ms;
            metrics::histogram!(names::DELIVERY_END_TO_END_DURATION)
                .record(latency_ms.max(0) as f64 / 1000.0);
        }
        if report.status == Some(410) {
            let reason = format!(
                "the endpoint answered 410 Gone to delivery {}",
                delivery.delivery_id
            );
            self.disabled.disable(&destination, reason).await;
        }
        AttemptStep::Attempted(report)
    }
}

/// Signals each delivery in `workflow_ids` that its endpoint's breaker closed, a few at a
/// time, in the background: the attempt that closed it does not wait. A delivery that has
/// finished since, or that Temporal does not reach now, wakes by its own timer.
fn wake(ctx: &ActivityContext, workflow_ids: Vec<String>) {
    if workflow_ids.is_empty() {
        return;
    }
    let client = ctx.client();
    tracing::info!(
        deliveries = workflow_ids.len(),
        "breaker closed: waking the deliveries that waited for it"
    );
    tokio::spawn(async move {
        futures::stream::iter(workflow_ids)
            .for_each_concurrent(WAKE_CONCURRENCY, |workflow_id| {
                let client = client.clone();
                async move {
                    let signalled = client
                        .get_workflow_handle::<DeliveryWorkflow>(&workflow_id)
                        .signal(
                            DeliveryWorkflow::breaker_closed,
                            (),
                            WorkflowSignalOptions::default(),
                        )
                        .await;
                    let result = match signalled {
                        Ok(()) => "signalled",
                        Err(error) => {
                            tracing::debug!(%error, %workflow_id, "delivery not woken");
                            "error"
                        }
                    };
                    metrics::counter!(names::BREAKER_WAKEUPS, "result" => result).increment(1);
                }
            })
            .await;
    });
}

/// The memo key of the local activity `ctx` runs (`None` for an activity task, which
/// Temporal records by itself).
fn memo_key(ctx: &ActivityContext) -> Option<String> {
    let info = ctx.info();
    let run_id = info.workflow_run_id.as_deref().filter(|_| info.is_local)?;
    Some(ActivityMemo::key(run_id, &info.activity_id))
}

/// Logs and counts a local activity answered from the memo.
fn recalled(activity: &'static str) {
    metrics::counter!(names::ACTIVITIES_RECALLED, "activity" => activity).increment(1);
    tracing::info!(
        activity,
        "local activity ran before in this workflow task; its recorded result is used"
    );
}

/// Every deferral goes through here, so each is counted once, by reason.
fn deferred(deferral: Deferral) -> AttemptStep {
    metrics::counter!(names::DEFERRALS, "reason" => deferral.reason.as_str()).increment(1);
    tracing::debug!(
        reason = deferral.reason.as_str(),
        wait_ms = deferral.wait_ms,
        "attempt deferred"
    );
    AttemptStep::Deferred(deferral)
}

#[activities]
impl DeliveryActivities {
    /// Counts a finished delivery by outcome and its attempts, and adds it to the per-team
    /// outcomes. Run by the workflow as a local activity, once per delivery: run again in
    /// the same workflow run (its workflow task failed), it finds its memo and counts
    /// nothing.
    #[activity]
    pub async fn record_outcome(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: OutcomeInput,
    ) -> Result<(), ActivityError> {
        let key = memo_key(&ctx);
        if let Some(key) = &key
            && self.memo.recalled(key).await.is_some()
        {
            recalled("record_outcome");
            return Ok(());
        }
        metrics::counter!(names::DELIVERIES, "outcome" => input.outcome.as_str()).increment(1);
        metrics::histogram!(names::DELIVERY_ATTEMPTS_PER_DELIVERY)
            .record(f64::from(input.attempts));
        if let Some(outcomes) = &self.outcomes {
            outcomes.lock_unpoisoned().record(&input);
        }
        if let Some(key) = &key {
            self.memo.record(key, "counted".to_owned()).await;
        }
        Ok(())
    }

    /// Makes one HTTP attempt and reports its outcome, or defers it. It never fails as an
    /// activity: every outcome, including errors, is a step for the workflow to decide on.
    #[activity]
    pub async fn attempt(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: AttemptInput,
    ) -> Result<AttemptStep, ActivityError> {
        let span = tracing::info_span!(
            "delivery_attempt",
            delivery_id = %input.delivery.delivery_id,
            team_id = input.delivery.event.team_id,
            destination_id = %input.delivery.destination_id,
            attempt = input.attempt,
        );
        // Run before in this workflow task (which failed or was lost after the request went
        // out): the endpoint has its request; the report it gave is the answer.
        let key = memo_key(&ctx);
        if let Some(key) = &key
            && let Some(step) = self.memo.recalled(key).await
            && let Ok(step) = serde_json::from_str::<AttemptStep>(&step)
        {
            recalled("attempt");
            return Ok(step);
        }
        // Heartbeat while the request is out, so a worker that dies mid-attempt is noticed
        // within the heartbeat timeout instead of the whole activity timeout.
        let step = self.attempt_step(&input, &ctx).instrument(span);
        tokio::pin!(step);
        let mut heartbeat = tokio::time::interval(ACTIVITY_HEARTBEAT_INTERVAL);
        let step = loop {
            tokio::select! {
                step = &mut step => break step,
                _ = heartbeat.tick() => {
                    if let Err(error) = ctx.record_heartbeat(()).await {
                        tracing::warn!(%error, "activity heartbeat failed");
                    }
                }
            }
        };
        // Only a step with an effect to keep from repeating: a deferral sent nothing.
        if let (Some(key), AttemptStep::Attempted(_)) = (&key, &step)
            && let Ok(json) = serde_json::to_string(&step)
        {
            self.memo.record(key, json).await;
        }
        Ok(step)
    }
}
