//! The Redis destination store under faults. Nothing is consumed before the store has
//! loaded (Redis down at start: the event waits, it is not skipped). A store that comes back
//! empty after a Redis restart is lost, not "every destination deleted": the last good set
//! keeps delivering, changes are refused until an operator restores it, and the loss is
//! exported for alerting. Deleting through the admin API still works afterwards.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{admin::AdminApi, eventually, scenario::Scenario, stack::RedisServer, temporal};
use serde_json::json;

const SKIPPED: &str = r#"hookflow_consumer_skipped_total{reason="no_destinations"}"#;
const LOST: &str = "hookflow_destination_store_lost";

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_skipped_before_the_store_loads_and_a_lost_store_keeps_the_last_good_set() {
    let mut s = Scenario::new().await;
    let redis = RedisServer::down();
    s.deployment.redis_url(&redis.url());
    let (base, token) = s.deployment.admin_api();
    let api = AdminApi::new(base, token);
    let process = s.deployment.start();
    let first = s.produce_events(1).await[0];

    // Redis is down: not ready, naming the store; the event waits in Kafka.
    let reason = eventually(
        Duration::from_secs(60),
        "readiness to name the store",
        || async {
            let (status, body) = process.probe("/_readiness").await?;
            let reason = body["components"]["destinations"]["reason"]
                .as_str()?
                .to_owned();
            (status == 503 && reason.contains("redis store")).then_some(reason)
        },
    )
    .await;
    assert!(reason.contains("not loaded yet"), "{reason}");

    // Redis comes back empty: a store never written is not loaded either.
    redis.restart();
    eventually(
        Duration::from_secs(30),
        "the never-written reason",
        || async {
            let (_, body) = process.probe("/_readiness").await?;
            let reason = body["components"]["destinations"]["reason"].as_str()?;
            reason.contains("never written").then_some(())
        },
    )
    .await;
    assert_eq!(
        process.metric(SKIPPED).await,
        0.0,
        "nothing skipped while waiting"
    );
    assert!(s.receiver.received().is_empty());

    // The first destination loads the store: the waiting event is delivered, once.
    let collection = format!("/v1/teams/{}/destinations", s.team);
    let spec = json!({"id": "kept", "url": s.receiver.url("kept")});
    let (status, body) = api.call("POST", &collection, Some(spec)).await;
    assert_eq!(status, 201, "{body}");
    let result = temporal::result(&s.temporal, &format!("kept:{first}")).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(s.receiver.received_on("kept").len(), 1);
    assert_eq!(process.metric(SKIPPED).await, 0.0);

    // Redis restarts without persistence: the store is lost, and the last good set stays.
    redis.stop();
    redis.restart();
    process
        .wait_for_metric(LOST, 1.0, Duration::from_secs(30))
        .await;
    assert_eq!(
        process
            .metric(r#"hookflow_destination_reloads_total{result="lost"}"#)
            .await,
        1.0
    );
    let second = s.produce_events(1).await[0];
    let result = temporal::result(&s.temporal, &format!("kept:{second}")).await;
    assert_eq!(
        result.outcome,
        DeliveryOutcome::Delivered,
        "the last good set delivers"
    );
    assert_eq!(s.receiver.received_on("kept").len(), 2);

    // A change now would make one destination the whole set: refused until restored.
    let other = json!({"id": "other", "url": s.receiver.url("other")});
    let (status, body) = api.call("POST", &collection, Some(other)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("lost"),
        "{body}"
    );
    let (status, body) = api.call("POST", "/v1/destinations/restore", None).await;
    assert_eq!(
        (status, body["restored"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    eventually(
        Duration::from_secs(10),
        "the lost gauge to clear",
        || async { (process.metric(LOST).await == 0.0).then_some(()) },
    )
    .await;
    let (status, listed) = api.call("GET", &collection, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["destinations"][0]["id"], "kept", "{listed}");
    let (status, _) = api.call("POST", "/v1/destinations/restore", None).await;
    assert_eq!(status, 409, "nothing left to restore");

    // Deleting through the API still works: the team has no destination any more.
    let (status, _) = api
        .call("DELETE", &format!("{collection}/kept"), None)
        .await;
    assert_eq!(status, 204);
    let third = s.produce_events(1).await[0];
    process
        .wait_for_metric(SKIPPED, 1.0, Duration::from_secs(30))
        .await;
    assert_eq!(s.receiver.received_on("kept").len(), 2);
    assert_eq!(
        temporal::count(&s.temporal, &format!("WorkflowId = 'kept:{third}'")).await,
        0
    );
}
