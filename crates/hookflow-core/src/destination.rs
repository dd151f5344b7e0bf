//! Destinations: where a team wants its action-matched events delivered, and which of them
//! match a given event.
//!
//! A destinations file is TOML with one `[[destination]]` table per destination (see
//! `config/destinations.example.toml`). Parsing validates every destination and names the
//! destination and field at fault.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
};

use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use crate::{
    breaker::BreakerPolicy,
    endpoint::{EndpointKey, EndpointLimits},
    event::{ActionMatchedEvent, ActionRef},
    formats::Format,
    redaction::{REDACTED, redact_url, restore_url, toml_error},
    retry::RetryPolicy,
    template::Template,
};

/// Default per-attempt timeout when a destination sets none.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The longest per-attempt timeout a destination may ask for.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// A Standard Webhooks signing secret (`whsec_` + base64). Its `Debug` and `Display` never
/// show the key, so a secret cannot leak through a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// Validates the `whsec_<base64>` form.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let Some(key) = raw.strip_prefix("whsec_") else {
            return Err("must start with `whsec_`");
        };
        if key.is_empty() || standardwebhooks::Webhook::new(raw).is_err() {
            return Err("must be `whsec_` followed by base64");
        }
        Ok(SigningSecret(raw.to_owned()))
    }

    /// The secret itself, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// One destination of one team.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// Unique id; part of every delivery id (`[A-Za-z0-9_.-]`, 1 to 64 characters).
    pub id: String,
    /// The destination's immutable identity, assigned by the store when it is created (the
    /// Redis store; none in the file store). Ids are freed on delete and may be taken again,
    /// by any team; a uid never is, so a deleted and recreated destination is another one.
    pub uid: Option<String>,
    /// The team whose events go here.
    pub team_id: i64,
    /// Where deliveries are POSTed.
    pub url: Url,
    /// Action ids this destination wants; empty means every action of the team.
    pub actions: Vec<i64>,
    /// A display name (the id when not set).
    pub name: String,
    /// Whether deliveries go out.
    pub state: DestinationState,
    /// The body's format.
    pub format: Format,
    /// The message template of the messaging formats (the default when `None`).
    pub template: Option<String>,
    /// Extra request headers, for example an auth header; treated as secrets.
    pub headers: SecretHeaders,
    /// Signing secrets: the current one first, then the previous one during a rotation.
    /// Without any, deliveries are sent unsigned.
    pub secrets: Vec<SigningSecret>,
    /// Total timeout of one attempt, in milliseconds.
    pub timeout_ms: u64,
    /// The endpoint whose limits and breaker this destination shares.
    pub endpoint: EndpointKey,
    /// The shared host (`scheme://host:port`) the endpoint is on, when it is on one: its
    /// concurrency is capped across teams, and each team takes at most a share of it.
    pub shared_host: Option<EndpointKey>,
    /// The destination's own limits for its endpoint, where it sets them.
    pub limits: LimitOverrides,
    /// The destination's own retry schedule, where it sets one.
    pub retry_schedule_ms: Option<Vec<u64>>,
    /// The destination's own maximum delivery age, where it sets one.
    pub max_age_ms: Option<u64>,
}

/// Whether a destination's deliveries go out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DestinationState {
    /// Deliveries go out.
    #[default]
    Enabled,
    /// Deliveries wait (deferred, not failed) until it is resumed.
    Paused,
    /// Deliveries end with outcome `destination_disabled`, for this reason.
    Disabled(String),
}

/// Request headers that may carry credentials: their `Debug` shows the names only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretHeaders(Vec<(String, String)>);

impl SecretHeaders {
    /// The headers, for building a request only.
    pub fn expose(&self) -> &[(String, String)] {
        &self.0
    }
}

impl fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "SecretHeaders({names:?}, values redacted)")
    }
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

/// Limits a destination sets for its endpoint; the rest come from the deployment's
/// defaults. Destinations sharing an endpoint must agree on them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LimitOverrides {
    /// Requests per second across all workers.
    pub rate_per_second: Option<f64>,
    /// Burst across all workers.
    pub burst: Option<u32>,
    /// Attempts in flight per worker.
    pub max_in_flight: Option<u32>,
    /// The breaker's minimum attempts in its window.
    pub breaker_min_attempts: Option<u32>,
    /// The breaker's failure ratio.
    pub breaker_failure_ratio: Option<f64>,
    /// The breaker's first cooldown, milliseconds.
    pub breaker_cooldown_ms: Option<u64>,
}

