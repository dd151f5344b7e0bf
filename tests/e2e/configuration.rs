//! Per-destination configuration with the real binary: a Slack-format destination gets its
//! rendered message; static headers are sent; during a secret rotation receivers with the
//! old or the new secret both accept; a paused destination's deliveries wait and go out when
//! it is resumed; the destinations file is reloaded without a restart; `send-sample` to a
//! broker that never answers ends with a clear error instead of waiting minutes.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{eventually, scenario::Scenario, temporal};
use serde_json::json;

const NEW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn destinations(s: &mut Scenario, paused: bool, added: bool) {
    s.destination(
        "rotating",
        "rotating",
        &format!(
            "secret = \"{NEW_SECRET}\"\nprevious_secret = \"{OLD_SECRET}\"\n\
             headers = {{ Authorization = \"Bearer abc\" }}"
        ),
    )
    .destination(
        "chat",
        "chat",
        "format = \"slack\"\ntemplate = \"[action.name] by [person] on [event.properties.plan]\"",
    );
    let state = if paused { "state = \"paused\"" } else { "" };
    s.destination("later", "later", state);
    if added {
        s.destination("added", "added", "");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn formats_headers_rotation_pause_and_reload() {
    let mut s = Scenario::new().await;
    destinations(&mut s, true, false);
    let process = s.deployment.start();
    let first = s.produce_events(1).await[0];
    let receiver = s.receiver.clone();

    let rotating = temporal::result(&s.temporal, &format!("rotating:{first}")).await;
    assert_eq!(rotating.outcome, DeliveryOutcome::Delivered);
    let request = &receiver.received_on("rotating")[0];
    assert_eq!(request.header("authorization"), "Bearer abc");
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
    for secret in [NEW_SECRET, OLD_SECRET] {
        let verifier = standardwebhooks::Webhook::new(secret).expect("secret");
        verifier
            .verify(&request.body, &request.headers)
            .unwrap_or_else(|e| panic!("a receiver with {secret} must accept: {e}"));
    }

    temporal::result(&s.temporal, &format!("chat:{first}")).await;
    let chat: serde_json::Value =
        serde_json::from_slice(&receiver.received_on("chat")[0].body).expect("json");
    let person = format!(
        "http://localhost:8000/project/{}/person/user-{first}",
        s.team
    );
    let action = format!("http://localhost:8000/project/{}/action/1", s.team);
    assert_eq!(
        chat,
        json!({
            "text": "Any by a@example.com on pro",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn",
                "text": format!("<{action}|Any> by <{person}|a@example.com> on pro")}}],
        })
    );

    // Paused: the delivery waits, deferred, without a request.
    process
        .wait_for_metric(
            r#"hookflow_deferrals_total{reason="paused"}"#,
            1.0,
            Duration::from_secs(30),
        )
        .await;
    assert!(receiver.received_on("later").is_empty());

    // Resume it and add a destination, by editing the file; no restart.
    s.deployment.clear_destinations();
    destinations(&mut s, false, true);
    s.deployment.write_destinations();
    eventually(Duration::from_secs(20), "the reload", || async {
        (process
            .metric(r#"hookflow_destination_reloads_total{result="ok"}"#)
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    let resumed = temporal::result(&s.temporal, &format!("later:{first}")).await;
    assert_eq!(resumed.outcome, DeliveryOutcome::Delivered);
    assert_eq!(
        resumed.attempts, 1,
        "deferrals while paused are not attempts"
    );
    let second = s.produce_events(1).await[0];
    let added = temporal::result(&s.temporal, &format!("added:{second}")).await;
    assert_eq!(added.outcome, DeliveryOutcome::Delivered);
    assert_eq!(receiver.received_on("added").len(), 1);
}

#[test]
fn send_sample_to_an_unreachable_broker_ends_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("unreachable.toml");
    std::fs::write(&config, "[kafka]\nbrokers = \"127.0.0.1:1\"\n").expect("write");
    let (ok, out) =
        hookflow_e2e::hookflow::run(&["--config", config.to_str().expect("path"), "send-sample"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("sending sample events") && out.contains("Message timed out"),
        "{out}"
    );
}
