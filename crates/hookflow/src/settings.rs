//! hookflow's configuration: `config/default.toml` (compiled in, every key commented),
//! overridden by an optional file, overridden by `HOOKFLOW_<SECTION>__<KEY>` environment
//! variables. An invalid configuration is refused with a message naming the key.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use hookflow_core::{
    AllowList, FieldError, RetryPolicy, Secret, ValidationRules, redaction::check_toml,
};
use hookflow_http::{
    egress::EgressProxy,
    isolation::{AutoDisableSettings, IsolationSettings},
};
use hookflow_kafka::{KafkaSettings, outcomes::OutcomeSettings};
use hookflow_runtime::RedisSettings;
use hookflow_telemetry::LogFormat;
use hookflow_temporal::TemporalSettings;

use crate::{
    admin::tokens::{TeamTokenSettings, TokenKeys},
    commands::codec_server::CodecServerSettings,
    destinations::postgres::PostgresSettings,
};
use serde::Deserialize;

/// The compiled-in defaults.
pub const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// All of hookflow's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[kafka]`
    pub kafka: KafkaSettings,
    /// `[temporal]`
    pub temporal: TemporalSettings,
    /// `[http]`
    pub http: HttpSection,
    /// `[destinations]`
    pub destinations: DestinationsSection,
    /// `[retry]`
    pub retry: RetryPolicy,
    /// `[isolation]`
    pub isolation: IsolationSettings,
    /// `[redis]`
    pub redis: RedisSettings,
    /// `[outcomes]`
    pub outcomes: OutcomeSettings,
    /// `[auto_disable]`
    pub auto_disable: AutoDisableSettings,
    /// `[admin]`
    pub admin: AdminSection,
    /// `[codec_server]`
    pub codec_server: CodecServerSettings,
    /// `[telemetry]`
    pub telemetry: TelemetrySection,
}

/// `[http]`: outbound delivery requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Connect timeout, milliseconds.
    #[serde(rename = "connect_timeout_ms", with = "hookflow_core::millis")]
    pub connect_timeout: Duration,
    /// Hosts, or hosts on one port, exempt from the SSRF guard.
    pub allowed_hosts: AllowList,
    /// The most of a response body an attempt reads.
    pub max_response_body_bytes: usize,
    /// The forward proxy every delivery leaves through (`http://` or `socks5://`, with
    /// credentials); empty: direct. A secret: it may hold a password.
    #[serde(default)]
    pub proxy: Secret,
    /// Named proxies a destination may choose instead (`proxy = "<name>"`), each like
    /// `proxy`.
    #[serde(default)]
    pub proxies: BTreeMap<String, Secret>,
}

/// Whether `name` may name an egress proxy: what the environment can spell, lowercase.
fn is_proxy_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl HttpSection {
    /// The egress proxy, if one is set; the error names what is wrong, never the value.
    pub fn egress_proxy(&self) -> Result<Option<EgressProxy>, SettingsError> {
        EgressProxy::parse(self.proxy.expose()).map_err(|problem| SettingsError::Value {
            key: "http.proxy",
            problem,
        })
    }

    /// The named egress proxies; the error names the one at fault, never its value.
    pub fn named_proxies(&self) -> Result<BTreeMap<String, EgressProxy>, SettingsError> {
        self.proxies
            .iter()
            .map(|(name, url)| match EgressProxy::parse(url.expose()) {
                // As the environment spells them (HOOKFLOW_HTTP__PROXIES__EU is `eu`).
                _ if !is_proxy_name(name) => Err(format!(
                    "`{name}` is not a name: use 1 to 32 of a-z, 0-9 and _"
                )),
                Ok(Some(proxy)) => Ok((name.clone(), proxy)),
                Ok(None) => Err(format!("`{name}` is empty")),
                Err(problem) => Err(format!("`{name}` {problem}")),
            })
            .collect::<Result<_, String>>()
            .map_err(|problem| SettingsError::Value {
                key: "http.proxies",
                problem,
            })
    }
}

