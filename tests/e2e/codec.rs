//! Event data never sits in clear text in Temporal's store. With the payload codec on, a
//! delivery's history, read raw through the Temporal CLI, holds no event field (a marker in
//! a person property); `hookflow codec-server` decodes it for a caller with the token, and
//! for the Temporal UI's origin; after a key rotation, payloads under the retired key still
//! decode while it is configured, and fail naming it once it is not. And as an operator sees
//! it: the Temporal UI, pointed at the codec server, shows the delivery's input decoded in
//! headless Chromium.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use hookflow_core::{DeliveryOutcome, Secret};
use hookflow_e2e::{
    events, eventually, free_port, hookflow::Process, scenario::Scenario, temporal, unique,
};
use hookflow_temporal::codec::CodecSettings;
use serde_json::Value;

/// The browser origin the codec server allows in the first test.
const UI: &str = "http://ui.example";

/// A fresh random 32-byte key, base64.
fn key() -> String {
    let bytes = [
        uuid::Uuid::new_v4().into_bytes(),
        uuid::Uuid::new_v4().into_bytes(),
    ];
    STANDARD.encode(bytes.concat())
}

/// The deployment's codec and codec-server configuration.
fn codec_config(
    current: &str,
    keys: &[(&str, &str)],
    port: u16,
    token: &str,
    origin: &str,
) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(id, k)| format!("{id} = \"{k}\""))
        .collect();
    format!(
        "[temporal.codec]\nenabled = true\ncurrent_key = \"{current}\"\n\
         [temporal.codec.keys]\n{}\n\
         [codec_server]\naddress = \"127.0.0.1:{port}\"\ntoken = \"{token}\"\n\
         allowed_origins = [\"{origin}\"]\n",
        keys.join("\n")
    )
}

/// Produces one event with a unique marker in a person property; its uuid and the marker.
async fn produce_marked_event(s: &Scenario) -> (uuid::Uuid, String) {
    let marker = unique("markerperson");
    let (uuid, mut event) = events::event(s.team, &[(1, "Any")]);
    event["person"]["properties"]["note"] = Value::from(marker.clone());
    s.produce(&[&event]).await;
    (uuid, marker)
}

/// A client's codec settings: encrypting with `current`, reading with `keys`.
fn settings(current: &str, keys: &[(&str, &str)]) -> CodecSettings {
    CodecSettings {
        enabled: true,
        current_key: current.into(),
        keys: keys
            .iter()
            .map(|(id, k)| (id.to_string(), Secret::from(*k)))
            .collect(),
    }
}

