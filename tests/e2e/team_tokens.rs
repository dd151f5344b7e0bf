//! Team tokens through the real binary's admin API: minted with the operator token for
//! one team (optionally one destination), read-only or read-write. Every route of the API
//! is called with another team's token (404: nothing of another team is revealed, not even
//! that an id exists), an expired token and a tampered one (401), and a token of a
//! destination since deleted, then created again under its id (404). What a token may
//! reach is asserted with exact answers, beside the same calls with the right token.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hookflow_e2e::{admin::AdminApi, scenario::Scenario};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Every route of the API on team `team`'s destination `id`: (method, path, body).
fn every_route(team: i64, id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let one = format!("/v1/teams/{team}/destinations/{id}");
    let delivery = format!("{one}/deliveries/0190f3a4-0000-7000-8000-000000000001");
    let replays = format!("/v1/teams/{team}/replays");
    let since = json!({"destination_id": id, "since": "2026-01-01T00:00:00Z", "dry_run": true});
    vec![
        ("GET", format!("/v1/teams/{team}/destinations"), None),
        (
            "POST",
            format!("/v1/teams/{team}/destinations"),
            Some(json!({"id": "created-by-token", "url": "https://example.com/x"})),
        ),
        ("GET", one.clone(), None),
        (
            "PUT",
            one.clone(),
            Some(json!({"id": id, "url": "https://example.com/y"})),
        ),
        ("DELETE", one.clone(), None),
        ("POST", format!("{one}/pause"), None),
        ("POST", format!("{one}/resume"), None),
        ("POST", format!("{one}/test"), None),
        ("GET", format!("{one}/deliveries"), None),
        ("GET", delivery.clone(), None),
        ("POST", format!("{delivery}/redeliver"), None),
        ("POST", format!("{one}/redeliver"), Some(json!({}))),
        ("POST", format!("{one}/cancel-pending"), None),
        ("POST", format!("{one}/terminate-pending"), None),
        ("POST", replays.clone(), Some(since)),
        ("GET", format!("{replays}/job-1"), None),
        ("POST", format!("{replays}/job-1/cancel"), None),
        (
            "POST",
            format!("/v1/teams/{team}/tokens"),
            Some(json!({"access": "read_write"})),
        ),
    ]
}

/// Calls every route of team `team`'s destination `id` with `token`; each answer's status.
async fn statuses(api: &AdminApi, token: &str, team: i64, id: &str) -> Vec<(String, u16)> {
    let mut answers = Vec::new();
    for (method, path, body) in every_route(team, id) {
        let (status, _) = api.call_with(method, &path, body, Some(token)).await;
        answers.push((format!("{method} {path}"), status));
    }
    answers
}

/// The status of `method path` (no body) called with `token`.
async fn status_of(api: &AdminApi, method: &str, path: &str, token: &str) -> u16 {
    api.call_with(method, path, None, Some(token)).await.0
}

fn all(answers: &[(String, u16)], status: u16) -> Vec<(String, u16)> {
    answers
        .iter()
        .filter(|(_, s)| *s != status)
        .cloned()
        .collect()
}

/// Mints a token with the operator's API client; the token.
async fn mint(api: &AdminApi, team: i64, body: Value) -> String {
    let (status, minted) = api
        .call("POST", &format!("/v1/teams/{team}/tokens"), Some(body))
        .await;
    assert_eq!(status, 201, "{minted}");
    minted["token"].as_str().expect("token").to_owned()
}

