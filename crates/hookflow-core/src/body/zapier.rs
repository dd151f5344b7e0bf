//! The Zapier format: the body Zapier's REST hooks expect at a subscription's target URL.

use serde_json::{Value, json};

use super::BodyContext;
use crate::delivery::DeliveryInput;

/// `{"hook": {…}, "data": {…}}`: the hook that fired and the event.
pub(super) fn rest_hook(delivery: &DeliveryInput, cx: &BodyContext<'_>) -> Value {
    let event = &delivery.event;
    json!({
        "hook": {
            "id": delivery.destination_id,
            "event": "action_performed",
            "target": cx.url,
        },
        "data": {
            "eventUuid": event.uuid,
            "event": event.event,
            "teamId": event.team_id,
            "distinctId": event.distinct_id,
            "properties": event.properties,
            "timestamp": event.timestamp,
            "person": event.person.as_ref().map(|p| json!({
                "uuid": p.uuid,
                "properties": p.properties,
                "created_at": p.created_at,
            })),
        },
    })
}
