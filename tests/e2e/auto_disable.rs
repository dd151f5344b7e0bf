//! Auto-disable with notice, on two workers sharing the failure streaks through Redis, with
//! short configured times: a destination whose endpoint fails every attempt is warned about
//! once and disabled once (reason `auto_disabled`), its pending deliveries end
//! `destination_disabled`, another team's destination of the same id goes on, and once
//! enabled through the API its deliveries are redelivered; each step a notice on the
//! outcomes topic.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    admin::AdminApi, events, eventually, kafka, receiver::Answer, scenario::Scenario, temporal,
    unique_team,
};
use serde_json::{Value, json};

/// The notices on the outcomes topic so far (its summaries left out), read for `window`.
async fn notices(s: &Scenario, window: Duration) -> Vec<Value> {
    kafka::read_all(&s.stack.kafka, &s.deployment.outcomes_topic, window)
        .await
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).expect("JSON"))
        .filter(|m| m.get("type").is_some())
        .collect()
}

fn of_type<'a>(notices: &'a [Value], kind: &str) -> Vec<&'a Value> {
    notices.iter().filter(|n| n["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_failing_every_attempt_is_warned_disabled_and_enabled_once() {
    let mut s = Scenario::new().await;
    s.receiver.script("dead", vec![Answer::Status(503, None)]);
    s.deployment.config(
        "[auto_disable]\nafter_ms = 3000\nwarn_after_ms = 1000\nmin_attempts = 4\n\
         flush_interval_ms = 200\n\
         [isolation.breaker]\nmin_attempts = 1000\n",
    );
    let (base, token) = s.deployment.admin_api();
    let api = AdminApi::new(base, token);
    // Both run workers: the streak is counted by both, and crosses each line once.
    let _all = s.deployment.start();
    let _worker = s.deployment.start_as("worker");
    let (team_a, team_b) = (s.team, unique_team());
    let collection = |team: i64| format!("/v1/teams/{team}/destinations");
    api.wait_until_serving(&collection(team_a)).await;
    let schedule: Vec<u64> = vec![200; 30];
    for (team, path) in [(team_a, "dead"), (team_b, "b-ok")] {
        let spec =
            json!({"id": "dead", "url": s.receiver.url(path), "retry_schedule_ms": schedule});
        let (status, body) = api.call("POST", &collection(team), Some(spec)).await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, shown) = api
        .call("GET", &format!("{}/dead", collection(team_a)), None)
        .await;
    let uid = shown["uid"].clone();

    let uuids = s.produce_events(2).await;
    for uuid in &uuids {
        let result = temporal::result(&s.temporal, &format!("dead:{uuid}")).await;
        assert_eq!(result.outcome, DeliveryOutcome::DestinationDisabled);
        assert_eq!(
            result.last_error.as_deref(),
            Some("destination disabled: auto_disabled")
        );
    }
    let attempts = s.receiver.received_on("dead").len();
    assert!(attempts >= 4, "{attempts} attempts");

    // Another team's destination of the same id is not disabled with it.
    let (uuid_b, event_b) = events::event(team_b, &[(1, "Any")]);
    s.produce(&[&event_b]).await;
    let result = temporal::result(&s.temporal, &format!("dead:{uuid_b}")).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);

    let seen = notices(&s, Duration::from_secs(5)).await;
    let (failing, disabled) = (
        of_type(&seen, "destination.failing"),
        of_type(&seen, "destination.disabled"),
    );
    assert_eq!((failing.len(), disabled.len()), (1, 1), "{seen:?}");
    for notice in [failing[0], disabled[0]] {
        assert_eq!(notice["team_id"], team_a);
        assert_eq!(notice["destination_id"], "dead");
        assert_eq!(notice["destination_uid"], uid);
        assert_eq!(notice["failing_since"], disabled[0]["failing_since"]);
    }
    assert_eq!(disabled[0]["reason"], "auto_disabled");
    assert!(disabled[0]["attempts"].as_u64() >= Some(4), "{disabled:?}");
    assert!(of_type(&seen, "destination.enabled").is_empty());

    // The endpoint is back; enabled through the API, its deliveries are redelivered.
    s.receiver.script("dead", vec![Answer::Status(200, None)]);
    let enable = format!("{}/dead/enable", collection(team_a));
    let (status, body) = api.call("POST", &enable, None).await;
    assert_eq!((status, &body), (200, &json!({"was_disabled": true})));
    let (status, body) = api.call("POST", &enable, None).await;
    assert_eq!((status, &body), (200, &json!({"was_disabled": false})));
    let (status, body) = api
        .call("POST", &format!("{}/dead/enable", collection(team_b)), None)
        .await;
    assert_eq!((status, &body), (200, &json!({"was_disabled": false})));
    let history = format!(
        "{}/dead/deliveries?outcome=destination_disabled",
        collection(team_a)
    );
    eventually(Duration::from_secs(30), "both in visibility", || async {
        let (_, page) = api.call("GET", &history, None).await;
        (page["deliveries"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let redeliver = format!("{}/dead/redeliver", collection(team_a));
    let (status, counts) = api.call("POST", &redeliver, Some(json!({}))).await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(
        (&counts["matched"], &counts["started"]),
        (&json!(2), &json!(2))
    );
    let delivered_before = attempts;
    eventually(Duration::from_secs(30), "both redelivered", || async {
        let received = s.receiver.received_on("dead");
        (received.len() == delivered_before + 2).then_some(())
    })
    .await;
    let seen = notices(&s, Duration::from_secs(5)).await;
    let enabled = of_type(&seen, "destination.enabled");
    assert_eq!(enabled.len(), 1, "{seen:?}");
    assert_eq!(
        (&enabled[0]["team_id"], &enabled[0]["destination_uid"]),
        (&json!(team_a), &uid)
    );
    assert_eq!(of_type(&seen, "destination.disabled").len(), 1);
}
