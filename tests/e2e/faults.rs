//! Faults of the components hookflow depends on, on real ones: Temporal killed and
//! restarted on its database mid-stream, the broker frozen past the group's session
//! timeout, and endpoints that misbehave below HTTP. Each counts what arrived: every pair
//! delivered, one workflow per pair, nothing dead-lettered.

use std::{collections::BTreeSet, sync::atomic::Ordering, time::Duration};

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    events, eventually,
    hookflow::Process,
    kafka,
    receiver::{Misbehaviour, misbehaving},
    scenario::Scenario,
    stack::stack,
    temporal,
};

async fn ready(process: &Process) -> Option<(u16, serde_json::Value)> {
    process.probe("/_readiness").await
}

/// Waits until readiness fails because `component` is not ready.
async fn wait_not_ready(process: &Process, component: &str) {
    let what = format!("not ready for {component}");
    eventually(Duration::from_secs(30), &what, || async {
        let (status, body) = ready(process).await?;
        (status == 503 && body["components"][component]["ready"] == false).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn temporal_killed_mid_stream_and_restarted_loses_and_duplicates_nothing() {
    const EVENTS: usize = 30;
    let db = tempfile::tempdir().expect("tempdir");
    let (own, server) = stack().with_own_temporal(&db.path().join("temporal.db"));
    let mut s = Scenario::on(own, 4).await;
    // Paced by the endpoint's rate limit, so the kill lands mid-stream (as in crash.rs).
    s.destination("t", "t", "rate_per_second = 5.0\nburst = 5");
    let uuids = s.produce_events(EVENTS).await;
    let process = s.deployment.start();
    let receiver = s.receiver.clone();
    eventually(Duration::from_secs(60), "the first delivery", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;

    server.kill_9();
    let delivered_before = receiver.received().len();
    wait_not_ready(&process, "temporal").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart();

    let expected: BTreeSet<String> = uuids.iter().map(|u| format!("t:{u}")).collect();
    let seen = receiver
        .wait_for_ids(&expected, Duration::from_secs(180))
        .await;
    let client = temporal::client(&server.address).await;
    assert_eq!(
        temporal::count(&client, &format!("HookflowTeamId = {}", s.team)).await,
        EVENTS,
        "one workflow per pair"
    );
    for uuid in &uuids {
        let result = temporal::result(&client, &format!("t:{uuid}")).await;
        assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    }
    eventually(Duration::from_secs(30), "ready again", || async {
        (ready(&process).await?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        process
            .metric(r#"hookflow_consumer_dead_letters_total{reason="unstartable"}"#)
            .await,
        0.0
    );
    let dead = kafka::read_all(
        &s.stack.kafka,
        &s.deployment.dead_letter_topic,
        Duration::from_secs(3),
    )
    .await;
    assert!(dead.is_empty(), "nothing dead-lettered");
    // HTTP is at-least-once: an attempt whose completion Temporal lost is made again, with
    // the same webhook-id, for the receiver to dedupe.
    let repeated = seen.values().filter(|n| **n > 1).count();
    assert!(
        delivered_before < EVENTS,
        "the kill must land mid-stream ({delivered_before} delivered before it)"
    );
    println!("{delivered_before} delivered before the kill; {repeated} ids arrived more than once");
}

/// A Temporal outage longer than the consumer's poll interval: every place in flight is held
/// by a start that waits, so the consumer pauses its partitions and keeps polling; the group
/// keeps it (no rebalance), and every event is delivered once Temporal is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_temporal_outage_past_the_poll_interval_keeps_the_consumer_in_its_group() {
    const EVENTS: usize = 8;
    let db = tempfile::tempdir().expect("tempdir");
    let (own, server) = stack().with_own_temporal(&db.path().join("temporal.db"));
    let mut s = Scenario::on(own, 2).await;
    s.destination("t", "t", "");
    s.deployment.config(
        "[kafka]\nmax_messages_in_flight = 2\n[kafka.client]\nmax_poll_interval_ms = \"7000\"\n",
    );
    let process = s.deployment.start();
    let first = s.produce_events(1).await;
    temporal::result(&s.temporal, &format!("t:{}", first[0])).await;

    server.kill_9();
    let mut uuids = s.produce_events(EVENTS).await;
    wait_not_ready(&process, "temporal_starts").await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    server.restart();

    uuids.extend(first);
    let expected: BTreeSet<String> = uuids.iter().map(|u| format!("t:{u}")).collect();
    s.receiver
        .wait_for_ids(&expected, Duration::from_secs(120))
        .await;
    let logs = s.deployment.logs();
    assert!(
        logs.contains("partitions paused"),
        "the consumer paused while every place was held"
    );
    for rebalanced in ["maximum poll interval", "partitions revoked"] {
        assert!(
            !logs.contains(rebalanced),
            "the group took the consumer for dead ({rebalanced}):\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_broker_loses_and_duplicates_nothing_and_consumption_resumes_by_itself() {
    let (own, broker) = stack().with_own_broker();
    let mut s = Scenario::on(own, 2).await;
    s.destination("b", "b", "");
    let process = s.deployment.start();
    let mut uuids = s.produce_events(10).await;
    let receiver = s.receiver.clone();
    eventually(Duration::from_secs(60), "the first delivery", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;

    // Frozen for longer than the group's 6 s session timeout.
    broker.freeze();
    let frozen = std::time::Instant::now();
    wait_not_ready(&process, "kafka_consumer").await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(frozen.elapsed())).await;
    broker.thaw();

    uuids.extend(s.produce_events(10).await);
    let expected: BTreeSet<String> = uuids.iter().map(|u| format!("b:{u}")).collect();
    let seen = receiver
        .wait_for_ids(&expected, Duration::from_secs(180))
        .await;
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
    assert_eq!(
        temporal::count(&s.temporal, &format!("HookflowTeamId = {}", s.team)).await,
        20
    );
    eventually(Duration::from_secs(30), "ready again", || async {
        (ready(&process).await?.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_stalling_and_resetting_endpoints_end_as_documented_and_cost_the_others_nothing() {
    let mut s = Scenario::new().await;
    let (silent, silent_connections) = misbehaving(Misbehaviour::Silent).await;
    let (stalled, _) = misbehaving(Misbehaviour::StalledBody).await;
    let (reset, reset_connections) = misbehaving(Misbehaviour::Reset).await;
    // Three attempts each; a breaker of their own that does not open within them.
    let bad = "timeout_ms = 1000\nretry_schedule_ms = [500, 500]\nbreaker_min_attempts = 50";
    s.destination("healthy", "healthy", "");
    for (id, addr) in [("silent", silent), ("stalled", stalled), ("reset", reset)] {
        let url = format!("http://{addr}/{id}");
        s.deployment.destination(id, s.team, &url, bad);
    }
    let uuids = s.produce_events(3).await;
    let _process = s.deployment.start();

    for uuid in &uuids {
        let result = temporal::result(&s.temporal, &format!("healthy:{uuid}")).await;
        assert_eq!(
            (result.outcome, result.attempts),
            (DeliveryOutcome::Delivered, 1)
        );

        // 200 and then a body that never comes: delivered at once, not retried.
        let result = temporal::result(&s.temporal, &format!("stalled:{uuid}")).await;
        assert_eq!(
            (result.outcome, result.attempts),
            (DeliveryOutcome::Delivered, 1)
        );

        let result = temporal::result(&s.temporal, &format!("silent:{uuid}")).await;
        assert_eq!(
            (result.outcome, result.attempts),
            (DeliveryOutcome::GaveUp, 3)
        );
        assert_eq!(
            result.last_error.as_deref(),
            Some("timeout: no response within 1000 ms")
        );

        let result = temporal::result(&s.temporal, &format!("reset:{uuid}")).await;
        assert_eq!(
            (result.outcome, result.attempts),
            (DeliveryOutcome::GaveUp, 3)
        );
        // Reset while connecting (`connect: connection failed: …`) or once the request is
        // written (`other: request failed: …`): retried either way.
        let error = result.last_error.unwrap_or_default();
        assert!(
            (error.starts_with("connect: ") || error.starts_with("other: "))
                && error.contains("Connection reset by peer"),
            "{error}"
        );
    }
    assert_eq!(s.receiver.received_on("healthy").len(), 3);
    assert_eq!(
        silent_connections.load(Ordering::SeqCst),
        9,
        "3 attempts × 3"
    );
    assert_eq!(reset_connections.load(Ordering::SeqCst), 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_10_gb_body_costs_the_worker_no_more_than_the_prefix_it_reads() {
    let mut s = Scenario::new().await;
    let (endless, connections) = misbehaving(Misbehaviour::EndlessBody).await;
    let url = format!("http://{endless}/endless");
    s.deployment
        .destination("endless", s.team, &url, "timeout_ms = 2000\nactions = [2]");
    s.deployment
        .destination("warm-up", s.team, &s.receiver.url("warm-up"), "");
    let process = s.deployment.start();
    // A delivery elsewhere first, so the worker's own start-up is behind the baseline.
    let warm_up = s.produce_events(1).await[0];
    temporal::result(&s.temporal, &format!("warm-up:{warm_up}")).await;
    let baseline = process.rss_kib();

    let watch = async {
        let mut peak = 0;
        while connections.load(Ordering::SeqCst) == 0 || peak == 0 {
            peak = peak.max(process.rss_kib());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..100 {
            peak = peak.max(process.rss_kib());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    };
    let (uuid, event) = events::event(s.team, &[(2, "Big")]);
    s.produce(&[&event]).await;
    let id = format!("endless:{uuid}");
    let (result, peak) = tokio::join!(temporal::result(&s.temporal, &id), watch);
    assert_eq!(
        (result.outcome, result.attempts),
        (DeliveryOutcome::Delivered, 1)
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    let grown = peak.saturating_sub(baseline);
    println!("RSS {baseline} KiB before, {peak} KiB at most while the body streamed");
    assert!(
        grown < 16 * 1024,
        "the worker grew by {grown} KiB for a body it should read 64 KiB of"
    );
}
