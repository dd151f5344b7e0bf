//! Keeping credentials out of logs and answers: a [`Secret`] setting that never prints,
//! URLs with their credentials hidden, and TOML syntax errors that say where, not what (a
//! parser's error quotes the offending line, which may be a secret).

use std::fmt;

use serde::{Deserialize, Deserializer};

/// What is shown in place of a secret. An admin API client that sends it back (a PUT of a
/// GET's answer) keeps the stored value.
pub const REDACTED: &str = "<redacted>";

/// A configuration value that is a credential (a token, a password): used as a string,
/// never printed. Any scalar is taken as its text, so a numeric-looking token is not
/// refused with an error message that would quote it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { REDACTED })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Text(String),
            Integer(i64),
            Unsigned(u64),
            Float(f64),
            Bool(bool),
        }
        Ok(Secret(
            match Scalar::deserialize(deserializer).map_err(|_| {
                serde::de::Error::custom("a secret must be a string (its value is not shown)")
            })? {
                Scalar::Text(text) => text,
                Scalar::Integer(n) => n.to_string(),
                Scalar::Unsigned(n) => n.to_string(),
                Scalar::Float(n) => n.to_string(),
                Scalar::Bool(b) => b.to_string(),
            },
        ))
    }
}

/// The authority of `url` (between `://` and the path) split at its last `@`: the
/// credentials before it, if any, and the byte range of the whole authority.
fn userinfo(url: &str) -> Option<(std::ops::Range<usize>, usize)> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let at = url[start..end].rfind('@')?;
    Some((start..start + at, start + at + 1))
}

/// `url` with its credentials (`user:password@`), if it has any, shown as `<redacted>@`.
pub fn redact_url(url: &str) -> String {
    match userinfo(url) {
        Some((credentials, _)) => {
            format!(
                "{}{REDACTED}{}",
                &url[..credentials.start],
                &url[credentials.end..]
            )
        }
        None => url.to_owned(),
    }
}

/// `url` with a `<redacted>` in place of credentials given back those of `stored`; `None`
/// when `stored` has none to give. A URL without credentials is given back as it is.
pub fn restore_url(url: &str, stored: &str) -> Option<String> {
    let Some((placeholder, _)) = userinfo(url) else {
        return Some(url.to_owned());
    };
    if &url[placeholder.clone()] != REDACTED {
        return Some(url.to_owned());
    }
    let (credentials, _) = userinfo(stored)?;
    Some(format!(
        "{}{}{}",
        &url[..placeholder.start],
        &stored[credentials],
        &url[placeholder.end..]
    ))
}

/// Hosts of chat and automation services whose webhook URLs are secrets in full (the path,
/// or a signature in the query, lets anyone post): Slack, Discord, Microsoft Teams
/// (connectors and Workflows) and Zapier. A host matches itself and its subdomains.
const SECRET_URL_HOSTS: [&str; 8] = [
    "hooks.slack.com",
    "discord.com",
    "discordapp.com",
    "webhook.office.com",
    "logic.azure.com",
    "api.powerautomate.com",
    "api.powerplatform.com",
    "hooks.zapier.com",
];

/// Whether `url`'s path and query are a secret: a chat or automation service's webhook
/// URL (by its host, or because the destination's `format` is such a service's).
pub fn url_path_is_secret(url: &str, chat_format: bool) -> bool {
    chat_format
        || url::Url::parse(url).ok().is_some_and(|url| {
            url.host_str().is_some_and(|host| {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                SECRET_URL_HOSTS
                    .iter()
                    .any(|h| host == *h || host.ends_with(&format!(".{h}")))
            })
        })
}

/// `url` as a destination's owner is shown it: credentials redacted ([`redact_url`]), and
/// when its path and query are a secret ([`url_path_is_secret`]), them too:
/// `https://hooks.slack.com/<redacted>`.
pub fn redact_destination_url(url: &str, chat_format: bool) -> String {
    let url = redact_url(url);
    if !url_path_is_secret(&url, chat_format) {
        return url;
    }
    match origin_end(&url) {
        Some(end) => format!("{}/{REDACTED}", &url[..end]),
        None => url,
    }
}

/// Where `url`'s authority ends (its path, query or fragment begin).
fn origin_end(url: &str) -> Option<usize> {
    let start = url.find("://")? + 3;
    Some(
        url[start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| start + i),
    )
}

