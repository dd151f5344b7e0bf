//! One team never receives another team's deliveries, nor slows them down. Destination ids
//! are freed on delete and may be taken again, by any team: a pending delivery goes only to
//! the destination it was planned for (the event's team, the uid the store gave it at
//! creation). On any host, limits and breakers are per team.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    admin::AdminApi, events, receiver::Answer, scenario::Scenario, temporal, unique_team,
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
