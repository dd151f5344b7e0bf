//! Deliveries live for days, across deploys: every history recorded in `tests/histories/`
//! (one per representative delivery, per workflow version that may still be in flight)
//! must replay against the current workflow code. A change to the workflow's decisions
//! that is not guarded by a new workflow revision fails here, not in production.

use std::path::{Path, PathBuf};

use hookflow_core::{DeliveryInput, DeliveryResult};
use hookflow_temporal::{
    activities::{AttemptInput, DeliveryActivities},
    workflow::DeliveryWorkflow,
};
use temporalio_client::WorkflowHistory;
use temporalio_common::WorkflowDefinition;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, WorkflowContext, WorkflowResult,
    workflow_replayer::{WorkflowReplayError, WorkflowReplayer, WorkflowReplayerOptions},
    workflows::WorkflowImplementation,
};

/// The representative deliveries every set holds, and what each set adds.
const EVERY_SET: &[&str] = &[
    "breaker_open",
    "cancelled",
    "continued_as_new.run-1",
    "continued_as_new.run-2",
    "delivered_first_try",
    "destination_deleted",
    "failed_permanently",
    "gave_up",
    "paused_then_resumed",
    "retried_then_delivered",
    "retry_after",
];
const SETS: &[(&str, &[&str])] = &[
    ("v1", &[]),
    ("v2", &[]),
    (
        "v3",
        &[
            "breaker_shared_a",
            "breaker_shared_b",
            "cancelled_in_breaker_wait",
            "continued_as_suggested.run-1",
            "continued_as_suggested.run-2",
            "signalled_during_attempt",
        ],
    ),
];

/// `WorkflowTaskFailed` in the history JSON's `event_type`.
const WORKFLOW_TASK_FAILED: u64 = 9;

fn history_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/histories");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("tests/histories is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A replayer of workflow `W`.
fn replayer_of<W>() -> WorkflowReplayer
where
    W: WorkflowImplementation,
    <W::Run as WorkflowDefinition>::Input: Send,
{
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<W>()
        .expect("register")
        .build();
    WorkflowReplayer::new(options).expect("replayer")
}

/// Asserts that a replay failed on nondeterminism.
fn assert_nondeterministic(failure: &impl std::fmt::Display) {
    let text = failure.to_string();
    assert!(text.contains("nondeterministic"), "{text}");
}

fn history(path: &Path) -> WorkflowHistory {
    let bytes = std::fs::read(path).expect("history file");
    WorkflowHistory::from_json(&bytes)
        .unwrap_or_else(|e| panic!("{} is not a history: {e}", path.display()))
}

#[test]
fn every_set_holds_its_deliveries_by_name_and_none_failed_a_workflow_task() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/histories");
    let files = history_files();
    for (set, added) in SETS {
        let mut expected: Vec<String> = EVERY_SET
            .iter()
            .chain(added.iter())
            .map(|name| format!("{name}.json"))
            .collect();
        expected.sort();
        let mut found: Vec<String> = files
            .iter()
            .filter(|f| f.parent() == Some(root.join(set).as_path()))
            .filter_map(|f| f.file_name()?.to_str().map(str::to_owned))
            .collect();
        found.sort();
        assert_eq!(found, expected, "tests/histories/{set}");
    }
    assert_eq!(
        files.len(),
        SETS.iter()
            .map(|(_, added)| EVERY_SET.len() + added.len())
            .sum::<usize>(),
        "a set not listed here: {files:?}"
    );
    // A recorded failure is a bug to fix, not a case to keep replaying.
    for file in &files {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file).expect("history file")).expect("json");
        let failed = json["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["event_type"] == WORKFLOW_TASK_FAILED)
            .count();
        assert_eq!(
            failed,
            0,
            "{} records a failed workflow task",
            file.display()
        );
    }
}

