//! Running deliveries again, for operators recovering from an outage: a replay with
//! `--include-failed` re-runs the pairs whose delivery failed, a bulk redelivery re-runs a
//! destination's failed deliveries found through visibility, and a single redelivery runs
//! one delivery again whatever its last run did.
//!
//! A re-run is a new run of the same workflow id, for the same event, so the receiver sees
//! the same `webhook-id`, and one (event, destination) has at most one live attempt chain:
//! Temporal refuses a new run while one runs. Chains an earlier version started under
//! `<delivery id>:redelivery-<ms>` are not re-run themselves; while one runs, its delivery
//! is not re-run either. Its input is planned again for the destination as it is now (a
//! replay plans it from the event; a bulk redelivery re-plans the recorded one), so a
//! re-run retries under today's retry policy, not the one the failed run gave up under.
//!
//! A re-run is started only when the latest run ended with a recoverable outcome
//! ([`DeliveryOutcome::is_recoverable`]), and with a start request id derived from that
//! run's id: two operators (or a retried request) re-running the same failed run at once
//! get one new run between them, because Temporal answers a start whose request id the
//! current run was started with by returning that run instead of starting another.
//!
//! Recovery starts go to the task queue with [`RECOVERY_PRIORITY`], below live traffic's
//! default, and never eagerly: where the server dispatches by priority, a large recovery
//! waits behind live deliveries instead of ahead of them.

use std::collections::HashSet;

use futures::StreamExt;
use hookflow_core::{DeliveryDefaults, DeliveryInput, DeliveryOutcome, Destination};
use serde::Serialize;
use temporalio_client::{
    Client, NamespacedClient, Priority, WorkflowExecutionStatus, WorkflowListOptions,
    errors::WorkflowInteractionError,
    tonic::{Code, IntoRequest},
};
use temporalio_common::{
    WorkflowDefinition,
    data_converters::{SerializationContextData, WorkflowSerializationContext},
    protos::temporal::api::{
        common::v1::{Payloads, WorkflowType},
        enums::v1::{WorkflowIdConflictPolicy, WorkflowIdReusePolicy},
        taskqueue::v1::TaskQueue,
        workflowservice::v1::StartWorkflowExecutionRequest,
    },
};

use crate::{
    connection::TemporalError,
    deliveries::{self, DeliveryFilter, outcome_of},
    search_attributes, starter,
    workflow::DeliveryWorkflow,
};

/// The task-queue priority of recovery starts: Temporal's keys run from 1 (first) to 5,
/// and a start without one counts as 3, as live deliveries do.
pub const RECOVERY_PRIORITY: u32 = 4;

/// The priority of recovery starts.
pub fn recovery_priority() -> Priority {
    Priority::builder().priority_key(RECOVERY_PRIORITY).build()
}

/// Where a delivery stands, from its latest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Latest {
    /// No run of it exists.
    None,
    /// Its latest run is still going.
    Running {
        /// The run.
        run_id: String,
    },
    /// Its latest run ended (`outcome` is `None` when it ended without one: failed by a bug,
    /// terminated, timed out).
    Closed {
        /// The run.
        run_id: String,
        /// How it ended.
        outcome: Option<DeliveryOutcome>,
        /// The workflow status it ended with.
        status: WorkflowExecutionStatus,
        /// Its person hash, which a run after it carries too (an erasure finds it).
        person_hash: Option<String>,
    },
}

impl Latest {
    /// The run to re-run, when this delivery may be run again: it ended with a recoverable
    /// outcome, or failed or timed out without one. An operator's terminate or cancel
    /// stays ended.
    pub fn recoverable_run(&self) -> Option<&str> {
        match self {
            Latest::Closed {
                run_id, outcome, ..
            } if outcome.is_some_and(DeliveryOutcome::is_recoverable) => Some(run_id),
            Latest::Closed {
                run_id,
                outcome: None,
                status: WorkflowExecutionStatus::Failed | WorkflowExecutionStatus::TimedOut,
                ..
            } => Some(run_id),
            _ => None,
        }
    }
}

/// The mark of the workflow ids an earlier version gave single redeliveries
/// (`<delivery id>:redelivery-<unix ms>`).
const LEGACY_REDELIVERY: &str = ":redelivery-";

/// Whether `workflow_id` is a single redelivery an earlier version started under an id of
/// its own.
pub fn is_legacy_redelivery(workflow_id: &str) -> bool {
    workflow_id.contains(LEGACY_REDELIVERY)
}

