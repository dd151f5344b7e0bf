//! The `json` format: hookflow's own envelope.
//!
//! The default (`json`) envelope:
//! `{"type": "action.performed", "timestamp": <event timestamp>, "data": {"team_id", "event":
//! {uuid, event, distinct_id, timestamp, properties, person}, "actions": [{id, name}]}}`.
//! Rendering is a pure function of the workflow input, so every attempt sends the same bytes.

use serde_json::json;

use crate::delivery::DeliveryInput;

/// The `type` of the default envelope.
pub const EVENT_TYPE: &str = "action.performed";

/// The default JSON body of a delivery.
pub fn render_json_body(input: &DeliveryInput) -> Vec<u8> {
    let event = &input.event;
    let body = json!({
        "type": EVENT_TYPE,
        "timestamp": event.timestamp,
        "data": {
            "team_id": event.team_id,
            "event": {
                "uuid": event.uuid,
                "event": event.event,
                "distinct_id": event.distinct_id,
                "timestamp": event.timestamp,
                "properties": event.properties,
                "person": event.person,
            },
            "actions": input.actions,
        }
    });
    // Serialising a `Value` cannot fail: every key is a string.
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActionMatchedEvent, ActionRef};

    #[test]
    fn renders_the_documented_envelope() {
        let event = ActionMatchedEvent::from_json(
            br#"{"uuid":"0190f3a4-0000-7000-8000-000000000001","team_id":2,"event":"signed_up",
                "distinct_id":"user-1","timestamp":"2026-11-21T10:00:00Z","properties":{"plan":"pro"},
                "matched_actions":[{"id":17,"name":"Signed up"},{"id":18,"name":"Other"}]}"#,
        )
        .expect("event");
        let actions = vec![ActionRef {
            id: 17,
            name: "Signed up".into(),
        }];
        let input = DeliveryInput::new("d-1", event, actions);
        let body: serde_json::Value =
            serde_json::from_slice(&render_json_body(&input)).expect("json");
        assert_eq!(
            body,
            json!({
                "type": "action.performed",
                "timestamp": "2026-11-21T10:00:00Z",
                "data": {
                    "team_id": 2,
                    "event": {
                        "uuid": "0190f3a4-0000-7000-8000-000000000001",
                        "event": "signed_up",
                        "distinct_id": "user-1",
                        "timestamp": "2026-11-21T10:00:00Z",
                        "properties": {"plan": "pro"},
                        "person": null,
                    },
                    "actions": [{"id": 17, "name": "Signed up"}],
                }
            })
        );
    }
}