/// The bytes of a payload in a history file (`data` as base64 text).
fn payload_bytes(payload: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    let text = payload["data"].as_str().expect("payload data as base64");
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// The activity-attempt revision bounds a run by the bytes of its attempts' recorded inputs,
/// which it computes by serialising its input again (`DeliveryWorkflow::run`). So the bytes
/// computed today must be the bytes recorded then, or the replay of a delivery of a large
/// event would continue as new at another round than it did: every recorded attempt input
/// serialises again, from the workflow's recorded input, to exactly what was recorded.
#[test]
fn activity_attempt_inputs_serialise_today_as_they_were_recorded() {
    let mut checked = 0;
    for file in history_files() {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).expect("history file")).expect("json");
        let events = json["events"].as_array().expect("events");
        let started = &events[0]["attributes"]["WorkflowExecutionStartedEventAttributes"];
        let mut input: DeliveryInput =
            serde_json::from_slice(&payload_bytes(&started["input"]["payloads"][0]))
                .expect("a delivery input");
        // The workflow takes the progress out of its input before its attempts.
        input.progress = None;
        for event in events {
            let scheduled = &event["attributes"]["ActivityTaskScheduledEventAttributes"];
            if scheduled["activity_type"]["name"] != "DeliveryActivities::attempt" {
                continue;
            }
            let recorded = payload_bytes(&scheduled["input"]["payloads"][0]);
            let attempt: AttemptInput = serde_json::from_slice(&recorded).expect("attempt");
            let today = serde_json::to_vec(&AttemptInput {
                delivery: input.clone(),
                attempt: attempt.attempt,
                age_left_ms: None,
                after_breaker_wait: false,
            })
            .expect("json");
            assert_eq!(
                String::from_utf8_lossy(&today),
                String::from_utf8_lossy(&recorded),
                "{}: attempt {}",
                file.display(),
                attempt.attempt
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 11,
        "the activity-attempt set was read ({checked} attempts)"
    );
}

#[tokio::test]
async fn every_recorded_history_replays_against_the_current_workflow() {
    let files = history_files();
    let replayer = replayer_of::<DeliveryWorkflow>();
    for file in &files {
        if let Err(error) = replayer.replay_workflow(history(file)).await {
            panic!(
                "{} no longer replays: {error}\n\
                 A change to what the workflow decides must keep in-flight deliveries \
                 replaying: guard it with a new workflow revision (docs/workflow-changes.md).",
                file.display()
            );
        }
    }
}

/// A workflow of the same name whose decisions differ: it never waits to retry.
#[workflow]
#[derive(Default)]
struct ChangedDeliveryWorkflow;

#[workflow_methods]
impl ChangedDeliveryWorkflow {
    #[run(name = "DeliveryWorkflow")]
    async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: DeliveryInput,
    ) -> WorkflowResult<DeliveryResult> {
        let options =
            ActivityOptions::with_start_to_close_timeout(std::time::Duration::from_secs(60))
                .build();
        let _ = ctx
            .execute_activity(
                DeliveryActivities::attempt,
                AttemptInput {
                    delivery: input,
                    attempt: 1,
                    age_left_ms: None,
                    after_breaker_wait: false,
                },
                options,
            )
            .await;
        Ok(DeliveryResult {
            outcome: hookflow_core::DeliveryOutcome::GaveUp,
            attempts: 1,
            last_status: None,
            last_error: None,
        })
    }
}

/// The replay check above can fail: a workflow that decides differently is caught.
#[tokio::test]
async fn a_changed_decision_is_caught_as_nondeterminism() {
    let replayer = replayer_of::<ChangedDeliveryWorkflow>();
    let retried = history_files()
        .into_iter()
        .find(|f| f.ends_with("v1/retried_then_delivered.json"))
        .expect("the v1 retried delivery");
    match replayer.replay_workflow(history(&retried)).await {
        Err(WorkflowReplayError::Replay(failure)) => assert_nondeterministic(&failure),
        other => panic!("a changed workflow replayed: {other:?}"),
    }
}