/// Whether a redelivery an earlier version started for delivery `workflow_id` under an id
/// of its own is still running: a second attempt chain for the same pair.
async fn legacy_redelivery_running(
    client: &Client,
    workflow_id: &str,
) -> Result<bool, TemporalError> {
    // Delivery ids are [A-Za-z0-9_.-]:uuid: safe inside single quotes.
    let query = format!(
        "WorkflowId STARTS_WITH '{workflow_id}{LEGACY_REDELIVERY}' AND ExecutionStatus = 'Running'"
    );
    let options = WorkflowListOptions::builder().limit(1).build();
    let mut running = client.list_workflows(query, options);
    match running.next().await {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(error)) => Err(TemporalError::Rpc(error.to_string())),
    }
}

/// Where delivery `workflow_id` stands.
pub async fn latest(client: &Client, workflow_id: &str) -> Result<Latest, TemporalError> {
    let handle = deliveries::run_handle(client, workflow_id, "");
    let description = match handle.describe(Default::default()).await {
        Ok(description) => description,
        Err(WorkflowInteractionError::NotFound(_)) => return Ok(Latest::None),
        Err(error) => return Err(TemporalError::Rpc(error.to_string())),
    };
    let Some(info) = description.raw_description.workflow_execution_info else {
        return Ok(Latest::None);
    };
    let status = WorkflowExecutionStatus::from(info.status());
    let run_id = info
        .execution
        .as_ref()
        .map(|e| e.run_id.clone())
        .unwrap_or_default();
    if status == WorkflowExecutionStatus::Running {
        return Ok(Latest::Running { run_id });
    }
    Ok(Latest::Closed {
        run_id,
        outcome: outcome_of(&info),
        status,
        person_hash: search_attributes::value_of(&info, search_attributes::PERSON_HASH.name()),
    })
}

/// The input a re-run starts with.
#[derive(Debug, Clone)]
pub enum RerunInput<'a> {
    /// Planned from the event just now (a replay's).
    Planned(Box<DeliveryInput>),
    /// The failed run's recorded input, planned again for `destination` as it is now
    /// ([`DeliveryInput::replanned`]).
    Recorded {
        /// The destination, as delivery sees it now.
        destination: &'a Destination,
        /// The deployment's delivery settings now.
        defaults: &'a DeliveryDefaults,
    },
}

/// What [`rerun`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    /// A new run started.
    Started,
    /// Another caller re-ran the same failed run first; its run goes on.
    AlreadyRerun,
    /// The latest run is still going: nothing to re-run.
    Pending,
    /// The latest run did not fail (it delivered, or an operator stopped it).
    NotFailed,
    /// No run of this delivery exists.
    Unknown,
    /// The failed run was planned for an earlier destination of this id (deleted and
    /// created again): it is not this destination's to re-run.
    Replaced,
}

/// Re-runs delivery `workflow_id` with `input` if its latest run failed.
pub async fn rerun(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: RerunInput<'_>,
) -> Result<Rerun, TemporalError> {
    run_again(
        client,
        task_queue,
        workflow_id,
        input,
        Latest::recoverable_run,
    )
    .await
}

/// Runs delivery `workflow_id` again with `input` once its latest run has ended, whatever it
/// ended with (an operator's single redelivery: a receiver lost a delivered one, say).
pub async fn redeliver(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: RerunInput<'_>,
) -> Result<Rerun, TemporalError> {
    run_again(
        client,
        task_queue,
        workflow_id,
        input,
        |latest| match latest {
            Latest::Closed { run_id, .. } => Some(run_id),
            _ => None,
        },
    )
    .await
}

/// Starts a new run of delivery `workflow_id` with `input`, after the run `after` picks
/// from its latest one (none: [`Rerun::NotFailed`]), unless a chain of it is running.
async fn run_again(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: RerunInput<'_>,
    after: impl Fn(&Latest) -> Option<&str>,
) -> Result<Rerun, TemporalError> {
    let latest = latest(client, workflow_id).await?;
    let (run_id, person_hash) = match &latest {
        Latest::None => return Ok(Rerun::Unknown),
        Latest::Running { .. } => return Ok(Rerun::Pending),
        Latest::Closed { person_hash, .. } => match after(&latest) {
            Some(run_id) => (run_id.to_owned(), person_hash.clone()),
            None => return Ok(Rerun::NotFailed),
        },
    };
    if legacy_redelivery_running(client, workflow_id).await? {
        return Ok(Rerun::Pending);
    }
    let input = match input {
        RerunInput::Planned(input) => input.restarted(),
        RerunInput::Recorded {
            destination,
            defaults,
        } => match deliveries::recorded_input(client, workflow_id, Some(&run_id)).await? {
            None => return Ok(Rerun::Unknown),
            Some(recorded) => match recorded.replanned(destination, defaults) {
                Some(input) => input,
                None => return Ok(Rerun::Replaced),
            },
        },
    };
    start_run(client, task_queue, workflow_id, &run_id, input, person_hash).await
}

