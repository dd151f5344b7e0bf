//! Payload encryption: every payload hookflow writes to Temporal (workflow inputs and
//! results, activity inputs and results, heartbeats, memos) passes through
//! [`EncryptionCodec`] on its way out and back, so event data never sits in clear text in
//! Temporal's store.
//!
//! A payload is encrypted whole (its metadata and data, protobuf-encoded) with AES-256-GCM
//! under a fresh random nonce, and replaced by one whose metadata says
//! `encoding: binary/encrypted` and `encryption-key-id: <id>`, and whose data is the nonce
//! followed by the ciphertext. Keys rotate: new payloads use the current key; older ones
//! stay readable for as long as their key is configured, and fail with an error naming the
//! missing key id once it is not. Payloads that are not encrypted (written before the codec
//! was turned on) pass through unchanged.
//!
//! A value sealed for storage outside Temporal (the destination catalog's secrets) may be
//! bound to what it belongs to: the binding is AES-GCM's associated data, and the sealed
//! payload says `bound: 1`, so it opens only for that binding (copied onto another row, it
//! is refused).

use std::{collections::BTreeMap, fmt, sync::Arc};

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng, Payload as Sealed},
};
use base64::Engine;
use futures::future::BoxFuture;
use hookflow_core::Secret;
use prost::Message;
use serde::Deserialize;
use temporalio_common::data_converters::{
    DataConverter, DefaultFailureConverter, PayloadCodec, PayloadConversionError, PayloadConverter,
    SerializationContextData,
};
pub use temporalio_common::protos::temporal::api::common::v1::Payload;

/// The `encoding` of an encrypted payload.
pub const ENCRYPTED_ENCODING: &[u8] = b"binary/encrypted";
/// The metadata key naming the key a payload was encrypted with.
pub const KEY_ID: &str = "encryption-key-id";
/// Metadata key of a sealed value bound to what it was sealed for (AES-GCM associated data).
const BOUND: &str = "bound";
const NONCE_LEN: usize = 12;

/// `[temporal.codec]`: payload encryption.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecSettings {
    /// Whether new payloads are encrypted. With keys configured and this off, payloads are
    /// still decrypted: the first step of turning encryption on across a rolling deploy.
    #[serde(default)]
    pub enabled: bool,
    /// The id of the key new payloads are encrypted with.
    #[serde(default)]
    pub current_key: String,
    /// Every key that may be needed to read payloads: id → 32 bytes, base64. Set them in
    /// the environment (`HOOKFLOW_TEMPORAL__CODEC__KEYS__<ID>`), never in a committed file.
    #[serde(default)]
    pub keys: BTreeMap<String, Secret>,
}

/// Why the codec cannot be built or a payload cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The settings are unusable; names the key at fault.
    #[error("temporal.codec: {0}")]
    Settings(String),
    /// A payload was encrypted with a key that is not configured.
    #[error(
        "payload encrypted with key `{0}`, which is not configured: add it to temporal.codec.keys"
    )]
    UnknownKey(String),
    /// A payload could not be decrypted (wrong key material, or tampered with).
    #[error("payload encrypted with key `{0}` could not be decrypted: {1}")]
    Corrupt(String, &'static str),
}

/// AES-256-GCM over whole payloads, with rotating keys.
#[derive(Clone)]
pub struct EncryptionCodec {
    /// The key new payloads are encrypted with; `None` to decrypt only.
    current: Option<String>,
    keys: Arc<BTreeMap<String, Aes256Gcm>>,
}