impl LimitOverrides {
    /// These overrides on top of the deployment's breaker policy (a longer first cooldown
    /// raises the cap with it).
    pub fn breaker_over(&self, defaults: &BreakerPolicy) -> BreakerPolicy {
        let cooldown_ms = self.breaker_cooldown_ms.unwrap_or(defaults.cooldown_ms);
        BreakerPolicy {
            min_attempts: self.breaker_min_attempts.unwrap_or(defaults.min_attempts),
            failure_ratio: self.breaker_failure_ratio.unwrap_or(defaults.failure_ratio),
            cooldown_ms,
            max_cooldown_ms: defaults.max_cooldown_ms.max(cooldown_ms),
            ..defaults.clone()
        }
    }

    /// These overrides on top of `defaults`.
    pub fn over(&self, defaults: EndpointLimits) -> EndpointLimits {
        EndpointLimits {
            rate_per_second: self.rate_per_second.unwrap_or(defaults.rate_per_second),
            burst: self.burst.unwrap_or(defaults.burst),
            max_in_flight: self.max_in_flight.unwrap_or(defaults.max_in_flight),
        }
    }
}

/// The longest wait of a retry schedule and the longest maximum age: 7 days.
pub const MAX_RETRY_MS: u64 = 7 * 24 * 3_600 * 1_000;
/// The most entries a retry schedule may have.
pub const MAX_RETRY_ENTRIES: usize = 30;

impl Destination {
    /// Whether this is the destination `delivery` was planned for: the same team and, when
    /// the delivery recorded one, the same uid. A destination that took over a deleted
    /// one's id is another destination and must not receive its deliveries.
    pub fn is_planned_for(&self, delivery: &crate::DeliveryInput) -> bool {
        self.id == delivery.destination_id
            && self.team_id == delivery.event.team_id
            && (delivery.destination_uid.is_none() || delivery.destination_uid == self.uid)
    }

    /// The deployment's retry policy with this destination's overrides.
    pub fn retry_policy(&self, deployment: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            schedule_ms: self
                .retry_schedule_ms
                .clone()
                .unwrap_or_else(|| deployment.schedule_ms.clone()),
            max_age_ms: self.max_age_ms.unwrap_or(deployment.max_age_ms),
            ..deployment.clone()
        }
    }

    /// The actions of `event` that this destination wants, or `None` when it wants none
    /// of them (or belongs to another team).
    pub fn matching_actions(&self, event: &ActionMatchedEvent) -> Option<Vec<ActionRef>> {
        if self.team_id != event.team_id {
            return None;
        }
        let wanted: Vec<ActionRef> = event
            .matched_actions
            .iter()
            .filter(|action| self.actions.is_empty() || self.actions.contains(&action.id))
            .cloned()
            .collect();
        (!wanted.is_empty()).then_some(wanted)
    }
}

/// Looks destinations up; implemented by the destination stores.
pub trait DestinationCatalog: Send + Sync + 'static {
    /// Every destination of a team.
    fn for_team(&self, team_id: i64) -> Vec<Arc<Destination>>;
    /// One destination by id.
    fn get(&self, id: &str) -> Option<Arc<Destination>>;
    /// How many destinations are loaded.
    fn len(&self) -> usize;
    /// Whether no destination is loaded.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An immutable set of destinations indexed by id and by team.
#[derive(Debug, Default, Clone)]
pub struct DestinationSet {
    by_id: HashMap<String, Arc<Destination>>,
    by_team: HashMap<i64, Vec<Arc<Destination>>>,
}