/// `[destinations]`: where destinations come from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationsSection {
    /// Where they are kept.
    pub store: DestinationStoreKind,
    /// The destinations file.
    pub file: PathBuf,
    /// How often the file is checked for changes.
    #[serde(rename = "reload_interval_ms", with = "hookflow_core::millis")]
    pub reload_interval: Duration,
    /// Where links in messages point (the analytics product's URL).
    pub site_url: String,
    /// `[destinations.postgres]`: the catalog, when `store = "postgres"`.
    pub postgres: PostgresSettings,
}

/// Where destinations are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationStoreKind {
    /// A TOML file, reloaded when it changes (GitOps).
    File,
    /// The catalog in PostgreSQL, managed through the admin API and shared by every process.
    Postgres,
}

/// `[admin]`: the admin HTTP API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Listener; empty for no API.
    pub address: String,
    /// The operator's bearer token: every route of every team.
    pub token: Secret,
    /// The keys team tokens are signed with (none: team tokens are off).
    #[serde(default)]
    pub team_tokens: TeamTokenSettings,
}

/// `[telemetry]`: logs and metrics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// Listener of `/metrics`, `/_liveness` and `/_readiness`.
    pub ops_address: SocketAddr,
    /// Listener of the Temporal SDK's worker metrics; empty for none.
    pub sdk_metrics_address: String,
    /// Whether to export failures per endpoint (an unbounded label).
    pub endpoint_labels: bool,
    /// Lines of text or of JSON.
    pub log_format: LogFormat,
    /// RUST_LOG-style filter.
    pub log_filter: String,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file cannot be read, or is not TOML; said by line and column, never quoting the
    /// line (it may hold a secret).
    #[error("invalid configuration: {file}: {message}")]
    File {
        /// The file.
        file: PathBuf,
        /// Where and why.
        message: String,
    },
    /// A key is missing, unknown or of the wrong type or value.
    #[error("invalid configuration: {}", shape_problem(.0))]
    Shape(Box<figment::Error>),
    /// A section's field is out of range.
    #[error("invalid configuration: `{section}.{}` {}", .error.field, .error.problem)]
    Field {
        /// The section (`kafka`, `isolation`, …).
        section: &'static str,
        /// The field and what is wrong with it.
        error: FieldError,
    },
    /// A value is out of range.
    #[error("invalid configuration: `{key}` {problem}")]
    Value {
        /// The dotted key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl From<figment::Error> for SettingsError {
    fn from(error: figment::Error) -> Self {
        SettingsError::Shape(Box::new(error))
    }
}

/// "`kafka.offset_reset` (in `HOOKFLOW_` environment variable(s)): unknown variant …": the
/// key as a file spells it, where the value came from, and what is wrong with it.
fn shape_problem(error: &figment::Error) -> String {
    let origin = error
        .metadata
        .as_ref()
        .map(|m| format!(" (in {})", m.name))
        .unwrap_or_default();
    if error.path.is_empty() {
        return format!("{}{origin}", error.kind);
    }
    format!("`{}`{origin}: {}", error.path.join("."), error.kind)
}

