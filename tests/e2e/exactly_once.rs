//! Exactly once where a workflow task can fail: an endpoint that fails and recovers, with
//! two workers parking and waking its deliveries, gets one successful request per delivery,
//! soon after it recovers, and no workflow task fails; a signal that arrives while the task
//! that completes a delivery runs (the task fails and runs again) neither sends its request
//! twice nor counts its outcome twice.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    eventually, kafka,
    receiver::{Answer, Received},
    scenario::Scenario,
    temporal,
};
use hookflow_temporal::workflow::DeliveryWorkflow;
use serde_json::Value;
use temporalio_client::WorkflowSignalOptions;
use temporalio_common::protos::temporal::api::enums::v1::EventType;

const DELIVERED: &str = r#"hookflow_deliveries_total{outcome="delivered"}"#;

/// Requests on `path` that arrived after `since`, counted by webhook-id.
fn per_delivery_after(received: &[Received], since: Instant) -> BTreeMap<String, usize> {
    let mut counted = BTreeMap::new();
    for request in received.iter().filter(|r| r.at >= since) {
        *counted
            .entry(request.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    counted
}

/// The workflow tasks that failed in delivery `id`'s latest run.
async fn failed_tasks(s: &Scenario, id: &str) -> usize {
    temporal::history(&s.temporal, id)
        .await
        .iter()
        .filter(|e| e.event_type() == EventType::WorkflowTaskFailed)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recovering_endpoint_gets_one_success_per_delivery_across_two_workers() {
    const EVENTS: usize = 12;
    let mut s = Scenario::new().await;
    s.receiver.script("flaky", vec![Answer::Status(503, None)]);
    s.destination("flaky", "flaky", "");
    // Trips on 4 failures; probes after 1 s, then 2, 4, 8 s: parked deliveries sleep up to
    // 8 s (the longest cooldown), so a delivery left unwoken after the recovery shows.
    s.deployment.config(
        "[isolation.breaker]\nwindow_ms = 30000\nmin_attempts = 4\nfailure_ratio = 0.5\n\
         cooldown_ms = 1000\nmax_cooldown_ms = 8000\n\
         [retry]\nschedule_ms = [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000]\n",
    );
    // Deliveries reach the workers through the task queue, either of them.
    let consumer = s.deployment.start_as("consumer");
    let workers = [
        s.deployment.start_as("worker"),
        s.deployment.start_as("worker"),
    ];
    let uuids = s.produce_events(EVENTS).await;
    for worker in &workers {
        worker
            .wait_for_metric(
                r#"hookflow_deferrals_total{reason="breaker_open"}"#,
                1.0,
                Duration::from_secs(60),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;

    let recovered_at = Instant::now();
    s.receiver.script("flaky", vec![Answer::Status(200, None)]);
    let successes = eventually(Duration::from_secs(60), "every delivery", || async {
        let counted = per_delivery_after(&s.receiver.received_on("flaky"), recovered_at);
        (counted.len() == EVENTS).then_some(counted)
    })
    .await;
    let first_success = s
        .receiver
        .received_on("flaky")
        .iter()
        .map(|r| r.at)
        .filter(|at| *at >= recovered_at)
        .min()
        .expect("a success");
    let last_success = s
        .receiver
        .received_on("flaky")
        .iter()
        .map(|r| r.at)
        .max()
        .expect("a success");
    assert!(
        last_success - first_success < Duration::from_secs(4),
        "every worker sends soon after the breaker closes, not after its deliveries' own \
         timers: {:?} from the first success to the last",
        last_success - first_success
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let successes_now = per_delivery_after(&s.receiver.received_on("flaky"), recovered_at);
    assert_eq!(successes_now, successes, "nothing arrived twice since");
    assert!(
        successes.values().all(|n| *n == 1),
        "one successful request per webhook-id: {successes:?}"
    );

    let mut delivered = 0.0;
    for worker in &workers {
        delivered += worker.metric(DELIVERED).await;
    }
    for uuid in &uuids {
        let id = format!("flaky:{uuid}");
        let result = temporal::result(&s.temporal, &id).await;
        assert_eq!(result.outcome, DeliveryOutcome::Delivered, "{id}");
        assert_eq!(
            failed_tasks(&s, &id).await,
            0,
            "{id}: no workflow task failed"
        );
    }
    assert_eq!(delivered, EVENTS as f64, "each delivery counted once");
    drop(consumer);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_while_a_delivery_completes_neither_sends_nor_counts_twice() {
    let mut s = Scenario::new().await;
    // The request takes 3 s: the signal arrives while the task that completes it runs.
    s.receiver
        .script("slow", vec![Answer::Hang(Duration::from_secs(3))]);
    s.destination("slow", "slow", "");
    let process = s.deployment.start();
    let uuid = s.produce_events(1).await[0];
    let id = format!("slow:{uuid}");
    eventually(Duration::from_secs(60), "the request", || async {
        (s.receiver.received_on("slow").len() == 1).then_some(())
    })
    .await;
    s.temporal
        .get_workflow_handle::<DeliveryWorkflow>(&id)
        .signal(
            DeliveryWorkflow::breaker_closed,
            (),
            WorkflowSignalOptions::default(),
        )
        .await
        .expect("signal");

    let result = temporal::result(&s.temporal, &id).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(result.attempts, 1);
    assert_eq!(
        failed_tasks(&s, &id).await,
        1,
        "the signal failed the task that completed the delivery, so it ran again"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.receiver.received_on("slow").len(), 1, "one request");
    assert_eq!(process.metric(DELIVERED).await, 1.0, "counted once");
    assert_eq!(
        process
            .metric(r#"hookflow_activities_recalled_total{activity="attempt"}"#)
            .await,
        1.0,
        "the attempt that ran again recalled its report"
    );
    let summaries: Vec<Value> = kafka::read_all(
        &s.stack.kafka,
        &s.deployment.outcomes_topic,
        Duration::from_secs(10),
    )
    .await
    .iter()
    .map(|m| serde_json::from_slice(&m.payload).expect("a JSON summary"))
    .collect();
    assert_eq!(
        crate::outcomes::totals(&summaries, "slow"),
        [1, 0, 0],
        "one success in the team's outcomes: {summaries:?}"
    );
}