impl DestinationSet {
    /// Indexes `destinations`; ids must be unique.
    pub fn new(destinations: Vec<Destination>) -> Result<Self, DestinationFileError> {
        let mut set = DestinationSet::default();
        let mut endpoint_limits: HashMap<EndpointKey, (String, LimitOverrides)> = HashMap::new();
        for destination in destinations {
            let (first, limits) = endpoint_limits
                .entry(destination.endpoint.clone())
                .or_insert_with(|| (destination.id.clone(), destination.limits));
            if *limits != destination.limits {
                return Err(DestinationFileError::ConflictingLimits {
                    endpoint: destination.endpoint.to_string(),
                    first: first.clone(),
                    second: destination.id.clone(),
                });
            }
            let destination = Arc::new(destination);
            if set
                .by_id
                .insert(destination.id.clone(), destination.clone())
                .is_some()
            {
                return Err(DestinationFileError::DuplicateId(destination.id.clone()));
            }
            set.by_team
                .entry(destination.team_id)
                .or_default()
                .push(destination);
        }
        Ok(set)
    }

    /// Parses and validates a destinations file's text.
    pub fn from_toml(text: &str, rules: &ValidationRules) -> Result<Self, DestinationFileError> {
        let file: DestinationFile =
            toml::from_str(text).map_err(|e| DestinationFileError::Syntax(toml_error(text, &e)))?;
        let destinations = file
            .destination
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.validate(index, rules))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(destinations)
    }
}

impl DestinationCatalog for DestinationSet {
    fn for_team(&self, team_id: i64) -> Vec<Arc<Destination>> {
        self.by_team.get(&team_id).cloned().unwrap_or_default()
    }

    fn get(&self, id: &str) -> Option<Arc<Destination>> {
        self.by_id.get(id).cloned()
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// What validation needs to know about the deployment.
#[derive(Debug, Clone, Default)]
pub struct ValidationRules {
    /// Hosts (or hosts on one port) that may be reached over plain http
    /// (`http.allowed_hosts`).
    pub allowed_hosts: crate::AllowList,
    /// Hosts many teams share (`isolation.shared_hosts`): endpoints there are per team.
    pub shared_hosts: crate::endpoint::SharedHosts,
}

/// The destinations in use now: a store swaps in a whole new validated set when it
/// reloads, and readers (the consumer, the attempt activity) always see one consistent set.
#[derive(Debug, Default)]
pub struct LiveDestinations(std::sync::RwLock<Arc<DestinationSet>>);

impl LiveDestinations {
    /// Starts with `set`.
    pub fn new(set: DestinationSet) -> Self {
        LiveDestinations(std::sync::RwLock::new(Arc::new(set)))
    }

    /// Replaces the set.
    pub fn replace(&self, set: DestinationSet) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
    }

    /// The current set.
    pub fn snapshot(&self) -> Arc<DestinationSet> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl DestinationCatalog for LiveDestinations {
    fn for_team(&self, team_id: i64) -> Vec<Arc<Destination>> {
        self.snapshot().for_team(team_id)
    }

    fn get(&self, id: &str) -> Option<Arc<Destination>> {
        self.snapshot().get(id)
    }

    fn len(&self) -> usize {
        self.snapshot().len()
    }
}

/// Why a destinations file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationFileError {
    /// The file is not valid TOML of the expected shape.
    #[error("destinations file: {0}")]
    Syntax(String),
    /// One destination has an invalid field.
    #[error("destination {destination}: field `{field}` {problem}")]
    Invalid {
        /// The destination's id, or its position when the id itself is at fault.
        destination: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Two destinations share an id.
    #[error("destination id `{0}` is used more than once")]
    DuplicateId(String),
    /// Two destinations share an endpoint but set different limits for it.
    #[error(
        "destinations {first} and {second} share endpoint {endpoint} but set different limits; \
         give them the same rate_per_second, burst, max_in_flight and breaker_*, or their own \
         endpoint_key"
    )]
    ConflictingLimits {
        /// The shared endpoint.
        endpoint: String,
        /// The first destination of the endpoint.
        first: String,
        /// The destination that disagrees with it.
        second: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationFile {
    #[serde(default)]
    destination: Vec<DestinationSpec>,
}

/// A destination as written in the destinations file or sent to the admin API, before
/// validation. Its `Debug` is not derived: it holds secrets; see
/// [`DestinationSpec::redacted`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Unique id (`[A-Za-z0-9_.-]`, 1 to 64 characters).
    pub id: String,
    /// Immutable identity, assigned by the Redis store at creation (a UUID); read-only.
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
}

impl DestinationSpec {
    /// A copy safe to show: secrets, header values and the URL's credentials replaced by
    /// `<redacted>`.
    pub fn redacted(&self) -> DestinationSpec {
        let hide = |v: &Option<String>| v.as_ref().map(|_| REDACTED.to_owned());
        DestinationSpec {
            url: redact_url(&self.url),
            secret: hide(&self.secret),
            previous_secret: hide(&self.previous_secret),
            headers: self
                .headers
                .keys()
                .map(|k| (k.clone(), REDACTED.to_owned()))
                .collect(),
            ..self.clone()
        }
    }