impl Settings {
    /// Loads defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            check_syntax(file)?;
            figment = figment.merge(Toml::file_exact(file));
        }
        // Only HOOKFLOW_<SECTION>__<KEY> variables are settings; others with the prefix
        // (HOOKFLOW_CONFIG, HOOKFLOW_RECEIVER_SECRET) belong to the command line.
        let env = Env::prefixed("HOOKFLOW_")
            .filter(|key| {
                key.as_str().contains("__")
                    && !key
                        .as_str()
                        .to_ascii_lowercase()
                        .starts_with(KAFKA_CLIENT_ENV)
            })
            .split("__");
        Self::from_figment(figment.merge(env).merge(kafka_client_env()))
    }

    fn from_figment(figment: Figment) -> Result<Self, SettingsError> {
        let settings: Settings = figment.extract()?;
        settings.validate()?;
        Ok(settings)
    }

    /// What validating a destination needs to know of the deployment.
    pub fn validation_rules(&self) -> ValidationRules {
        ValidationRules {
            allowed_hosts: self.http.allowed_hosts.clone(),
            proxies: self.http.proxies.keys().cloned().collect(),
        }
    }

    /// Where the admin API listens, if anywhere.
    pub fn admin_address(&self) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        optional_address(&self.admin.address)
    }

    /// Where the Temporal SDK's metrics are served, if anywhere.
    pub fn sdk_metrics_address(&self) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        optional_address(&self.telemetry.sdk_metrics_address)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key, problem: &str| {
            Err(SettingsError::Value {
                key,
                problem: problem.to_owned(),
            })
        };
        let sections = [
            ("kafka", self.kafka.validate()),
            ("temporal", self.temporal.validate()),
            ("retry", self.retry.validate()),
            ("isolation", self.isolation.validate()),
            ("auto_disable", self.auto_disable.validate()),
        ];
        for (section, checked) in sections {
            checked.map_err(|error| SettingsError::Field { section, error })?;
        }
        self.http.egress_proxy()?;
        self.http.named_proxies()?;
        if self.sdk_metrics_address().is_err() {
            return bad(
                "telemetry.sdk_metrics_address",
                "must be host:port (an IP address) or empty",
            );
        }
        if self.admin_address().is_err() {
            return bad(
                "admin.address",
                "must be host:port (an IP address) or empty",
            );
        }
        if self.destinations.store == DestinationStoreKind::Postgres {
            self.destinations
                .postgres
                .validate()
                .map_err(|error| SettingsError::Field {
                    section: "destinations.postgres",
                    error,
                })?;
        }
        if self.admin_address().ok().flatten().is_some() {
            if self.destinations.store != DestinationStoreKind::Postgres {
                return bad("admin.address", "needs destinations.store = \"postgres\"");
            }
            if self.redis.url.trim().is_empty() {
                return bad(
                    "admin.address",
                    "needs redis.url (the admin API records replay jobs there)",
                );
            }
            if self.admin.token.expose().len() < 16 {
                return bad("admin.token", "must be set, at least 16 characters");
            }
            if let Err(problem) = TokenKeys::from_settings(&self.admin.team_tokens) {
                return Err(SettingsError::Value {
                    key: "admin.team_tokens",
                    problem,
                });
            }
        }
        Ok(())
    }
}

/// The environment variables of `[kafka.client]`, after `HOOKFLOW_`.
const KAFKA_CLIENT_ENV: &str = "kafka__client__";

/// `[kafka.client]` from `HOOKFLOW_KAFKA__CLIENT__<KEY>` variables, taken as written. They
/// are librdkafka's strings, often credentials: parsed as other variables are, a password of
/// digits would become a number, lose its leading zeros, and be quoted in the error that
/// refuses it.
fn kafka_client_env() -> Serialized<BTreeMap<String, String>> {
    let client = std::env::vars()
        .filter_map(|(key, value)| {
            let key = key.to_ascii_lowercase();
            let key = key
                .strip_prefix("hookflow_")?
                .strip_prefix(KAFKA_CLIENT_ENV)?;
            Some((key.to_owned(), value))
        })
        .collect();
    Serialized::default("kafka.client", client)
}

/// Refuses a file that is not TOML before figment reads it: the TOML parser's own message
/// quotes the offending line.
fn check_syntax(file: &Path) -> Result<(), SettingsError> {
    let refuse = |message: String| SettingsError::File {
        file: file.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| refuse(e.to_string()))?;
    check_toml(&text).map_err(refuse)
}

