//! Event data never sits in clear text in Temporal's store. With the payload codec on, a
//! delivery's history, read raw through the Temporal CLI, holds no event field (a marker in
//! a person property); `hookflow codec-server` decodes it for a caller with the token, and
//! for the Temporal UI's origin; after a key rotation, payloads under the retired key still
//! decode while it is configured, and fail naming it once it is not.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use hookflow_core::{DeliveryOutcome, Secret};
use hookflow_e2e::{
    events, eventually, free_port, hookflow::Process, scenario::Scenario, temporal, unique,
};
use hookflow_temporal::codec::CodecSettings;
use serde_json::Value;

/// A fresh random 32-byte key, base64.
fn key() -> String {
    let bytes = [
        uuid::Uuid::new_v4().into_bytes(),
        uuid::Uuid::new_v4().into_bytes(),
    ];
    STANDARD.encode(bytes.concat())
}

/// The deployment's codec and codec-server configuration.
fn codec_config(current: &str, keys: &[(&str, &str)], port: u16, token: &str) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(id, k)| format!("{id} = \"{k}\""))
        .collect();
    format!(
        "[temporal.codec]\nenabled = true\ncurrent_key = \"{current}\"\n\
         [temporal.codec.keys]\n{}\n\
         [codec_server]\naddress = \"127.0.0.1:{port}\"\ntoken = \"{token}\"\n\
         allowed_origins = [\"http://ui.example\"]\n",
        keys.join("\n")
    )
}

/// The delivery's history as the Temporal CLI prints it: raw, as the store keeps it.
fn raw_history(address: &str, id: &str) -> String {
    let out = std::process::Command::new("temporal")
        .args(["workflow", "show", "--workflow-id", id, "--output", "json"])
        .args(["--address", address.trim_start_matches("http://")])
        .output()
        .expect("temporal CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The payloads of the history's first event: the workflow's input.
fn input_payloads(history: &str) -> Value {
    let history: Value = serde_json::from_str(history).expect("history JSON");
    history["events"][0]["workflowExecutionStartedEventAttributes"]["input"].clone()
}

async fn decode(port: u16, token: &str, payloads: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/decode"))
        .bearer_auth(token)
        .header("x-namespace", "default")
        .json(payloads)
        .send()
        .await
        .expect("codec server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_for_port(port: u16) {
    eventually(Duration::from_secs(30), "the codec server", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_payloads_hide_event_data_and_decode_through_the_codec_server() {
    let mut s = Scenario::new().await;
    let (k1, k2, token, port) = (key(), key(), unique("codec-token"), free_port());
    s.destination("enc", "enc", "");
    s.deployment
        .config(&codec_config("k1", &[("k1", &k1)], port, &token));
    let hookflow = s.deployment.start();
    let marker = unique("markerperson");
    let (uuid, mut event) = events::event(s.team, &[(1, "Any")]);
    event["person"]["properties"]["note"] = Value::from(marker.clone());
    s.produce(&[&event]).await;

    let codec = |current: &str, keys: &[(&str, &str)]| CodecSettings {
        enabled: true,
        current_key: current.into(),
        keys: keys
            .iter()
            .map(|(id, k)| (id.to_string(), Secret::from(*k)))
            .collect(),
    };
    let client =
        temporal::client_with(&s.stack.temporal, "default", codec("k1", &[("k1", &k1)])).await;
    let id = format!("enc:{uuid}");
    let result = temporal::result(&client, &id).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    let body = String::from_utf8_lossy(&s.receiver.received_on("enc")[0].body).into_owned();
    assert!(body.contains(&marker), "the endpoint gets the event");

    // Raw, the store holds ciphertext and an event-free summary.
    let raw = raw_history(&s.stack.temporal, &id);
    assert!(!raw.contains(&marker), "the marker is in the raw history");
    assert!(raw.contains(&STANDARD.encode("binary/encrypted")));
    assert_eq!(
        temporal::summary(&client, &id).await.as_deref(),
        Some("delivery to enc")
    );

    // The codec server decodes it for a caller with the token.
    let mut server: Process = s.deployment.start_command(&["codec-server"]);
    wait_for_port(port).await;
    let input = input_payloads(&raw);
    let (status, decoded) = decode(port, &token, &input).await;
    assert_eq!(status, 200, "{decoded}");
    let data = STANDARD
        .decode(decoded["payloads"][0]["data"].as_str().expect("data"))
        .expect("base64");
    assert!(String::from_utf8_lossy(&data).contains(&marker));
    let (status, _) = decode(port, "wrong-token", &input).await;
    assert_eq!(status, 401);
    // The Temporal UI's origin may call it from a browser; another may not.
    let preflight = |origin: &'static str| async move {
        reqwest::Client::new()
            .request(
                reqwest::Method::OPTIONS,
                format!("http://127.0.0.1:{port}/decode"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-namespace")
            .send()
            .await
            .expect("preflight")
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        preflight("http://ui.example").await.as_deref(),
        Some("http://ui.example")
    );
    assert_eq!(preflight("http://evil.example").await, None);

    // Rotation: new payloads under k2; k1's stay readable while k1 is configured.
    drop(hookflow);
    server.kill_9();
    s.deployment.config(&codec_config(
        "k2",
        &[("k1", &k1), ("k2", &k2)],
        port,
        &token,
    ));
    let _hookflow = s.deployment.start();
    let (later, event) = events::event(s.team, &[(1, "Any")]);
    s.produce(&[&event]).await;
    let client = temporal::client_with(
        &s.stack.temporal,
        "default",
        codec("k2", &[("k1", &k1), ("k2", &k2)]),
    )
    .await;
    let later_id = format!("enc:{later}");
    let result = temporal::result(&client, &later_id).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    let later_input = input_payloads(&raw_history(&s.stack.temporal, &later_id));
    assert_eq!(
        later_input["payloads"][0]["metadata"]["encryption-key-id"],
        STANDARD.encode("k2")
    );
    let _server = s.deployment.start_command(&["codec-server"]);
    wait_for_port(port).await;
    assert_eq!(
        decode(port, &token, &input).await.0,
        200,
        "k1 still configured"
    );

    // Retired: with k1 gone, its payloads fail, naming the key.
    drop(_server);
    s.deployment
        .reset_config()
        .config(&codec_config("k2", &[("k2", &k2)], port, &token));
    let _retired = s.deployment.start_command(&["codec-server"]);
    wait_for_port(port).await;
    let (status, refused) = decode(port, &token, &input).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("key `k1`, which is not configured")),
        "{refused}"
    );
    assert_eq!(decode(port, &token, &later_input).await.0, 200);
}