/// The delivery's history as the Temporal CLI prints it: raw, as the store keeps it.
fn raw_history(address: &str, id: &str) -> String {
    let out = std::process::Command::new(hookflow_e2e::tool("temporal"))
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

/// Where the history's payloads are, split into encrypted ones and the rest: paths within
/// an event, without list indices, sorted and deduplicated.
fn payloads_by_encryption(history: &str) -> (Vec<String>, Vec<String>) {
    fn walk(value: &Value, path: &str, found: &mut Vec<(String, bool)>) {
        match value {
            Value::Object(map) => {
                if let Some(encoding) = map.get("metadata").and_then(|m| m.get("encoding")) {
                    let encrypted = encoding.as_str() == Some(&STANDARD.encode("binary/encrypted"));
                    found.push((path.to_owned(), encrypted));
                }
                for (key, inner) in map {
                    let path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(inner, &path, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, path, found)),
            _ => {}
        }
    }
    let history: Value = serde_json::from_str(history).expect("history JSON");
    let mut found = Vec::new();
    for event in history["events"].as_array().expect("events") {
        for (key, inner) in event.as_object().expect("event") {
            walk(inner, key, &mut found);
        }
    }
    let mut split = (Vec::new(), Vec::new());
    for (path, encrypted) in found {
        let path = path.trim_end_matches(".payloads").to_owned();
        if encrypted {
            split.0.push(path)
        } else {
            split.1.push(path)
        }
    }
    for paths in [&mut split.0, &mut split.1] {
        paths.sort();
        paths.dedup();
    }
    split
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
        .config(&codec_config("k1", &[("k1", &k1)], port, &token, UI));
    let hookflow = s.deployment.start();
    let (uuid, marker) = produce_marked_event(&s).await;

    let client =
        temporal::client_with(&s.stack.temporal, "default", settings("k1", &[("k1", &k1)])).await;
    let id = format!("enc:{uuid}");
    let result = temporal::result(&client, &id).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    let body = String::from_utf8_lossy(&s.receiver.received_on("enc")[0].body).into_owned();
    assert!(body.contains(&marker), "the endpoint gets the event");

    // Raw, the store holds ciphertext and an event-free summary.
    let raw = raw_history(&s.stack.temporal, &id);
    assert!(!raw.contains(&marker), "the marker is in the raw history");
    let (encrypted, plain) = payloads_by_encryption(&raw);
    assert_eq!(
        encrypted,
        [
            "markerRecordedEventAttributes.details.result",
            "workflowExecutionCompletedEventAttributes.result",
            "workflowExecutionStartedEventAttributes.input",
        ],
        "every payload hookflow writes is encrypted"
    );
    assert!(
        plain.iter().all(|path| path.contains(".searchAttributes.")
            || path == "userMetadata.summary"
            || path == "markerRecordedEventAttributes.details.data"),
        "only what Temporal must read is plain (search attributes, the summary, the \
         SDK's marker bookkeeping): {plain:?}"
    );
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
    assert_eq!(preflight(UI).await.as_deref(), Some(UI));
    assert_eq!(preflight("http://evil.example").await, None);

    // Rotation: new payloads under k2; k1's stay readable while k1 is configured.
    drop(hookflow);
    server.kill_9();
    s.deployment.config(&codec_config(
        "k2",
        &[("k1", &k1), ("k2", &k2)],
        port,
        &token,
        UI,
    ));
    let _hookflow = s.deployment.start();
    let (later, event) = events::event(s.team, &[(1, "Any")]);
    s.produce(&[&event]).await;
    let client = temporal::client_with(
        &s.stack.temporal,
        "default",
        settings("k2", &[("k1", &k1), ("k2", &k2)]),
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
        .config(&codec_config("k2", &[("k2", &k2)], port, &token, UI));
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

#[tokio::test(flavor = "multi_thread")]
async fn the_temporal_ui_shows_a_delivery_decoded_through_the_codec_server() {
    let port = free_port();
    let codec_endpoint = format!("http://127.0.0.1:{port}");
    let (stack, ui) = hookflow_e2e::stack::stack().with_own_temporal_ui(&codec_endpoint);
    let mut s = Scenario::on(stack, 1).await;
    let k1 = key();
    s.destination("seen", "seen", "");
    // No token: the codec server listens on loopback only, as a local operator would run it.
    s.deployment
        .config(&codec_config("k1", &[("k1", &k1)], port, "", &ui.origin()));
    let _hookflow = s.deployment.start();
    let _server = s.deployment.start_command(&["codec-server"]);
    let (uuid, marker) = produce_marked_event(&s).await;
    let client =
        temporal::client_with(&s.stack.temporal, "default", settings("k1", &[("k1", &k1)])).await;
    let id = format!("seen:{uuid}");
    assert_eq!(
        temporal::result(&client, &id).await.outcome,
        DeliveryOutcome::Delivered
    );
    let raw = raw_history(&s.stack.temporal, &id);
    assert!(!raw.contains(&marker), "the marker is in the raw history");
    wait_for_port(port).await;

    let page = format!("{}/namespaces/default/workflows/{id}", ui.origin());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts/temporal_ui.cjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args([page.as_str(), marker.as_str(), "60000"])
        .output()
        .await
        .expect("node runs (deploy/local/install-deps.sh installs it, chromium and puppeteer)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "found",
        "the UI does not show the decoded input:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
