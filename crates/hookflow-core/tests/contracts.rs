//! Every chat body hookflow renders (the golden files, which `formats.rs` keeps equal to the
//! renderer's output) checked against what the receiving service documents, not against
//! our own expectations:
//!
//! - Discord, Execute Webhook: only its JSON params; `content` at most 2,000 characters;
//!   `allowed_mentions.parse` empty, so event text cannot ping anyone.
//! - Slack, incoming webhooks and Block Kit: `text` and `blocks`; a section's `mrkdwn` text
//!   1 to 3,000 characters.
//! - Teams Workflows: a `message` with one attachment of content type
//!   `application/vnd.microsoft.card.adaptive`, within Teams' 28 KB message limit, whose
//!   card Microsoft's own `adaptivecards` library (`tests/contracts/`, installed by
//!   `deploy/local/install-deps.sh`) parses and validates without a complaint.
//!
//! Lengths are counted in UTF-16 code units, as the services' JavaScript counts them.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

fn golden(format: &str) -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut bodies: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("golden files")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?.to_owned();
            let (_, rest) = name.split_once('.')?;
            (rest == format!("{format}.json")).then_some(name)
        })
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(&name)).expect("golden file");
            (name, serde_json::from_str(&text).expect("JSON"))
        })
        .collect();
    bodies.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        bodies.len() >= 6,
        "golden {format} bodies: {}",
        bodies.len()
    );
    bodies
}

fn utf16_len(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.encode_utf16().count())
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn discord_bodies_keep_to_the_execute_webhook_contract() {
    const PARAMS: [&str; 14] = [
        "content",
        "username",
        "avatar_url",
        "tts",
        "embeds",
        "allowed_mentions",
        "components",
        "files",
        "payload_json",
        "attachments",
        "flags",
        "thread_name",
        "applied_tags",
        "poll",
    ];
    for (name, body) in golden("discord") {
        for key in keys(&body) {
            assert!(
                PARAMS.contains(&key),
                "{name}: `{key}` is not a Discord param"
            );
        }
        let content = utf16_len(&body["content"]);
        assert!(
            (1..=2_000).contains(&content),
            "{name}: content of {content}"
        );
        assert_eq!(
            body["allowed_mentions"]["parse"],
            Value::Array(vec![]),
            "{name}: mentions must not be parsed"
        );
    }
}

#[test]
fn slack_bodies_keep_to_the_block_kit_contract() {
    for (name, body) in golden("slack") {
        for key in keys(&body) {
            assert!(["text", "blocks"].contains(&key), "{name}: `{key}`");
        }
        assert!(utf16_len(&body["text"]) >= 1, "{name}: a fallback text");
        let blocks = body["blocks"].as_array().expect("blocks");
        assert!(!blocks.is_empty() && blocks.len() <= 50, "{name}");
        for block in blocks {
            assert_eq!(block["type"], "section", "{name}");
            assert_eq!(block["text"]["type"], "mrkdwn", "{name}");
            let text = utf16_len(&block["text"]["text"]);
            assert!(
                (1..=3_000).contains(&text),
                "{name}: section text of {text}"
            );
        }
    }
}

/// Where `tests/contracts/` is.
fn contracts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/contracts")
}

/// The problems Microsoft's Adaptive Card library finds in `card`.
fn adaptive_card_problems(card: &Value) -> Vec<String> {
    let dir = contracts_dir();
    assert!(
        dir.join("node_modules/adaptivecards").exists(),
        "the adaptivecards library is not installed: run deploy/local/install-deps.sh"
    );
    let mut child = Command::new("node")
        .arg(dir.join("adaptive_card.cjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs (deploy/local/install-deps.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(card.to_string().as_bytes())
        .expect("write the card");
    let out = child.wait_with_output().expect("node");
    assert!(out.status.success(), "the card validator failed");
    serde_json::from_slice(&out.stdout).expect("a JSON list of problems")
}

#[test]
fn teams_bodies_are_workflows_messages_whose_cards_microsofts_library_accepts() {
    for (name, body) in golden("teams") {
        assert!(
            body.to_string().len() <= 28 * 1024,
            "{name}: over Teams' 28 KB"
        );
        assert_eq!(body["type"], "message", "{name}");
        let attachments = body["attachments"].as_array().expect("attachments");
        assert_eq!(attachments.len(), 1, "{name}");
        let attachment = &attachments[0];
        assert_eq!(
            attachment["contentType"], "application/vnd.microsoft.card.adaptive",
            "{name}"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard", "{name}");
        assert!(!card["body"].as_array().expect("body").is_empty(), "{name}");
        let problems = adaptive_card_problems(card);
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
}

/// The check above bites: a card with a misspelt element is refused.
#[test]
fn microsofts_library_finds_a_broken_card() {
    let card = serde_json::json!({
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [{"type": "TextBlok", "text": "x"}],
    });
    let problems = adaptive_card_problems(&card);
    assert!(
        problems.iter().any(|p| p.contains("TextBlok")),
        "{problems:?}"
    );
}
