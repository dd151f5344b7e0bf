//! An operator cancels a retrying delivery: no further attempt is made and the workflow
//! records the outcome `cancelled`.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    events, eventually,
    hookflow::Deployment,
    kafka,
    receiver::{Answer, Receiver},
    stack::stack,
    temporal, unique_team,
};
use hookflow_temporal::workflow::DeliveryWorkflow;

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_delivery_stops_attempting_and_says_so() {
    let stack = stack();
    let temporal = temporal::client(&stack.temporal).await;
    let receiver = Receiver::start().await;
    receiver.script("down", vec![Answer::Status(503, None)]);
    let team = unique_team();
    let mut deployment = Deployment::new(stack);
    deployment.destination("down", team, &receiver.url("down"), "");
    let (uuid, event) = events::event(team, &[(1, "Any")]);
    kafka::produce(
        &stack.kafka,
        &deployment.topic,
        &[event.to_string().into_bytes()],
    )
    .await;
    let _process = deployment.start();

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
    let result = temporal::result(&temporal, &id).await;
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
}