/// The ids a team's list shows to `token`.
async fn listed(api: &AdminApi, token: &str, team: i64) -> Vec<String> {
    let (status, body) = api
        .call_with(
            "GET",
            &format!("/v1/teams/{team}/destinations"),
            None,
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<String> = body["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_token_reaches_its_own_team_and_destination_and_nothing_else() {
    let mut s = Scenario::new().await;
    let (base, operator) = s.deployment.admin_api();
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    s.deployment.config(&format!(
        "[admin.team_tokens]\ncurrent_key = \"t1\"\nkeys = {{ t1 = \"{key}\" }}"
    ));
    let _process = s.deployment.start();
    let api = AdminApi::new(base, operator);
    let (a, b) = (s.team, s.team + 1_000_000);
    api.wait_until_serving(&format!("/v1/teams/{a}/destinations"))
        .await;
    // Both teams have a destination `d`; team a also has `e`.
    for (team, id) in [(a, "d"), (a, "e"), (b, "d")] {
        let spec = json!({"id": id, "url": s.receiver.url(id), "secret": SECRET});
        let (status, body) = api
            .call(
                "POST",
                &format!("/v1/teams/{team}/destinations"),
                Some(spec),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    let team_a = mint(&api, a, json!({"access": "read_write"})).await;
    let team_b = mint(&api, b, json!({"access": "read_write"})).await;
    let reader_a = mint(&api, a, json!({})).await;
    let only_d = mint(
        &api,
        a,
        json!({"destination_id": "d", "access": "read_write"}),
    )
    .await;

    // Another team's token: 404 on every route of team a, whether or not the id exists
    // there; the same token reaches its own team's `d`.
    let answers = statuses(&api, &team_b, a, "d").await;
    assert_eq!(all(&answers, 404), vec![], "team b's token on team a");
    assert_eq!(listed(&api, &team_b, b).await, ["d"]);
    assert_eq!(
        status_of(
            &api,
            "GET",
            &format!("/v1/teams/{b}/destinations/d"),
            &team_b
        )
        .await,
        200
    );

    // A tampered token: team b's, its team rewritten to a, not signed again.
    let mut parts: Vec<String> = team_b.split('.').map(str::to_owned).collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("base64")).expect("json");
    claims["team"] = json!(a);
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered = parts.join(".");
    let answers = statuses(&api, &tampered, a, "d").await;
    assert_eq!(all(&answers, 401), vec![], "a tampered token");

    // An expired token.
    let expired = mint(&api, a, json!({"access": "read_write", "ttl_seconds": 1})).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let answers = statuses(&api, &expired, a, "d").await;
    assert_eq!(all(&answers, 401), vec![], "an expired token");

    // The operator's tools only: minting, and what is asked of it.
    for token in [&team_a, &reader_a, &only_d] {
        let (status, body) = api
            .call_with(
                "POST",
                &format!("/v1/teams/{a}/tokens"),
                Some(json!({})),
                Some(token),
            )
            .await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = api
        .call(
            "POST",
            &format!("/v1/teams/{a}/tokens"),
            Some(json!({"ttl_seconds": 0})),
        )
        .await;
    assert_eq!((status, &body["field"]), (400, &json!("ttl_seconds")));
    let (status, _) = api
        .call(
            "POST",
            &format!("/v1/teams/{a}/tokens"),
            Some(json!({"destination_id": "nope"})),
        )
        .await;
    assert_eq!(status, 404);

    // Team a's own tokens: read-write reaches both destinations; read-only reads.
    assert_eq!(listed(&api, &team_a, a).await, ["d", "e"]);
    let pause_e = format!("/v1/teams/{a}/destinations/e/pause");
    let (status, paused) = api.call_with("POST", &pause_e, None, Some(&team_a)).await;
    assert_eq!(
        (status, &paused["state"]),
        (200, &json!("paused")),
        "{paused}"
    );
    // A read-only token reads (404 only where nothing is there) and writes nothing.
    let answers = statuses(&api, &reader_a, a, "d").await;
    let got: Vec<u16> = answers.iter().map(|(_, status)| *status).collect();
    assert_eq!(
        got,
        [
            200, 403, 200, 403, 403, 403, 403, 403, 200, 404, 403, 403, 403, 403, 403, 404, 403,
            403
        ],
        "{answers:?}"
    );

    // A token of `d` only: `d` and its deliveries; `e` is as absent as another team's.
    assert_eq!(listed(&api, &only_d, a).await, ["d"]);
    assert_eq!(
        status_of(
            &api,
            "GET",
            &format!("/v1/teams/{a}/destinations/d/deliveries"),
            &only_d
        )
        .await,
        200
    );
    let answers = statuses(&api, &only_d, a, "e").await;
    let refused: Vec<u16> = answers.iter().map(|(_, status)| *status).collect();
    assert_eq!(
        refused,
        [
            200, 403, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404,
            403
        ],
        "{answers:?}"
    );
    let replays = format!("/v1/teams/{a}/replays");
    let (status, body) = api
        .call_with(
            "POST",
            &replays,
            Some(json!({"since": "2026-01-01T00:00:00Z", "dry_run": true})),
            Some(&only_d),
        )
        .await;
    assert_eq!((status, &body["field"]), (400, &json!("destination_id")));
    // Replay jobs the operator started, of `e` and of the whole team: there for the team's
    // token, absent for the token of `d` (seen, cancelled or resumed).
    for (job, destination) in [("job-e", Some("e")), ("job-team", None)] {
        let body = json!({"id": job, "destination_id": destination,
                          "since": "2026-01-01T00:00:00Z", "dry_run": true});
        let (status, view) = api.call("POST", &replays, Some(body)).await;
        assert_eq!(status, 202, "{view}");
        assert_eq!(
            status_of(&api, "GET", &format!("{replays}/{job}"), &team_a).await,
            200,
            "{job} is there"
        );
        assert_eq!(
            status_of(&api, "GET", &format!("{replays}/{job}"), &only_d).await,
            404,
            "{job} seen by the token of d"
        );
        assert_eq!(
            status_of(&api, "POST", &format!("{replays}/{job}/cancel"), &only_d).await,
            404,
            "{job} cancelled by the token of d"
        );
        let resume = json!({"id": job, "destination_id": "d",
                            "since": "2026-01-01T00:00:00Z", "dry_run": true});
        let (status, _) = api
            .call_with("POST", &replays, Some(resume), Some(&only_d))
            .await;
        assert_eq!(status, 404, "{job} resumed by the token of d");
    }
    let own = json!({"id": "job-d", "destination_id": "d", "max_starts_per_second": 500,
                     "since": "2026-01-01T00:00:00Z", "dry_run": true});
    let (status, view) = api
        .call_with("POST", &replays, Some(own), Some(&only_d))
        .await;
    assert_eq!(status, 202, "its own destination's replay: {view}");
    assert_eq!(
        view["max_starts_per_second"], 50,
        "a team's replay is paced as the default"
    );

    // `d` deleted, then created again under its id: the token of the old `d` reaches
    // nothing, not even the new one; a team token does.
    let d = format!("/v1/teams/{a}/destinations/d");
    assert_eq!(api.call("DELETE", &d, None).await.0, 204);
    let answers = statuses(&api, &only_d, a, "d").await;
    assert_eq!(all(&answers, 404), vec![], "a deleted destination's token");
    let spec = json!({"id": "d", "url": s.receiver.url("d2"), "secret": SECRET});
    let (status, _) = api
        .call("POST", &format!("/v1/teams/{a}/destinations"), Some(spec))
        .await;
    assert_eq!(status, 201);
    let answers = statuses(&api, &only_d, a, "d").await;
    assert_eq!(all(&answers, 404), vec![], "the token of the deleted `d`");
    assert_eq!(status_of(&api, "GET", &d, &team_a).await, 200);
}