/// `url` with its `<redacted>` parts (credentials, a secret path) given back from `stored`;
/// `None` when `stored` has none to give. The caller has checked both have one origin.
pub fn restore_destination_url(url: &str, stored: &str) -> Option<String> {
    let url = restore_url(url, stored)?;
    let end = origin_end(&url)?;
    if url[end..] != format!("/{REDACTED}") {
        return Some(url);
    }
    let stored_end = origin_end(stored)?;
    Some(format!("{}{}", &url[..end], &stored[stored_end..]))
}

/// The `scheme://host:port` of `url` (placeholders and all), for comparing where two URLs
/// send; `None` when it is not a URL.
pub fn url_origin(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?
    ))
}

/// Whether `text` is TOML; the error says where and why, without quoting the line.
pub fn check_toml(text: &str) -> Result<(), String> {
    toml::from_str::<toml::Table>(text)
        .map(|_| ())
        .map_err(|e| toml_error(text, &e))
}

/// A TOML syntax error in `text`, said by line and column with the parser's reason but
/// without the line itself (which may hold a secret).
pub fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let reason = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {reason}")
        }
        None => reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_take_any_scalar() {
        let secret: Secret = serde_json::from_str("\"s3cr3t\"").expect("secret");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(secret.expose(), "s3cr3t");
        let numeric: Secret = serde_json::from_str("123456").expect("numeric");
        assert_eq!(numeric.expose(), "123456");
        let error = serde_json::from_str::<Secret>("[\"s3cr3t\"]").expect_err("a list");
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }

    #[test]
    fn url_credentials_are_hidden_and_given_back() {
        let stored = "https://user:pa@ss@hooks.example.com:8443/p@th?q=a@b";
        let shown = redact_url(stored);
        assert_eq!(
            shown,
            "https://<redacted>@hooks.example.com:8443/p@th?q=a@b"
        );
        assert_eq!(
            redact_url("https://hooks.example.com/x"),
            "https://hooks.example.com/x"
        );
        assert_eq!(restore_url(&shown, stored).as_deref(), Some(stored));
        let moved = "https://<redacted>@other.example.com/y";
        assert_eq!(
            restore_url(moved, stored).as_deref(),
            Some("https://user:pa@ss@other.example.com/y")
        );
        assert_eq!(
            restore_url("https://new:pw@h.example/", stored).as_deref(),
            Some("https://new:pw@h.example/"),
            "new credentials are taken as given"
        );
        assert_eq!(
            restore_url(moved, "https://h.example/"),
            None,
            "nothing to give back"
        );
    }

    #[test]
    fn chat_webhook_urls_are_secrets_in_full_and_given_back_on_their_origin() {
        let slack = "https://hooks.slack.com/services/T0/B0/XXXXSECRET";
        let shown = redact_destination_url(slack, false);
        assert_eq!(shown, "https://hooks.slack.com/<redacted>");
        assert_eq!(
            restore_destination_url(&shown, slack).as_deref(),
            Some(slack)
        );
        let teams = "https://prod-1.westus.logic.azure.com:443/workflows/x/triggers/manual/paths/invoke?sig=SECRET";
        assert_eq!(
            redact_destination_url(teams, false),
            "https://prod-1.westus.logic.azure.com:443/<redacted>"
        );
        // Any host, when the destination's format is a chat service's.
        assert_eq!(
            redact_destination_url("https://chat.example/hook/SECRET", true),
            "https://chat.example/<redacted>"
        );
        let own = "https://hooks.example.com/a?b=c";
        assert_eq!(redact_destination_url(own, false), own);
        assert_eq!(
            url_origin("https://<redacted>@Hooks.Example.com/x").as_deref(),
            Some("https://hooks.example.com:443")
        );
    }

    #[test]
    fn toml_errors_say_where_without_quoting_the_line() {
        let text = "a = 1\nsecret = \"whsec_do-not-print\n";
        let error = toml::from_str::<toml::Table>(text).expect_err("unterminated");
        let said = toml_error(text, &error);
        assert!(said.starts_with("line 2, column "), "{said}");
        assert!(!said.contains("do-not-print"), "{said}");
        assert!(
            error.to_string().contains("do-not-print"),
            "the parser's own message would have quoted it"
        );
    }
}
