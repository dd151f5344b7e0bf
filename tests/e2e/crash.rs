//! kill -9 in the middle of a stream, then a restart: every delivery arrives, none is lost,
//! and no (event, destination) pair has two workflows.

use std::{collections::BTreeSet, time::Duration};

use hookflow_e2e::{
    events, eventually, hookflow::Deployment, kafka, receiver::Receiver, stack::stack, temporal,
    unique_team,
};

const EVENTS: usize = 30;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_process_loses_nothing_and_duplicates_nothing() {
    let stack = stack();
    let temporal = temporal::client(&stack.temporal).await;
    let receiver = Receiver::start().await;
    let team = unique_team();
    let mut deployment = Deployment::new(stack);
    deployment.destination("crash", team, &receiver.url("crash"), "");
    let events: Vec<_> = (0..EVENTS)
        .map(|_| events::event(team, &[(1, "Any")]))
        .collect();
    let payloads: Vec<Vec<u8>> = events
        .iter()
        .map(|(_, e)| e.to_string().into_bytes())
        .collect();
    kafka::produce(&stack.kafka, &deployment.topic, &payloads).await;

    let mut first = deployment.start();
    eventually(Duration::from_secs(60), "the first deliveries", || async {
        (receiver.received().len() >= 3).then_some(())
    })
    .await;
    first.kill_9();
    let delivered_before = receiver.received().len();
    assert!(
        delivered_before < EVENTS,
        "the kill must land mid-stream ({delivered_before} delivered)"
    );

    let _second = deployment.start();
    let expected: BTreeSet<String> = events
        .iter()
        .map(|(uuid, _)| format!("crash:{uuid}"))
        .collect();
    eventually(
        Duration::from_secs(120),
        "every delivery after the restart",
        || async {
            let ids: BTreeSet<String> = receiver
                .received()
                .iter()
                .map(|r| r.header("webhook-id").to_owned())
                .collect();
            (ids == expected).then_some(())
        },
    )
    .await;
    let query = format!("HookflowTeamId = {team}");
    assert_eq!(
        temporal::count(&temporal, &query).await,
        EVENTS,
        "one workflow per pair, none twice"
    );
}