/// An optional listener address: empty means none.
fn optional_address(text: &str) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
    let address = text.trim();
    if address.is_empty() {
        return Ok(None);
    }
    address.parse().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(overrides: &str) -> Result<Settings, SettingsError> {
        Settings::from_figment(Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(overrides)))
    }

    #[test]
    fn the_defaults_are_valid() {
        let settings = load("").expect("defaults");
        assert_eq!(settings.kafka.topic, "hookflow_events");
        assert_eq!(settings.kafka.dead_letter_topic, "hookflow_events_dlq");
        assert_eq!(settings.retry, RetryPolicy::default());
        assert!(
            settings.http.allowed_hosts.is_empty(),
            "production allows no private host"
        );
    }

    #[test]
    // figment's Jail fixes the closure's error type.
    #[allow(clippy::result_large_err)]
    fn the_local_config_is_valid_with_the_key_the_stack_makes() {
        let local = include_str!("../../../config/local.toml");
        let error = load(local).expect_err("no catalog key").to_string();
        assert!(
            error.contains("destinations.postgres.encryption"),
            "{error}"
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file("local.toml", local)?;
            jail.set_env(
                "HOOKFLOW_DESTINATIONS__POSTGRES__ENCRYPTION__KEYS__LOCAL",
                "A".repeat(43) + "=",
            );
            let settings = Settings::load(Some(Path::new("local.toml"))).expect("valid");
            assert_eq!(
                settings.http.allowed_hosts,
                AllowList::new(&["127.0.0.1", "localhost"]).expect("allow-list")
            );
            assert_eq!(settings.destinations.store, DestinationStoreKind::Postgres);
            Ok(())
        });
    }

    #[test]
    // figment's Jail fixes the closure's error type.
    #[allow(clippy::result_large_err)]
    fn egress_proxies_come_from_the_environment_and_show_no_password() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "HOOKFLOW_HTTP__PROXY",
                "socks5://u:envsecret@proxy.internal:1080",
            );
            jail.set_env(
                "HOOKFLOW_HTTP__PROXIES__EU",
                "http://u:envsecret@eu.proxy.internal:3128",
            );
            let settings = Settings::load(None).expect("valid");
            let default = settings.http.egress_proxy().expect("valid").expect("set");
            assert_eq!(default.shown(), "socks5://proxy.internal:1080");
            let named = settings.http.named_proxies().expect("valid");
            assert_eq!(named["eu"].shown(), "http://eu.proxy.internal:3128");
            assert_eq!(settings.validation_rules().proxies, ["eu"]);
            assert!(!format!("{:?}", settings.http).contains("envsecret"));
            Ok(())
        });
    }

    #[test]
    // figment's Jail fixes the closure's error type.
    #[allow(clippy::result_large_err)]
    fn the_production_example_encrypts_and_needs_its_secrets_from_the_environment() {
        let example = include_str!("../../../config/production.example.toml");
        let error = load(example).expect_err("no payload key").to_string();
        assert!(
            error.contains("temporal.codec") && error.contains("current_key `k1`"),
            "{error}"
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file("production.toml", example)?;
            jail.set_env("HOOKFLOW_TEMPORAL__CODEC__KEYS__K1", "A".repeat(43) + "=");
            jail.set_env("HOOKFLOW_ADMIN__TOKEN", "an-admin-token-of-32-characters!");
            jail.set_env(
                "HOOKFLOW_DESTINATIONS__POSTGRES__URL",
                "postgres://hookflow:pw@db.internal:5432/hookflow",
            );
            jail.set_env(
                "HOOKFLOW_DESTINATIONS__POSTGRES__ENCRYPTION__KEYS__C1",
                "A".repeat(43) + "=",
            );
            let settings = Settings::load(Some(Path::new("production.toml"))).expect("valid");
            let codec = &settings.temporal.codec;
            assert!(codec.enabled);
            assert_eq!(codec.keys.keys().collect::<Vec<_>>(), ["k1"]);
            assert_eq!(settings.destinations.store, DestinationStoreKind::Postgres);
            Ok(())
        });
    }

    #[test]
    // figment's Jail fixes the closure's error type.
    #[allow(clippy::result_large_err)]
    fn kafka_client_values_from_the_environment_are_taken_as_written() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKFLOW_KAFKA__CLIENT__SASL_PASSWORD", "0123456789");
            jail.set_env("HOOKFLOW_KAFKA__CLIENT__SOCKET_TIMEOUT_MS", "1.50");
            jail.set_env("HOOKFLOW_KAFKA__MAX_MESSAGES_IN_FLIGHT", "7");
            let settings = Settings::load(None).expect("valid");
            let client = settings.kafka.client_config();
            assert_eq!(client.get("sasl.password"), Some("0123456789"));
            assert_eq!(client.get("socket.timeout.ms"), Some("1.50"));
            assert_eq!(
                settings.kafka.max_messages_in_flight, 7,
                "others are parsed"
            );
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[kafka]\nmax_starts_in_flight = 0",
                "`kafka.max_starts_in_flight` must be greater than 0",
            ),
            (
                "[retry]\njitter = 2.0",
                "`retry.jitter` must be between 0 and 1",
            ),
            ("[kafka]\noffset_reset = \"middle\"", "`kafka.offset_reset`"),
            (
                "[outcomes]\nwindow_ms = 0",
                "`outcomes.window_ms` (in TOML source string): invalid value unsigned int `0`, \
                 expected a duration of at least 1 millisecond",
            ),
            (
                "[telemetry]\nlog_format = \"xml\"",
                "`telemetry.log_format`",
            ),
            (
                "[isolation]\nmax_in_flight = 0",
                "`isolation.max_in_flight` must be at least 1",
            ),
            (
                "[isolation.breaker]\nfailure_ratio = 1.5",
                "`isolation.breaker.failure_ratio` must be above 0 and at most 1",
            ),
            (
                "[auto_disable]\nwarn_after_ms = 432000000",
                "`auto_disable.warn_after_ms` must be below after_ms",
            ),
            (
                "[auto_disable]\nmin_attempts = 0",
                "`auto_disable.min_attempts` must be at least 1",
            ),
            (
                "[http]\nproxies = { eu = \"socks5://user:secretpw@proxy\" }",
                "`http.proxies` `eu` has no port",
            ),
            (
                "[http]\nproxies = { EU = \"socks5://user:secretpw@proxy:1080\" }",
                "`http.proxies` `EU` is not a name: use 1 to 32 of a-z, 0-9 and _",
            ),
            (
                "[http]\nproxy = \"ftp://user:secretpw@proxy:21\"",
                "`http.proxy` has scheme `ftp`: use http:// (HTTP CONNECT) or socks5://",
            ),
            (
                "[http]\nallowed_hosts = [\"internal:99999\"]",
                "`internal:99999` has a port that is not 1 to 65535",
            ),
        ];
        for (overrides, expected) in cases {
            let err = load(overrides).expect_err(overrides).to_string();
            assert!(err.contains(expected), "{err}");
        }
        let err = load("[kafka]\ncommit_interval_ms = \"soon\"")
            .expect_err("type")
            .to_string();
        assert!(err.contains("kafka.commit_interval_ms"), "{err}");
        let err = load("[kafka]\nbrokerz = \"x\"")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_toml_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hookflow.toml");
        std::fs::write(&path, "[admin]\ntoken = \"never-print-me-0123456789\n").expect("write");
        let error = Settings::load(Some(&path))
            .expect_err("not TOML")
            .to_string();
        assert!(error.contains("line 2, column"), "{error}");
        assert!(!error.contains("never-print-me"), "{error}");
    }

    #[test]
    // figment's Jail fixes the closure's error type.
    #[allow(clippy::result_large_err)]
    fn environment_variables_override_files() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKFLOW_KAFKA__BROKERS", "kafka-1:9092,kafka-2:9092");
            jail.set_env("HOOKFLOW_TEMPORAL__NAMESPACE", "prod");
            jail.set_env("HOOKFLOW_CONFIG", "ignored-here.toml");
            let settings = Settings::load(None).expect("settings");
            assert_eq!(settings.kafka.brokers, "kafka-1:9092,kafka-2:9092");
            assert_eq!(settings.temporal.namespace, "prod");
            Ok(())
        });
    }
}
