//! Payload formats: what a delivery's request body looks like, chosen per destination.
//!
//! - `json`: hookflow's envelope ([`crate::payload::render_json_body`]).
//! - `slack` (incoming webhook): `{"text": <plain>, "blocks": [{"type": "section", "text":
//!   {"type": "mrkdwn", "text": <markdown>}}]}`; a section's text is at most 3,000
//!   characters, so both texts are cut there.
//! - `discord` (execute webhook): `{"content": <markdown>, "allowed_mentions": {"parse":
//!   []}}`: `content` is at most 2,000 characters, and no text from an event can ping
//!   `@everyone`, a user or a role.
//! - `teams` (Teams Workflows webhook): a `message` whose one attachment is an Adaptive Card
//!   (`application/vnd.microsoft.card.adaptive`) with a wrapped Markdown `TextBlock` per
//!   matched action, each cut to its share of 20,000 characters (Teams takes messages up to
//!   28 KB).
//! - `teams_connector`: `{"text": <markdown>}` cut to 20,000 characters, for Office 365
//!   connector webhooks that still exist (Microsoft is retiring them; Workflows webhooks
//!   refuse this body).
//! - `zapier` (REST hooks): `{"hook": {"id", "event": "action_performed", "target"}, "data":
//!   {"eventUuid", "event", "teamId", "distinctId", "properties", "timestamp", "person":
//!   {"uuid", "properties", "created_at"}}}`.
//!
//! Text over a limit is cut with an ellipsis. Lengths are counted in UTF-16 code units, as
//! the services' JavaScript does, so no character counts for less than it weighs there.
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
    /// A Microsoft Teams Workflows webhook (an Adaptive Card).
    Teams,
    /// A Microsoft Teams Office 365 connector webhook (being retired).
    TeamsConnector,
    /// A Zapier REST hook.
    Zapier,
}

impl Format {
    /// Whether the format renders a message template.
    pub fn uses_template(self) -> bool {
        matches!(
            self,
            Format::Slack | Format::Discord | Format::Teams | Format::TeamsConnector
        )
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
            "text": cut(&message(delivery, cx, Flavor::SlackPlain), SLACK_TEXT_MAX),
            "blocks": [{
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": cut(&message(delivery, cx, Flavor::Slack), SLACK_TEXT_MAX),
                },
            }],
        }),
        Format::Discord => json!({
            "content": cut(&message(delivery, cx, Flavor::Markdown), DISCORD_CONTENT_MAX),
            "allowed_mentions": {"parse": []},
        }),
        Format::Teams => adaptive_card(delivery, cx),
        Format::TeamsConnector => json!({
            "text": cut(&message(delivery, cx, Flavor::Markdown), TEAMS_TEXT_MAX),
        }),
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

/// Slack: the most characters of a section block's text.
pub const SLACK_TEXT_MAX: usize = 3_000;
/// Discord: the most characters of a message's `content`.
pub const DISCORD_CONTENT_MAX: usize = 2_000;
/// Teams: the most characters of an Adaptive Card's text blocks together, well within the
/// 28 KB a Teams message may weigh.
pub const TEAMS_TEXT_MAX: usize = 20_000;

/// A Teams Workflows message: an Adaptive Card with one wrapped Markdown text block per
/// matched action, each cut to its share of [`TEAMS_TEXT_MAX`] so every action shows.
fn adaptive_card(delivery: &DeliveryInput, cx: &BodyContext<'_>) -> serde_json::Value {
    let lines = lines(delivery, cx, Flavor::Markdown);
    let share = TEAMS_TEXT_MAX / lines.len().max(1);
    let blocks: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| json!({"type": "TextBlock", "text": cut(line, share), "wrap": true}))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": blocks,
            },
        }],
    })
}

/// `text`, or its start and an ellipsis when it is over `max` UTF-16 code units.
fn cut(text: &str, max: usize) -> String {
    if utf16_len(text) <= max {
        return text.to_owned();
    }
    let mut kept = String::new();
    let mut used = 1; // the ellipsis
    for c in text.chars() {
        used += c.len_utf16();
        if used > max {
            break;
        }
        kept.push(c);
    }
    kept.push('…');
    kept
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// One rendered line per matched action, joined.
fn message(delivery: &DeliveryInput, cx: &BodyContext<'_>, flavor: Flavor) -> String {
    lines(delivery, cx, flavor).join("\n")
}

/// One rendered line per matched action.
fn lines(delivery: &DeliveryInput, cx: &BodyContext<'_>, flavor: Flavor) -> Vec<String> {
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
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_over_a_limit_is_cut_with_an_ellipsis_counting_utf16_units() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "ab…");
        // An emoji weighs two UTF-16 units: it does not fit beside the ellipsis in 2.
        assert_eq!(cut("😀😀", 3), "😀…");
        assert_eq!(cut("😀😀", 2), "…");
        assert_eq!(
            utf16_len(&cut(&"é".repeat(5_000), DISCORD_CONTENT_MAX)),
            2_000
        );
    }
}