impl fmt::Debug for EncryptionCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionCodec")
            .field("current", &self.current)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EncryptionCodec {
    /// The codec of `settings`: `None` without keys (encryption off), one that only
    /// decrypts with keys but `enabled` off, one that encrypts with `current_key` too
    /// otherwise.
    pub fn from_settings(settings: &CodecSettings) -> Result<Option<Self>, CodecError> {
        if settings.keys.is_empty() && !settings.enabled {
            return Ok(None);
        }
        let mut keys = BTreeMap::new();
        for (id, key) in &settings.keys {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.expose().trim())
                .ok()
                .filter(|bytes| bytes.len() == 32)
                .ok_or_else(|| {
                    CodecError::Settings(format!("keys.{id} must be 32 bytes, base64-encoded"))
                })?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| CodecError::Settings(format!("keys.{id} is not an AES-256 key")))?;
            keys.insert(id.clone(), cipher);
        }
        if settings.enabled && !keys.contains_key(&settings.current_key) {
            return Err(CodecError::Settings(format!(
                "current_key `{}` must name one of the keys",
                settings.current_key
            )));
        }
        Ok(Some(EncryptionCodec {
            current: settings.enabled.then(|| settings.current_key.clone()),
            keys: Arc::new(keys),
        }))
    }

    /// A data converter with the default JSON payloads and this codec.
    pub fn data_converter(self) -> DataConverter {
        DataConverter::new(
            PayloadConverter::default(),
            DefaultFailureConverter::default(),
            self,
        )
    }

    /// `payload` encrypted with the current key; unchanged by a codec that only decrypts.
    pub fn encrypt(&self, payload: &Payload) -> Payload {
        self.encrypt_bound(payload, None)
    }

    /// `payload` encrypted with the current key and, when given, bound to `binding`.
    fn encrypt_bound(&self, payload: &Payload, binding: Option<&[u8]>) -> Payload {
        let Some((current, cipher)) = self
            .current
            .as_ref()
            .and_then(|id| self.keys.get_key_value(id))
        else {
            return payload.clone();
        };
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce cannot fail: the plaintext is in memory.
        let plaintext = payload.encode_to_vec();
        let sealed = Sealed {
            msg: &plaintext,
            aad: binding.unwrap_or_default(),
        };
        let ciphertext = cipher.encrypt(&nonce, sealed).unwrap_or_default();
        let mut data = nonce.to_vec();
        data.extend(ciphertext);
        let mut metadata: std::collections::HashMap<String, Vec<u8>> = [
            ("encoding".to_owned(), ENCRYPTED_ENCODING.to_vec()),
            (KEY_ID.to_owned(), current.as_bytes().to_vec()),
        ]
        .into();
        if binding.is_some() {
            metadata.insert(BOUND.to_owned(), b"1".to_vec());
        }
        Payload {
            metadata,
            data,
            external_payloads: Vec::new(),
        }
    }

    /// `payload` decrypted, or unchanged when it is not encrypted.
    pub fn decrypt(&self, payload: Payload) -> Result<Payload, CodecError> {
        self.decrypt_bound(payload, None)
    }

    /// `payload` decrypted; a bound one only with the `binding` it was sealed with.
    fn decrypt_bound(
        &self,
        payload: Payload,
        binding: Option<&[u8]>,
    ) -> Result<Payload, CodecError> {
        if payload.metadata.get("encoding").map(Vec::as_slice) != Some(ENCRYPTED_ENCODING) {
            return Ok(payload);
        }
        let id = payload
            .metadata
            .get(KEY_ID)
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .unwrap_or_default();
        let cipher = self
            .keys
            .get(&id)
            .ok_or_else(|| CodecError::UnknownKey(id.clone()))?;
        if payload.data.len() < NONCE_LEN {
            return Err(CodecError::Corrupt(id, "too short"));
        }
        // What it is bound to, if it is: sealed before binding existed, it is not.
        let aad = match (payload.metadata.contains_key(BOUND), binding) {
            (false, _) => &[][..],
            (true, Some(binding)) => binding,
            (true, None) => return Err(CodecError::Corrupt(id, "bound, and no binding given")),
        };
        let (nonce, ciphertext) = payload.data.split_at(NONCE_LEN);
        let sealed = Sealed {
            msg: ciphertext,
            aad,
        };
        let plaintext = cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| CodecError::Corrupt(id.clone(), "authentication failed"))?;
        Payload::decode(plaintext.as_slice())
            .map_err(|_| CodecError::Corrupt(id, "not a payload inside"))
    }
}

