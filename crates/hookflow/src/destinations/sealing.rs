//! A destination as the catalog stores it: its spec without secrets (what an operator is
//! shown, readable without any key) and its secrets sealed with the catalog's key ring
//! (the signing secrets, the header values, the full URL, which may hold credentials or,
//! for a chat service, a secret path, the TLS client certificate and key, and the OAuth2
//! client secret). A release before the TLS and OAuth2 fields cannot open a row that has
//! them (its sealed part is read strictly): the row is refused there, as any unreadable
//! row is. The key ring is the payload codec's mechanism
//! ([`EncryptionCodec`]): AES-256-GCM, the key's id inside every sealed value, so keys
//! rotate (`hookflow destinations reseal` moves every row to the current key).
//!
//! Sealed secrets may be bound to their row ([`RowBinding`]: the team and the
//! destination's uid), so secrets copied onto another row (another team's, say) do not
//! open there: that row is refused, never delivered with them. Binding comes in steps an
//! operator takes once every process reads bound values (this release): `bind_rows` (new
//! seals are bound; `reseal` binds the rest), then `require_bound` (an unbound value, a copy
//! of one sealed before, is refused). A release that read no bound value could not load a
//! catalog they wrote, so neither is on by default yet.

use std::collections::BTreeMap;

use hookflow_core::{DestinationSpec, Secret};
use hookflow_temporal::codec::{CodecError, CodecSettings, EncryptionCodec};
use serde::{Deserialize, Serialize};

/// `[destinations.postgres.encryption]`: the catalog's key ring.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealingSettings {
    /// The id of the key new secrets are sealed with.
    #[serde(default)]
    pub current_key: String,
    /// Every key that may be needed to read the catalog: id → 32 bytes, base64. Set them in
    /// the environment (`HOOKFLOW_DESTINATIONS__POSTGRES__ENCRYPTION__KEYS__<ID>`).
    #[serde(default)]
    pub keys: BTreeMap<String, Secret>,
    /// Whether new seals (writes, `reseal`) are bound to their row.
    #[serde(default)]
    pub bind_rows: bool,
    /// Whether a value not bound to its row is refused (set once `reseal` bound every row).
    #[serde(default)]
    pub require_bound: bool,
}

/// What is sealed of a destination.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Secrets {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oauth2_client_secret: Option<String>,
}

/// What a destination's sealed secrets are bound to: its row's team and uid.
#[derive(Debug, Clone, Copy)]
pub struct RowBinding {
    /// The row's team.
    pub team_id: i64,
    /// The row's destination uid.
    pub uid: uuid::Uuid,
}

impl RowBinding {
    /// The associated data of the row's sealed secrets.
    fn bytes(self) -> Vec<u8> {
        format!(
            "hookflow destination team={} uid={}",
            self.team_id, self.uid
        )
        .into_bytes()
    }
}

/// Why a stored destination cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// Its spec is not one this version reads (written by a newer one, say).
    #[error("its spec cannot be read: {0}")]
    Spec(String),
    /// Its secrets cannot be opened (a key that is not configured, or tampered bytes).
    #[error("its secrets cannot be opened: {0}")]
    Sealed(#[from] CodecError),
    /// Its secrets are not bound to its row, and `require_bound` is set.
    #[error("its secrets are not bound to its row (require_bound): run `destinations reseal`")]
    Unbound,
}

/// Seals and opens destinations' secrets.
#[derive(Clone)]
pub struct Sealer {
    codec: EncryptionCodec,
    bind_rows: bool,
    require_bound: bool,
}

impl Sealer {
    /// The sealer of `settings`: it needs a current key among the keys.
    pub fn from_settings(settings: &SealingSettings) -> Result<Sealer, CodecError> {
        let codec = EncryptionCodec::from_settings(&CodecSettings {
            enabled: true,
            current_key: settings.current_key.clone(),
            keys: settings.keys.clone(),
        })?
        .ok_or_else(|| CodecError::Settings("no keys".into()))?;
        if settings.require_bound && !settings.bind_rows {
            return Err(CodecError::Settings(
                "require_bound needs bind_rows (and every row bound by reseal)".into(),
            ));
        }
        Ok(Sealer {
            codec,
            bind_rows: settings.bind_rows,
            require_bound: settings.require_bound,
        })
    }

