//! Asking Temporal what happened: how many delivery workflows exist and how they ended.

use std::time::Duration;

use hookflow_core::DeliveryResult;
use hookflow_temporal::{
    Client, TemporalSettings, codec::CodecSettings, workflow::DeliveryWorkflow,
};
use temporalio_client::errors::WorkflowGetResultError;
pub use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;

/// A client of the shared Temporal server, once the server answers.
pub async fn client(address: &str) -> Client {
    client_in(address, "default").await
}

/// A client of `namespace` on the Temporal server at `address`, once it answers.
pub async fn client_in(address: &str, namespace: &str) -> Client {
    client_with(address, namespace, CodecSettings::default()).await
}

/// The settings of a client of `namespace` at `address` that starts on `task_queue`.
pub fn settings(address: &str, namespace: &str, task_queue: &str) -> TemporalSettings {
    TemporalSettings {
        address: address.to_owned(),
        namespace: namespace.into(),
        task_queue: task_queue.into(),
        api_key: None,
        tls: None,
        connect_timeout: std::time::Duration::from_millis(5_000),
        history_max_rounds_per_run: 100,
        history_max_input_bytes_per_run: 4 << 20,
        max_input_bytes: 2_000_000,
        codec: CodecSettings::default(),
        person_hash_key: None,
        person_hash_previous_keys: Vec::new(),
    }
}

/// A client of `namespace` at `address` that encrypts and decrypts payloads with `codec`.
pub async fn client_with(address: &str, namespace: &str, codec: CodecSettings) -> Client {
    let settings = TemporalSettings {
        codec,
        ..settings(address, namespace, "unused")
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

/// The static summary the Temporal UI shows for workflow `id`.
pub async fn summary(client: &Client, id: &str) -> Option<String> {
    client
        .get_workflow_handle::<DeliveryWorkflow>(id)
        .describe(Default::default())
        .await
        .expect("describe")
        .static_summary()
        .map(str::to_owned)
}

/// Creates a namespace on the server at `address` (`http://host:port`) with the CLI.
pub fn create_namespace(address: &str, namespace: &str) {
    let out = std::process::Command::new(crate::tool("temporal"))
        .args(["operator", "namespace", "create", "--namespace", namespace])
        .args(["--address", address.trim_start_matches("http://")])
        .output()
        .expect("temporal CLI");
    assert!(
        out.status.success(),
        "creating namespace {namespace}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// One run of a workflow id, as visibility lists it.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its run id.
    pub run_id: String,
    /// Whether it is still running (a continued run says `ContinuedAsNew`).
    pub status: temporalio_client::WorkflowExecutionStatus,
    /// History events it wrote.
    pub history_length: i64,
    /// Bytes of history it wrote.
    pub history_size_bytes: i64,
    /// When it started.
    pub start: Option<std::time::SystemTime>,
    /// When it closed.
    pub close: Option<std::time::SystemTime>,
}

/// Every run of workflow `id` (the first and each continued-as-new one), oldest first.
pub async fn runs(client: &Client, id: &str) -> Vec<Run> {
    use futures::StreamExt;
    let query = format!("WorkflowId = '{id}'");
    let mut stream = client.list_workflows(query, Default::default());
    let mut runs = Vec::new();
    while let Some(execution) = stream.next().await {
        let execution = execution.expect("list workflows");
        let run_id = execution
            .raw()
            .execution
            .as_ref()
            .map(|e| e.run_id.clone())
            .unwrap_or_default();
        runs.push(Run {
            run_id,
            status: execution.status(),
            history_length: execution.raw().history_length,
            history_size_bytes: execution.raw().history_size_bytes,
            start: execution.start_time(),
            close: execution.close_time(),
        });
    }
    runs.sort_by_key(|r| r.start);
    runs
}

/// Every run of workflow `id`, once visibility shows all of them closed (it lags the
/// history a little), oldest first.
pub async fn closed_runs(client: &Client, id: &str) -> Vec<Run> {
    let what = format!("visibility to show every run of {id} closed");
    crate::eventually(Duration::from_secs(30), &what, || async {
        let runs = runs(client, id).await;
        let closed = !runs.is_empty() && runs.iter().all(|r| r.close.is_some());
        closed.then_some(runs)
    })
    .await
}

/// The history of the latest run of workflow `id`.
pub async fn history(client: &Client, id: &str) -> Vec<HistoryEvent> {
    client
        .get_workflow_handle::<DeliveryWorkflow>(id)
        .fetch_history(Default::default())
        .into_events()
        .await
        .expect("history")
}

/// The history of delivery `id`'s latest run as text (its JSON, payloads as stored), to
/// search for what must not be there.
pub async fn history_text(client: &Client, id: &str) -> String {
    let json = client
        .get_workflow_handle::<DeliveryWorkflow>(id)
        .fetch_history(Default::default())
        .to_json()
        .await
        .expect("history");
    String::from_utf8_lossy(&json).into_owned()
}

/// The input the latest run of delivery `id` started with (payloads unencrypted).
pub async fn input(client: &Client, id: &str) -> hookflow_core::DeliveryInput {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    let started = history(client, id).await.into_iter().next();
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(started)) =
        started.and_then(|e| e.attributes)
    else {
        panic!("{id}: its history does not start with WorkflowExecutionStarted");
    };
    let payload = started
        .input
        .and_then(|p| p.payloads.into_iter().next())
        .unwrap_or_else(|| panic!("{id}: no input"));
    serde_json::from_slice(&payload.data).unwrap_or_else(|e| panic!("{id}: input: {e}"))
}

/// What each attempt of delivery `id` returned, in order (its latest run): `attempted`,
/// `deferred:<reason>`, `destination_deleted`, … Attempts are activity tasks or local
/// activity markers, as the delivery's workflow revision has them.
pub async fn steps(client: &Client, id: &str) -> Vec<String> {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    history(client, id)
        .await
        .into_iter()
        .filter_map(|event| match event.attributes {
            Some(Attributes::ActivityTaskCompletedEventAttributes(completed)) => completed
                .result
                .and_then(|r| r.payloads.into_iter().next())
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p.data).ok()),
            Some(Attributes::MarkerRecordedEventAttributes(mut marker))
                if local_activity_type(&marker.details).as_deref()
                    == Some(ATTEMPT_ACTIVITY_TYPE) =>
            {
                marker
                    .details
                    .remove("result")
                    .and_then(|r| r.payloads.into_iter().next())
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p.data).ok())
            }
            _ => None,
        })
        .map(|step| match &step {
            serde_json::Value::String(kind) => kind.clone(),
            serde_json::Value::Object(object) => {
                let (kind, inner) = object.iter().next().expect("one variant");
                match inner["reason"].as_str() {
                    Some(reason) => format!("{kind}:{reason}"),
                    None => kind.clone(),
                }
            }
            other => other.to_string(),
        })
        .collect()
}

/// The activity type the SDK registers the attempt activity under.
const ATTEMPT_ACTIVITY_TYPE: &str = "DeliveryActivities::attempt";

/// The activity type a local activity marker records in its `data` detail (JSON written by
/// the SDK's core).
fn local_activity_type(
    details: &std::collections::HashMap<
        String,
        temporalio_common::protos::temporal::api::common::v1::Payloads,
    >,
) -> Option<String> {
    let data = details.get("data")?.payloads.first()?;
    let data: serde_json::Value = serde_json::from_slice(&data.data).ok()?;
    data["activity_type"].as_str().map(str::to_owned)
}
