//! OAuth2 client credentials against a real token server on loopback and an endpoint that
//! accepts only the tokens it issued and has not revoked: one fetch serves many
//! deliveries, a token is fetched again before it expires, a token revoked early (a 401)
//! is replaced within the same attempt, two teams' destinations of one id each use their
//! own client, a token server that hangs or refuses the client fails the attempt with kind
//! `token` (retried), a token endpoint inside the network is refused by the guard, and no
//! secret or token reaches the logs.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Form, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{events, eventually, scenario::Scenario, temporal, unique_team};
use serde_json::json;

const SECRET_A: &str = "client-secret-of-team-a";
const SECRET_B: &str = "client-secret-of-team-b";

#[derive(Default)]
struct Authorization {
    /// Tokens issued and not revoked: token → client id, expiry.
    valid: HashMap<String, (String, Instant)>,
    /// Token requests answered, per client id.
    fetches: HashMap<String, usize>,
    /// The lifetime of the tokens issued, seconds.
    lifetime: u64,
    /// Whether the token endpoint hangs.
    hang: bool,
    /// What the endpoint got: path, token, status answered.
    requests: Vec<(String, String, u16)>,
}

type Shared = Arc<Mutex<Authorization>>;

/// Client credentials the token server knows: id → secret.
fn clients() -> HashMap<&'static str, &'static str> {
    HashMap::from([("team-a", SECRET_A), ("team-b", SECRET_B)])
}

async fn token(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> axum::response::Response {
    let hang = state.lock().expect("state").hang;
    if hang {
        tokio::time::sleep(Duration::from_secs(40)).await;
    }
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| BASE64.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .unwrap_or_default();
    let (id, secret) = basic.split_once(':').unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("scope").map(String::as_str) != Some("hooks.write")
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    }
    if clients().get(id) != Some(&secret) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let mut state = state.lock().expect("state");
    *state.fetches.entry(id.to_owned()).or_default() += 1;
    let value = format!("{id}-token-{}", uuid::Uuid::new_v4().simple());
    let expiry = Instant::now() + Duration::from_secs(state.lifetime);
    state.valid.insert(value.clone(), (id.to_owned(), expiry));
    axum::Json(json!({"access_token": value, "token_type": "Bearer", "expires_in": state.lifetime}))
        .into_response()
}

