//! One team never receives another team's deliveries, nor slows them down. Destination ids
//! are freed on delete and may be taken again, by any team: a pending delivery goes only to
//! the destination it was planned for (the event's team, the uid the store gave it at
//! creation). On any host, limits and breakers are per team.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    admin::AdminApi, events, eventually, receiver::Answer, scenario::Scenario, temporal,
    unique_team,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_destination_id_never_receives_the_old_ones_pending_deliveries() {
    let mut s = Scenario::new().await;
    let (base, token) = s.deployment.admin_api();
    let api = AdminApi::new(base, token);
    let process = s.deployment.start();
    let (team_a, team_b) = (s.team, unique_team());
    let (a, b) = (
        format!("/v1/teams/{team_a}/destinations"),
        format!("/v1/teams/{team_b}/destinations"),
    );
    let receiver = &s.receiver;
    let spec = |id: &str, path: &str, state: &str| json!({"id": id, "url": receiver.url(path), "state": state});
    api.wait_until_serving(&a).await;

    // Two paused destinations of team A: their deliveries wait, deferred.
    for id in ["moved", "recreated"] {
        let (status, body) = api.call("POST", &a, Some(spec(id, id, "paused"))).await;
        assert_eq!(status, 201, "{body}");
        assert!(
            body["uid"].as_str().is_some_and(|u| u.len() == 36),
            "{body}"
        );
    }
    let uuid = s.produce_events(1).await[0];
    process
        .wait_for_metric(
            r#"hookflow_deferrals_total{reason="paused"}"#,
            2.0,
            Duration::from_secs(60),
        )
        .await;

    // Team B takes one id, team A deletes and recreates the other, both enabled now.
    let (status, _) = api.call("DELETE", &format!("{a}/moved"), None).await;
    assert_eq!(status, 204);
    let (status, body) = api
        .call("POST", &b, Some(spec("moved", "team-b", "enabled")))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = api.call("DELETE", &format!("{a}/recreated"), None).await;
    assert_eq!(status, 204);
    let (status, body) = api
        .call(
            "POST",
            &a,
            Some(spec("recreated", "recreated-new", "enabled")),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    for id in ["moved", "recreated"] {
        let result = temporal::result(&s.temporal, &format!("{id}:{uuid}")).await;
        assert_eq!(result.outcome, DeliveryOutcome::DestinationDeleted, "{id}");
        assert_eq!(result.attempts, 0);
    }
    assert!(
        receiver.received().is_empty(),
        "no request reached the new destinations: {:?}",
        receiver
            .received()
            .iter()
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );

    // The recreated destination gets the events that come after it, once.
    let later = s.produce_events(1).await[0];
    let result = temporal::result(&s.temporal, &format!("recreated:{later}")).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(receiver.received_on("recreated-new").len(), 1);
    assert!(receiver.received_on("team-b").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_team_on_a_host_does_not_defer_another_teams_deliveries() {
    let mut s = Scenario::new().await;
    let team_b = unique_team();
    s.receiver.script("team-a", vec![Answer::Status(503, None)]);
    // Any host: every team's endpoints are its own, with no list of shared hosts.
    s.deployment.config(
        "[isolation.breaker]\nwindow_ms = 30000\nmin_attempts = 3\nfailure_ratio = 0.5\n\
         cooldown_ms = 60000\nmax_cooldown_ms = 60000",
    );
    s.destination(
        "team-a",
        "team-a",
        "retry_schedule_ms = [300, 300, 300, 300]",
    );
    let url = s.receiver.url("team-b");
    s.deployment.destination("team-b", team_b, &url, "");
    let process = s.deployment.start();

    // Team A fails until its breaker opens and its deliveries are deferred.
    s.produce_events(2).await;
    process
        .wait_for_metric(
            r#"hookflow_deferrals_total{reason="breaker_open"}"#,
            1.0,
            Duration::from_secs(60),
        )
        .await;

    // Team B's events, to the same host and port, go out at once, never deferred.
    let events: Vec<_> = (0..4)
        .map(|_| events::event(team_b, &[(1, "Any")]))
        .collect();
    s.produce(&events.iter().map(|(_, e)| e).collect::<Vec<_>>())
        .await;
    for (uuid, _) in &events {
        let id = format!("team-b:{uuid}");
        let result = temporal::result(&s.temporal, &id).await;
        assert_eq!(
            (result.outcome, result.attempts),
            (DeliveryOutcome::Delivered, 1)
        );
        assert_eq!(
            temporal::steps(&s.temporal, &id).await,
            ["attempted"],
            "{id}"
        );
    }
    assert_eq!(s.receiver.received_on("team-b").len(), 4);
}

/// An event's uuid is chosen by whoever sent it, and destination ids are unique only within
/// a team: two teams' events of one uuid to destinations of one id are two deliveries, each
/// to its own team's endpoint once (the second under its team's own id), and each team's
/// API sees and re-runs only its own.
#[tokio::test(flavor = "multi_thread")]
async fn two_teams_deliveries_of_one_uuid_to_one_destination_id_are_each_made_once() {
    let mut s = Scenario::new().await;
    let (base, token) = s.deployment.admin_api();
    let api = AdminApi::new(base, token);
    let process = s.deployment.start();
    let (team_a, team_b, team_c) = (s.team, unique_team(), unique_team());
    let collection = |team: i64| format!("/v1/teams/{team}/destinations");
    api.wait_until_serving(&collection(team_a)).await;
    for (team, path) in [(team_a, "team-a"), (team_b, "team-b"), (team_c, "team-c")] {
        let spec = json!({"id": "hook", "url": s.receiver.url(path)});
        let (status, body) = api.call("POST", &collection(team), Some(spec)).await;
        assert_eq!(status, 201, "{body}");
    }

    // Team A's event first, then team B's with the same uuid.
    let (uuid, event_a) = events::event(team_a, &[(1, "Any")]);
    let mut event_b = event_a.clone();
    event_b["team_id"] = json!(team_b);
    event_b["properties"]["plan"] = json!("team-b");
    let (id_a, id_b) = (format!("hook:{uuid}"), format!("hook:{uuid}:t{team_b}"));
    s.produce(&[&event_a]).await;
    let result = temporal::result(&s.temporal, &id_a).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    s.produce(&[&event_b]).await;
    let result = temporal::result(&s.temporal, &id_b).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    let plan_of = |r: &hookflow_e2e::receiver::Received| {
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json body");
        body["data"]["event"]["properties"]["plan"].clone()
    };
    for (path, id, plan) in [("team-a", &id_a, "pro"), ("team-b", &id_b, "team-b")] {
        let received = s.receiver.received_on(path);
        assert_eq!(received.len(), 1, "{path}");
        assert_eq!(received[0].header("webhook-id"), id.as_str(), "{path}");
        assert_eq!(plan_of(&received[0]), plan, "{path}");
    }

    // Both messages again: each is its team's delivery, already made.
    s.produce(&[&event_a, &event_b]).await;
    process
        .wait_for_metric(
            r#"hookflow_workflow_starts_total{result="already_exists"}"#,
            2.0,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(s.receiver.received_on("team-a").len(), 1);
    assert_eq!(s.receiver.received_on("team-b").len(), 1);

    // Each team's API finds its own delivery under the uuid, and re-runs only its own.
    for (team, id) in [(team_a, &id_a), (team_b, &id_b)] {
        let one = format!("{}/hook/deliveries/{uuid}", collection(team));
        let found = eventually(Duration::from_secs(20), "the delivery", || async {
            let (status, body) = api.call("GET", &one, None).await;
            (status == 200).then_some(body)
        })
        .await;
        assert_eq!(found["delivery_id"], id.as_str(), "team {team}");
    }
    let (status, body) = api
        .call(
            "POST",
            &format!("{}/hook/deliveries/{uuid}/redeliver", collection(team_b)),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["workflow_id"], id_b.as_str());
    eventually(Duration::from_secs(30), "team B's redelivery", || async {
        (s.receiver.received_on("team-b").len() == 2).then_some(())
    })
    .await;
    let redelivered = &s.receiver.received_on("team-b")[1];
    assert_eq!(redelivered.header("webhook-id"), id_b.as_str());
    assert_eq!(plan_of(redelivered), "team-b");
    assert_eq!(s.receiver.received_on("team-a").len(), 1);

    // A third team's destination of that id has no delivery of the uuid, and its answers
    // say no more than they would for a uuid nobody sent.
    let unknown = uuid::Uuid::new_v4();
    for event in [uuid, unknown] {
        let one = format!("{}/hook/deliveries/{event}", collection(team_c));
        let expected = json!(format!("no delivery of event {event} to destination hook"));
        let (status, body) = api.call("GET", &one, None).await;
        assert_eq!((status, &body["error"]), (404, &expected), "{body}");
        let (status, body) = api.call("POST", &format!("{one}/redeliver"), None).await;
        assert_eq!((status, &body["error"]), (404, &expected), "{body}");
    }
}
