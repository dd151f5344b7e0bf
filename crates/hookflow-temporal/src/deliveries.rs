//! The deliveries of a destination as Temporal sees them, for the admin API: paged through
//! visibility on hookflow's search attributes (filtered by outcome and start time), one
//! looked up by event uuid, and every pending one cancelled or terminated. Running one
//! again is [`crate::recovery`]'s.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as BASE64};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hookflow_core::{DeliveryId, DeliveryInput, DeliveryOutcome, DeliveryResult};
use serde::Serialize;
use temporalio_client::{
    Client, NamespacedClient, WorkflowCancelOptions, WorkflowExecutionInfo,
    WorkflowExecutionStatus, WorkflowHandle, WorkflowListOptions, WorkflowTerminateOptions,
    errors::{WorkflowGetResultError, WorkflowInteractionError},
    tonic::{Code, IntoRequest},
};
use temporalio_common::{
    data_converters::{SerializationContextData, WorkflowSerializationContext},
    protos::temporal::api::{
        history::v1::history_event::Attributes,
        workflow::v1::WorkflowExecutionInfo as ProtoExecutionInfo,
        workflowservice::v1::ListWorkflowExecutionsRequest,
    },
};

use crate::{connection::TemporalError, search_attributes, workflow::DeliveryWorkflow};

/// One delivery run, as listed: a delivery re-run after it failed shows once per run.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    /// `destination:uuid` (`destination:uuid:t<team>` when another team's delivery holds
    /// that id), also the `webhook-id`.
    pub delivery_id: String,
    /// The Temporal run.
    pub run_id: String,
    /// `running`, `completed`, `canceled`, `terminated`, `failed`, `timed_out`, …
    pub status: String,
    /// How it ended (`delivered`, `gave_up`, …), once it has.
    pub outcome: Option<String>,
    /// When it started, RFC 3339.
    pub started_at: Option<String>,
    /// When it ended, RFC 3339.
    pub closed_at: Option<String>,
    /// HTTP attempts made, once it has ended.
    pub attempts: Option<u32>,
    /// The last HTTP status received, once it has ended (absent when no attempt got one).
    pub last_status: Option<u16>,
    /// The last attempt's description (`HTTP 503`, `timeout: …`), once it has ended.
    pub last_error: Option<String>,
    /// Its result, when looked up one by one and finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<DeliveryResult>,
}

/// Which deliveries of a destination a listing wants.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only runs that ended with one of these outcomes (any when empty).
    pub outcomes: Vec<DeliveryOutcome>,
    /// Only runs started at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only runs started before this time.
    pub until: Option<DateTime<Utc>>,
    /// Also runs that failed or timed out without an outcome (a workflow that failed by a
    /// bug, or ran past its execution timeout): what a bulk redelivery re-runs besides the
    /// failed outcomes.
    pub or_ended_without_outcome: bool,
}

impl DeliveryFilter {
    /// The visibility query of `destination_id`'s deliveries (of `team_id`) this filter
    /// keeps.
    pub(crate) fn query(&self, team_id: i64, destination_id: &str) -> String {
        let mut query = query(team_id, destination_id);
        if !self.outcomes.is_empty() {
            let outcomes: Vec<String> = self
                .outcomes
                .iter()
                .map(|o| format!("'{}'", o.as_str()))
                .collect();
            let with_outcome = format!(
                "{} IN ({})",
                search_attributes::OUTCOME.name(),
                outcomes.join(", ")
            );
            if self.or_ended_without_outcome {
                query.push_str(&format!(
                    " AND ({with_outcome} OR ExecutionStatus IN ('Failed', 'TimedOut'))"
                ));
            } else {
                query.push_str(&format!(" AND {with_outcome}"));
            }
        }
        if let Some(since) = self.since {
            query.push_str(&format!(" AND StartTime >= '{}'", since.to_rfc3339()));
        }
        if let Some(until) = self.until {
            query.push_str(&format!(" AND StartTime < '{}'", until.to_rfc3339()));
        }
        query
    }
}

/// One page of a destination's deliveries.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryPage {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
    /// Where the next page starts (opaque), absent on the last page.
    pub next_page_token: Option<String>,
}

fn query(team_id: i64, destination_id: &str) -> String {
    // Destination ids are [A-Za-z0-9_.-]: safe inside single quotes.
    format!(
        "{} = {team_id} AND {} = '{destination_id}'",
        search_attributes::TEAM_ID.name(),
        search_attributes::DESTINATION_ID.name()
    )
}

