//! One team never receives another team's deliveries. Destination ids are freed on delete
//! and may be taken again, by any team: a pending delivery goes only to the destination it
//! was planned for (the event's team, the uid the store gave it at creation).

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{admin::AdminApi, eventually, scenario::Scenario, temporal, unique_team};
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
    eventually(Duration::from_secs(60), "the admin API", || async {
        let response = api.http.get(format!("{}{a}", api.base)).send().await.ok()?;
        (response.status().as_u16() == 401).then_some(())
    })
    .await;

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
