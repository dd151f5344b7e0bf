//! Records the delivery histories that `crates/hookflow-temporal/tests/replay.rs` replays
//! against the current workflow code, so a change that would break deliveries in flight
//! fails CI. Not part of the suite: run it by hand after a deliberate, versioned change to
//! the workflow (docs/workflow-changes.md):
//!
//! ```sh
//! HOOKFLOW_HISTORY_SET=v4 cargo test --workspace --test e2e -- --ignored record_histories
//! ```
//!
//! It writes one JSON file per workflow run into `tests/histories/<set>/` and refuses to
//! touch a set that exists: recorded histories are kept, so every version of the workflow
//! that may still have deliveries in flight stays covered. To add a scenario to the set of
//! the current code, or to record one again after a fix outside the workflow (a history
//! that showed a failed workflow task), name them: only their files are written.
//!
//! ```sh
//! HOOKFLOW_HISTORY_SET=v3 HOOKFLOW_HISTORY_SCENARIOS=paused_then_resumed \
//!   cargo test --workspace --test e2e -- --ignored record_histories
//! ```

use std::{path::PathBuf, time::Duration};

use hookflow_e2e::{
    events,
    hookflow::{Deployment, Process},
    kafka,
    receiver::Answer,
    scenario::Scenario,
    temporal,
};
use hookflow_temporal::workflow::DeliveryWorkflow;
use temporalio_client::{WorkflowCancelOptions, WorkflowExecutionInfo, WorkflowSignalOptions};

/// (scenario, destination TOML beyond id/team/url, the receiver's answers)
fn scenarios() -> Vec<(&'static str, &'static str, Vec<Answer>)> {
    let ok = || Answer::Status(200, None);
    let unavailable = || Answer::Status(503, None);
    vec![
        ("delivered_first_try", "", vec![ok()]),
        ("retried_then_delivered", "", vec![unavailable(), ok()]),
        ("retry_after", "", vec![Answer::Status(429, Some(1)), ok()]),
        ("failed_permanently", "", vec![Answer::Status(400, None)]),
        (
            "gave_up",
            "retry_schedule_ms = [500, 500, 500]",
            vec![unavailable()],
        ),
        // Two failures trip the breaker of an endpoint of its own; the third attempt is
        // deferred until the cooldown ends, then the probe is delivered.
        (
            "breaker_open",
            "endpoint_key = \"recording-breaker\"\nbreaker_min_attempts = 2\n\
             breaker_failure_ratio = 0.5\nbreaker_cooldown_ms = 1500\n\
             retry_schedule_ms = [500, 500, 500, 500]",
            vec![unavailable(), unavailable(), ok()],
        ),
        // Two deliveries on one endpoint whose breaker trips on the first failure: once it
        // is open, one comes back to probe and the other waits for the breaker to close,
        // woken by the probe's success (`breaker_closed`). Which is which is up to timing.
        (
            "breaker_shared_a",
            "endpoint_key = \"recording-woken\"\nbreaker_min_attempts = 1\n\
             breaker_failure_ratio = 0.5\nbreaker_cooldown_ms = 3000\n\
             retry_schedule_ms = [500, 500, 500, 500]",
            vec![unavailable(), ok()],
        ),
        (
            "breaker_shared_b",
            "endpoint_key = \"recording-woken\"\nbreaker_min_attempts = 1\n\
             breaker_failure_ratio = 0.5\nbreaker_cooldown_ms = 3000\n\
             retry_schedule_ms = [500, 500, 500, 500]",
            vec![unavailable(), ok()],
        ),
        (
            "paused_then_resumed",
            "endpoint_key = \"recording-paused\"\nstate = \"paused\"",
            vec![ok()],
        ),
        // A `breaker_closed` signal arrives while the first attempt is out (it times out, a
        // retry follows): the task that ran the attempt completes, and the signal is handled
        // in the next one.
        (
            "signalled_during_attempt",
            "endpoint_key = \"recording-signalled\"\ntimeout_ms = 3000\n\
             retry_schedule_ms = [500, 500]",
            vec![Answer::Hang(Duration::from_secs(10)), ok()],
        ),
        (
            "cancelled",
            "retry_schedule_ms = [60000]",
            vec![unavailable()],
        ),
        // Two failures trip a breaker with a long cooldown; the third attempt is deferred
        // and waits for the breaker to close, and is cancelled while it waits.
        (
            "cancelled_in_breaker_wait",
            "endpoint_key = \"recording-cancel-wait\"\nbreaker_min_attempts = 2\n\
             breaker_failure_ratio = 0.5\nbreaker_cooldown_ms = 60000\n\
             retry_schedule_ms = [500, 500, 500]",
            vec![unavailable(), unavailable()],
        ),
        (
            "destination_deleted",
            "retry_schedule_ms = [4000]",
            vec![unavailable()],
        ),
    ]
}

/// Starts `deployment` with destination `name` of the scenario's team, whose endpoint
/// fails `failures` times and then answers 200, and sends it one event: its uuid, and the
/// process.
async fn failing_then_delivered(
    s: &Scenario,
    deployment: &mut Deployment,
    name: &str,
    failures: usize,
    extra: &str,
) -> (uuid::Uuid, Process) {
    deployment.destination(name, s.team, &s.receiver.url(name), extra);
    let mut answers = vec![Answer::Status(503, None); failures];
    answers.push(Answer::Status(200, None));
    s.receiver.script(name, answers);
    let process = deployment.start();
    let (uuid, event) = events::event(s.team, &[(1, "Any")]);
    kafka::produce(
        &s.stack.kafka,
        &deployment.topic,
        &[event.to_string().into_bytes()],
    )
    .await;
    (uuid, process)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "writes tests/histories/<HOOKFLOW_HISTORY_SET>/; run by hand to record histories"]