    /// `spec` as stored: its spec without secrets, and its secrets sealed to its row.
    pub fn seal(&self, spec: &DestinationSpec, row: RowBinding) -> (serde_json::Value, Vec<u8>) {
        let secrets = Secrets {
            url: spec.url.clone(),
            secret: spec.secret.clone(),
            previous_secret: spec.previous_secret.clone(),
            headers: spec.headers.clone(),
            client_certificate: spec.client_certificate.clone(),
            client_key: spec.client_key.clone(),
            oauth2_client_secret: spec.oauth2.as_ref().map(|o| o.client_secret.clone()),
        };
        // Serialising plain strings and maps cannot fail.
        let plaintext = serde_json::to_vec(&secrets).unwrap_or_default();
        let public = serde_json::to_value(spec.redacted()).unwrap_or_default();
        (public, self.seal_for(&plaintext, row))
    }

    /// The spec stored as `public` and `sealed` on `row`, whole again.
    pub fn open(
        &self,
        public: serde_json::Value,
        sealed: &[u8],
        row: RowBinding,
    ) -> Result<DestinationSpec, UnsealError> {
        let mut spec: DestinationSpec =
            serde_json::from_value(public).map_err(|e| UnsealError::Spec(e.to_string()))?;
        if self.require_bound && !EncryptionCodec::is_bound(sealed) {
            return Err(UnsealError::Unbound);
        }
        let opened = self.codec.open_bound(sealed, Some(&row.bytes()))?;
        let secrets: Secrets = serde_json::from_slice(&opened)
            .map_err(|e| UnsealError::Spec(format!("sealed part: {e}")))?;
        spec.url = secrets.url;
        spec.secret = secrets.secret;
        spec.previous_secret = secrets.previous_secret;
        spec.headers = secrets.headers;
        spec.client_certificate = secrets.client_certificate;
        spec.client_key = secrets.client_key;
        if let Some(oauth2) = &mut spec.oauth2 {
            oauth2.client_secret = secrets.oauth2_client_secret.ok_or_else(|| {
                UnsealError::Spec("its oauth2 client secret is not in its sealed part".into())
            })?;
        }
        Ok(spec)
    }

    /// The id of the key `sealed` was sealed with.
    pub fn key_id_of(sealed: &[u8]) -> Option<String> {
        EncryptionCodec::sealed_with(sealed)
    }

    /// Whether this key ring has a key of id `key_id`.
    pub fn has_key(&self, key_id: &str) -> bool {
        self.codec.knows(key_id)
    }

    /// Whether `sealed` opens with this key ring on `row` (whether the key is the right
    /// material: `require_bound` refuses a row, not a key).
    pub fn opens(&self, sealed: &[u8], row: RowBinding) -> bool {
        self.codec.open_bound(sealed, Some(&row.bytes())).is_ok()
    }

    /// `plaintext` sealed under the current key, bound to `row` with `bind_rows`.
    fn seal_for(&self, plaintext: &[u8], row: RowBinding) -> Vec<u8> {
        let binding = self.bind_rows.then(|| row.bytes());
        self.codec.seal_bound(plaintext, binding.as_deref())
    }

