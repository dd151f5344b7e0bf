//! Asking Temporal what happened: how many delivery workflows exist and how they ended.

use std::time::Duration;

use hookflow_core::DeliveryResult;
use hookflow_temporal::{Client, TemporalSettings, workflow::DeliveryWorkflow};
use temporalio_client::errors::WorkflowGetResultError;

/// A client of the shared Temporal server, once the server answers.
pub async fn client(address: &str) -> Client {
    let settings = TemporalSettings {
        address: address.to_owned(),
        namespace: "default".into(),
        task_queue: "unused".into(),
        api_key: None,
        tls: None,
        connect_timeout_ms: 5_000,
    };
    crate::eventually(Duration::from_secs(60), "Temporal to answer", || {
        let settings = settings.clone();
        async move {
            let client = hookflow_temporal::connect(&settings).await.ok()?;
            client.count_workflows("", Default::default()).await.ok()?;
            Some(client)
        }
    })
    .await
}

/// How many workflows match a visibility `query`.
pub async fn count(client: &Client, query: &str) -> usize {
    client
        .count_workflows(query, Default::default())
        .await
        .expect("count workflows")
        .count()
}

/// Waits for the delivery workflow `id` to exist and finish, and returns its result.
pub async fn result(client: &Client, id: &str) -> DeliveryResult {
    let handle = client.get_workflow_handle::<DeliveryWorkflow>(id);
    crate::eventually(
        Duration::from_secs(120),
        &format!("workflow {id} to finish"),
        || async {
            match handle.get_result(Default::default()).await {
                Ok(result) => Some(result),
                // Not started yet: the consumer has not reached its message.
                Err(WorkflowGetResultError::NotFound(_)) => None,
                Err(error) => panic!("workflow {id}: {error}"),
            }
        },
    )
    .await
}
