//! A destination as the catalog stores it: its spec without secrets (what an operator is
//! shown, readable without any key) and its secrets sealed with the catalog's key ring
//! (the signing secrets, the header values and the full URL, which may hold credentials or,
//! for a chat service, a secret path). The key ring is the payload codec's mechanism
//! ([`EncryptionCodec`]): AES-256-GCM, the key's id inside every sealed value, so keys
//! rotate (`hookflow destinations reseal` moves every row to the current key).

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
}

/// Seals and opens destinations' secrets.
#[derive(Clone)]
pub struct Sealer {
    codec: EncryptionCodec,
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
        Ok(Sealer { codec })
    }

    /// `spec` as stored: its spec without secrets, and its secrets sealed.
    pub fn seal(&self, spec: &DestinationSpec) -> (serde_json::Value, Vec<u8>) {
        let secrets = Secrets {
            url: spec.url.clone(),
            secret: spec.secret.clone(),
            previous_secret: spec.previous_secret.clone(),
            headers: spec.headers.clone(),
        };
        // Serialising plain strings and maps cannot fail.
        let plaintext = serde_json::to_vec(&secrets).unwrap_or_default();
        let public = serde_json::to_value(spec.redacted()).unwrap_or_default();
        (public, self.codec.seal(&plaintext))
    }

    /// The spec stored as `public` and `sealed`, whole again.
    pub fn open(
        &self,
        public: serde_json::Value,
        sealed: &[u8],
    ) -> Result<DestinationSpec, UnsealError> {
        let mut spec: DestinationSpec =
            serde_json::from_value(public).map_err(|e| UnsealError::Spec(e.to_string()))?;
        let secrets: Secrets = serde_json::from_slice(&self.codec.open(sealed)?)
            .map_err(|e| UnsealError::Spec(format!("sealed part: {e}")))?;
        spec.url = secrets.url;
        spec.secret = secrets.secret;
        spec.previous_secret = secrets.previous_secret;
        spec.headers = secrets.headers;
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

    /// Whether `sealed` opens with this key ring.
    pub fn opens(&self, sealed: &[u8]) -> bool {
        self.codec.open(sealed).is_ok()
    }

    /// `sealed` sealed again under the current key, or `None` when it already is.
    pub fn reseal(&self, sealed: &[u8]) -> Result<Option<Vec<u8>>, CodecError> {
        if EncryptionCodec::sealed_with(sealed).as_deref() == self.codec.current_key() {
            return Ok(None);
        }
        Ok(Some(self.codec.seal(&self.codec.open(sealed)?)))
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
        }
    }

    fn spec() -> DestinationSpec {
        serde_json::from_value(serde_json::json!({
            "id": "d", "team_id": 2, "url": "https://u:pw@hooks.example.com/x",
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "headers": {"Authorization": "Bearer t0ken"},
        }))
        .expect("spec")
    }

    #[test]
    fn a_spec_round_trips_and_its_stored_form_holds_no_secret() {
        let sealer = Sealer::from_settings(&settings("k1", &[("k1", 1)])).expect("sealer");
        let (public, sealed) = sealer.seal(&spec());
        let stored = format!("{public} {}", String::from_utf8_lossy(&sealed));
        for secret in ["pw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "t0ken"] {
            assert!(!stored.contains(secret), "{secret} in {stored}");
        }
        assert!(sealer.open(public, &sealed).expect("opened") == spec());
    }

    #[test]
    fn keys_rotate_and_a_missing_key_is_named() {
        let old = Sealer::from_settings(&settings("k1", &[("k1", 1)])).expect("sealer");
        let (public, sealed) = old.seal(&spec());
        let both = Sealer::from_settings(&settings("k2", &[("k1", 1), ("k2", 2)])).expect("two");
        let resealed = both.reseal(&sealed).expect("reseal").expect("moved to k2");
        assert_eq!(
            both.reseal(&resealed).expect("reseal"),
            None,
            "already on k2"
        );
        let new = Sealer::from_settings(&settings("k2", &[("k2", 2)])).expect("sealer");
        assert!(new.open(public.clone(), &resealed).is_ok());
        let error = new.open(public, &sealed).err().expect("k1 is gone");
        assert!(error.to_string().contains("`k1`"), "{error}");
    }
}
