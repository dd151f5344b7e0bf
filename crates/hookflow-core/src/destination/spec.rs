//! A destination as written in a destinations file or sent to the admin API, before
//! validation; and the redacted copy shown back, whose placeholders a later write keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{Destination, DestinationError, ValidationRules};
use crate::{
    credentials::ClientAuth,
    format::Format,
    redaction::{REDACTED, redact_destination_url, restore_destination_url, url_origin},
};

/// A destination as written in the destinations file or sent to the admin API, before
/// validation. Its `Debug` is not derived: it holds secrets; see
/// [`DestinationSpec::redacted`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Unique id (`[A-Za-z0-9_.-]`, 1 to 64 characters).
    pub id: String,
    /// Immutable identity, assigned by the catalog at creation (a lowercase, hyphenated
    /// UUID); read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The team whose events go here.
    pub team_id: i64,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Action ids wanted; empty means every action.
    #[serde(default)]
    pub actions: Vec<i64>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `enabled`, `paused` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why it is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Body format.
    #[serde(default)]
    pub format: Format,
    /// Message template of the messaging formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Extra request headers (secret values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Current signing secret.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret: Option<String>,
    /// Previous signing secret, during a rotation.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_secret: Option<String>,
    /// Per-attempt timeout, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Own endpoint key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_key: Option<String>,
    /// Endpoint rate limit override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<f64>,
    /// Endpoint burst override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Endpoint concurrency cap override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Endpoint breaker: minimum attempts in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_min_attempts: Option<u32>,
    /// Endpoint breaker: failure ratio that trips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_failure_ratio: Option<f64>,
    /// Endpoint breaker: first cooldown, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_cooldown_ms: Option<u64>,
    /// Retry schedule override: waits before the 2nd, 3rd, … attempt, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_schedule_ms: Option<Vec<u64>>,
    /// Maximum delivery age override, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Auto-disable override: failing every attempt this long disables it, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_disable_after_ms: Option<u64>,
    /// The egress proxy its deliveries leave through: a name of the deployment's
    /// `http.proxies` (default: `http.proxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// The team's operational webhook: it receives the team's destination notices, and
    /// no events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notices: bool,
    /// Mutual TLS: the client certificate chain presented to the endpoint, PEM (secret).
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_certificate: Option<String>,
    /// Mutual TLS: the client certificate's private key, PEM (secret).
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_key: Option<String>,
    /// The certificate authorities trusted for the endpoint's certificate instead of the
    /// public roots, PEM (a private PKI).
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_certificates: Option<String>,
    /// OAuth2 client credentials: each attempt carries a bearer token from this client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Spec>,
}

/// A destination's OAuth2 client-credentials grant, as written.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Spec {
    /// The token endpoint.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret (secret).
    pub client_secret: String,
    /// The scopes asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// `basic` (default) or `body`.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

impl DestinationSpec {
    /// A copy safe to show: secrets, header values, the URL's credentials and, for a chat
    /// or automation service's webhook URL, its path and query replaced by `<redacted>`.
    pub fn redacted(&self) -> DestinationSpec {
        let hide = |v: &Option<String>| v.as_ref().map(|_| REDACTED.to_owned());
        DestinationSpec {
            url: redact_destination_url(&self.url, self.format.uses_template()),
            secret: hide(&self.secret),
            previous_secret: hide(&self.previous_secret),
            headers: self
                .headers
                .keys()
                .map(|k| (k.clone(), REDACTED.to_owned()))
                .collect(),
            client_certificate: hide(&self.client_certificate),
            client_key: hide(&self.client_key),
            oauth2: self.oauth2.as_ref().map(|oauth2| OAuth2Spec {
                client_secret: REDACTED.to_owned(),
                ..oauth2.clone()
            }),
            ..self.clone()
        }
    }

    /// Gives back the stored values where this spec says `<redacted>` (a client that sent
    /// back what it was shown keeps the secrets it could not see). Without a `stored` spec
    /// (a create), a placeholder is refused: it is not a value. A spec whose URL moved to
    /// another origin (`scheme://host:port`) keeps none: the stored secrets were given for
    /// the old host, and a placeholder there is refused, so they never follow a URL to a
    /// new host; give them again. Nor does an OAuth2 client secret follow its token URL to
    /// another origin. The error names the field.
    pub fn restore_redacted(
        &mut self,
        stored: Option<&DestinationSpec>,
    ) -> Result<(), DestinationError> {
        let moved = stored.is_some_and(|s| url_origin(&s.url) != url_origin(&self.url));
        let stored = stored.filter(|_| !moved);
        let missing = |field: &'static str| DestinationError::Invalid {
            destination: self.id.clone(),
            field,
            problem: if moved {
                format!(
                    "is `{REDACTED}` but the url moved to another host: secrets do not follow \
                     it, give this one again"
                )
            } else {
                format!("is `{REDACTED}` but there is no stored value to keep")
            },
        };
        for (field, value, kept) in [
            (
                "secret",
                &mut self.secret,
                stored.and_then(|s| s.secret.clone()),
            ),
            (
                "previous_secret",
                &mut self.previous_secret,
                stored.and_then(|s| s.previous_secret.clone()),
            ),
            (
                "client_certificate",
                &mut self.client_certificate,
                stored.and_then(|s| s.client_certificate.clone()),
            ),
            (
                "client_key",
                &mut self.client_key,
                stored.and_then(|s| s.client_key.clone()),
            ),
        ] {
            if value.as_deref() == Some(REDACTED) {
                *value = Some(kept.ok_or_else(|| missing(field))?);
            }
        }
        for (name, value) in &mut self.headers {
            if value == REDACTED {
                let kept = stored.and_then(|s| {
                    s.headers
                        .iter()
                        .find(|(stored, _)| stored.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                });
                *value = kept.ok_or_else(|| missing("headers"))?;
            }
        }
        if let Some(oauth2) = &mut self.oauth2
            && oauth2.client_secret == REDACTED
        {
            let kept = stored
                .and_then(|s| s.oauth2.as_ref())
                .filter(|s| url_origin(&s.token_url) == url_origin(&oauth2.token_url))
                .map(|s| s.client_secret.clone());
            oauth2.client_secret = kept.ok_or_else(|| DestinationError::Invalid {
                destination: self.id.clone(),
                field: "oauth2.client_secret",
                problem: format!(
                    "is `{REDACTED}` but there is no stored secret for this token_url's host: \
                     secrets do not follow it, give this one again"
                ),
            })?;
        }
        if self.url.contains(REDACTED) {
            let kept = stored.and_then(|s| restore_destination_url(&self.url, &s.url));
            self.url = kept.ok_or_else(|| missing("url"))?;
        }
        Ok(())
    }

    /// Validates one destination on its own; the error names the field.
    pub fn validate_one(self, rules: &ValidationRules) -> Result<Destination, DestinationError> {
        self.validate(0, rules)
    }
}

fn empty_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}