    /// Gives back the stored values where this spec says `<redacted>` (a client that sent
    /// back what it was shown keeps the secrets it could not see). Without a `stored` spec
    /// (a create), a placeholder is refused: it is not a value. The error names the field.
    pub fn restore_redacted(
        &mut self,
        stored: Option<&DestinationSpec>,
    ) -> Result<(), DestinationFileError> {
        let missing = |field: &'static str| DestinationFileError::Invalid {
            destination: self.id.clone(),
            field,
            problem: format!("is `{REDACTED}` but there is no stored value to keep"),
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
        if self.url.contains(REDACTED) {
            let kept = stored.and_then(|s| restore_url(&self.url, &s.url));
            self.url = kept.ok_or_else(|| missing("url"))?;
        }
        Ok(())
    }

    /// Validates one destination on its own; the error names the field.
    pub fn validate_one(
        self,
        rules: &ValidationRules,
    ) -> Result<Destination, DestinationFileError> {
        self.validate(0, rules)
    }
}

fn empty_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// Whether `id` is usable in a delivery id: short, and free of the `:` separator.
pub fn is_valid_destination_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl DestinationSpec {
    fn validate(
        self,
        index: usize,
        rules: &ValidationRules,
    ) -> Result<Destination, DestinationFileError> {
        let name = if is_valid_destination_id(&self.id) {
            self.id.clone()
        } else {
            format!("#{}", index + 1)
        };
        let invalid = |field: &'static str, problem: String| DestinationFileError::Invalid {
            destination: name.clone(),
            field,
            problem,
        };
        if !is_valid_destination_id(&self.id) {
            return Err(invalid("id", "must be 1 to 64 of A-Z a-z 0-9 _ - .".into()));
        }
        if self
            .uid
            .as_deref()
            .is_some_and(|uid| uuid::Uuid::parse_str(uid).is_err())
        {
            return Err(invalid(
                "uid",
                "must be a UUID (the store assigns it)".into(),
            ));
        }
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
            None => EndpointKey::of_destination(&url, self.team_id, &rules.shared_hosts),
        };
        let shared_host = url
            .host_str()
            .filter(|host| rules.shared_hosts.contains(host))
            .map(|_| EndpointKey::of_url(&url));
        let limits = LimitOverrides {
            rate_per_second: self.rate_per_second,
            burst: self.burst,
            max_in_flight: self.max_in_flight,
            breaker_min_attempts: self.breaker_min_attempts,
            breaker_failure_ratio: self.breaker_failure_ratio,
            breaker_cooldown_ms: self.breaker_cooldown_ms,
        };
        if self.breaker_min_attempts == Some(0) {
            return Err(invalid("breaker_min_attempts", "must be at least 1".into()));
        }
        if self
            .breaker_failure_ratio
            .is_some_and(|r| !(r > 0.0 && r <= 1.0))
        {
            return Err(invalid(
                "breaker_failure_ratio",
                "must be above 0 and at most 1".into(),
            ));
        }
        if self
            .breaker_cooldown_ms
            .is_some_and(|ms| ms == 0 || ms > MAX_RETRY_MS)
        {
            return Err(invalid(
                "breaker_cooldown_ms",
                "must be 1 ms to 7 days".into(),
            ));
        }
        limits
            .over(EndpointLimits::default())
            .validate()
            .map_err(|(field, problem)| invalid(field, problem))?;
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
        Ok(Destination {
            retry_schedule_ms: self.retry_schedule_ms,
            max_age_ms: self.max_age_ms,
            name: self.name.unwrap_or_else(|| self.id.clone()),
            id: self.id,
            uid: self.uid,
            team_id: self.team_id,
            url,
            actions: self.actions,
            state,
            format: self.format,
            template: self.template,
            headers: SecretHeaders(headers),
            secrets,
            timeout_ms,
            endpoint,
            shared_host,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn parse(text: &str) -> Result<DestinationSet, DestinationFileError> {
        let rules = ValidationRules {
            allowed_hosts: crate::AllowList::new(&["127.0.0.1"]).expect("allow-list"),
            ..ValidationRules::default()
        };
        DestinationSet::from_toml(text, &rules)
    }

    fn event(team_id: i64, actions: &[i64]) -> ActionMatchedEvent {
        ActionMatchedEvent {
            uuid: uuid::Uuid::nil(),
            team_id,
            event: "e".into(),
            distinct_id: None,
            timestamp: "2026-11-21T10:00:00Z".into(),
            properties: Default::default(),
            person: None,
            matched_actions: actions
                .iter()
                .map(|&id| ActionRef {
                    id,
                    name: format!("a{id}"),
                })
                .collect(),
        }
    }

    #[test]
    fn placeholders_sent_back_keep_the_stored_secrets_and_are_refused_on_create() {
        let stored: DestinationSpec = serde_json::from_value(serde_json::json!({
            "id": "d", "team_id": 2, "url": "https://u:pw@hooks.example.com/x",
            "secret": SECRET, "headers": {"Authorization": "Bearer t"},
        }))
        .expect("spec");
        let mut shown = stored.redacted();
        assert_eq!(shown.url, "https://<redacted>@hooks.example.com/x");
        assert_eq!(shown.secret.as_deref(), Some(REDACTED));
        shown.restore_redacted(Some(&stored)).expect("restored");
        assert!(
            shown == stored,
            "every placeholder got its stored value back"
        );

        let mut created = stored.redacted();
        let error = created.restore_redacted(None).expect_err("nothing stored");
        assert!(
            matches!(
                error,
                DestinationFileError::Invalid {
                    field: "secret",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn only_the_planned_destination_of_the_events_team_may_receive_a_delivery() {
        let mut planned = destination(vec![]);
        planned.uid = Some("0190f3a4-0000-7000-8000-0000000000aa".into());
        let event = event(2, &[1]);
        let delivery = crate::DeliveryInput {
            destination_uid: planned.uid.clone(),
            ..crate::DeliveryInput::new("d", event.clone(), event.matched_actions.clone())
        };
        assert!(planned.is_planned_for(&delivery));
        let other_team = Destination {
            team_id: 3,
            ..planned.clone()
        };
        assert!(
            !other_team.is_planned_for(&delivery),
            "another team took the id"
        );
        let recreated = Destination {
            uid: Some("0190f3a4-0000-7000-8000-0000000000bb".into()),
            ..planned.clone()
        };
        assert!(
            !recreated.is_planned_for(&delivery),
            "deleted and created again"
        );
        let unrecorded = crate::DeliveryInput {
            destination_uid: None,
            ..delivery.clone()
        };
        assert!(
            recreated.is_planned_for(&unrecorded),
            "without a recorded uid (file store), the team decides"
        );
        assert!(!other_team.is_planned_for(&unrecorded));
    }

    fn destination(actions: Vec<i64>) -> Destination {
        Destination {
            id: "d".into(),
            uid: None,
            team_id: 2,
            url: Url::parse("https://example.com").expect("url"),
            actions,
            name: "d".into(),
            state: DestinationState::Enabled,
            format: Format::Json,
            template: None,
            headers: SecretHeaders::default(),
            secrets: vec![],
            timeout_ms: 1000,
            endpoint: EndpointKey::custom(1, "e").expect("key"),
            shared_host: None,
            limits: LimitOverrides::default(),
            retry_schedule_ms: None,
            max_age_ms: None,
        }
    }

    #[test]
    fn empty_action_filter_takes_every_action_of_the_team() {
        let d = destination(vec![]);
        assert_eq!(
            d.matching_actions(&event(2, &[1, 2])).map(|a| a.len()),
            Some(2)
        );
        assert_eq!(d.matching_actions(&event(3, &[1])), None);
    }

    #[test]
    fn action_filter_keeps_only_the_shared_actions() {
        let d = destination(vec![2, 9]);
        let ids: Vec<i64> = d
            .matching_actions(&event(2, &[1, 2, 9]))
            .expect("match")
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, vec![2, 9]);
        assert_eq!(d.matching_actions(&event(2, &[1, 3])), None);
    }

    #[test]
    fn parses_a_file_and_indexes_by_team_and_id() {
        let set = parse(&format!(
            r#"
            [[destination]]
            id = "d-1"
            team_id = 2
            url = "https://hooks.example.com/x"
            actions = [17]
            secret = "{SECRET}"
            timeout_ms = 2500

            [[destination]]
            id = "d-2"
            team_id = 2
            url = "http://127.0.0.1:9000/"
            "#
        ))
        .expect("valid file");
        assert_eq!(set.len(), 2);
        assert_eq!(set.for_team(2).len(), 2);
        assert!(set.for_team(3).is_empty());
        let d1 = set.get("d-1").expect("d-1");
        assert_eq!(d1.timeout_ms, 2500);
        assert_eq!(
            d1.secrets
                .iter()
                .map(SigningSecret::expose)
                .collect::<Vec<_>>(),
            [SECRET]
        );
        assert_eq!(set.get("d-2").expect("d-2").timeout_ms, DEFAULT_TIMEOUT_MS);
    }

    #[test]
    fn errors_name_the_destination_and_field() {
        let cases = [
            (r#"id = "bad id""#, "destination #1: field `id`"),
            (
                r#"id = "x"
                secret = "nope""#,
                "destination x: field `secret` must start with `whsec_`",
            ),
            (
                r#"id = "x"
                timeout_ms = 0"#,
                "destination x: field `timeout_ms`",
            ),
        ];
        for (fields, expected) in cases {
            let text =
                format!("[[destination]]\nteam_id = 1\nurl = \"https://a.example\"\n{fields}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        let err = parse("[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"ftp://a\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "destination x: field `url` must be an http(s) URL with a host"
        );
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let one = "[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"https://a.example\"\n";
        let err = parse(&format!("{one}{one}")).unwrap_err();
        assert_eq!(err, DestinationFileError::DuplicateId("x".into()));
    }

    #[test]
    fn destinations_of_one_endpoint_must_agree_on_its_limits() {
        let text = |second_extra: &str| {
            format!(
                "[[destination]]\nid = \"a\"\nteam_id = 1\nurl = \"https://h.example/1\"\n\
                 rate_per_second = 5.0\n\n[[destination]]\nid = \"b\"\nteam_id = 2\n\
                 url = \"https://h.example:443/2\"\n{second_extra}\n"
            )
        };
        let err = parse(&text("")).unwrap_err();
        assert_eq!(
            err,
            DestinationFileError::ConflictingLimits {
                endpoint: "https://h.example:443".into(),
                first: "a".into(),
                second: "b".into(),
            }
        );
        let set = parse(&text("rate_per_second = 5.0")).expect("agree");
        assert_eq!(
            set.get("a").map(|d| d.endpoint.clone()),
            set.get("b").map(|d| d.endpoint.clone())
        );
        let own_key = text("endpoint_key = \"h-2\"");
        let set = parse(&own_key).expect("own endpoint");
        assert_eq!(set.get("b").expect("b").endpoint.as_str(), "team=2 h-2");
        assert_eq!(
            set.get("a")
                .expect("a")
                .limits
                .over(EndpointLimits::default())
                .rate_per_second,
            5.0
        );
    }

    #[test]
    fn limit_overrides_are_range_checked() {
        let err = parse(
            "[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"https://a.example\"\nmax_in_flight = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "destination x: field `max_in_flight` must be at least 1"
        );
    }

    #[test]
    fn the_full_model_parses() {
        let set = parse(&format!(
            r#"
            [[destination]]
            id = "slack-1"
            name = "Sales channel"
            team_id = 2
            url = "https://hooks.slack.example/T1"
            state = "paused"
            format = "slack"
            template = "[action.name] by [person] \\[!]"
            headers = {{ Authorization = "Bearer t0ken" }}
            secret = "{SECRET}"
            previous_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

            [[destination]]
            id = "off"
            team_id = 2
            url = "https://x.example/"
            state = "disabled"
            disabled_reason = "customer asked"
            "#
        ))
        .expect("valid");
        let d = set.get("slack-1").expect("slack-1");
        assert_eq!(d.name, "Sales channel");
        assert_eq!(d.state, DestinationState::Paused);
        assert_eq!(d.format, Format::Slack);
        assert_eq!(d.secrets.len(), 2);
        assert_eq!(
            d.headers.expose(),
            [("Authorization".into(), "Bearer t0ken".into())]
        );
        assert!(
            !format!("{d:?}").contains("t0ken"),
            "header values are redacted"
        );
        assert!(!format!("{d:?}").contains(SECRET), "secrets are redacted");
        assert_eq!(
            set.get("off").expect("off").state,
            DestinationState::Disabled("customer asked".into())
        );
    }

    #[test]
    fn model_errors_name_the_field() {
        let cases = [
            ("url = \"http://a.example/\"", "field `url` must be https"),
            (
                "url = \"https://a.example/\"\nformat = \"json\"\ntemplate = \"[event]\"",
                "field `template` only applies",
            ),
            (
                "url = \"https://a.example/\"\nformat = \"slack\"\ntemplate = \"[user]\"",
                "field `template` is invalid: unknown placeholder `[user]`",
            ),
            (
                "url = \"https://a.example/\"\nformat = \"fax\"",
                "unknown variant `fax`",
            ),
            (
                "url = \"https://a.example/\"\nstate = \"sleeping\"",
                "field `state` must be",
            ),
            (
                "url = \"https://a.example/\"\nheaders = { webhook-id = \"x\" }",
                "field `headers` `webhook-id`",
            ),
            (
                "url = \"https://a.example/\"\nprevious_secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"",
                "field `previous_secret` needs",
            ),
            (
                "url = \"https://a.example/\"\nretry_schedule_ms = [0]",
                "field `retry_schedule_ms` must have at most 30 waits",
            ),
            (
                "url = \"https://a.example/\"\nmax_age_ms = 999999999999",
                "field `max_age_ms` must be 1 ms to 7 days",
            ),
        ];
        for (fields, expected) in cases {
            let text = format!("[[destination]]\nid = \"x\"\nteam_id = 1\n{fields}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{fields}: {err}");
        }
    }

    #[test]
    fn retry_overrides_replace_the_deployments_schedule_and_age() {
        let set = parse(
            "[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"https://a.example/\"\n\
             retry_schedule_ms = [100, 200]\nmax_age_ms = 60000\n",
        )
        .expect("valid");
        let policy = set
            .get("x")
            .expect("x")
            .retry_policy(&RetryPolicy::default());
        assert_eq!(policy.schedule_ms, [100, 200]);
        assert_eq!(policy.max_age_ms, 60_000);
        assert_eq!(
            policy.jitter,
            RetryPolicy::default().jitter,
            "the rest is the deployment's"
        );
    }

    #[test]
    fn breaker_overrides_apply_to_the_endpoint_and_must_agree() {
        let one = "[[destination]]\nid = \"a\"\nteam_id = 1\nurl = \"https://h.example/a\"\n\
                   breaker_min_attempts = 3\nbreaker_cooldown_ms = 900000\n";
        let set = parse(one).expect("valid");
        let policy = set
            .get("a")
            .expect("a")
            .limits
            .breaker_over(&BreakerPolicy::default());
        assert_eq!((policy.min_attempts, policy.cooldown_ms), (3, 900_000));
        assert_eq!(
            policy.max_cooldown_ms, 900_000,
            "the cap is at least the first cooldown"
        );
        assert_eq!(policy.failure_ratio, BreakerPolicy::default().failure_ratio);
        let two = format!(
            "{one}[[destination]]\nid = \"b\"\nteam_id = 1\nurl = \"https://h.example/b\"\n"
        );
        assert!(matches!(
            parse(&two),
            Err(DestinationFileError::ConflictingLimits { .. })
        ));
        let err = parse("[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"https://a.example/\"\nbreaker_failure_ratio = 0.0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `breaker_failure_ratio`"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let secret = SigningSecret::parse(SECRET).expect("secret");
        assert_eq!(format!("{secret:?}"), "SigningSecret(<redacted>)");
    }
}
