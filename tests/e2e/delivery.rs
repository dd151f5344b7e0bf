//! N events × M destinations with action filters: exactly the expected deliveries, each
//! once, signed and with the documented body; replays start nothing new.

use std::{collections::BTreeSet, time::Duration};

use hookflow_e2e::{events, eventually, kafka, scenario::Scenario, temporal};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread")]
async fn every_expected_pair_is_delivered_once_signed_and_replays_deliver_nothing() {
    let mut s = Scenario::new().await;
    s.destination("all", "all", &format!("secret = \"{SECRET}\""))
        .destination(
            "only-17",
            "only-17",
            &format!(
                "actions = [17]
secret = \"{SECRET}\""
            ),
        )
        .destination("only-99", "only-99", "actions = [99]");
    let (stack, temporal, receiver, team) = (&s.stack, &s.temporal, &s.receiver, s.team);
    let deployment = &mut s.deployment;

    // Event 0 matches 17 and 18, event 1 matches 18, event 2 matches 17 and 99.
    let matched: [&[(i64, &str)]; 3] = [
        &[(17, "Signed up"), (18, "Paid")],
        &[(18, "Paid")],
        &[(17, "Signed up"), (99, "Churned")],
    ];
    let events: Vec<_> = matched
        .iter()
        .map(|actions| events::event(team, actions))
        .collect();
    let payloads: Vec<Vec<u8>> = events
        .iter()
        .map(|(_, e)| e.to_string().into_bytes())
        .collect();
    kafka::produce(&stack.kafka, &deployment.topic, &payloads).await;

    // (destination, event index, actions the destination gets)
    type Expected<'a> = (&'a str, usize, &'a [(i64, &'a str)]);
    let expected: Vec<Expected> = vec![
        ("all", 0, matched[0]),
        ("all", 1, matched[1]),
        ("all", 2, matched[2]),
        ("only-17", 0, &[(17, "Signed up")]),
        ("only-17", 2, &[(17, "Signed up")]),
        ("only-99", 2, &[(99, "Churned")]),
    ];

    let process = deployment.start();
    eventually(Duration::from_secs(60), "six deliveries", || async {
        (receiver.received().len() >= expected.len()).then_some(())
    })
    .await;
    // Give a duplicate the chance to show up before asserting there is none.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = receiver.received();
    assert_eq!(received.len(), expected.len(), "{}", deployment.logs());

    let verifier = standardwebhooks::Webhook::new(SECRET).expect("secret");
    for (destination, index, actions) in &expected {
        let (uuid, event) = &events[*index];
        let id = format!("{destination}:{uuid}");
        let got: Vec<_> = received
            .iter()
            .filter(|r| r.header("webhook-id") == id)
            .collect();
        assert_eq!(got.len(), 1, "{id} must arrive exactly once");
        let request = got[0];
        assert_eq!(request.path, *destination);
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json body");
        assert_eq!(body, events::expected_body(event, actions), "{id}");
        assert_eq!(request.header("content-type"), "application/json");
        assert!(request.header("user-agent").starts_with("hookflow/"));
        if *destination == "only-99" {
            assert_eq!(
                request.header("webhook-signature"),
                "",
                "no secret, no signature"
            );
        } else {
            verifier
                .verify(&request.body, &request.headers)
                .unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }
    let query = format!("HookflowTeamId = {team}");
    assert_eq!(temporal::count(temporal, &query).await, expected.len());
    let result = temporal::result(temporal, &format!("only-99:{}", events[2].0)).await;
    assert_eq!(result.outcome, hookflow_core::DeliveryOutcome::Delivered);
    assert_eq!(result.attempts, 1);
    assert_eq!(result.last_status, Some(200));

    // The same messages again, and a second deployment reading from offset 0 under a new group.
    kafka::produce(&stack.kafka, &deployment.topic, &payloads).await;
    deployment.new_group();
    let second = deployment.start();
    let processed = "hookflow_consumer_messages_total{outcome=\"started\"}";
    eventually(
        Duration::from_secs(60),
        "the new group to process all six messages",
        || async { (second.metric(processed).await >= 6.0).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the first deployment to process the replays",
        || async { (process.metric(processed).await >= 6.0).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.received().len(),
        expected.len(),
        "replays must deliver nothing"
    );
    assert_eq!(
        temporal::count(temporal, &query).await,
        expected.len(),
        "replays must start no workflow"
    );
    let starts = "hookflow_workflow_starts_total{result=\"already_exists\"}";
    assert_eq!(
        second.metric(starts).await + process.metric(starts).await,
        18.0,
        "every replayed start found its workflow"
    );
    let ids: BTreeSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len(), expected.len());
}
