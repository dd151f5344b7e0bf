//! What a delivery writes to history: a first-try delivery is one workflow task, started
//! eagerly by the process that consumed the event; and history stays bounded however long
//! a delivery waits: a paused destination's deliveries defer round after round, and each
//! run continues as new after its bound, carrying the attempts, the start time (so the
//! maximum age) and the last report. A delivery of a workflow revision this code does not
//! know (a later release's, in a mixed fleet) is left untouched for a worker that knows it.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{eventually, scenario::Scenario, temporal};
use temporalio_client::WorkflowExecutionStatus;

/// Rounds (attempt activities) per run in this test. The dev server fires timers about a
/// second late, so a round of the paused deliveries below takes about a second.
const ROUNDS: u32 = 2;
/// Events one run may write with that bound: the start and first workflow task (4), each
/// round's local attempt marker, timer and workflow task (6), and the end (continue-as-new,
/// or the outcome's marker and upsert and the completion).
const MAX_EVENTS_PER_RUN: i64 = 4 + 6 * ROUNDS as i64 + 3;

#[tokio::test(flavor = "multi_thread")]
async fn a_first_try_delivery_is_one_eagerly_started_workflow_task_of_eight_events() {
    use temporalio_common::protos::temporal::api::{
        enums::v1::EventType, history::v1::history_event::Attributes,
    };
    let mut s = Scenario::new().await;
    s.destination("healthy", "healthy", "");
    let _hookflow = s.deployment.start();
    let uuid = s.produce_events(1).await[0];
    let id = format!("healthy:{uuid}");
    let result = temporal::result(&s.temporal, &id).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(s.receiver.received_on("healthy").len(), 1);

    let events = temporal::history(&s.temporal, &id).await;
    let types: Vec<EventType> = events.iter().map(|e| e.event_type()).collect();
    assert_eq!(
        types,
        [
            EventType::WorkflowExecutionStarted,
            EventType::WorkflowTaskScheduled,
            EventType::WorkflowTaskStarted,
            EventType::WorkflowTaskCompleted,
            EventType::MarkerRecorded,                 // the attempt
            EventType::UpsertWorkflowSearchAttributes, // the outcome
            EventType::MarkerRecorded,                 // the outcome counted
            EventType::WorkflowExecutionCompleted,
        ]
    );
    assert_eq!(temporal::steps(&s.temporal, &id).await, ["attempted"]);
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(started)) = &events[0].attributes
    else {
        panic!("the first event is the start: {:?}", events[0]);
    };
    assert!(
        started.eager_execution_accepted,
        "the consumer's start handed its first workflow task to the worker in its process"
    );
    assert_eq!(
        started.priority.as_ref().map(|p| p.fairness_key.as_str()),
        Some(format!("{}:healthy", s.team).as_str()),
        "each destination is its own fairness key, apart from another team's of its id"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_wait_continues_as_new_within_the_bound_and_keeps_its_progress() {
    let mut s = Scenario::new().await;
    s.destination("resumed", "resumed", "state = \"paused\"")
        .destination("aged", "aged", "state = \"paused\"\nmax_age_ms = 7000");
    s.deployment.config(&format!(
        "[temporal]\nhistory_max_rounds_per_run = {ROUNDS}\n\
         [retry]\ndeferral_backoff_initial_ms = 100\ndeferral_backoff_max_ms = 200"
    ));
    let _hookflow = s.deployment.start();
    let uuid = s.produce_events(1).await[0];
    let (resumed, aged) = (format!("resumed:{uuid}"), format!("aged:{uuid}"));

    // The aged delivery waits across runs and gives up at its maximum age, counted from
    // the first run's start, not from the last run's.
    let result = temporal::result(&s.temporal, &aged).await;
    assert_eq!(result.outcome, DeliveryOutcome::GaveUp);
    assert_eq!(result.attempts, 0);
    assert_eq!(
        result.last_error.as_deref(),
        Some("maximum age reached while deferred (paused)")
    );
    let runs = temporal::closed_runs(&s.temporal, &aged).await;
    assert!(
        runs.len() >= 3,
        "crossed the bound at least twice: {runs:?}"
    );
    let first_start = runs[0].start.expect("start");
    let last_close = runs.last().and_then(|r| r.close).expect("close");
    let age = last_close.duration_since(first_start).expect("order");
    assert!(
        age >= Duration::from_millis(6_500) && age < Duration::from_secs(12),
        "gave up at the maximum age of 7 s across runs, after {age:?}"
    );

    // The other one has continued as new at least twice while paused too; resumed, it is
    // delivered once, as its first attempt.
    let receiver = s.receiver.clone();
    eventually(
        Duration::from_secs(30),
        "three runs of the paused delivery",
        || {
            let (client, id) = (&s.temporal, &resumed);
            async move { (temporal::runs(client, id).await.len() >= 3).then_some(()) }
        },
    )
    .await;
    assert!(
        receiver.received_on("resumed").is_empty(),
        "paused: no request"
    );
    s.deployment.clear_destinations();
    s.destination("resumed", "resumed", "");
    s.deployment.write_destinations();
    let result = temporal::result(&s.temporal, &resumed).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(result.attempts, 1);
    assert_eq!(result.last_status, Some(200));
    let received = receiver.received_on("resumed");
    assert_eq!(received.len(), 1, "delivered once");
    assert_eq!(received[0].header("webhook-id"), resumed);
    assert!(receiver.received_on("aged").is_empty());

    for id in [&aged, &resumed] {
        let runs = temporal::closed_runs(&s.temporal, id).await;
        for run in &runs[..runs.len() - 1] {
            assert_eq!(run.status, WorkflowExecutionStatus::ContinuedAsNew, "{id}");
        }
        for run in &runs {
            assert!(
                run.history_length > 0 && run.history_length <= MAX_EVENTS_PER_RUN,
                "{id}: a run wrote {} events, over the bound of {MAX_EVENTS_PER_RUN}",
                run.history_length
            );
        }
    }
}

/// What a worker of an earlier release does in a mixed fleet (or after a rollback) with a
/// delivery a later release started on a revision it does not know: its input does not
/// read, so the workflow task fails and the server offers it again, to any worker, until
/// one that knows the revision takes it. Nothing is decided, sent or lost meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_of_an_unknown_revision_waits_untouched_for_a_worker_that_knows_it() {
    use hookflow_core::{ActionMatchedEvent, DeliveryInput};
    use hookflow_temporal::workflow::DeliveryWorkflow;
    use temporalio_client::{NamespacedClient, tonic::IntoRequest};
    use temporalio_common::{
        WorkflowDefinition,
        data_converters::{SerializationContextData, WorkflowSerializationContext},
        protos::temporal::api::{
            common::v1::{Payloads, WorkflowExecution, WorkflowType},
            enums::v1::EventType,
            history::v1::history_event::Attributes,
            taskqueue::v1::TaskQueue,
            workflowservice::v1::{
                StartWorkflowExecutionRequest, TerminateWorkflowExecutionRequest,
            },
        },
    };

    let mut s = Scenario::new().await;
    s.destination("later", "later", "");
    let _hookflow = s.deployment.start();
    // A delivery's input as the consumer writes it, with `revision` set as given, started
    // straight through the client: its workflow id.
    let start = async |revision: &str| {
        let (_, event) = hookflow_e2e::events::event(s.team, &[(1, "Any")]);
        let event = ActionMatchedEvent::from_json(event.to_string().as_bytes()).expect("event");
        let input = DeliveryInput::new("later", event.clone(), event.matched_actions.clone());
        let id = input.delivery_id.to_string();
        let mut json = serde_json::to_value(&input).expect("json");
        json["revision"] = serde_json::json!(revision);
        let context = SerializationContextData::Workflow(WorkflowSerializationContext::new());
        let payload = s
            .temporal
            .data_converter()
            .to_payload(&context, &json)
            .await
            .expect("payload");
        let request = StartWorkflowExecutionRequest {
            namespace: s.temporal.namespace(),
            workflow_id: id.clone(),
            workflow_type: Some(WorkflowType {
                name: DeliveryWorkflow::run.name().to_owned(),
            }),
            task_queue: Some(TaskQueue {
                name: s.deployment.task_queue.clone(),
                ..Default::default()
            }),
            input: Some(Payloads {
                payloads: vec![payload],
            }),
            request_id: id.clone(),
            ..Default::default()
        };
        s.temporal
            .connection()
            .workflow_service()
            .start_workflow_execution(request.into_request())
            .await
            .expect("start");
        id
    };
    // The same start with a revision this code knows delivers: only the revision differs.
    let known = start("local_attempts").await;
    assert_eq!(
        temporal::result(&s.temporal, &known).await.outcome,
        DeliveryOutcome::Delivered
    );
    let id = start("a_later_revision").await;

    let failure = eventually(
        Duration::from_secs(30),
        "a failed workflow task",
        || async {
            temporal::history(&s.temporal, &id)
                .await
                .into_iter()
                .find_map(|e| match e.attributes {
                    Some(Attributes::WorkflowTaskFailedEventAttributes(failed)) => failed.failure,
                    _ => None,
                })
        },
    )
    .await;
    // Its input does not read (the SDK says no more than that).
    assert_eq!(
        failure.message, "Failed to create workflow: Failed to create workflow execution",
        "{failure:?}"
    );
    // Offered again meanwhile, and still nothing decided: no attempt, no timer, no request.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = temporal::history(&s.temporal, &id).await;
    let decided = events
        .iter()
        .filter(|e| {
            !matches!(
                e.event_type(),
                EventType::WorkflowExecutionStarted
                    | EventType::WorkflowTaskScheduled
                    | EventType::WorkflowTaskStarted
                    | EventType::WorkflowTaskFailed
                    | EventType::WorkflowTaskTimedOut
            )
        })
        .count();
    assert_eq!(decided, 0, "{events:?}");
    let runs = temporal::runs(&s.temporal, &id).await;
    assert_eq!(
        runs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [WorkflowExecutionStatus::Running]
    );
    assert_eq!(
        s.receiver.received_on("later").len(),
        1,
        "only the known revision's delivery was sent"
    );

    let terminate = TerminateWorkflowExecutionRequest {
        namespace: s.temporal.namespace(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: id.clone(),
            run_id: String::new(),
        }),
        reason: "test over".to_owned(),
        ..Default::default()
    };
    s.temporal
        .connection()
        .workflow_service()
        .terminate_workflow_execution(terminate.into_request())
        .await
        .expect("terminate");
}
