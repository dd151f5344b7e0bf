//! The admin API with the real binary and the Redis store: bearer-token auth; create, read,
//! list, update-by-pause/resume and delete; field errors, 404 and 409; a destination created
//! through the API receives deliveries, and pausing it holds them until it is resumed.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{eventually, scenario::Scenario, temporal};
use serde_json::{Value, json};

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, body, Some(&self.token)).await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin API answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn destinations_are_managed_through_the_api() {
    let mut s = Scenario::new().await;
    let (base, token) = s.deployment.admin_api();
    let process = s.deployment.start();
    let api = Api {
        base,
        token,
        http: reqwest::Client::new(),
    };
    let team = s.team;
    let collection = format!("/v1/teams/{team}/destinations");
    eventually(Duration::from_secs(60), "the admin API", || async {
        let response = api
            .http
            .get(format!("{}{collection}", api.base))
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    })
    .await;

    assert_eq!(api.call_with("GET", &collection, None, None).await.0, 401);
    assert_eq!(
        api.call_with("GET", &collection, None, Some("wrong-token-xxxxxxxx"))
            .await
            .0,
        401
    );

    let spec = json!({
        "id": "api-1",
        "url": s.receiver.url("api"),
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    });
    let (status, created) = api.call("POST", &collection, Some(spec.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["secret"], "<redacted>");
    assert_eq!(created["team_id"], team);
    let (status, conflict) = api.call("POST", &collection, Some(spec)).await;
    assert_eq!(
        (status, &conflict["field"]),
        (409, &json!("id")),
        "{conflict}"
    );
    let (status, invalid) = api
        .call(
            "POST",
            &collection,
            Some(json!({"id": "x", "url": "ftp://a.example"})),
        )
        .await;
    assert_eq!(
        (status, &invalid["field"]),
        (400, &json!("url")),
        "{invalid}"
    );
    let (status, _) = api
        .call("POST", &collection, Some(json!("not an object")))
        .await;
    assert_eq!(status, 400);
    let (status, _) = api.call("GET", &format!("{collection}/nope"), None).await;
    assert_eq!(status, 404);
    let (status, listed) = api.call("GET", &collection, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["destinations"].as_array().map(Vec::len), Some(1));

    let first = s.produce_events(1).await[0];
    let result = temporal::result(&s.temporal, &format!("api-1:{first}")).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);

    let (status, paused) = api
        .call("POST", &format!("{collection}/api-1/pause"), None)
        .await;
    assert_eq!((status, &paused["state"]), (200, &json!("paused")));
    let second = s.produce_events(1).await[0];
    eventually(Duration::from_secs(30), "a paused deferral", || async {
        (process
            .metric(r#"hookflow_deferrals_total{reason="paused"}"#)
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        s.receiver.received_on("api").len(),
        1,
        "nothing while paused"
    );
    let (status, _) = api
        .call("POST", &format!("{collection}/api-1/resume"), None)
        .await;
    assert_eq!(status, 200);
    let result = temporal::result(&s.temporal, &format!("api-1:{second}")).await;
    assert_eq!(
        (result.outcome, result.attempts),
        (DeliveryOutcome::Delivered, 1)
    );

    let (status, _) = api
        .call("DELETE", &format!("{collection}/api-1"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api.call("GET", &format!("{collection}/api-1"), None).await;
    assert_eq!(status, 404);
}
