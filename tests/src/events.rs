//! Action-matched events as the upstream pipeline writes them.

use serde_json::{Value, json};
use uuid::Uuid;

/// An event of `team` matching `actions` (id, name), with a fresh uuid.
pub fn event(team: i64, actions: &[(i64, &str)]) -> (Uuid, Value) {
    let uuid = Uuid::new_v4();
    let actions: Vec<Value> = actions
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name}))
        .collect();
    let event = json!({
        "uuid": uuid,
        "team_id": team,
        "event": "signed_up",
        "distinct_id": format!("user-{uuid}"),
        "timestamp": "2026-11-21T10:00:00Z",
        "properties": {"plan": "pro", "nested": {"a": 1}},
        "person": {"uuid": "person-1", "properties": {"email": "a@example.com"}, "created_at": "2026-01-01T00:00:00Z"},
        "matched_actions": actions,
    });
    (uuid, event)
}

/// The documented default body for `event` delivered with `actions`.
pub fn expected_body(event: &Value, actions: &[(i64, &str)]) -> Value {
    let actions: Vec<Value> = actions
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name}))
        .collect();
    json!({
        "type": "action.performed",
        "timestamp": event["timestamp"],
        "data": {
            "team_id": event["team_id"],
            "event": {
                "uuid": event["uuid"],
                "event": event["event"],
                "distinct_id": event["distinct_id"],
                "timestamp": event["timestamp"],
                "properties": event["properties"],
                "person": event["person"],
            },
            "actions": actions,
        }
    })
}
