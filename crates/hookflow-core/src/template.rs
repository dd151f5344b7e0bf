//! The message template language of the messaging formats (Slack, Discord, Teams).
//!
//! A template is text with placeholders in square brackets:
//!
//! | placeholder | renders |
//! |---|---|
//! | `[action.name]` | the action's name, linked to the action |
//! | `[action.link]` | the action's URL |
//! | `[person]` | the person's email, name or username property (the first present), else the distinct id, linked to the person |
//! | `[person.link]` | the person's URL |
//! | `[person.properties.a.b]` | a person property, nested keys separated by dots |
//! | `[event]` | the event's name, linked to the event |
//! | `[event.link]` | the event's URL |
//! | `[event.uuid]`, `[event.event]`, `[event.timestamp]`, `[event.distinct_id]` | those fields |
//! | `[event.properties.a.b]` | an event property, nested keys separated by dots |
//!
//! `\[` is a literal `[`. A missing property renders as nothing; a string as itself; any
//! other JSON value as compact JSON. Text from the event is escaped for the target: Slack's
//! `& < >`, or Markdown's special characters; links are `<url|name>` for Slack and
//! `[name](url)` for Markdown. [`Template::parse`] rejects unknown placeholders and
//! unclosed brackets, so a destination with a bad template is refused when it is loaded.

use std::fmt::Write as _;

use serde_json::Value;

use crate::event::{ActionMatchedEvent, ActionRef};

/// The template used when a destination sets none.
pub const DEFAULT_TEMPLATE: &str = "[action.name] was triggered by [person]";

/// How rendered text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Slack mrkdwn: `& < >` escaped, links `<url|name>`.
    Slack,
    /// Slack's plain-text fallback: `& < >` escaped, links as their names only.
    SlackPlain,
    /// Markdown (Discord, Teams): special characters escaped, links `[name](url)`.
    Markdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    ActionName,
    ActionLink,
    Person,
    PersonLink,
    PersonProperty(Vec<String>),
    Event,
    EventLink,
    EventField(EventField),
    EventProperty(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventField {
    Uuid,
    Name,
    Timestamp,
    DistinctId,
}

/// A parsed message template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `[` without its `]`.
    #[error("unclosed `[` at character {0}")]
    Unclosed(usize),
    /// A placeholder the language does not have.
    #[error("unknown placeholder `[{0}]`")]
    Unknown(String),
}

/// Where links point, and which event they describe.
pub struct RenderContext<'a> {
    /// The site the links point to, for example `https://app.example.com` (no trailing `/`).
    pub site_url: &'a str,
    /// The event.
    pub event: &'a ActionMatchedEvent,
    /// The action being announced.
    pub action: &'a ActionRef,
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' if chars.peek().map(|(_, n)| *n) == Some('[') => {
                    chars.next();
                    literal.push('[');
                }
                '[' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == ']' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(TemplateError::Unclosed(text[..at].chars().count()));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(&name)?);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Renders the template for one action of an event.
    pub fn render(&self, flavor: Flavor, cx: &RenderContext<'_>) -> String {
        let event = cx.event;
        let links = Links::new(cx);
        let mut out = String::new();
        for part in &self.parts {
            match part {
                // The template's own text is the operator's markup: written as is.
                Part::Text(text) => out.push_str(text),
                Part::ActionName => link(&mut out, flavor, &cx.action.name, &links.action),
                Part::ActionLink => out.push_str(&links.action),
                Part::Person => link(&mut out, flavor, &person_name(event), &links.person),
                Part::PersonLink => out.push_str(&links.person),
                Part::PersonProperty(path) => {
                    let properties = event.person.as_ref().map(|p| &p.properties);
                    let value = properties.and_then(|p| lookup(p, path));
                    escape_into(&mut out, flavor, &value_text(value));
                }
                Part::Event => link(&mut out, flavor, &event.event, &links.event),
                Part::EventLink => out.push_str(&links.event),
                Part::EventField(field) => {
                    let text = match field {
                        EventField::Uuid => event.uuid.to_string(),
                        EventField::Name => event.event.clone(),
                        EventField::Timestamp => event.timestamp.clone(),
                        EventField::DistinctId => event.distinct_id.clone().unwrap_or_default(),
                    };
                    escape_into(&mut out, flavor, &text);
                }
                Part::EventProperty(path) => {
                    let value = lookup(&event.properties, path);
                    escape_into(&mut out, flavor, &value_text(value));
                }
            }
        }
        out
    }
}

