//! The Temporal worker that runs delivery workflows and attempt activities.
//!
//! `Worker::run` returns a future that is not `Send`: drive it on the main task (as the
//! binary does) or a `LocalSet`, never `tokio::spawn`.

use temporalio_client::Client;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::{
    activities::DeliveryActivities, connection::TemporalError, workflow::DeliveryWorkflow,
};

/// A worker for `task_queue` with the delivery workflow and activities registered.
pub fn build(
    client: Client,
    task_queue: &str,
    activities: DeliveryActivities,
) -> Result<Worker, TemporalError> {
    let runtime = Runtime::from_current_tokio(Default::default())
        .map_err(|e| TemporalError::Settings(format!("temporal runtime: {e}")))?;
    let options = WorkerOptions::new(task_queue)
        .register_workflow::<DeliveryWorkflow>()
        .map_err(|e| TemporalError::Settings(format!("registering the delivery workflow: {e}")))?
        .register_activities(activities)
        .build();
    Worker::new(&runtime, client, options)
        .map_err(|e| TemporalError::Settings(format!("temporal worker: {e}")))
}
