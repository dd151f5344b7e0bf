//! Reaching Temporal: address, namespace, and for Temporal Cloud an API key or mTLS.

use std::{path::PathBuf, str::FromStr, time::Duration};

use hookflow_core::{
    FieldError, HistoryBound,
    person::{PersonKey, PersonKeys},
};

use crate::codec::{CodecError, CodecSettings, EncryptionCodec};
use serde::Deserialize;
use temporalio_client::{
    Client, ClientOptions, ClientTlsOptions, Connection, ConnectionOptions, TlsOptions, Url,
};

/// Where Temporal is and how hookflow talks to it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemporalSettings {
    /// The frontend's gRPC address, `http://host:port` (or `https://` for TLS).
    pub address: String,
    /// The namespace delivery workflows run in.
    pub namespace: String,
    /// The task queue the worker polls and the starter starts workflows on.
    pub task_queue: String,
    /// API key for Temporal Cloud; implies TLS. Prefer setting it through
    /// `HOOKFLOW_TEMPORAL__API_KEY` rather than a file.
    #[serde(default)]
    pub api_key: Option<String>,
    /// TLS (and mTLS) settings; absent means plaintext unless an API key is set.
    #[serde(default)]
    pub tls: Option<TemporalTls>,
    /// How long to wait for the first connection.
    #[serde(rename = "connect_timeout_ms", with = "hookflow_core::millis")]
    pub connect_timeout: Duration,
    /// Attempt activities (attempts and deferrals) one workflow run makes before it
    /// continues as new, so history stays bounded however long a delivery waits.
    #[serde(default = "default_history_max_rounds")]
    pub history_max_rounds_per_run: u32,
    /// Bytes of activity input (each carries the event) one run may write before it
    /// continues as new.
    #[serde(default = "default_history_max_input_bytes")]
    pub history_max_input_bytes_per_run: u64,
    /// The largest delivery input (mostly the event) a workflow start may carry; a larger
    /// event is dead-lettered. Temporal refuses payloads over 2 MB by default.
    #[serde(default = "default_max_input_bytes")]
    pub max_input_bytes: usize,
    /// `[temporal.codec]`: payload encryption.
    #[serde(default)]
    pub codec: CodecSettings,
    /// The key of the person hash each delivery carries (`HookflowPersonHash`, what an
    /// erasure finds a person's deliveries by): base64 of at least 32 random bytes. Set it
    /// in the environment (`HOOKFLOW_TEMPORAL__PERSON_HASH_KEY`), after the attribute is
    /// registered; without it deliveries carry no hash and cannot be erased by person.
    #[serde(default)]
    pub person_hash_key: Option<hookflow_core::Secret>,
    /// Keys deliveries were hashed with before the current one: an erasure finds those
    /// too. Keep one until its deliveries have left the namespace's retention. One key or
    /// a list; a value of another shape is refused without being quoted.
    #[serde(default, deserialize_with = "one_or_more_secrets")]
    pub person_hash_previous_keys: Vec<hookflow_core::Secret>,
}

/// A secret or a list of secrets; an error that never quotes the value (a list's own
/// error would).
fn one_or_more_secrets<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<hookflow_core::Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMore {
        One(hookflow_core::Secret),
        More(Vec<hookflow_core::Secret>),
    }
    match OneOrMore::deserialize(deserializer) {
        Ok(OneOrMore::One(secret)) => Ok(vec![secret]),
        Ok(OneOrMore::More(secrets)) => Ok(secrets),
        Err(_) => Err(serde::de::Error::custom(
            "must be a key or a list of keys (the value is not shown)",
        )),
    }
}

fn default_max_input_bytes() -> usize {
    2_000_000
}

fn default_history_max_rounds() -> u32 {
    HistoryBound::default().max_rounds
}

fn default_history_max_input_bytes() -> u64 {
    HistoryBound::default().max_input_bytes
}

impl TemporalSettings {
    /// Checks `[temporal]` and `[temporal.codec]`; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.namespace.is_empty() || self.task_queue.is_empty() {
            return Err(FieldError::new(
                "namespace",
                "and temporal.task_queue must be set",
            ));
        }
        if let Err(CodecError::Settings(problem)) = EncryptionCodec::from_settings(&self.codec) {
            return Err(FieldError::new("codec", problem));
        }
        if let Some(key) = &self.person_hash_key {
            PersonKey::from_base64(key.expose())
                .map_err(|problem| FieldError::new("person_hash_key", problem))?;
        }
        for key in &self.person_hash_previous_keys {
            PersonKey::from_base64(key.expose())
                .map_err(|problem| FieldError::new("person_hash_previous_keys", problem))?;
        }
        if self.person_hash_key.is_none() && !self.person_hash_previous_keys.is_empty() {
            return Err(FieldError::new(
                "person_hash_previous_keys",
                "needs a current person_hash_key",
            ));
        }
        if self.history_max_rounds_per_run == 0 || self.history_max_input_bytes_per_run == 0 {
            return Err(FieldError::new(
                "history_max_rounds_per_run",
                "and temporal.history_max_input_bytes_per_run must be greater than 0",
            ));
        }
        Ok(())
    }

    /// The key of the person hash, when one is set (and valid: [`Self::validate`]).
    pub fn person_key(&self) -> Option<PersonKey> {
        PersonKey::from_base64(self.person_hash_key.as_ref()?.expose()).ok()
    }

    /// Every person-hash key, for an erasure: the current one and the previous ones.
    pub fn person_keys(&self) -> Option<PersonKeys> {
        Some(PersonKeys {
            current: self.person_key()?,
            previous: self
                .person_hash_previous_keys
                .iter()
                .filter_map(|key| PersonKey::from_base64(key.expose()).ok())
                .collect(),
        })
    }

    /// The history bound every delivery starts with.
    pub fn history_bound(&self) -> HistoryBound {
        HistoryBound {
            max_rounds: self.history_max_rounds_per_run,
            max_input_bytes: self.history_max_input_bytes_per_run,
        }
    }
}

