//! Payload formats: what a delivery's request body looks like, chosen per destination.
//!
//! - `json`: hookflow's envelope ([`json::render_json_body`]).
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

mod chat;
mod json;
mod zapier;

use crate::{delivery::DeliveryInput, format::Format};

pub use chat::{DISCORD_CONTENT_MAX, SLACK_TEXT_MAX, TEAMS_MAX_BLOCKS, TEAMS_TEXT_MAX};
pub use json::{EVENT_TYPE, render_json_body};

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
        Format::Slack => chat::slack(delivery, cx),
        Format::Discord => chat::discord(delivery, cx),
        Format::Teams => chat::adaptive_card(delivery, cx),
        Format::TeamsConnector => chat::teams_connector(delivery, cx),
        Format::Zapier => zapier::rest_hook(delivery, cx),
    };
    // Serialising a `Value` cannot fail: every key is a string.
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}
