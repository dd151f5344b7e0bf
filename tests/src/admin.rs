//! A client of hookflow's admin API, as an operator's tooling would call it.

use std::time::Duration;

use serde_json::Value;

/// The admin API at `base`, called with `token`.
#[derive(Clone)]
pub struct AdminApi {
    /// `http://127.0.0.1:port`
    pub base: String,
    /// The bearer token.
    pub token: String,
    /// The HTTP client.
    pub http: reqwest::Client,
}

impl AdminApi {
    /// A client of the API at `base` with `token`.
    pub fn new(base: String, token: String) -> AdminApi {
        AdminApi {
            base,
            token,
            http: reqwest::Client::new(),
        }
    }

    /// Waits until the API serves `path` (a GET with the token answers 200: listening, and
    /// the destination store loaded).
    pub async fn wait_until_serving(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        crate::eventually(Duration::from_secs(60), "the admin API", || async {
            let response = self
                .http
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await
                .ok()?;
            (response.status().as_u16() == 200).then_some(())
        })
        .await;
    }

    /// Calls `method path` with the token; the status and the JSON body (`null` if none).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, body, Some(&self.token)).await
    }

    /// Calls `method path` with `token` (or none).
    pub async fn call_with(
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
