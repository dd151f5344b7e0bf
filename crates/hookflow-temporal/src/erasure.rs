//! Erasing one person's deliveries of one team: every run that carries the person's hash
//! (`HookflowPersonHash`, [`hookflow_core::person`]) and the team is deleted from Temporal,
//! with its input (the event), its history and its result. A delivery still going is
//! cancelled: its current run is deleted (the server terminates it first), so no attempt
//! starts after; an attempt already out at that moment still completes. The report lists
//! the delivery ids, which name destinations and event uuids, never the person.
//!
//! Runs are found through visibility, which is eventually consistent: a run started a
//! moment before the erasure may not be listed yet, and a deleted one may still be listed
//! for a while (the server deletes an ended run in the background). Whether a delivery is
//! still going is asked of the run itself, which is up to date. Erasing again is harmless,
//! so an erasure can be repeated until it reports nothing.

use std::collections::BTreeSet;

use futures::StreamExt;
use hookflow_core::person::PersonKeys;
use serde::Serialize;
use temporalio_client::{
    Client, NamespacedClient, WorkflowListOptions,
    tonic::{Code, IntoRequest},
};
use temporalio_common::protos::temporal::api::{
    common::v1::WorkflowExecution, workflowservice::v1::DeleteWorkflowExecutionRequest,
};

use crate::{
    connection::TemporalError,
    recovery::{self, Latest},
    search_attributes,
};

/// What an erasure deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    /// The team.
    pub team_id: i64,
    /// Deliveries that were still going (cancelled: their current runs deleted).
    pub cancelled: usize,
    /// Deliveries that had ended (their runs deleted).
    pub deleted: usize,
    /// The runs deleted (a delivery continued or redelivered has several).
    pub runs: usize,
    /// The delivery ids of both, sorted.
    pub deliveries: Vec<String>,
    /// Deliveries a run of which could not be deleted, with why: erase again.
    pub failed: Vec<String>,
}

/// Deletes every delivery run of the person `distinct_id` in team `team_id`, found by the
/// person hashes `keys` give them (under the current key and every previous one).
pub async fn erase(
    client: &Client,
    keys: &PersonKeys,
    team_id: i64,
    distinct_id: &str,
) -> Result<ErasureReport, TemporalError> {
    // Hex, so safe in a query whatever the distinct id holds.
    let hashes: Vec<String> = keys
        .hashes(team_id, distinct_id)
        .into_iter()
        .map(|hash| format!("'{hash}'"))
        .collect();
    let query = format!(
        "{} = {team_id} AND {} IN ({})",
        search_attributes::TEAM_ID.name(),
        search_attributes::PERSON_HASH.name(),
        hashes.join(", ")
    );
    let mut listed = Vec::new();
    let mut runs = client.list_workflows(query, WorkflowListOptions::default());
    while let Some(run) = runs.next().await {
        let run = run.map_err(|e| {
            TemporalError::Rpc(format!(
                "listing the person's deliveries: {e} (is {} registered? run `hookflow \
                 register-search-attributes`)",
                search_attributes::PERSON_HASH.name()
            ))
        })?;
        let run_id = run.raw().execution.as_ref().map(|e| e.run_id.clone());
        listed.push((run.id().to_owned(), run_id.unwrap_or_default()));
    }
    let mut report = ErasureReport {
        team_id,
        ..ErasureReport::default()
    };
    let (mut cancelled, mut deleted, mut failed) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    // Deliveries still going: their current run, whichever it is now (one continued as new
    // since it was listed included), is deleted.
    let ids: BTreeSet<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
    let mut current_runs = BTreeSet::new();
    for id in ids {
        let going = match going_run(client, id).await {
            Ok(going) => going,
            Err(error) => {
                failed.insert(format!("{id}: {error}"));
                continue;
            }
        };
        // The run described is deleted by its id; one it continued as into meanwhile is
        // going then, and is deleted in turn (a few times at most: a continue takes a
        // round of attempts).
        let mut going = going;
        let mut rounds = 0;
        while let Some(run_id) = going.take() {
            match delete_run(client, id, &run_id).await {
                Ok(true) => {
                    report.runs += 1;
                    cancelled.insert(id.to_owned());
                    current_runs.insert(run_id.clone());
                }
                Ok(false) => {}
                Err(error) => {
                    failed.insert(format!("{id}: {error}"));
                    break;
                }
            }
            rounds += 1;
            match going_run(client, id).await {
                Ok(Some(next)) if next != run_id && rounds < 5 => going = Some(next),
                Ok(Some(next)) if next != run_id => {
                    failed.insert(format!("{id}: run {next} is still going"));
                }
                Ok(_) => {}
                Err(error) => {
                    failed.insert(format!("{id}: {error}"));
                }
            }
        }
    }
    for (id, run_id) in &listed {
        if run_id.is_empty() || current_runs.contains(run_id) {
            continue;
        }
        match delete_run(client, id, run_id).await {
            Ok(true) => {
                report.runs += 1;
                if !cancelled.contains(id) {
                    deleted.insert(id.clone());
                }
            }
            Ok(false) => {}
            Err(error) => {
                failed.insert(format!("{id}: {error}"));
            }
        }
    }
    report.cancelled = cancelled.len();
    report.deleted = deleted.len();
    report.deliveries = cancelled.into_iter().chain(deleted).collect();
    report.deliveries.sort();
    report.failed = failed.into_iter().collect();
    Ok(report)
}

/// The run id of delivery `id`'s current run if it is still going.
async fn going_run(client: &Client, id: &str) -> Result<Option<String>, TemporalError> {
    Ok(match recovery::latest(client, id).await? {
        Latest::Running { run_id } => Some(run_id),
        Latest::None | Latest::Closed { .. } => None,
    })
}

/// Deletes one run (the current one when `run_id` is empty); `false` when it is gone
/// already.
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
