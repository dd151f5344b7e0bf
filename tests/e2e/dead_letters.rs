//! Bad input never blocks a partition: a malformed message is dead-lettered with its reason,
//! a message for a team without destinations is skipped, both are counted, and the messages
//! after them are delivered. A dead letter too large for the dead-letter producer or topic
//! is sent truncated, and an event too large for Temporal is dead-lettered, not retried.

use std::time::Duration;

use hookflow_e2e::{events, eventually, hookflow::Process, kafka, scenario::Scenario};

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_unwanted_messages_do_not_block_the_ones_after_them() {
    // One partition, so "after" is literal: the good event waits behind the bad ones.
    let mut s = Scenario::with_partitions(1).await;
    s.destination("d", "d", "");
    let (stack, receiver, team, deployment) = (&s.stack, &s.receiver, s.team, &s.deployment);
    let (_, no_destination) = events::event(team + 1, &[(1, "Any")]);
    let (_, missing_uuid) = {
        let (uuid, mut event) = events::event(team, &[(1, "Any")]);
        event.as_object_mut().expect("object").remove("uuid");
        (uuid, event)
    };
    let (good_uuid, good) = events::event(team, &[(1, "Any")]);
    kafka::produce(
        &stack.kafka,
        &deployment.topic,
        &[
            b"{this is not json".to_vec(),
            missing_uuid.to_string().into_bytes(),
            no_destination.to_string().into_bytes(),
            good.to_string().into_bytes(),
        ],
    )
    .await;
    let process = deployment.start();

    eventually(
        Duration::from_secs(60),
        "the good event to be delivered",
        || async { (receiver.received().len() == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        receiver.received()[0].header("webhook-id"),
        format!("d:{good_uuid}")
    );

    let letters = kafka::read_all(
        &stack.kafka,
        &deployment.dead_letter_topic,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let mut kinds: Vec<&str> = letters
        .iter()
        .map(|l| l.header("hookflow-error-kind").unwrap_or("?"))
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["contract", "not_json"]);
    let not_json = letters
        .iter()
        .find(|l| l.header("hookflow-error-kind") == Some("not_json"))
        .expect("not_json letter");
    assert_eq!(
        not_json.payload, b"{this is not json",
        "the payload is kept unchanged"
    );
    assert_eq!(
        not_json.header("hookflow-source-topic"),
        Some(deployment.topic.as_str())
    );
    let contract = letters
        .iter()
        .find(|l| l.header("hookflow-error-kind") == Some("contract"))
        .expect("contract letter");
    assert!(
        contract
            .header("hookflow-error")
            .unwrap_or_default()
            .contains("missing field `uuid`")
    );

    eventually(Duration::from_secs(10), "the counters", || async {
        let not_json = process
            .metric("hookflow_consumer_dead_letters_total{reason=\"not_json\"}")
            .await;
        let contract = process
            .metric("hookflow_consumer_dead_letters_total{reason=\"contract\"}")
            .await;
        let skipped = process
            .metric("hookflow_consumer_skipped_total{reason=\"no_destinations\"}")
            .await;
        (not_json == 1.0 && contract == 1.0 && skipped == 1.0).then_some(())
    })
    .await;

    lag_reaches_zero(&process, &s.deployment.topic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_too_large_is_sent_truncated_and_the_partition_moves_on() {
    let mut s = Scenario::with_partitions(1).await;
    s.destination("d", "d", "");
    // Events up to 500 kB start workflows; the dead-letter producer takes up to 1 MB
    // (librdkafka's default message.max.bytes), less than this events topic carries.
    s.deployment.config("[temporal]\nmax_input_bytes = 500000");
    let huge_garbage = vec![b'x'; 1_200_000];
    let (_, mut too_large) = events::event(s.team, &[(1, "Any")]);
    too_large["properties"]["blob"] = "y".repeat(600_000).into();
    let too_large = too_large.to_string().into_bytes();
    let (good_uuid, good) = events::event(s.team, &[(1, "Any")]);
    let payloads = [
        huge_garbage,
        too_large.clone(),
        good.to_string().into_bytes(),
    ];
    kafka::produce(&s.stack.kafka, &s.deployment.topic, &payloads).await;
    // Garbage whose key alone is over the dead-letter producer's limit.
    let huge_key = "k".repeat(1_200_000);
    kafka::produce_batched(
        &s.stack.kafka,
        &s.deployment.topic,
        &[(huge_key, b"not json".to_vec())],
    )
    .await;
    let process = s.deployment.start();

    let receiver = &s.receiver;
    eventually(Duration::from_secs(60), "the good event", || async {
        (receiver.received().len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        receiver.received()[0].header("webhook-id"),
        format!("d:{good_uuid}")
    );
    let letters = kafka::read_all(
        &s.stack.kafka,
        &s.deployment.dead_letter_topic,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(letters.len(), 3);
    // Each message is handled in a task of its own: the letters come in any order.
    let by_offset = |offset: &str| {
        letters
            .iter()
            .find(|l| l.header("hookflow-source-offset") == Some(offset))
            .unwrap_or_else(|| panic!("no letter of offset {offset}"))
    };
    let garbage = by_offset("0");
    assert_eq!(garbage.header("hookflow-error-kind"), Some("not_json"));
    assert_eq!(garbage.header("hookflow-truncated"), Some("1200000"));
    assert_eq!(garbage.header("hookflow-source-offset"), Some("0"));
    assert_eq!(garbage.payload.len(), 65_536, "the configured prefix");
    assert!(garbage.payload.iter().all(|b| *b == b'x'));
    let unstartable = by_offset("1");
    assert_eq!(
        unstartable.header("hookflow-error-kind"),
        Some("unstartable")
    );
    assert!(
        unstartable
            .header("hookflow-error")
            .unwrap_or_default()
            .contains("over temporal.max_input_bytes"),
        "{:?}",
        unstartable.header("hookflow-error")
    );
    assert_eq!(unstartable.header("hookflow-truncated"), None);
    assert_eq!(unstartable.payload, too_large, "fits: kept whole");
    let keyed = by_offset("3");
    assert_eq!(keyed.header("hookflow-error-kind"), Some("not_json"));
    assert_eq!(keyed.header("hookflow-key-truncated"), Some("1200000"));
    assert_eq!(keyed.header("hookflow-truncated"), Some("8"));
    assert!(keyed.payload.is_empty(), "the payload went first");
    assert_eq!(keyed.key.len(), 65_536, "the key's configured prefix");
    assert_eq!(
        process
            .metric("hookflow_consumer_dead_letters_truncated_total")
            .await,
        2.0
    );
    lag_reaches_zero(&process, &s.deployment.topic).await;
}

/// Waits until everything was processed and committed: the only partition's lag is
/// exported and zero.
async fn lag_reaches_zero(process: &Process, topic: &str) {
    let series = format!("hookflow_consumer_lag{{topic=\"{topic}\",partition=\"0\"}}");
    eventually(
        Duration::from_secs(20),
        "the lag of partition 0 to be 0",
        || async { (process.series(&series).await == Some(0.0)).then_some(()) },
    )
    .await;
}
