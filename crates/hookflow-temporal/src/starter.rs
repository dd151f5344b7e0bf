//! Idempotent start of delivery workflows: the workflow id is the delivery id, started with
//! id-reuse policy `RejectDuplicate` and conflict policy `UseExisting`, so a second start of
//! the same pair either joins the running workflow or is answered "already started"; both
//! mean the pair is delivered or delivering.

use hookflow_core::{DeliveryInput, DeliveryScheduler, ScheduleError, ScheduleOutcome};
use temporalio_client::{
    Client, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
    errors::WorkflowStartError, tonic::Code,
};

use crate::{search_attributes, workflow::DeliveryWorkflow};

/// Starts delivery workflows on one task queue.
#[derive(Clone)]
pub struct TemporalScheduler {
    client: Client,
    task_queue: String,
}

impl TemporalScheduler {
    /// A scheduler that starts workflows on `task_queue`.
    pub fn new(client: Client, task_queue: impl Into<String>) -> Self {
        TemporalScheduler {
            client,
            task_queue: task_queue.into(),
        }
    }
}

impl DeliveryScheduler for TemporalScheduler {
    async fn schedule(&self, input: &DeliveryInput) -> Result<ScheduleOutcome, ScheduleError> {
        let options =
            WorkflowStartOptions::new(self.task_queue.clone(), input.delivery_id.to_string())
                .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
                .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                .search_attributes(search_attributes::for_delivery(input))
                .static_summary(format!("{} → {}", input.event.event, input.destination_id))
                .build();
        match self
            .client
            .start_workflow(DeliveryWorkflow::run, input.clone(), options)
            .await
        {
            Ok(_) => Ok(ScheduleOutcome::Started),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(ScheduleOutcome::AlreadyExists),
            Err(WorkflowStartError::PayloadConversion(e)) => Err(ScheduleError {
                message: format!("cannot encode the workflow input: {e}"),
                retryable: false,
            }),
            Err(WorkflowStartError::Rpc(status)) => Err(ScheduleError {
                message: format!(
                    "starting workflow {}: {}",
                    input.delivery_id,
                    status.message()
                ),
                retryable: !matches!(
                    status.code(),
                    Code::InvalidArgument | Code::FailedPrecondition
                ),
            }),
            Err(other) => Err(ScheduleError {
                message: other.to_string(),
                retryable: true,
            }),
        }
    }
}