impl EncryptionCodec {
    /// `plaintext` sealed under the current key, as bytes to store: an encrypted payload,
    /// protobuf-encoded, so a reader knows the key it needs. The same key ring and format
    /// as Temporal's payloads (the destination catalog seals secrets with it).
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        self.seal_bound(plaintext, None)
    }

    /// `plaintext` sealed as [`EncryptionCodec::seal`] does, bound to `binding` when given:
    /// it then opens only with the same binding.
    pub fn seal_bound(&self, plaintext: &[u8], binding: Option<&[u8]>) -> Vec<u8> {
        let plain = Payload {
            metadata: [("encoding".to_owned(), b"binary/plain".to_vec())].into(),
            data: plaintext.to_vec(),
            external_payloads: Vec::new(),
        };
        self.encrypt_bound(&plain, binding).encode_to_vec()
    }

    /// What [`EncryptionCodec::seal`] sealed: an error names a key that is not configured.
    /// Only an encrypted payload opens: unlike [`EncryptionCodec::decrypt`], which passes
    /// through what was never encrypted, a sealed value in clear is refused.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.open_bound(sealed, None)
    }

    /// What [`EncryptionCodec::seal_bound`] sealed: a bound value opens only with its
    /// `binding`; one sealed unbound (before binding existed) opens with or without.
    pub fn open_bound(&self, sealed: &[u8], binding: Option<&[u8]>) -> Result<Vec<u8>, CodecError> {
        let payload = Payload::decode(sealed)
            .map_err(|_| CodecError::Corrupt(String::new(), "not a sealed payload"))?;
        if payload.metadata.get("encoding").map(Vec::as_slice) != Some(ENCRYPTED_ENCODING) {
            return Err(CodecError::Corrupt(String::new(), "not encrypted"));
        }
        Ok(self.decrypt_bound(payload, binding)?.data)
    }

    /// Whether `sealed` is bound to what it was sealed for.
    pub fn is_bound(sealed: &[u8]) -> bool {
        Payload::decode(sealed).is_ok_and(|payload| payload.metadata.contains_key(BOUND))
    }

    /// The id of the key `sealed` was sealed with (`None`: not encrypted, or unreadable).
    pub fn sealed_with(sealed: &[u8]) -> Option<String> {
        let payload = Payload::decode(sealed).ok()?;
        let id = payload.metadata.get(KEY_ID)?;
        Some(String::from_utf8_lossy(id).into_owned())
    }

    /// Whether the key `key_id` is configured.
    pub fn knows(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// The id of the key new payloads are sealed with.
    pub fn current_key(&self) -> Option<&str> {
        self.current.as_deref()
    }
}

