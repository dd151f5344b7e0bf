//! Erasing one person's deliveries of one team: every run that carries the person's hash
//! (`HookflowPersonHash`, [`hookflow_core::person`]) and the team is deleted from Temporal,
//! with its input (the event), its history and its result. A run still going is stopped
//! first by the deletion itself (the server terminates it): its delivery is cancelled, never
//! to be sent. The report lists the delivery ids, which name destinations and event uuids,
//! never the person.
//!
//! Visibility is eventually consistent: a run started a moment before the erasure may not
//! be listed yet, and a deleted one may still be listed a moment after. Erasing again is
//! harmless (a run already deleted is skipped, not counted), so an erasure can be repeated
//! until it reports nothing.

use std::collections::BTreeSet;

use futures::StreamExt;
use hookflow_core::person::PersonKey;
use serde::Serialize;
use temporalio_client::{
    Client, NamespacedClient, WorkflowListOptions,
    tonic::{Code, IntoRequest},
};
use temporalio_common::protos::temporal::api::{
    common::v1::WorkflowExecution, enums::v1::WorkflowExecutionStatus,
    workflowservice::v1::DeleteWorkflowExecutionRequest,
};

use crate::{connection::TemporalError, search_attributes};

/// What an erasure deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    /// The team.
    pub team_id: i64,
    /// Deliveries that were still going (cancelled: their runs stopped and deleted).
    pub cancelled: usize,
    /// Deliveries that had ended (their runs deleted).
    pub deleted: usize,
    /// The runs deleted.
    pub runs: usize,
    /// The delivery ids of both, sorted.
    pub deliveries: Vec<String>,
}

/// Deletes every delivery run of the person `distinct_id` in team `team_id`, found by the
/// person hash `key` gives them.
pub async fn erase(
    client: &Client,
    key: &PersonKey,
    team_id: i64,
    distinct_id: &str,
) -> Result<ErasureReport, TemporalError> {
    // Hex, so safe in a query whatever the distinct id holds.
    let person_hash = key.hash(team_id, distinct_id);
    let query = format!(
        "{} = {team_id} AND {} = '{person_hash}'",
        search_attributes::TEAM_ID.name(),
        search_attributes::PERSON_HASH.name()
    );
    let mut listed = Vec::new();
    let mut runs = client.list_workflows(query, WorkflowListOptions::default());
    while let Some(run) = runs.next().await {
        let run = run.map_err(|e| TemporalError::Rpc(e.to_string()))?;
        let info = run.raw();
        let run_id = info
            .execution
            .as_ref()
            .map(|e| e.run_id.clone())
            .unwrap_or_default();
        let going = info.status() == WorkflowExecutionStatus::Running;
        listed.push((run.id().to_owned(), run_id, going));
    }
    let mut report = ErasureReport {
        team_id,
        ..ErasureReport::default()
    };
    let (mut cancelled, mut deleted) = (BTreeSet::new(), BTreeSet::new());
    for (workflow_id, run_id, going) in listed {
        if !delete_run(client, &workflow_id, &run_id).await? {
            continue;
        }
        report.runs += 1;
        if going {
            cancelled.insert(workflow_id);
        } else {
            deleted.insert(workflow_id);
        }
    }
    // A delivery whose latest run was going is cancelled, whatever its earlier runs did.
    deleted.retain(|id| !cancelled.contains(id));
    report.cancelled = cancelled.len();
    report.deleted = deleted.len();
    report.deliveries = cancelled.into_iter().chain(deleted).collect();
    report.deliveries.sort();
    Ok(report)
}

/// Deletes one run; `false` when it is gone already.
async fn delete_run(
    client: &Client,
    workflow_id: &str,
    run_id: &str,
) -> Result<bool, TemporalError> {
    let request = DeleteWorkflowExecutionRequest {
        namespace: client.namespace(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: workflow_id.to_owned(),
            run_id: run_id.to_owned(),
        }),
    };
    match client
        .connection()
        .workflow_service()
        .delete_workflow_execution(request.into_request())
        .await
    {
        Ok(_) => Ok(true),
        Err(status) if status.code() == Code::NotFound => Ok(false),
        Err(status) => Err(TemporalError::Rpc(format!(
            "deleting {workflow_id}: {}",
            status.message()
        ))),
    }
}