/// A continued run of revision `activity_attempts` sizes itself by the attempt input size
/// its progress recorded, not by computing it again: the recorded second run of a delivery
/// replays with the size its first run would record, and no longer does with a size that
/// allows one round per run.
#[tokio::test]
async fn a_continued_activity_attempts_run_sizes_itself_by_the_recorded_input_size() {
    use base64::Engine;
    let replayer = replayer_of::<DeliveryWorkflow>();
    let file = history_files()
        .into_iter()
        .find(|f| f.ends_with("v1/continued_as_new.run-2.json"))
        .expect("the v1 second run");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("history file")).expect("json");
    let with_size = |bytes: usize| {
        let mut json = json.clone();
        let payload = &mut json["events"][0]["attributes"]["WorkflowExecutionStartedEventAttributes"]
            ["input"]["payloads"][0];
        let mut input: serde_json::Value =
            serde_json::from_slice(&payload_bytes(payload)).expect("input");
        input["progress"]["attempt_input_bytes"] = serde_json::json!(bytes);
        payload["data"] = serde_json::json!(
            base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(&input).expect("json"))
        );
        WorkflowHistory::from_json(&serde_json::to_vec(&json).expect("json")).expect("history")
    };
    let started = &json["events"][0]["attributes"]["WorkflowExecutionStartedEventAttributes"];
    let input: DeliveryInput =
        serde_json::from_slice(&payload_bytes(&started["input"]["payloads"][0])).expect("input");
    let computed = serde_json::to_vec(&AttemptInput {
        delivery: DeliveryInput {
            progress: None,
            ..input.clone()
        },
        attempt: 0,
        age_left_ms: None,
        after_breaker_wait: false,
    })
    .expect("json")
    .len();
    replayer
        .replay_workflow(with_size(computed))
        .await
        .expect("the recorded size replays");
    let one_round = usize::try_from(input.history.max_input_bytes).expect("bytes");
    match replayer.replay_workflow(with_size(one_round)).await {
        Err(WorkflowReplayError::Replay(failure)) => assert_nondeterministic(&failure),
        other => panic!("the recorded size was not read: {other:?}"),
    }
}

/// What each recorded kind of delivery of the current workflow costs on Temporal Cloud
/// (`hookflow_temporal::actions`): the figures docs/operations.md sizes a namespace with.
/// A change to the workflow that moves one fails here, so the docs move with it.
#[tokio::test]
async fn recorded_deliveries_cost_these_actions() {
    use hookflow_temporal::actions::ActionCount;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/histories/v3");
    // Scenario: (actions, of which local-activity workflow tasks, timers, signals).
    type Costs = (u32, u32, u32, u32);
    let expected: &[(&str, Costs)] = &[
        ("delivered_first_try", (3, 1, 0, 0)),
        ("failed_permanently", (3, 1, 0, 0)),
        ("retried_then_delivered", (5, 2, 1, 0)),
        ("retry_after", (5, 2, 1, 0)),
        ("gave_up", (13, 6, 5, 0)),
        ("breaker_open", (9, 4, 3, 0)),
        ("breaker_shared_a", (7, 3, 2, 0)),
        ("breaker_shared_b", (8, 3, 2, 1)),
        ("paused_then_resumed", (9, 4, 3, 0)),
        ("cancelled", (5, 2, 1, 0)),
        ("destination_deleted", (5, 2, 1, 0)),
        ("signalled_during_attempt", (6, 2, 1, 1)),
        ("cancelled_in_breaker_wait", (9, 4, 3, 0)),
        // A run continued as new costs its own start: both runs together.
        ("continued_as_new", (10, 4, 3, 0)),
        ("continued_as_suggested", (12, 5, 4, 0)),
    ];
    for (scenario, (total, local, timers, signals)) in expected {
        let runs: Vec<PathBuf> = if root.join(format!("{scenario}.json")).exists() {
            vec![root.join(format!("{scenario}.json"))]
        } else {
            (1..=2)
                .map(|run| root.join(format!("{scenario}.run-{run}.json")))
                .collect()
        };
        let mut count = ActionCount::default();
        for run in runs {
            let events = history(&run).into_events().await.expect("events");
            count = count + ActionCount::of(&events);
        }
        assert_eq!(
            (
                count.total(),
                count.local_activity_tasks,
                count.timers,
                count.signals
            ),
            (*total, *local, *timers, *signals),
            "{scenario}: {count:?}"
        );
        assert_eq!(
            (count.activities, count.task_heartbeats),
            (0, 0),
            "{scenario}: attempts are local, and none was slow"
        );
    }
}
