//! Golden-file tests of every payload format: each case renders one delivery in every
//! format and compares the body with `tests/golden/<case>.<format>.json`. After an
//! intended change, `HOOKFLOW_UPDATE_GOLDEN=1 cargo test -p hookflow-core --test formats`
//! rewrites the files; review the diff before committing it.

use std::path::PathBuf;

use hookflow_core::{
    ActionMatchedEvent, ActionRef, DeliveryInput, Format,
    body::{BodyContext, render_body},
};

const FORMATS: [(Format, &str); 6] = [
    (Format::Json, "json"),
    (Format::Slack, "slack"),
    (Format::Discord, "discord"),
    (Format::Teams, "teams"),
    (Format::TeamsConnector, "teams_connector"),
    (Format::Zapier, "zapier"),
];

fn event(json: &str) -> ActionMatchedEvent {
    ActionMatchedEvent::from_json(json.as_bytes()).expect("test event")
}

/// An event whose person has an email, nested properties and text full of markup.
fn rich_event() -> ActionMatchedEvent {
    event(
        r#"{"uuid": "0190f3a4-0000-7000-8000-000000000001", "team_id": 2,
            "event": "checkout <done> & *paid*", "distinct_id": "user 1/x",
            "timestamp": "2026-11-21T10:00:00Z",
            "properties": {"plan": "pro_[beta]", "amount": 12.5, "cart": {"items": 3, "tags": ["a", "b"]},
                           "note": "<script>alert(1)</script> & _under_ `tick` #h |p| ~s~"},
            "person": {"uuid": "p-1", "properties": {"email": "a@example.com", "name": "Ann",
                       "address": {"city": "Zürich"}}, "created_at": "2026-01-01T00:00:00Z"},
            "matched_actions": [{"id": 17, "name": "Paid > 10"}, {"id": 18, "name": "Any"}]}"#,
    )
}

/// An event whose property `essay` is longer than any chat service takes in one message,
/// and whose name would ping everyone in Discord if mentions were parsed.
fn long_event() -> ActionMatchedEvent {
    let essay = "All work and no play makes Jack a dull boy. ".repeat(600);
    event(&format!(
        r#"{{"uuid": "0190f3a4-0000-7000-8000-000000000003", "team_id": 2,
            "event": "@everyone look", "distinct_id": "u", "timestamp": "2026-11-21T12:00:00Z",
            "properties": {{"essay": "{essay}"}},
            "matched_actions": [{{"id": 1, "name": "First"}}, {{"id": 2, "name": "Second"}}]}}"#
    ))
}

/// An event without a person: `[person]` falls back to the distinct id.
fn anonymous_event() -> ActionMatchedEvent {
    event(
        r#"{"uuid": "0190f3a4-0000-7000-8000-000000000002", "team_id": 3, "event": "pageview",
            "distinct_id": "anon-7", "timestamp": "2026-11-21T11:00:00Z",
            "matched_actions": [{"id": 5, "name": "Visited"}]}"#,
    )
}

fn delivery(event: ActionMatchedEvent, actions: usize) -> DeliveryInput {
    let actions: Vec<ActionRef> = event
        .matched_actions
        .iter()
        .take(actions)
        .cloned()
        .collect();
    DeliveryInput::new("dest-1", event, actions)
}

/// (case name, delivery, template)
fn cases() -> Vec<(&'static str, DeliveryInput, Option<&'static str>)> {
    vec![
        ("default_template", delivery(rich_event(), 2), None),
        (
            "escaping",
            delivery(rich_event(), 1),
            Some("*[event]* by [person]: [event.properties.note] ([event.properties.plan]) \\[x]"),
        ),
        (
            "nested_and_missing",
            delivery(rich_event(), 1),
            Some(
                "items=[event.properties.cart.items] tags=[event.properties.cart.tags] \
                 city=[person.properties.address.city] missing=[event.properties.cart.nope] \
                 deep=[event.properties.plan.x] amount=[event.properties.amount]",
            ),
        ),
        (
            "every_field",
            delivery(anonymous_event(), 1),
            Some(
                "[action.name] [action.link] [person] [person.link] [event] [event.link] \
                 [event.uuid] [event.event] [event.timestamp] [event.distinct_id]",
            ),
        ),
        (
            "bad_template",
            delivery(anonymous_event(), 1),
            Some("hello [person.nam"),
        ),
        // The fallback quotes the action's name and the template: escaped, not markup.
        (
            "bad_template_markup",
            delivery(rich_event(), 1),
            Some("[user_<b>name</b>]"),
        ),
        (
            "over_the_limits",
            delivery(long_event(), 2),
            Some("[action.name]: [event] [event.properties.essay]"),
        ),
    ]
}

#[test]
fn every_format_matches_its_golden_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("HOOKFLOW_UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (case, delivery, template) in cases() {
        for (format, name) in FORMATS {
            let body = render_body(
                &delivery,
                &BodyContext {
                    format,
                    template,
                    url: "https://hooks.example.com/abc",
                    site_url: "https://app.example.com",
                },
            );
            let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
            let rendered = serde_json::to_string_pretty(&value).expect("json") + "\n";
            let path = dir.join(format!("{case}.{name}.json"));
            if update {
                std::fs::write(&path, &rendered).expect("write golden file");
                continue;
            }
            let expected = std::fs::read_to_string(&path).unwrap_or_default();
            if expected != rendered {
                mismatches.push(format!("{}:\n{rendered}", path.display()));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "bodies differ from the golden files (HOOKFLOW_UPDATE_GOLDEN=1 rewrites them):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn a_teams_card_of_many_actions_shows_the_first_ones_and_how_many_more() {
    let actions: Vec<String> = (0..20_001)
        .map(|i| format!(r#"{{"id": {i}, "name": "Action {i}"}}"#))
        .collect();
    let event = event(&format!(
        r#"{{"uuid": "0190f3a4-0000-7000-8000-000000000004", "team_id": 2, "event": "e",
            "distinct_id": "u", "timestamp": "2026-11-21T12:00:00Z",
            "matched_actions": [{}]}}"#,
        actions.join(",")
    ));
    let body = render_body(
        &delivery(event, 20_001),
        &BodyContext {
            format: Format::Teams,
            template: Some("[action.name]"),
            url: "https://hooks.example.com/abc",
            site_url: "https://app.example.com",
        },
    );
    let card: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    let blocks = card["attachments"][0]["content"]["body"]
        .as_array()
        .expect("blocks");
    let texts: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
    assert_eq!(texts.len(), hookflow_core::body::TEAMS_MAX_BLOCKS);
    assert_eq!(texts.last(), Some(&"…and 19802 more matched actions."));
    assert!(
        texts[0].starts_with("[Action 0](https://app.example.com/project/2/action/0)"),
        "{}",
        texts[0]
    );
    let total: usize = texts.iter().map(|t| t.encode_utf16().count()).sum();
    assert!(total <= hookflow_core::body::TEAMS_TEXT_MAX, "{total}");
}