impl PayloadCodec for EncryptionCodec {
    fn encode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let encoded = payloads.iter().map(|p| self.encrypt(p)).collect();
        Box::pin(async move { Ok(encoded) })
    }

    fn decode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let decoded = payloads
            .into_iter()
            .map(|p| self.decrypt(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PayloadConversionError::EncodingError(Box::new(e)));
        Box::pin(async move { decoded })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Secret {
        Secret::from(
            base64::engine::general_purpose::STANDARD
                .encode([byte; 32])
                .as_str(),
        )
    }

    fn codec(current: &str, keys: &[(&str, u8)]) -> EncryptionCodec {
        let settings = CodecSettings {
            enabled: true,
            current_key: current.into(),
            keys: keys
                .iter()
                .map(|(id, b)| (id.to_string(), key(*b)))
                .collect(),
        };
        EncryptionCodec::from_settings(&settings)
            .expect("settings")
            .expect("enabled")
    }

    fn plain() -> Payload {
        Payload {
            metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
            data: br#"{"email":"a@example.com"}"#.to_vec(),
            external_payloads: Vec::new(),
        }
    }

    #[test]
    fn a_payload_round_trips_and_hides_its_data() {
        let codec = codec("k1", &[("k1", 1)]);
        let sealed = codec.encrypt(&plain());
        assert_eq!(sealed.metadata["encoding"], ENCRYPTED_ENCODING);
        assert_eq!(sealed.metadata[KEY_ID], b"k1");
        let text = String::from_utf8_lossy(&sealed.data);
        assert!(!text.contains("example.com"));
        assert_ne!(
            codec.encrypt(&plain()).data,
            sealed.data,
            "a fresh nonce each time"
        );
        assert_eq!(codec.decrypt(sealed).expect("decrypt"), plain());
        assert_eq!(
            codec.decrypt(plain()).expect("as is"),
            plain(),
            "plain passes through"
        );
    }

    #[test]
    fn a_sealed_value_opens_only_when_encrypted() {
        let codec = codec("k1", &[("k1", 1)]);
        let sealed = codec.seal(b"secret");
        assert_eq!(codec.open(&sealed).expect("open"), b"secret");
        let in_clear = plain().encode_to_vec();
        assert!(matches!(
            codec.open(&in_clear),
            Err(CodecError::Corrupt(_, "not encrypted"))
        ));
    }

    #[test]
    fn retired_keys_decrypt_while_configured_and_fail_clearly_after() {
        let old = codec("k1", &[("k1", 1)]).encrypt(&plain());
        let rotated = codec("k2", &[("k1", 1), ("k2", 2)]);
        assert_eq!(
            rotated.encrypt(&plain()).metadata[KEY_ID],
            b"k2",
            "new writes use k2"
        );
        assert_eq!(
            rotated.decrypt(old.clone()).expect("k1 still configured"),
            plain()
        );
        let retired = codec("k2", &[("k2", 2)]);
        let error = retired.decrypt(old.clone()).expect_err("k1 gone");
        assert!(
            matches!(&error, CodecError::UnknownKey(id) if id == "k1"),
            "{error}"
        );
        let wrong = codec("k1", &[("k1", 9)]);
        assert!(matches!(
            wrong.decrypt(old),
            Err(CodecError::Corrupt(_, "authentication failed"))
        ));
    }

    #[test]
    fn settings_are_checked() {
        let mut settings = CodecSettings {
            enabled: true,
            current_key: "k1".into(),
            keys: [("k1".to_owned(), Secret::from("c2hvcnQ="))].into(),
        };
        let error = EncryptionCodec::from_settings(&settings).expect_err("short key");
        assert!(
            error.to_string().contains("keys.k1 must be 32 bytes"),
            "{error}"
        );
        settings.keys.insert("k1".into(), key(1));
        settings.current_key = "k9".into();
        assert!(EncryptionCodec::from_settings(&settings).is_err());
        settings.enabled = false;
        let decrypt_only = EncryptionCodec::from_settings(&settings)
            .expect("keys without encryption")
            .expect("a codec that decrypts");
        assert_eq!(decrypt_only.encrypt(&plain()), plain(), "writes stay plain");
        let sealed = codec("k1", &[("k1", 1)]).encrypt(&plain());
        assert_eq!(decrypt_only.decrypt(sealed).expect("reads"), plain());
        settings.keys.clear();
        assert!(
            EncryptionCodec::from_settings(&settings)
                .expect("off")
                .is_none()
        );
    }

    #[test]
    fn a_bound_value_opens_only_with_its_binding_marker_or_not() {
        let codec = codec("k1", &[("k1", 1)]);
        let sealed = codec.seal_bound(b"secret", Some(b"row a"));
        assert!(EncryptionCodec::is_bound(&sealed));
        assert_eq!(
            codec.open_bound(&sealed, Some(b"row a")).expect("its row"),
            b"secret"
        );
        assert!(codec.open_bound(&sealed, Some(b"row b")).is_err());
        assert!(codec.open_bound(&sealed, None).is_err());
        // The marker is outside the ciphertext; stripping it opens nothing: the binding
        // is authenticated by AES-GCM, not by the marker.
        let mut stripped = Payload::decode(sealed.as_slice()).expect("payload");
        stripped.metadata.remove(BOUND);
        let stripped = stripped.encode_to_vec();
        assert!(!EncryptionCodec::is_bound(&stripped));
        assert!(codec.open_bound(&stripped, Some(b"row b")).is_err());
        assert!(codec.open_bound(&stripped, None).is_err());
        // Unbound (sealed before binding) opens with any binding.
        let unbound = codec.seal(b"secret");
        assert_eq!(
            codec.open_bound(&unbound, Some(b"row b")).expect("unbound"),
            b"secret"
        );
    }
}
