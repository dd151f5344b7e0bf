//! Payload formats: what a delivery's request body looks like, chosen per destination.
//!
//! - `json`: hookflow's envelope ([`crate::payload::render_json_body`]).
//! - `slack`: `{"text": <plain>, "blocks": [{"type": "section", "text": {"type": "mrkdwn",
//!   "text": <markdown>}}]}`.
//! - `discord`, `teams`: `{"text": <markdown>}`.
//! - `zapier` (REST hooks): `{"hook": {"id", "event": "action_performed", "target"}, "data":
//!   {"eventUuid", "event", "teamId", "distinctId", "properties", "timestamp", "person":
//!   {"uuid", "properties", "created_at"}}}`.
//!
//! The messaging formats render the destination's message template
//! ([`crate::template`]) once per matched action, one line each. A template that cannot be
//! parsed (a store that skipped validation) renders a warning naming the action instead of
//! failing the delivery.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    delivery::DeliveryInput,
    payload::render_json_body,
    template::{DEFAULT_TEMPLATE, Flavor, RenderContext, Template},
};

/// A destination's payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// hookflow's JSON envelope.
    #[default]
    Json,
    /// A Slack incoming webhook.
    Slack,
    /// A Discord webhook.
    Discord,
    /// A Microsoft Teams incoming webhook.
    Teams,
    /// A Zapier REST hook.
    Zapier,
}

impl Format {
    /// Whether the format renders a message template.
    pub fn uses_template(self) -> bool {
        matches!(self, Format::Slack | Format::Discord | Format::Teams)
    }
}

/// What a body needs besides the delivery.
pub struct BodyContext<'a> {
    /// The format.
    pub format: Format,
    /// The destination's template (the default when `None`).
    pub template: Option<&'a str>,
    /// The destination's URL (Zapier's `hook.target`).
    pub url: &'a str,
    /// The site links point to, without a trailing `/`.
    pub site_url: &'a str,
}

/// The request body of `delivery` in `cx.format`.
pub fn render_body(delivery: &DeliveryInput, cx: &BodyContext<'_>) -> Vec<u8> {
    let body = match cx.format {
        Format::Json => return render_json_body(delivery),
        Format::Slack => json!({
            "text": message(delivery, cx, Flavor::SlackPlain),
            "blocks": [{
                "type": "section",
                "text": {"type": "mrkdwn", "text": message(delivery, cx, Flavor::Slack)},
            }],
        }),
        Format::Discord | Format::Teams => {
            json!({"text": message(delivery, cx, Flavor::Markdown)})
        }
        Format::Zapier => {
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
    };
    // Serialising a `Value` cannot fail: every key is a string.
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}

/// One rendered line per matched action.
fn message(delivery: &DeliveryInput, cx: &BodyContext<'_>, flavor: Flavor) -> String {
    let source = cx.template.unwrap_or(DEFAULT_TEMPLATE);
    let template = Template::parse(source);
    delivery
        .actions
        .iter()
        .map(|action| match &template {
            Ok(template) => template.render(
                flavor,
                &RenderContext {
                    site_url: cx.site_url,
                    event: &delivery.event,
                    action,
                },
            ),
            Err(error) => format!(
                "⚠️ The message template of action \"{}\" could not be rendered ({error}); \
                 fix it in the webhook destination's settings.",
                action.name
            ),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
