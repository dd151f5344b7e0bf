//! Auto-disable with notice, on two workers sharing the failure streaks through Redis, with
//! short configured times: a destination whose endpoint fails every attempt is warned about
//! once and disabled once (reason `auto_disabled`), its pending deliveries end
//! `destination_disabled`, another team's destination of the same id goes on; enabled
//! again through the API it starts a new streak (a second disable has a notice of its own),
//! and once its endpoint is back its deliveries are redelivered. Each step is a notice on
//! the outcomes topic and, signed, at the team's notices destination (which gets no events).

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    admin::AdminApi, events, eventually, kafka, receiver::Answer, scenario::Scenario, temporal,
    unique_team,
};
use serde_json::{Value, json};

/// Events of the failing destination: enough that both workers take some (a workflow stays
/// on the worker that took its first task), all but surely.
const EVENTS: usize = 12;

const OPS_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The notices on the outcomes topic so far (its summaries left out), read for `window`.
async fn notices(s: &Scenario, window: Duration) -> Vec<Value> {
    kafka::read_all(&s.stack.kafka, &s.deployment.outcomes_topic, window)
        .await
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).expect("JSON"))
        .filter(|m| m.get("type").is_some())
        .collect()
}

/// The notices of type `kind`, one per id (a notice may be sent twice; readers keep one).
fn of_type<'a>(notices: &'a [Value], kind: &str) -> Vec<&'a Value> {
    let mut ids = std::collections::HashSet::new();
    notices
        .iter()
        .filter(|n| n["type"] == kind && ids.insert(n["id"].to_string()))
        .collect()
}

/// Waits until every delivery of `uuids` to `dead` ended `outcome`.
async fn each_ended(s: &Scenario, uuids: &[uuid::Uuid], outcome: DeliveryOutcome) {
    for uuid in uuids {
        let id = format!("dead:{uuid}");
        eventually(Duration::from_secs(60), &id, || async {
            (temporal::result(&s.temporal, &id).await.outcome == outcome).then_some(())
        })
        .await;
    }
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
    // Starts reach the two workers through the task queue: both count the streak, and
    // each line is crossed once.
    let _admin = s.deployment.start_as("admin");
    let _consumer = s.deployment.start_as("consumer");
    let workers = [
        s.deployment.start_as("worker"),
        s.deployment.start_as("worker"),
    ];
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
    // Each team's operational webhook: team B's hears nothing of team A's destination.
    for (team, path) in [(team_a, "ops"), (team_b, "b-ops")] {
        let ops = json!({"id": "ops", "url": s.receiver.url(path), "notices": true, "secret": OPS_SECRET});
        let (status, body) = api.call("POST", &collection(team), Some(ops)).await;
        assert_eq!(status, 201, "{body}");
    }
    let refused =
        json!({"id": "ops2", "url": s.receiver.url("ops"), "notices": true, "actions": [1]});
    let (status, body) = api.call("POST", &collection(team_a), Some(refused)).await;
    assert_eq!((status, &body["field"]), (400, &json!("actions")), "{body}");
    let (_, shown) = api
        .call("GET", &format!("{}/dead", collection(team_a)), None)
        .await;
    let uid = shown["uid"].clone();

    let uuids = s.produce_events(EVENTS).await;
    each_ended(&s, &uuids, DeliveryOutcome::DestinationDisabled).await;
    let result = temporal::result(&s.temporal, &format!("dead:{}", uuids[0])).await;
    assert_eq!(
        result.last_error.as_deref(),
        Some("destination disabled: auto_disabled")
    );
    for worker in &workers {
        let attempts = worker
            .metric(r#"hookflow_delivery_attempts_total{class="5xx"}"#)
            .await;
        assert!(attempts > 0.0, "each worker attempted: {attempts}");
    }

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

    // Enabled through the API (team B's of the same id never was), it starts afresh: still
    // failing, its redeliveries disable it again, with notices of their own.
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
    eventually(Duration::from_secs(30), "all in visibility", || async {
        let (_, page) = api.call("GET", &history, None).await;
        (page["deliveries"].as_array()?.len() == EVENTS).then_some(())
    })
    .await;
    let redeliver = format!("{}/dead/redeliver", collection(team_a));
    let (status, counts) = api.call("POST", &redeliver, Some(json!({}))).await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(counts["started"], EVENTS, "{counts}");
    eventually(Duration::from_secs(60), "the second disable", || async {
        let seen = notices(&s, Duration::from_secs(5)).await;
        (of_type(&seen, "destination.disabled").len() == 2).then_some(())
    })
    .await;
    each_ended(&s, &uuids, DeliveryOutcome::DestinationDisabled).await;

    // The endpoint is back: enabled again, its deliveries are redelivered.
    let before = s.receiver.received_on("dead").len();
    s.receiver.script("dead", vec![Answer::Status(200, None)]);
    let (status, body) = api.call("POST", &enable, None).await;
    assert_eq!((status, &body), (200, &json!({"was_disabled": true})));
    let (status, counts) = api.call("POST", &redeliver, Some(json!({}))).await;
    assert_eq!(
        (status, &counts["started"]),
        (200, &json!(EVENTS)),
        "{counts}"
    );
    each_ended(&s, &uuids, DeliveryOutcome::Delivered).await;
    assert_eq!(s.receiver.received_on("dead").len(), before + EVENTS);

    let seen = notices(&s, Duration::from_secs(5)).await;
    let kinds: Vec<usize> = [
        "destination.failing",
        "destination.disabled",
        "destination.enabled",
    ]
    .iter()
    .map(|kind| of_type(&seen, kind).len())
    .collect();
    assert_eq!(kinds, [2, 2, 2], "{seen:?}");
    let disabled = of_type(&seen, "destination.disabled");
    assert_ne!(disabled[0]["id"], disabled[1]["id"]);
    assert!(disabled[0]["failing_since"].as_str() < disabled[1]["failing_since"].as_str());
    for enabled in of_type(&seen, "destination.enabled") {
        assert_eq!(
            (&enabled["team_id"], &enabled["destination_uid"]),
            (&json!(team_a), &uid)
        );
    }

    // The same six notices reached the team's webhook, each once, signed, and no event.
    let verifier = standardwebhooks::Webhook::new(OPS_SECRET).expect("secret");
    let received = eventually(Duration::from_secs(30), "six notices", || async {
        let received = s.receiver.received_on("ops");
        (received.len() >= 6).then_some(received)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.receiver.received_on("ops").len(), 6);
    assert!(s.receiver.received_on("b-ops").is_empty());
    for request in &received {
        verifier
            .verify(&request.body, &request.headers)
            .expect("signed");
        let body: Value = serde_json::from_slice(&request.body).expect("JSON");
        let published = seen
            .iter()
            .find(|n| n["id"] == body["id"])
            .unwrap_or_else(|| panic!("{body} was published"));
        assert_eq!(&body, published);
        let id = body["id"].as_str().unwrap_or_default();
        assert_eq!(request.header("webhook-id"), format!("ops:{id}"));
    }
}