    /// `sealed` sealed again under the current key (and bound to `row`, with `bind_rows`),
    /// or `None` when it already is.
    pub fn reseal(&self, sealed: &[u8], row: RowBinding) -> Result<Option<Vec<u8>>, CodecError> {
        if EncryptionCodec::sealed_with(sealed).as_deref() == self.codec.current_key()
            && EncryptionCodec::is_bound(sealed) == self.bind_rows
        {
            return Ok(None);
        }
        let opened = self.codec.open_bound(sealed, Some(&row.bytes()))?;
        Ok(Some(self.seal_for(&opened, row)))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    pub(crate) fn settings(current: &str, keys: &[(&str, u8)]) -> SealingSettings {
        SealingSettings {
            current_key: current.into(),
            keys: keys
                .iter()
                .map(|(id, byte)| {
                    let key = base64::engine::general_purpose::STANDARD.encode([*byte; 32]);
                    (id.to_string(), Secret::from(key.as_str()))
                })
                .collect(),
            bind_rows: true,
            require_bound: false,
        }
    }

    fn spec() -> DestinationSpec {
        serde_json::from_value(serde_json::json!({
            "id": "d", "team_id": 2, "url": "https://u:urlpassword7@hooks.example.com/x",
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "headers": {"Authorization": "Bearer t0ken"},
            "client_certificate": "-----BEGIN CERTIFICATE-----\ncertbytes9\n-----END CERTIFICATE-----\n",
            "client_key": "-----BEGIN PRIVATE KEY-----\nkeybytes9\n-----END PRIVATE KEY-----\n",
            "ca_certificates": "-----BEGIN CERTIFICATE-----\npublicca\n-----END CERTIFICATE-----\n",
            "oauth2": {"token_url": "https://auth.example.com/token", "client_id": "hookflow",
                       "client_secret": "oauthsecret9", "scopes": ["hooks.write"]},
        }))
        .expect("spec")
    }

    fn row(team_id: i64, last: u8) -> RowBinding {
        RowBinding {
            team_id,
            uid: uuid::Uuid::from_bytes([last; 16]),
        }
    }

    #[test]
    fn a_spec_round_trips_and_its_stored_form_holds_no_secret() {
        let sealer = Sealer::from_settings(&settings("k1", &[("k1", 1)])).expect("sealer");
        let (public, sealed) = sealer.seal(&spec(), row(2, 1));
        let stored = format!("{public} {}", String::from_utf8_lossy(&sealed));
        for secret in [
            "urlpassword7",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "t0ken",
            "certbytes9",
            "keybytes9",
            "oauthsecret9",
        ] {
            assert!(!stored.contains(secret), "{secret} in {stored}");
        }
        // What is not secret is shown: the CAs trusted, the token endpoint and client id.
        for shown in [
            "publicca",
            "auth.example.com/token",
            "hookflow",
            "hooks.write",
        ] {
            assert!(public.to_string().contains(shown), "{shown} in {public}");
        }
        assert!(sealer.open(public, &sealed, row(2, 1)).expect("opened") == spec());
    }

    #[test]
    fn secrets_copied_onto_another_row_do_not_open_there() {
        let sealer = Sealer::from_settings(&settings("k1", &[("k1", 1)])).expect("sealer");
        let (public, sealed) = sealer.seal(&spec(), row(2, 1));
        for other in [row(3, 1), row(2, 9)] {
            let error = sealer
                .open(public.clone(), &sealed, other)
                .err()
                .expect("another team's or destination's row");
            assert!(
                error.to_string().contains("authentication failed"),
                "{error}"
            );
            assert!(!sealer.opens(&sealed, other));
        }
    }

    #[test]
    fn without_bind_rows_seals_stay_unbound_and_require_bound_refuses_them() {
        let unbound = Sealer::from_settings(&SealingSettings {
            bind_rows: false,
            ..settings("k1", &[("k1", 1)])
        })
        .expect("sealer");
        let (public, sealed) = unbound.seal(&spec(), row(2, 1));
        assert!(
            !EncryptionCodec::is_bound(&sealed),
            "the release before reads it"
        );
        assert!(unbound.open(public.clone(), &sealed, row(3, 1)).is_ok());
        assert_eq!(unbound.reseal(&sealed, row(2, 1)).expect("reseal"), None);
        let strict = Sealer::from_settings(&SealingSettings {
            require_bound: true,
            ..settings("k1", &[("k1", 1)])
        })
        .expect("sealer");
        let error = strict
            .open(public, &sealed, row(2, 1))
            .err()
            .expect("unbound");
        assert!(matches!(error, UnsealError::Unbound), "{error}");
        assert!(
            Sealer::from_settings(&SealingSettings {
                require_bound: true,
                bind_rows: false,
                ..settings("k1", &[("k1", 1)])
            })
            .is_err(),
            "require_bound without bind_rows"
        );
    }

    #[test]
    fn secrets_sealed_before_binding_open_and_reseal_binds_them() {
        let sealer = Sealer::from_settings(&settings("k1", &[("k1", 1)])).expect("sealer");
        let plaintext =
            serde_json::to_vec(&serde_json::json!({"url": "https://x.example/"})).expect("json");
        let legacy = sealer.codec.seal(&plaintext);
        assert!(
            sealer.opens(&legacy, row(2, 1)),
            "an unbound row still opens"
        );
        let bound = sealer
            .reseal(&legacy, row(2, 1))
            .expect("reseal")
            .expect("bound now, under the same key");
        assert!(sealer.opens(&bound, row(2, 1)));
        assert!(!sealer.opens(&bound, row(3, 1)));
        assert_eq!(sealer.reseal(&bound, row(2, 1)).expect("reseal"), None);
    }

    #[test]
    fn keys_rotate_and_a_missing_key_is_named() {
        let old = Sealer::from_settings(&settings("k1", &[("k1", 1)])).expect("sealer");
        let (public, sealed) = old.seal(&spec(), row(2, 1));
        let both = Sealer::from_settings(&settings("k2", &[("k1", 1), ("k2", 2)])).expect("two");
        let resealed = both
            .reseal(&sealed, row(2, 1))
            .expect("reseal")
            .expect("moved to k2");
        assert_eq!(
            both.reseal(&resealed, row(2, 1)).expect("reseal"),
            None,
            "already on k2"
        );
        let new = Sealer::from_settings(&settings("k2", &[("k2", 2)])).expect("sealer");
        assert!(new.open(public.clone(), &resealed, row(2, 1)).is_ok());
        let error = new
            .open(public, &sealed, row(2, 1))
            .err()
            .expect("k1 is gone");
        assert!(error.to_string().contains("`k1`"), "{error}");
    }
}
