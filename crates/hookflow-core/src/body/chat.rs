//! The chat formats: Slack, Discord and Teams messages, one rendered template line per
//! matched action, each service's documented length limits kept.

use serde_json::{Value, json};

use super::BodyContext;
use crate::{
    delivery::DeliveryInput,
    template::{DEFAULT_TEMPLATE, Flavor, RenderContext, Template, escape},
};

/// A Slack incoming-webhook message: plain text, and one Markdown section.
pub(super) fn slack(delivery: &DeliveryInput, cx: &BodyContext<'_>) -> Value {
    json!({
        "text": cut(&message(delivery, cx, Flavor::SlackPlain), SLACK_TEXT_MAX),
        "blocks": [{
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": cut(&message(delivery, cx, Flavor::Slack), SLACK_TEXT_MAX),
            },
        }],
    })
}

/// A Discord execute-webhook message that can ping no one.
pub(super) fn discord(delivery: &DeliveryInput, cx: &BodyContext<'_>) -> Value {
    json!({
        "content": cut(&message(delivery, cx, Flavor::Markdown), DISCORD_CONTENT_MAX),
        "allowed_mentions": {"parse": []},
    })
}

/// A Teams Office 365 connector message.
pub(super) fn teams_connector(delivery: &DeliveryInput, cx: &BodyContext<'_>) -> Value {
    json!({
        "text": cut(&message(delivery, cx, Flavor::Markdown), TEAMS_TEXT_MAX),
    })
}

/// Slack: the most characters of a section block's text.
pub const SLACK_TEXT_MAX: usize = 3_000;
/// Discord: the most characters of a message's `content`.
pub const DISCORD_CONTENT_MAX: usize = 2_000;
/// Teams: the most characters of an Adaptive Card's text blocks together, well within the
/// 28 KB a Teams message may weigh.
pub const TEAMS_TEXT_MAX: usize = 20_000;
/// Teams: the most text blocks a card carries, so each gets at least 100 characters.
pub const TEAMS_MAX_BLOCKS: usize = TEAMS_TEXT_MAX / 100;

/// A Teams Workflows message: an Adaptive Card with one wrapped Markdown text block per
/// matched action, each cut to its share of [`TEAMS_TEXT_MAX`] so every action shows.
pub(super) fn adaptive_card(delivery: &DeliveryInput, cx: &BodyContext<'_>) -> Value {
    let mut lines = lines(delivery, cx, Flavor::Markdown);
    // Past TEAMS_MAX_BLOCKS actions, each would get too small a share to read: the card
    // shows the first ones and says how many more matched.
    if lines.len() > TEAMS_MAX_BLOCKS {
        let more = lines.len() - (TEAMS_MAX_BLOCKS - 1);
        lines.truncate(TEAMS_MAX_BLOCKS - 1);
        lines.push(format!("…and {more} more matched actions."));
    }
    let share = TEAMS_TEXT_MAX / lines.len().max(1);
    let blocks: Vec<Value> = lines
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
            // The action's name and the template's text are not this message's markup.
            Err(error) => format!(
                "⚠️ The message template of action \"{}\" could not be rendered ({}); \
                 fix it in the webhook destination's settings.",
                escape(flavor, &action.name),
                escape(flavor, &error.to_string()),
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