/// Starts a new run of `workflow_id` after its ended run `after_run_id`.
async fn start_run(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    after_run_id: &str,
    input: DeliveryInput,
    person_hash: Option<String>,
) -> Result<Rerun, TemporalError> {
    // Through the client's data converter, so the input is encrypted like any other.
    let context = SerializationContextData::Workflow(WorkflowSerializationContext::new());
    let payload = client
        .data_converter()
        .to_payload(&context, &input)
        .await
        .map_err(|e| TemporalError::Rpc(format!("{workflow_id}: encoding the input: {e}")))?;
    let request = StartWorkflowExecutionRequest {
        namespace: client.namespace(),
        workflow_id: workflow_id.to_owned(),
        workflow_type: Some(WorkflowType {
            name: DeliveryWorkflow::run.name().to_owned(),
        }),
        task_queue: Some(TaskQueue {
            name: task_queue.to_owned(),
            ..Default::default()
        }),
        input: Some(Payloads {
            payloads: vec![payload],
        }),
        identity: client.identity(),
        // The same for every re-run after this run: see the module documentation.
        request_id: format!("hookflow-rerun-{after_run_id}"),
        workflow_id_reuse_policy: WorkflowIdReusePolicy::AllowDuplicate as i32,
        workflow_id_conflict_policy: WorkflowIdConflictPolicy::Fail as i32,
        search_attributes: Some(search_attributes::for_delivery(&input, person_hash).into_proto()),
        priority: Some(starter::priority(&input, true).into()),
        ..Default::default()
    };
    match client
        .connection()
        .workflow_service()
        .start_workflow_execution(request.into_request())
        .await
    {
        Ok(response) if response.get_ref().started => Ok(Rerun::Started),
        Ok(_) => Ok(Rerun::AlreadyRerun),
        // Someone else's run of this id is going (a concurrent replay's live-id start).
        Err(status) if status.code() == Code::AlreadyExists => Ok(Rerun::Pending),
        Err(status) => Err(TemporalError::Rpc(format!(
            "re-running {workflow_id}: {} ({:?})",
            status.message(),
            status.code()
        ))),
    }
}

/// The counts of a bulk redelivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedeliveryCounts {
    /// Deliveries the query found (each once, whatever number of runs matched).
    pub matched: usize,
    /// Re-runs started.
    pub started: usize,
    /// Deliveries already re-running (by an earlier request still pending, say).
    pub pending: usize,
    /// Deliveries whose latest run did not fail (delivered since, or stopped by an
    /// operator).
    pub not_failed: usize,
    /// Deliveries planned for an earlier destination of this id (deleted and created
    /// again): not re-run.
    pub replaced: usize,
    /// Whether `limit` stopped the query before its end (ask again for the rest).
    pub more: bool,
}

/// Re-runs the failed deliveries of `destination` (as delivery sees it now) that `filter`
/// finds (its outcomes must be recoverable ones), at most `limit`, a few at a time, each
/// planned again with `defaults`.
///
/// Idempotent: a delivery re-run by an earlier request is running (`pending`) or has a new
/// latest run (`not_failed` once delivered), so asking again starts nothing new for it.
pub async fn redeliver_failed(
    client: &Client,
    task_queue: &str,
    destination: &Destination,
    defaults: &DeliveryDefaults,
    filter: &DeliveryFilter,
    limit: usize,
) -> Result<RedeliveryCounts, TemporalError> {
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    let mut counts = RedeliveryCounts::default();
    let mut runs = client.list_workflows(
        filter.query(destination.team_id, &destination.id),
        WorkflowListOptions::default(),
    );
    while let Some(run) = runs.next().await {
        let run = run.map_err(|e| TemporalError::Rpc(e.to_string()))?;
        // An earlier version's redelivery chain: its delivery's own id is re-run, if its
        // latest run failed, never the chain besides it.
        if is_legacy_redelivery(run.id()) {
            continue;
        }
        if seen.insert(run.id().to_owned()) {
            if ids.len() == limit {
                counts.more = true;
                break;
            }
            ids.push(run.id().to_owned());
        }
    }
    counts.matched = ids.len();
    let reruns: Vec<Result<Rerun, TemporalError>> = futures::stream::iter(ids)
        .map(|id| async move {
            let input = RerunInput::Recorded {
                destination,
                defaults,
            };
            rerun(client, task_queue, &id, input).await
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for rerun in reruns {
        match rerun? {
            Rerun::Started => counts.started += 1,
            Rerun::AlreadyRerun | Rerun::Pending => counts.pending += 1,
            Rerun::NotFailed | Rerun::Unknown => counts.not_failed += 1,
            Rerun::Replaced => counts.replaced += 1,
        }
    }
    Ok(counts)
}