/// A page of at most `page_size` delivery runs of a destination that `filter` keeps, newest
/// first, from `page_token` (a previous page's `next_page_token`). The runs that ended
/// carry their attempts and last status, read from their results (one read per ended run,
/// a few at a time).
pub async fn page(
    client: &Client,
    team_id: i64,
    destination_id: &str,
    filter: &DeliveryFilter,
    page_size: usize,
    page_token: Option<&str>,
) -> Result<DeliveryPage, TemporalError> {
    let next_page_token = match page_token {
        None => Vec::new(),
        Some(token) => BASE64
            .decode(token)
            .map_err(|_| TemporalError::Invalid("page_token is not a page token".into()))?,
    };
    let request = ListWorkflowExecutionsRequest {
        namespace: client.namespace(),
        page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
        next_page_token,
        query: filter.query(team_id, destination_id),
    };
    let response = client
        .connection()
        .workflow_service()
        .list_workflow_executions(request.into_request())
        .await
        .map_err(|status| match status.code() {
            Code::InvalidArgument => TemporalError::Invalid(status.message().to_owned()),
            _ => TemporalError::Rpc(status.message().to_owned()),
        })?
        .into_inner();
    let deliveries = futures::stream::iter(response.executions.iter().map(view))
        .map(|view| async move {
            let view = with_result(client, view).await?;
            // The list shows the result's fields; the whole result is for one delivery.
            Ok(DeliveryView {
                result: None,
                ..view
            })
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DeliveryPage {
        deliveries,
        next_page_token: (!response.next_page_token.is_empty())
            .then(|| BASE64.encode(&response.next_page_token)),
    })
}

/// `view` with its result (attempts, last status), when its run completed.
async fn with_result(
    client: &Client,
    mut view: DeliveryView,
) -> Result<DeliveryView, TemporalError> {
    if view.status != "completed" {
        return Ok(view);
    }
    match run_handle(client, &view.delivery_id, &view.run_id)
        .get_result(Default::default())
        .await
    {
        Ok(result) => {
            let result: DeliveryResult = result;
            view.attempts = Some(result.attempts);
            view.last_status = result.last_status;
            view.last_error = result.last_error.clone();
            view.result = Some(result);
            Ok(view)
        }
        Err(WorkflowGetResultError::NotFound(_)) => Ok(view),
        Err(error) => Err(TemporalError::Rpc(error.to_string())),
    }
}

/// Team `team_id`'s delivery `delivery` (its latest run), with its result when finished;
/// `None` when there is none. It runs under `delivery`, or under
/// [`DeliveryId::for_team`] when another team's delivery holds that id
/// ([`crate::ownership`]).
pub async fn get(
    client: &Client,
    team_id: i64,
    delivery: &DeliveryId,
) -> Result<Option<DeliveryView>, TemporalError> {
    let query = format!(
        "{} AND WorkflowId IN ('{}', '{}')",
        query(team_id, delivery.destination_id()),
        delivery.as_str(),
        delivery.for_team(team_id).as_str()
    );
    let options = WorkflowListOptions::builder().limit(1).build();
    let mut stream = client.list_workflows(query, options);
    let Some(execution) = stream.next().await else {
        return Ok(None);
    };
    let execution = execution.map_err(|e| TemporalError::Rpc(e.to_string()))?;
    Ok(Some(with_result(client, view(execution.raw())).await?))
}

/// The input a delivery run was started with (of its latest run when `run_id` is `None`),
/// ready for a fresh start: without the progress a continued run carries, on the current
/// workflow revision. `None` when there is no such run.
pub(crate) async fn recorded_input(
    client: &Client,
    workflow_id: &str,
    run_id: Option<&str>,
) -> Result<Option<DeliveryInput>, TemporalError> {
    let handle = run_handle(client, workflow_id, run_id.unwrap_or_default());
    let mut history = handle.fetch_history(Default::default());
    let started = match history.next().await {
        Some(Ok(event)) => event,
        Some(Err(WorkflowInteractionError::NotFound(_))) | None => return Ok(None),
        Some(Err(error)) => return Err(TemporalError::Rpc(error.to_string())),
    };
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(attributes)) = started.attributes
    else {
        return Err(TemporalError::Rpc(format!(
            "{workflow_id}: history does not start with its input"
        )));
    };
    let unreadable =
        |why: String| TemporalError::Rpc(format!("{workflow_id}: workflow input: {why}"));
    let payload = attributes
        .input
        .and_then(|payloads| payloads.payloads.into_iter().next())
        .ok_or_else(|| unreadable("missing".into()))?;
    // Through the client's data converter, so an encrypted input is decrypted.
    let context = SerializationContextData::Workflow(WorkflowSerializationContext::new());
    let input: DeliveryInput = client
        .data_converter()
        .from_payload(&context, payload)
        .await
        .map_err(|e| unreadable(e.to_string()))?;
    Ok(Some(input.restarted()))
}

