//! An operator cancels a retrying delivery: no further attempt is made and the workflow
//! records the outcome `cancelled`.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{events, eventually, receiver::Answer, scenario::Scenario, temporal};
use hookflow_temporal::workflow::DeliveryWorkflow;

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_delivery_stops_attempting_and_says_so() {
    let mut s = Scenario::new().await;
    s.receiver.script("down", vec![Answer::Status(503, None)]);
    s.destination("down", "down", "");
    let (uuid, event) = events::event(s.team, &[(1, "Any")]);
    s.produce(&[&event]).await;
    let process = s.deployment.start();
    let (temporal, receiver) = (&s.temporal, &s.receiver);

    eventually(Duration::from_secs(60), "the first attempt", || async {
        (!receiver.received_on("down").is_empty()).then_some(())
    })
    .await;
    let id = format!("down:{uuid}");
    temporal
        .get_workflow_handle::<DeliveryWorkflow>(&id)
        .cancel(Default::default())
        .await
        .expect("cancel");
    let result = temporal::result(temporal, &id).await;
    assert_eq!(result.outcome, DeliveryOutcome::Cancelled);
    assert_eq!(result.last_status, Some(503));
    let attempts = receiver.received_on("down").len();
    assert_eq!(result.attempts as usize, attempts);
    // The schedule would retry every second; a cancelled delivery must not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.received_on("down").len(),
        attempts,
        "no attempt after cancellation"
    );
    assert_eq!(
        process
            .metric(r#"hookflow_deliveries_total{outcome="cancelled"}"#)
            .await,
        1.0,
        "a cancelled delivery is still counted"
    );
}
