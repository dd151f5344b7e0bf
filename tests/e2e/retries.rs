//! The workflow's retry schedule: 503 twice then 200 is delivered on the third attempt with
//! the same webhook-id; 400 fails permanently after one attempt; 429 with Retry-After waits.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{events, eventually, receiver::Answer, scenario::Scenario, temporal};

#[tokio::test(flavor = "multi_thread")]
async fn retryable_statuses_are_retried_and_permanent_ones_are_not() {
    let mut s = Scenario::new().await;
    let receiver = s.receiver.clone();
    receiver.script(
        "flaky",
        vec![
            Answer::Status(503, None),
            Answer::Status(503, None),
            Answer::Status(200, None),
        ],
    );
    receiver.script("bad", vec![Answer::Status(400, None)]);
    receiver.script(
        "busy",
        vec![Answer::Status(429, Some(3)), Answer::Status(204, None)],
    );
    s.destination("flaky", "flaky", "")
        .destination("bad", "bad", "")
        .destination("busy", "busy", "");
    let (uuid, event) = events::event(s.team, &[(1, "Any")]);
    s.produce(&[&event]).await;
    let process = s.deployment.start();
    let (temporal, team) = (&s.temporal, s.team);

    let flaky = temporal::result(temporal, &format!("flaky:{uuid}")).await;
    assert_eq!(
        (flaky.outcome, flaky.attempts, flaky.last_status),
        (DeliveryOutcome::Delivered, 3, Some(200))
    );
    let attempts = receiver.received_on("flaky");
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|r| r.header("webhook-id") == format!("flaky:{uuid}")),
        "same webhook-id on every attempt"
    );
    assert!(
        attempts[1].at - attempts[0].at >= Duration::from_millis(900),
        "retries wait for the schedule"
    );

    let bad = temporal::result(temporal, &format!("bad:{uuid}")).await;
    assert_eq!(
        (bad.outcome, bad.attempts, bad.last_status),
        (DeliveryOutcome::FailedPermanently, 1, Some(400))
    );
    assert_eq!(bad.last_error.as_deref(), Some("HTTP 400"));

    let busy = temporal::result(temporal, &format!("busy:{uuid}")).await;
    assert_eq!(
        (busy.outcome, busy.attempts, busy.last_status),
        (DeliveryOutcome::Delivered, 2, Some(204))
    );
    let busy_attempts = receiver.received_on("busy");
    assert!(
        busy_attempts[1].at - busy_attempts[0].at >= Duration::from_secs(3),
        "Retry-After: 3 must be honoured, waited {:?}",
        busy_attempts[1].at - busy_attempts[0].at
    );

    // A permanent failure is final: no attempt follows.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received_on("bad").len(), 1);
    let outcome_query =
        format!("HookflowTeamId = {team} AND HookflowOutcome = 'failed_permanently'");
    eventually(
        Duration::from_secs(10),
        "the outcome search attribute",
        || async { (temporal::count(temporal, &outcome_query).await == 1).then_some(()) },
    )
    .await;
    let attempts_5xx = process
        .metric("hookflow_delivery_attempts_total{class=\"5xx\"}")
        .await;
    let attempts_4xx = process
        .metric("hookflow_delivery_attempts_total{class=\"4xx\"}")
        .await;
    assert_eq!(
        (attempts_5xx, attempts_4xx),
        (2.0, 2.0),
        "two 503s; one 400 and one 429"
    );
    let delivered = eventually(Duration::from_secs(10), "outcomes counted", || async {
        let delivered = process
            .metric(r#"hookflow_deliveries_total{outcome="delivered"}"#)
            .await;
        (delivered >= 2.0).then_some(delivered)
    })
    .await;
    assert_eq!(delivered, 2.0, "flaky and busy");
    assert_eq!(
        process
            .metric(r#"hookflow_deliveries_total{outcome="failed_permanently"}"#)
            .await,
        1.0
    );
    assert_eq!(
        (
            process
                .metric("hookflow_delivery_attempts_per_delivery_count")
                .await,
            process
                .metric("hookflow_delivery_attempts_per_delivery_sum")
                .await,
        ),
        (3.0, 6.0),
        "3 + 1 + 2 attempts over 3 deliveries"
    );
    assert_eq!(
        process
            .metric("hookflow_delivery_end_to_end_seconds_count")
            .await,
        2.0,
        "one end-to-end latency per delivered delivery"
    );
}