/// A handle on one run of a delivery workflow (the latest when `run_id` is empty).
pub(crate) fn run_handle(
    client: &Client,
    workflow_id: &str,
    run_id: &str,
) -> WorkflowHandle<Client, DeliveryWorkflow> {
    WorkflowHandle::new(
        client.clone(),
        WorkflowExecutionInfo::builder()
            .namespace(client.namespace())
            .workflow_id(workflow_id)
            .maybe_run_id((!run_id.is_empty()).then(|| run_id.to_owned()))
            .build(),
    )
}

/// Cancels (gracefully: no further attempt, outcome `cancelled`) or terminates every
/// running delivery of a destination; how many.
pub async fn stop_pending(
    client: &Client,
    team_id: i64,
    destination_id: &str,
    terminate: bool,
    reason: &str,
) -> Result<usize, TemporalError> {
    let running = format!(
        "{} AND ExecutionStatus = 'Running'",
        query(team_id, destination_id)
    );
    let mut stream = client.list_workflows(running, WorkflowListOptions::default());
    let mut stopped = 0;
    while let Some(execution) = stream.next().await {
        let execution = execution.map_err(|e| TemporalError::Rpc(e.to_string()))?;
        let handle = client.get_workflow_handle::<DeliveryWorkflow>(execution.id());
        let done = if terminate {
            let options = WorkflowTerminateOptions::builder()
                .reason(reason.to_owned())
                .build();
            handle.terminate(options).await
        } else {
            let options = WorkflowCancelOptions::builder()
                .reason(reason.to_owned())
                .build();
            handle.cancel(options).await
        };
        match done {
            Ok(()) => stopped += 1,
            // It may have finished meanwhile: nothing to stop.
            Err(error) => tracing::debug!(workflow_id = execution.id(), %error, "not stopped"),
        }
    }
    Ok(stopped)
}

/// How a listed run ended, from its `HookflowOutcome` search attribute.
pub(crate) fn outcome_of(info: &ProtoExecutionInfo) -> Option<DeliveryOutcome> {
    let name: String = search_attributes::value_of(info, search_attributes::OUTCOME.name())?;
    DeliveryOutcome::parse(&name)
}

/// The status of a listed run, as the API spells it.
pub(crate) fn status_name(status: WorkflowExecutionStatus) -> &'static str {
    match status {
        WorkflowExecutionStatus::Running => "running",
        WorkflowExecutionStatus::Completed => "completed",
        WorkflowExecutionStatus::Failed => "failed",
        WorkflowExecutionStatus::Canceled => "canceled",
        WorkflowExecutionStatus::Terminated => "terminated",
        WorkflowExecutionStatus::ContinuedAsNew => "continued_as_new",
        WorkflowExecutionStatus::TimedOut => "timed_out",
        WorkflowExecutionStatus::Paused => "paused",
        _ => "unknown",
    }
}

fn view(info: &ProtoExecutionInfo) -> DeliveryView {
    let execution = info.execution.clone().unwrap_or_default();
    DeliveryView {
        delivery_id: execution.workflow_id,
        run_id: execution.run_id,
        status: status_name(info.status().into()).to_owned(),
        outcome: outcome_of(info).map(|o| o.as_str().to_owned()),
        started_at: info
            .start_time
            .as_ref()
            .and_then(|t| rfc3339(t.seconds, t.nanos)),
        closed_at: info
            .close_time
            .as_ref()
            .and_then(|t| rfc3339(t.seconds, t.nanos)),
        attempts: None,
        last_status: None,
        last_error: None,
        result: None,
    }
}

/// A protobuf timestamp's `seconds` and `nanos` in RFC 3339.
fn rfc3339(seconds: i64, nanos: i32) -> Option<String> {
    let time = DateTime::<Utc>::from_timestamp(seconds, u32::try_from(nanos).ok()?)?;
    Some(time.to_rfc3339())
}