fn placeholder(name: &str) -> Result<Part, TemplateError> {
    let unknown = || TemplateError::Unknown(name.to_owned());
    let path = |rest: &str| -> Result<Vec<String>, TemplateError> {
        let keys: Vec<String> = rest.split('.').map(str::to_owned).collect();
        if keys.iter().any(String::is_empty) {
            return Err(unknown());
        }
        Ok(keys)
    };
    Ok(match name {
        "action.name" => Part::ActionName,
        "action.link" => Part::ActionLink,
        "person" => Part::Person,
        "person.link" => Part::PersonLink,
        "event" => Part::Event,
        "event.link" => Part::EventLink,
        "event.uuid" => Part::EventField(EventField::Uuid),
        "event.event" => Part::EventField(EventField::Name),
        "event.timestamp" => Part::EventField(EventField::Timestamp),
        "event.distinct_id" => Part::EventField(EventField::DistinctId),
        _ => {
            if let Some(rest) = name.strip_prefix("person.properties.") {
                Part::PersonProperty(path(rest)?)
            } else if let Some(rest) = name.strip_prefix("event.properties.") {
                Part::EventProperty(path(rest)?)
            } else {
                return Err(unknown());
            }
        }
    })
}

struct Links {
    action: String,
    person: String,
    event: String,
}

impl Links {
    fn new(cx: &RenderContext<'_>) -> Links {
        let base = format!("{}/project/{}", cx.site_url, cx.event.team_id);
        let distinct_id = cx.event.distinct_id.as_deref().unwrap_or_default();
        Links {
            action: format!("{base}/action/{}", cx.action.id),
            person: format!("{base}/person/{}", percent_encode(distinct_id)),
            event: format!("{base}/events/{}", cx.event.uuid),
        }
    }
}

/// What `[person]` shows: the first of the email, name and username properties, else the
/// distinct id.
fn person_name(event: &ActionMatchedEvent) -> String {
    let properties = event.person.as_ref().map(|p| &p.properties);
    ["email", "name", "username"]
        .iter()
        .filter_map(|key| properties.and_then(|p| p.get(*key)))
        .find_map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
        .or_else(|| event.distinct_id.clone())
        .unwrap_or_default()
}

fn lookup<'a>(root: &'a serde_json::Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(root.get(first)?, |value, key| value.as_object()?.get(key))
}

fn value_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn link(out: &mut String, flavor: Flavor, name: &str, url: &str) {
    match flavor {
        Flavor::Slack => {
            out.push('<');
            out.push_str(url);
            out.push('|');
            escape_into(out, flavor, name);
            out.push('>');
        }
        Flavor::SlackPlain => escape_into(out, flavor, name),
        Flavor::Markdown => {
            out.push('[');
            escape_into(out, flavor, name);
            let _ = write!(out, "]({url})");
        }
    }
}

/// `text` escaped for `flavor`, so text a template does not own (an event's, an action's
/// name, an error quoting a template) cannot inject markup.
pub fn escape(flavor: Flavor, text: &str) -> String {
    let mut out = String::new();
    escape_into(&mut out, flavor, text);
    out
}

/// Escapes text taken from the event, so it cannot inject markup.
fn escape_into(out: &mut String, flavor: Flavor, text: &str) {
    for c in text.chars() {
        match (flavor, c) {
            (Flavor::Slack | Flavor::SlackPlain, '&') => out.push_str("&amp;"),
            (Flavor::Slack | Flavor::SlackPlain, '<') => out.push_str("&lt;"),
            (Flavor::Slack | Flavor::SlackPlain, '>') => out.push_str("&gt;"),
            (
                Flavor::Markdown,
                '\\' | '*' | '_' | '~' | '`' | '[' | ']' | '(' | ')' | '#' | '<' | '>' | '|',
            ) => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
}

/// Percent-encodes everything but unreserved characters, for a path segment.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_placeholders_text_and_escaped_brackets() {
        let t = Template::parse(r"\[new] [action.name] by [person.properties.a.b]!").expect("ok");
        assert_eq!(
            t.parts,
            vec![
                Part::Text("[new] ".into()),
                Part::ActionName,
                Part::Text(" by ".into()),
                Part::PersonProperty(vec!["a".into(), "b".into()]),
                Part::Text("!".into()),
            ]
        );
        assert!(Template::parse(DEFAULT_TEMPLATE).is_ok());
    }

    #[test]
    fn refuses_unknown_placeholders_and_unclosed_brackets() {
        assert_eq!(
            Template::parse("hi [user.name]"),
            Err(TemplateError::Unknown("user.name".into()))
        );
        assert_eq!(
            Template::parse("[event.properties.]"),
            Err(TemplateError::Unknown("event.properties.".into()))
        );
        assert_eq!(
            Template::parse("héllo [action.name"),
            Err(TemplateError::Unclosed(6))
        );
    }

    #[test]
    fn percent_encodes_distinct_ids_in_links() {
        assert_eq!(percent_encode("a b/c@d"), "a%20b%2Fc%40d");
    }
}