impl std::fmt::Debug for TemporalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporalSettings")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("task_queue", &self.task_queue)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("connect_timeout_ms", &self.connect_timeout)
            .field(
                "history_max_rounds_per_run",
                &self.history_max_rounds_per_run,
            )
            .field(
                "history_max_input_bytes_per_run",
                &self.history_max_input_bytes_per_run,
            )
            .field("max_input_bytes", &self.max_input_bytes)
            .field("codec", &self.codec)
            .field("person_hash_key", &self.person_hash_key)
            .field("person_hash_previous_keys", &self.person_hash_previous_keys)
            .finish()
    }
}

/// TLS to the Temporal frontend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemporalTls {
    /// PEM file of the CA that signed the server's certificate; system roots when absent.
    #[serde(default)]
    pub server_ca_cert: Option<PathBuf>,
    /// Name to verify the server's certificate against, when it differs from the address.
    #[serde(default)]
    pub domain: Option<String>,
    /// PEM client certificate, for mTLS.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM client private key, for mTLS.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// Failures talking to Temporal.
#[derive(Debug, thiserror::Error)]
pub enum TemporalError {
    /// The settings cannot be used (a bad address, an unreadable certificate).
    #[error("temporal settings: {0}")]
    Settings(String),
    /// The server could not be reached.
    #[error("cannot connect to Temporal at {address}: {reason}")]
    Connect {
        /// The configured address.
        address: String,
        /// Why.
        reason: String,
    },
    /// A call failed.
    #[error("temporal: {0}")]
    Rpc(String),
    /// The server refused what the caller asked for (a malformed page token, say).
    #[error("{0}")]
    Invalid(String),
}

/// Connects a client bound to the configured namespace.
pub async fn connect(settings: &TemporalSettings) -> Result<Client, TemporalError> {
    let url = Url::from_str(&settings.address).map_err(|e| {
        TemporalError::Settings(format!("address `{}` is not a URL: {e}", settings.address))
    })?;
    let tls = settings.tls.as_ref().map(tls_options).transpose()?;
    let options = ConnectionOptions::new(url)
        .identity(format!("hookflow@{}", std::process::id()))
        .maybe_tls_options(tls)
        .maybe_api_key(settings.api_key.clone())
        .connect_timeout(settings.connect_timeout)
        .build();
    let connection = Connection::connect(options)
        .await
        .map_err(|e| TemporalError::Connect {
            address: settings.address.clone(),
            reason: e.to_string(),
        })?;
    let codec = EncryptionCodec::from_settings(&settings.codec)
        .map_err(|e| TemporalError::Settings(e.to_string()))?;
    let options = ClientOptions::new(settings.namespace.clone())
        .maybe_data_converter(codec.map(EncryptionCodec::data_converter))
        .build();
    Client::new(connection, options).map_err(|e| TemporalError::Settings(e.to_string()))
}

fn tls_options(tls: &TemporalTls) -> Result<TlsOptions, TemporalError> {
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map_err(|e| TemporalError::Settings(format!("cannot read {}: {e}", path.display())))
    };
    let client = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some(
            ClientTlsOptions::builder()
                .client_cert(read(cert)?)
                .client_private_key(read(key)?)
                .build(),
        ),
        (None, None) => None,
        _ => {
            return Err(TemporalError::Settings(
                "tls.client_cert and tls.client_key go together".into(),
            ));
        }
    };
    Ok(TlsOptions::builder()
        .maybe_server_root_ca_cert(tls.server_ca_cert.as_ref().map(read).transpose()?)
        .maybe_domain(tls.domain.clone())
        .maybe_client_tls_options(client)
        .build())
}

/// How often [`probe`] asks Temporal whether it answers.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Keeps `health` up to date with whether the Temporal frontend answers, until `shutdown`.
pub async fn probe(
    client: Client,
    health: hookflow_telemetry::health::HealthHandle,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use temporalio_common::protos::temporal::api::workflowservice::v1::GetSystemInfoRequest;
    hookflow_runtime::every(PROBE_INTERVAL, &shutdown, || async {
        let mut service = client.connection().workflow_service();
        let request = temporalio_client::tonic::Request::new(GetSystemInfoRequest::default());
        match tokio::time::timeout(PROBE_INTERVAL, service.get_system_info(request)).await {
            Ok(Ok(_)) => health.set_ready(true, ""),
            Ok(Err(status)) => health.set_ready(false, format!("temporal: {}", status.message())),
            Err(_) => health.set_ready(false, "temporal: no answer within 5s"),
        }
        health.beat();
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Keys {
        #[serde(deserialize_with = "one_or_more_secrets")]
        keys: Vec<hookflow_core::Secret>,
    }

    #[test]
    fn previous_keys_are_one_or_a_list_and_a_wrong_shape_is_not_quoted() {
        let one: Keys = serde_json::from_str(r#"{"keys": "k1"}"#).expect("one");
        let two: Keys = serde_json::from_str(r#"{"keys": ["k1", "k2"]}"#).expect("two");
        assert_eq!((one.keys.len(), two.keys.len()), (1, 2));
        assert_eq!(two.keys[1].expose(), "k2");
        let error = serde_json::from_str::<Keys>(r#"{"keys": {"nested": "secretvalue9"}}"#)
            .expect_err("a map");
        assert!(!error.to_string().contains("secretvalue9"), "{error}");
        assert!(error.to_string().contains("not shown"), "{error}");
    }
}
