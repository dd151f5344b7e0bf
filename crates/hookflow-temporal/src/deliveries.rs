//! The deliveries of a destination as Temporal sees them, for the admin API: listed through
//! visibility on hookflow's search attributes, one looked up by event uuid, one delivered
//! again, and every pending one cancelled or terminated.

use std::time::SystemTime;

use futures::StreamExt;
use hookflow_core::{DeliveryId, DeliveryInput, DeliveryResult};
use serde::Serialize;
use temporalio_client::NamespacedClient;
use temporalio_client::{
    Client, WorkflowCancelOptions, WorkflowExecution, WorkflowExecutionStatus, WorkflowListOptions,
    WorkflowStartOptions, WorkflowTerminateOptions, errors::WorkflowGetResultError,
};
use temporalio_common::{
    data_converters::{SerializationContextData, WorkflowSerializationContext},
    protos::temporal::api::history::v1::history_event::Attributes,
};

use crate::{connection::TemporalError, search_attributes, workflow::DeliveryWorkflow};

/// One delivery, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    /// `destination:uuid`, also the `webhook-id`.
    pub delivery_id: String,
    /// `running`, `completed`, `canceled`, `terminated`, `failed`, `timed_out`, …
    pub status: String,
    /// How it ended (`delivered`, `gave_up`, …), once it has.
    pub outcome: Option<String>,
    /// When it started, RFC 3339.
    pub started_at: Option<String>,
    /// When it ended, RFC 3339.
    pub closed_at: Option<String>,
    /// Its result, when looked up one by one and finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<DeliveryResult>,
}

fn query(team_id: i64, destination_id: &str) -> String {
    // Destination ids are [A-Za-z0-9_.-]: safe inside single quotes.
    format!(
        "{} = {team_id} AND {} = '{destination_id}'",
        search_attributes::TEAM_ID.name(),
        search_attributes::DESTINATION_ID.name()
    )
}

/// The most recent deliveries of a destination, newest first.
pub async fn list(
    client: &Client,
    team_id: i64,
    destination_id: &str,
    limit: usize,
) -> Result<Vec<DeliveryView>, TemporalError> {
    let options = WorkflowListOptions::builder().limit(limit).build();
    let mut stream = client.list_workflows(query(team_id, destination_id), options);
    let mut views = Vec::new();
    while let Some(execution) = stream.next().await {
        let execution = execution.map_err(|e| TemporalError::Rpc(e.to_string()))?;
        views.push(view(&execution));
    }
    views.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    Ok(views)
}

/// One delivery by event uuid, with its result when finished; `None` when there is none.
pub async fn get(
    client: &Client,
    team_id: i64,
    delivery: &DeliveryId,
) -> Result<Option<DeliveryView>, TemporalError> {
    let destination_id = delivery.as_str().split(':').next().unwrap_or_default();
    let query = format!(
        "{} AND WorkflowId = '{}'",
        query(team_id, destination_id),
        delivery.as_str()
    );
    let options = WorkflowListOptions::builder().limit(1).build();
    let mut stream = client.list_workflows(query, options);
    let Some(execution) = stream.next().await else {
        return Ok(None);
    };
    let execution = execution.map_err(|e| TemporalError::Rpc(e.to_string()))?;
    let mut view = view(&execution);
    if execution.status() == WorkflowExecutionStatus::Completed {
        let handle = client.get_workflow_handle::<DeliveryWorkflow>(delivery.as_str());
        match handle.get_result(Default::default()).await {
            Ok(result) => view.result = Some(result),
            Err(WorkflowGetResultError::NotFound(_)) => {}
            Err(error) => return Err(TemporalError::Rpc(error.to_string())),
        }
    }
    Ok(Some(view))
}

/// Starts a new attempt chain for a delivery that exists: the same input, so the same
/// `webhook-id` (receivers dedupe on it), under the workflow id
/// `<delivery id>:redelivery-<unix ms>`; that id, or `None` when the delivery is unknown.
pub async fn redeliver(
    client: &Client,
    task_queue: &str,
    team_id: i64,
    delivery: &DeliveryId,
) -> Result<Option<String>, TemporalError> {
    if get(client, team_id, delivery).await?.is_none() {
        return Ok(None);
    }
    let handle = client.get_workflow_handle::<DeliveryWorkflow>(delivery.as_str());
    let mut history = handle.fetch_history(Default::default());
    let started = match history.next().await {
        Some(Ok(event)) => event,
        Some(Err(error)) => return Err(TemporalError::Rpc(error.to_string())),
        None => return Ok(None),
    };
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(attributes)) = started.attributes
    else {
        return Err(TemporalError::Rpc(format!(
            "{delivery}: history does not start with its input"
        )));
    };
    let unreadable = |why: String| TemporalError::Rpc(format!("{delivery}: workflow input: {why}"));
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
    // The latest run's input may carry a continued delivery's progress; a redelivery is a
    // new attempt chain.
    let input = input.restarted();
    let workflow_id = format!(
        "{delivery}:redelivery-{}",
        chrono::Utc::now().timestamp_millis()
    );
    let options = WorkflowStartOptions::new(task_queue.to_owned(), workflow_id.clone())
        .search_attributes(search_attributes::for_delivery(&input))
        .static_summary(format!("redelivery of {delivery}"))
        .build();
    client
        .start_workflow(DeliveryWorkflow::run, input, options)
        .await
        .map_err(|e| TemporalError::Rpc(e.to_string()))?;
    Ok(Some(workflow_id))
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

fn view(execution: &WorkflowExecution) -> DeliveryView {
    let status = match execution.status() {
        WorkflowExecutionStatus::Running => "running",
        WorkflowExecutionStatus::Completed => "completed",
        WorkflowExecutionStatus::Failed => "failed",
        WorkflowExecutionStatus::Canceled => "canceled",
        WorkflowExecutionStatus::Terminated => "terminated",
        WorkflowExecutionStatus::ContinuedAsNew => "continued_as_new",
        WorkflowExecutionStatus::TimedOut => "timed_out",
        WorkflowExecutionStatus::Paused => "paused",
        _ => "unknown",
    };
    let outcome = execution
        .raw()
        .search_attributes
        .as_ref()
        .and_then(|sa| sa.indexed_fields.get(search_attributes::OUTCOME.name()))
        .and_then(|payload| serde_json::from_slice::<String>(&payload.data).ok());
    DeliveryView {
        delivery_id: execution.id().to_owned(),
        status: status.to_owned(),
        outcome,
        started_at: execution.start_time().map(rfc3339),
        closed_at: execution.close_time().map(rfc3339),
        result: None,
    }
}

fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339()
}
