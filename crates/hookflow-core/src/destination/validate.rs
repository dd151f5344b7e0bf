//! From a [`DestinationSpec`] to a [`Destination`]: every field checked, the error naming
//! the destination and the field at fault.

use url::Url;

use super::{
    DEFAULT_TIMEOUT_MS, Destination, DestinationError, DestinationSpec, DestinationState,
    LimitOverrides, LimitValues, MAX_AUTO_DISABLE_AFTER_MS, MAX_RETRY_ENTRIES, MAX_RETRY_MS,
    MAX_TIMEOUT_MS,
};
use crate::{
    breaker::BreakerPolicy,
    credentials::{OAuth2Client, SecretHeaders, SigningSecret},
    endpoint::{EndpointKey, EndpointLimits},
    format::Format,
    template::Template,
    tls::DestinationTls,
};

/// What validation needs to know about the deployment.
#[derive(Debug, Clone, Default)]
pub struct ValidationRules {
    /// Hosts (or hosts on one port) that may be reached over plain http
    /// (`http.allowed_hosts`).
    pub allowed_hosts: crate::AllowList,
    /// The names of the deployment's egress proxies a destination may choose
    /// (`http.proxies`).
    pub proxies: Vec<String>,
}

/// Headers hookflow sets itself, which a destination may not override.
const RESERVED_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    "host",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// The destination field that overrides a breaker policy's `field`.
fn breaker_field(field: &'static str) -> &'static str {
    match field {
        "min_attempts" => "breaker_min_attempts",
        "failure_ratio" => "breaker_failure_ratio",
        // A destination sets only the first cooldown; the cap follows it.
        _ => "breaker_cooldown_ms",
    }
}

/// Whether `id` is usable in a delivery id: short, and free of the `:` separator.
pub fn is_valid_destination_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl DestinationSpec {
    pub(super) fn validate(
        self,
        index: usize,
        rules: &ValidationRules,
    ) -> Result<Destination, DestinationError> {
        let name = if is_valid_destination_id(&self.id) {
            self.id.clone()
        } else {
            format!("#{}", index + 1)
        };
        let invalid = |field: &'static str, problem: String| DestinationError::Invalid {
            destination: name.clone(),
            field,
            problem,
        };
        if !is_valid_destination_id(&self.id) {
            return Err(invalid("id", "must be 1 to 64 of A-Z a-z 0-9 _ - .".into()));
        }
        // Only the form the catalog writes: a delivery records the uid as text, and a worker
        // of the previous release compares that text as it is.
        let uid = self
            .uid
            .as_deref()
            .map(|text| {
                uuid::Uuid::parse_str(text)
                    .ok()
                    .filter(|uid| uid.hyphenated().to_string() == text)
            })
            .map(|uid| uid.ok_or(()))
            .transpose()
            .map_err(|()| {
                invalid(
                    "uid",
                    "must be a lowercase, hyphenated UUID (the catalog assigns it)".into(),
                )
            })?;
        let url =
            Url::parse(&self.url).map_err(|e| invalid("url", format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid("url", "must be an http(s) URL with a host".into()));
        }
        if url.scheme() != "https" && !rules.allowed_hosts.allows_url(&url) {
            return Err(invalid(
                "url",
                "must be https (plain http only for hosts in http.allowed_hosts)".into(),
            ));
        }
        let tls = DestinationTls::parse(
            self.client_certificate.as_deref(),
            self.client_key.as_deref(),
            self.ca_certificates.as_deref(),
        )
        .map_err(|e| invalid(e.field.name(), e.problem))?;
        if tls.is_some() && url.scheme() != "https" {
            let field = if self.ca_certificates.is_some() {
                "ca_certificates"
            } else {
                "client_certificate"
            };
            return Err(invalid(field, "needs an https url".into()));
        }
        let oauth2 = match self.oauth2 {
            None => None,
            Some(oauth2) => Some(Box::new(
                oauth2
                    .validate(rules)
                    .map_err(|(field, problem)| invalid(field, problem))?,
            )),
        };
        let mut secrets = Vec::new();
        for (field, raw) in [
            ("secret", &self.secret),
            ("previous_secret", &self.previous_secret),
        ] {
            if let Some(raw) = raw {
                secrets.push(SigningSecret::parse(raw).map_err(|p| invalid(field, p.into()))?);
            }
        }
        if self.secret.is_none() && self.previous_secret.is_some() {
            return Err(invalid(
                "previous_secret",
                "needs a current `secret` to rotate from".into(),
            ));
        }
        let state = match (self.state.as_deref(), self.disabled_reason) {
            (None | Some("enabled"), _) => DestinationState::Enabled,
            (Some("paused"), _) => DestinationState::Paused,
            (Some("disabled"), reason) => DestinationState::Disabled(
                reason.unwrap_or_else(|| "disabled in the destinations file".into()),
            ),
            (Some(_), _) => {
                return Err(invalid(
                    "state",
                    "must be \"enabled\", \"paused\" or \"disabled\"".into(),
                ));
            }
        };
        if let Some(template) = &self.template {
            if !self.format.uses_template() {
                return Err(invalid(
                    "template",
                    "only applies to the slack, discord, teams and teams_connector formats".into(),
                ));
            }
            Template::parse(template)
                .map_err(|e| invalid("template", format!("is invalid: {e}")))?;
        }
        let mut headers = Vec::new();
        for (name, value) in self.headers {
            let lower = name.to_ascii_lowercase();
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if oauth2.is_some() && lower == "authorization" {
                return Err(invalid(
                    "headers",
                    "must not set `Authorization`: oauth2 sets it to its bearer token".into(),
                ));
            }
            if !valid_name || RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(invalid(
                    "headers",
                    format!("`{name}` is not a header name a destination may set"),
                ));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(invalid(
                    "headers",
                    format!("the value of `{name}` has a line break"),
                ));
            }
            headers.push((name, value));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(invalid(
                "timeout_ms",
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
        let endpoint = match &self.endpoint_key {
            Some(key) => EndpointKey::custom(self.team_id, key)
                .map_err(|p| invalid("endpoint_key", p.into()))?,
            None => match &self.proxy {
                Some(route) => EndpointKey::of_destination(&url, self.team_id).via(route),
                None => EndpointKey::of_destination(&url, self.team_id),
            },
        };
        let limits = LimitOverrides::new(LimitValues {
            rate_per_second: self.rate_per_second,
            burst: self.burst,
            max_in_flight: self.max_in_flight,
            breaker_min_attempts: self.breaker_min_attempts,
            breaker_failure_ratio: self.breaker_failure_ratio,
            breaker_cooldown_ms: self.breaker_cooldown_ms,
        });
        // The destination's overrides are checked as the policies they become, by the
        // policies' own rules; the error names the destination's field.
        limits
            .breaker_over(&BreakerPolicy::default())
            .validate()
            .map_err(|e| invalid(breaker_field(e.field), e.problem))?;
        limits
            .over(EndpointLimits::default())
            .validate()
            .map_err(|e| invalid(e.field, e.problem))?;
        if let Some(schedule) = &self.retry_schedule_ms
            && (schedule.len() > MAX_RETRY_ENTRIES
                || schedule.iter().any(|&ms| ms == 0 || ms > MAX_RETRY_MS))
        {
            return Err(invalid(
                "retry_schedule_ms",
                format!("must have at most {MAX_RETRY_ENTRIES} waits, each 1 ms to 7 days"),
            ));
        }
        if self
            .max_age_ms
            .is_some_and(|ms| ms == 0 || ms > MAX_RETRY_MS)
        {
            return Err(invalid("max_age_ms", "must be 1 ms to 7 days".into()));
        }
        if self
            .auto_disable_after_ms
            .is_some_and(|ms| ms == 0 || ms > MAX_AUTO_DISABLE_AFTER_MS)
        {
            return Err(invalid(
                "auto_disable_after_ms",
                "must be 1 ms to 30 days".into(),
            ));
        }
        if let Some(name) = &self.proxy
            && !rules.proxies.contains(name)
        {
            return Err(invalid(
                "proxy",
                format!(
                    "names no proxy of the deployment's http.proxies (it has: {})",
                    if rules.proxies.is_empty() {
                        "none".to_owned()
                    } else {
                        rules.proxies.join(", ")
                    }
                ),
            ));
        }
        if self.notices && !self.actions.is_empty() {
            return Err(invalid(
                "actions",
                "must be empty on a notices destination: it receives no events".into(),
            ));
        }
        if self.notices && self.format != Format::Json {
            return Err(invalid(
                "format",
                "must be `json` on a notices destination: notices are JSON".into(),
            ));
        }
        Ok(Destination {
            retry_schedule_ms: self.retry_schedule_ms,
            max_age_ms: self.max_age_ms,
            auto_disable_after_ms: self.auto_disable_after_ms,
            notices: self.notices,
            proxy: self.proxy.map(String::into_boxed_str),
            tls: tls.map(Box::new),
            oauth2,
            id: self.id,
            uid,
            team_id: self.team_id,
            url,
            actions: self.actions,
            state,
            format: self.format,
            template: self.template,
            headers: SecretHeaders::new(headers),
            secrets,
            timeout_ms,
            endpoint,
            limits,
        })
    }
}

impl super::spec::OAuth2Spec {
    /// The client these settings describe; the error names the field.
    fn validate(self, rules: &ValidationRules) -> Result<OAuth2Client, (&'static str, String)> {
        let token_url = Url::parse(&self.token_url)
            .map_err(|e| ("oauth2.token_url", format!("is not a URL: {e}")))?;
        if !matches!(token_url.scheme(), "http" | "https") || token_url.host().is_none() {
            return Err((
                "oauth2.token_url",
                "must be an http(s) URL with a host".into(),
            ));
        }
        if token_url.scheme() != "https" && !rules.allowed_hosts.allows_url(&token_url) {
            return Err((
                "oauth2.token_url",
                "must be https (plain http only for hosts in http.allowed_hosts)".into(),
            ));
        }
        if !token_url.username().is_empty() || token_url.password().is_some() {
            return Err((
                "oauth2.token_url",
                "must not hold credentials: give them as client_id and client_secret".into(),
            ));
        }
        // RFC 6749 §2.3.1: the id and secret are form-encoded; a line break is never one.
        for (field, value) in [
            ("oauth2.client_id", &self.client_id),
            ("oauth2.client_secret", &self.client_secret),
        ] {
            if value.is_empty() || value.chars().any(char::is_control) {
                return Err((
                    field,
                    "must be a non-empty text without control characters".into(),
                ));
            }
        }
        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
        for scope in &self.scopes {
            let valid = !scope.is_empty()
                && scope
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
            if !valid {
                return Err((
                    "oauth2.scopes",
                    format!(
                        "`{scope}` is not a scope (printable ASCII without spaces, `\"` or `\\`)"
                    ),
                ));
            }
        }
        Ok(OAuth2Client::new(
            token_url,
            self.client_id,
            self.client_secret,
            self.scopes,
            self.client_auth,
        ))
    }
}
