//! A Temporal that refuses starts because of how the deployment is set up (here: a
//! namespace without hookflow's search attributes) stops consumption with a clear reason
//! instead of dead-lettering the traffic, and everything is delivered once it is fixed.
//! Values derived from the event stay within Temporal's limits: an event with a 10 kB name
//! is delivered, its summary cut. A person-hash key set before its search attribute is
//! registered holds consumption, saying why, until it is.

use std::{collections::BTreeSet, time::Duration};

use hookflow_e2e::{events, eventually, kafka, scenario::Scenario, temporal, unique};

const DEAD_LETTERS: &str = r#"hookflow_consumer_dead_letters_total{reason="unstartable"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_misconfigured_namespace_stops_consumption_and_nothing_is_dead_lettered() {
    let mut s = Scenario::new().await;
    let namespace = unique("no-attributes");
    temporal::create_namespace(&s.stack.temporal, &namespace);
    s.destination("d", "d", "");
    s.deployment
        .config(&format!("[temporal]\nnamespace = \"{namespace}\""));
    let (long_uuid, mut long) = events::event(s.team, &[(1, "Any")]);
    long["event"] = "x".repeat(10_000).into();
    let mut uuids = s.produce_events(2).await;
    s.produce(&[&long]).await;
    uuids.push(long_uuid);
    let process = s.deployment.start();

    let reason = eventually(Duration::from_secs(60), "readiness to say why", || async {
        let (status, body) = process.probe("/_readiness").await?;
        let reason = body["components"]["temporal_starts"]["reason"].as_str()?;
        (status == 503 && reason.contains("refuses workflow starts")).then(|| reason.to_owned())
    })
    .await;
    assert!(reason.contains("search attribute"), "{reason}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(process.metric(DEAD_LETTERS).await, 0.0);
    assert!(s.receiver.received().is_empty());

    // The operator registers the attributes: the waiting events are delivered, once each.
    let (ok, out) = s.deployment.command(&["register-search-attributes"]);
    assert!(ok, "{out}");
    let expected: BTreeSet<String> = uuids.iter().map(|u| format!("d:{u}")).collect();
    let receiver = &s.receiver;
    let seen = receiver
        .wait_for_ids(&expected, Duration::from_secs(90))
        .await;
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
    eventually(Duration::from_secs(30), "readiness again", || async {
        let (status, _) = process.probe("/_readiness").await?;
        (status == 200).then_some(())
    })
    .await;
    assert_eq!(process.metric(DEAD_LETTERS).await, 0.0);
    let dead = kafka::read_all(
        &s.stack.kafka,
        &s.deployment.dead_letter_topic,
        Duration::from_secs(3),
    )
    .await;
    assert!(dead.is_empty(), "nothing dead-lettered: {}", dead.len());

    // The 10 kB name arrived whole; the summary Temporal shows is cut to its limit.
    let body = receiver
        .received()
        .into_iter()
        .find(|r| r.header("webhook-id") == format!("d:{long_uuid}"))
        .expect("the long event");
    let body: serde_json::Value = serde_json::from_slice(&body.body).expect("json");
    assert_eq!(
        body["data"]["event"]["event"].as_str().map(str::len),
        Some(10_000)
    );
    let client = temporal::client_in(&s.stack.temporal, &namespace).await;
    let summary = temporal::summary(&client, &format!("d:{long_uuid}"))
        .await
        .expect("a summary");
    assert!(
        summary.len() <= 200 && summary.ends_with("… → d"),
        "{summary}"
    );
}

/// A deployment given `temporal.person_hash_key` before its namespace has the
/// `HookflowPersonHash` attribute would have every start refused: the consumer waits,
/// saying why, until the attribute is registered; then the waiting event is delivered,
/// carrying its person hash.
#[tokio::test(flavor = "multi_thread")]
async fn a_person_hash_key_waits_for_its_search_attribute() {
    use base64::Engine;
    let mut s = Scenario::new().await;
    let namespace = unique("no-person-hash");
    temporal::create_namespace(&s.stack.temporal, &namespace);
    s.destination("d", "d", "");
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    s.deployment.config(&format!(
        "[temporal]\nnamespace = \"{namespace}\"\nperson_hash_key = \"{key}\""
    ));
    let (uuid, event) = events::event(s.team, &[(1, "Any")]);
    s.produce(&[&event]).await;
    let process = s.deployment.start();

    let reason = eventually(Duration::from_secs(60), "readiness to say why", || async {
        let (status, body) = process.probe("/_readiness").await?;
        let reason = body["components"]["temporal"]["reason"].as_str()?;
        (status == 503 && reason.contains("HookflowPersonHash")).then(|| reason.to_owned())
    })
    .await;
    assert!(reason.contains("register-search-attributes"), "{reason}");
    assert!(!reason.contains(&key), "{reason}");

    let (ok, out) = s.deployment.command(&["register-search-attributes"]);
    assert!(ok, "{out}");
    let expected = BTreeSet::from([format!("d:{uuid}")]);
    let seen = s
        .receiver
        .wait_for_ids(&expected, Duration::from_secs(90))
        .await;
    assert!(seen.values().all(|n| *n == 1), "once: {seen:?}");
    let dead = kafka::read_all(
        &s.stack.kafka,
        &s.deployment.dead_letter_topic,
        Duration::from_secs(3),
    )
    .await;
    assert!(dead.is_empty(), "nothing dead-lettered: {}", dead.len());
    let distinct_id = event["distinct_id"].as_str().expect("a distinct id");
    let hash = hookflow_core::person::PersonKey::from_base64(&key)
        .expect("key")
        .hash(s.team, distinct_id);
    let client = temporal::client_in(&s.stack.temporal, &namespace).await;
    let query = format!("HookflowPersonHash = '{hash}'");
    eventually(
        Duration::from_secs(30),
        "the delivery found by its hash",
        || async { (temporal::count(&client, &query).await == 1).then_some(()) },
    )
    .await;
}