async fn endpoint(
    State(state): State<Shared>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> StatusCode {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let mut state = state.lock().expect("state");
    let status = if state
        .valid
        .get(&token)
        .is_some_and(|(_, expiry)| Instant::now() < *expiry)
    {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    state.requests.push((path, token, status.as_u16()));
    status
}

async fn serve(state: Shared) -> SocketAddr {
    let app = Router::new()
        .route("/token", post(token))
        .route("/hook/{path}", post(endpoint))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

fn oauth2(addr: SocketAddr, id: &str, secret: &str) -> String {
    format!(
        "oauth2 = {{ token_url = \"http://{addr}/token\", client_id = \"{id}\", \
         client_secret = \"{secret}\", scopes = [\"hooks.write\"] }}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_are_fetched_once_refreshed_replaced_on_401_and_kept_per_team() {
    let state = Shared::default();
    state.lock().expect("state").lifetime = 3600;
    let addr = serve(state.clone()).await;
    let mut s = Scenario::new().await;
    let team_b = unique_team();
    let url = |path: &str| format!("http://{addr}/hook/{path}");
    s.deployment
        .destination("api", s.team, &url("a"), &oauth2(addr, "team-a", SECRET_A))
        .destination("api", team_b, &url("b"), &oauth2(addr, "team-b", SECRET_B))
        // Only action 2's events, given up on quickly: their results show the failure.
        .destination(
            "wrong",
            s.team,
            &url("wrong"),
            &format!(
                "actions = [2]\ntimeout_ms = 1000\nretry_schedule_ms = [300]\nmax_age_ms = 2500\n{}",
                oauth2(addr, "team-a", "not-the-secret")
            ),
        )
        .destination(
            "slow",
            s.team,
            &url("slow"),
            &format!(
                "actions = [3]\ntimeout_ms = 1000\nretry_schedule_ms = [300]\nmax_age_ms = 2500\n{}",
                oauth2(addr, "team-a", SECRET_A)
            ),
        )
        .destination(
            "inside",
            s.team,
            &url("inside"),
            "actions = [2]\noauth2 = { token_url = \"https://localhost:1/token\", client_id = \"x\", client_secret = \"y\" }\n",
        );
    let _process = s.deployment.start();
    let delivered = |uuid: uuid::Uuid| {
        let temporal = s.temporal.clone();
        async move { temporal::result(&temporal, &format!("api:{uuid}")).await }
    };

    // Five events of each team: one token fetch per team serves all of them.
    let mut batch = Vec::new();
    for team in [s.team, team_b] {
        for _ in 0..5 {
            batch.push(events::event(team, &[(1, "Any")]));
        }
    }
    s.produce(&batch.iter().map(|(_, e)| e).collect::<Vec<_>>())
        .await;
    for (uuid, _) in &batch {
        let result = delivered(*uuid).await;
        assert_eq!(
            (result.outcome, result.attempts),
            (DeliveryOutcome::Delivered, 1)
        );
    }
    {
        let state = state.lock().expect("state");
        assert_eq!(state.fetches.get("team-a"), Some(&1), "{:?}", state.fetches);
        assert_eq!(state.fetches.get("team-b"), Some(&1), "{:?}", state.fetches);
        // Each team's endpoint got its own client's token, and only 200s.
        for (path, client) in [("a", "team-a"), ("b", "team-b")] {
            let seen: Vec<_> = state.requests.iter().filter(|r| r.0 == path).collect();
            assert_eq!(seen.len(), 5, "{path}");
            assert!(
                seen.iter()
                    .all(|r| state.valid[&r.1].0 == client && r.2 == 200)
            );
        }
    }

    // The endpoint revokes every token before its expiry: the next attempt gets a 401,
    // fetches once more and is delivered, in one attempt. Tokens live 30 s from now on.
    {
        let mut state = state.lock().expect("state");
        state.valid.clear();
        state.lifetime = 30;
    }
    let (uuid, event) = events::event(s.team, &[(1, "Any")]);
    s.produce(&[&event]).await;
    let result = delivered(uuid).await;
    let fetched = Instant::now();
    assert_eq!(
        (result.outcome, result.attempts),
        (DeliveryOutcome::Delivered, 1)
    );
    let to_a = |state: &Authorization| -> Vec<(String, u16)> {
        let on_a = state.requests.iter().filter(|r| r.0 == "a");
        on_a.map(|r| (r.1.clone(), r.2)).collect()
    };
    let revoked_token = {
        let state = state.lock().expect("state");
        assert_eq!(state.fetches.get("team-a"), Some(&2));
        let seen = to_a(&state);
        assert_eq!(
            seen[5..].iter().map(|r| r.1).collect::<Vec<_>>(),
            [401, 200]
        );
        seen[6].0.clone()
    };

    // A fifth of its life before it expires (after 24 s), the token still serves while a
    // fresh one is fetched aside; the next delivery carries the fresh one. No 401.
    tokio::time::sleep_until((fetched + Duration::from_secs(25)).into()).await;
    let (uuid, event) = events::event(s.team, &[(1, "Any")]);
    s.produce(&[&event]).await;
    assert_eq!(delivered(uuid).await.outcome, DeliveryOutcome::Delivered);
    assert!(
        fetched.elapsed() < Duration::from_secs(30),
        "within the token's life"
    );
    eventually(
        Duration::from_secs(5),
        "the refresh ahead of expiry",
        || async { (state.lock().expect("state").fetches.get("team-a") == Some(&3)).then_some(()) },
    )
    .await;
    let (uuid, event) = events::event(s.team, &[(1, "Any")]);
    s.produce(&[&event]).await;
    assert_eq!(delivered(uuid).await.outcome, DeliveryOutcome::Delivered);
    {
        let state = state.lock().expect("state");
        let seen = to_a(&state);
        assert_eq!(seen.len(), 9);
        assert_eq!((seen[7].0 == revoked_token, seen[7].1), (true, 200));
        assert_eq!((seen[8].0 != revoked_token, seen[8].1), (true, 200));
        assert_eq!(state.fetches.get("team-a"), Some(&3));
    }

    // A wrong client secret and a token endpoint inside the network fail the delivery
    // before its endpoint is asked: retried as `token`, final as `blocked`.
    let (second, event) = events::event(s.team, &[(2, "Other")]);
    s.produce(&[&event]).await;
    let wrong = temporal::result(&s.temporal, &format!("wrong:{second}")).await;
    assert_eq!(wrong.outcome, DeliveryOutcome::GaveUp, "{wrong:?}");
    assert!(wrong.attempts >= 2, "{wrong:?}");
    assert_eq!(
        wrong.last_error.as_deref(),
        Some("token: the token endpoint answered 401 (invalid_client)")
    );
    let inside = temporal::result(&s.temporal, &format!("inside:{second}")).await;
    assert_eq!(
        (inside.outcome, inside.attempts),
        (DeliveryOutcome::FailedPermanently, 1)
    );
    let error = inside.last_error.unwrap_or_default();
    assert!(error.starts_with("blocked: the token endpoint:"), "{error}");
    {
        let state = state.lock().expect("state");
        assert!(
            state
                .requests
                .iter()
                .all(|r| r.0 != "wrong" && r.0 != "inside")
        );
    }

    // The token server hangs: the attempt fails as `token` within its timeout, retried
    // until the delivery gives up; once the server answers again, deliveries go out.
    state.lock().expect("state").hang = true;
    let (third, event) = events::event(s.team, &[(3, "Third")]);
    s.produce(&[&event]).await;
    let slow = temporal::result(&s.temporal, &format!("slow:{third}")).await;
    assert_eq!(slow.outcome, DeliveryOutcome::GaveUp, "{slow:?}");
    assert!(slow.attempts >= 2, "{slow:?}");
    let error = slow.last_error.unwrap_or_default();
    assert!(error.starts_with("token: the token endpoint"), "{error}");
    state.lock().expect("state").hang = false;
    let (fourth, event) = events::event(s.team, &[(3, "Third")]);
    s.produce(&[&event]).await;
    let slow = temporal::result(&s.temporal, &format!("slow:{fourth}")).await;
    assert_eq!(slow.outcome, DeliveryOutcome::Delivered, "{slow:?}");
    assert_eq!(
        state
            .lock()
            .expect("state")
            .requests
            .iter()
            .filter(|r| r.0 == "slow")
            .count(),
        1
    );

    let logs = s.deployment.logs();
    let history = temporal::history_text(&s.temporal, &format!("api:{uuid}")).await;
    assert!(history.contains("api:"), "a history was read");
    for secret in [SECRET_A, SECRET_B, "not-the-secret", "-token-"] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(!history.contains(secret), "{secret} in a history");
    }
}