async fn record_histories() {
    let set = std::env::var("HOOKFLOW_HISTORY_SET")
        .expect("name the history set: HOOKFLOW_HISTORY_SET=v2 (a new directory)");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("histories")
        .join(&set);
    let only: Option<Vec<String>> = std::env::var("HOOKFLOW_HISTORY_SCENARIOS")
        .ok()
        .map(|names| names.split(',').map(str::to_owned).collect());
    assert!(
        only.is_some() || !out.exists(),
        "{} exists: recorded sets are kept (name the scenarios to add or record again)",
        out.display()
    );

    let mut s = Scenario::new().await;
    for (name, extra, answers) in scenarios() {
        s.receiver.script(name, answers);
        s.destination(name, name, extra);
    }
    let _hookflow = s.deployment.start();
    let uuid = s.produce_events(1).await[0];

    // A delivery that continues as new: two rounds per run, four attempts.
    let mut continued = Deployment::new(&s.stack, 1);
    continued.config("[temporal]\nhistory_max_rounds_per_run = 2");
    let (continued_uuid, _continued) = failing_then_delivered(
        &s,
        &mut continued,
        "continued_as_new",
        3,
        "retry_schedule_ms = [500, 500, 500]",
    )
    .await;

    // Signal one while its first attempt is out; cancel one while it waits for its retry
    // and one while it waits for its breaker to close; resume one and delete another by
    // editing the destinations.
    let id = |name: &str| format!("{name}:{uuid}");
    hookflow_e2e::eventually(Duration::from_secs(60), "first attempts", || async {
        (s.receiver.received_on("cancelled").len() == 1
            && s.receiver.received_on("destination_deleted").len() == 1
            && s.receiver.received_on("signalled_during_attempt").len() == 1)
            .then_some(())
    })
    .await;
    s.temporal
        .get_workflow_handle::<DeliveryWorkflow>(id("signalled_during_attempt"))
        .signal(
            DeliveryWorkflow::breaker_closed,
            (),
            WorkflowSignalOptions::default(),
        )
        .await
        .expect("signal");
    s.temporal
        .get_workflow_handle::<DeliveryWorkflow>(id("cancelled"))
        .cancel(WorkflowCancelOptions::default())
        .await
        .expect("cancel");
    hookflow_e2e::eventually(Duration::from_secs(30), "the breaker to trip", || async {
        (s.receiver.received_on("cancelled_in_breaker_wait").len() == 2).then_some(())
    })
    .await;
    // Its next round (after half a second) is deferred by the open breaker.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.temporal
        .get_workflow_handle::<DeliveryWorkflow>(id("cancelled_in_breaker_wait"))
        .cancel(WorkflowCancelOptions::default())
        .await
        .expect("cancel");
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.deployment.clear_destinations();
    for (name, extra, _) in scenarios() {
        match name {
            "destination_deleted" => {}
            "paused_then_resumed" => {
                s.destination(name, name, "endpoint_key = \"recording-paused\"");
            }
            _ => {
                s.destination(name, name, extra);
            }
        }
    }
    s.deployment.write_destinations();

    // A delivery the server asks to continue as new (its history past the count at which
    // a server of its own suggests it), long before its own round bound. Started only when
    // it is to be recorded.
    let wanted = |name: &str| {
        only.as_ref()
            .is_none_or(|only| only.iter().any(|o| o == name))
    };
    let mut suggested = None;
    if wanted("continued_as_suggested") {
        let suggesting = s
            .stack
            .with_own_temporal_configured(&[("limit.historyCount.suggestContinueAsNew", "20")]);
        let mut deployment = Deployment::new(&suggesting, 1);
        let (uuid, process) = failing_then_delivered(
            &s,
            &mut deployment,
            "continued_as_suggested",
            4,
            "retry_schedule_ms = [500, 500, 500, 500, 500]",
        )
        .await;
        let client = temporal::client(&suggesting.temporal).await;
        suggested = Some((client, uuid, deployment, process));
    }

    let mut ids: Vec<(String, String, &temporalio_client::Client)> = scenarios()
        .iter()
        .map(|(name, _, _)| (name.to_string(), id(name), &s.temporal))
        .collect();
    ids.push((
        "continued_as_new".into(),
        format!("continued_as_new:{continued_uuid}"),
        &s.temporal,
    ));
    if let Some((client, uuid, _, _)) = &suggested {
        ids.push((
            "continued_as_suggested".into(),
            format!("continued_as_suggested:{uuid}"),
            client,
        ));
    }
    if let Some(only) = &only {
        ids.retain(|(name, _, _)| only.contains(name));
        assert!(!ids.is_empty(), "no scenario is named {only:?}");
    }
    std::fs::create_dir_all(&out).expect("create the history set");
    for (name, workflow_id, client) in &ids {
        let client = *client;
        let result = temporal::result(client, workflow_id).await;
        let runs = temporal::closed_runs(client, workflow_id).await;
        for (n, run) in runs.iter().enumerate() {
            let file = if runs.len() == 1 {
                format!("{name}.json")
            } else {
                format!("{name}.run-{}.json", n + 1)
            };
            let handle = WorkflowExecutionInfo::builder()
                .namespace("default")
                .workflow_id(workflow_id.clone())
                .run_id(run.run_id.clone())
                .build()
                .bind_untyped(client.clone());
            let json = handle
                .fetch_history(Default::default())
                .to_json()
                .await
                .expect("history");
            let pretty: serde_json::Value = serde_json::from_slice(&json).expect("json");
            let text = serde_json::to_string_pretty(&pretty).expect("json");
            std::fs::write(out.join(&file), text + "\n").expect("write history");
            println!(
                "{file}: {:?} after {} attempts",
                result.outcome, result.attempts
            );
        }
    }
}
