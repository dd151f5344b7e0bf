//! A destination's credentials: its Standard Webhooks signing secrets (shared or ed25519),
//! its OAuth2 client (the token endpoint and client secret hookflow gets bearer tokens with)
//! and the request headers it sets (which may carry an `Authorization` value). No type's
//! `Debug` shows a secret, so a credential cannot leak through a log line or an error.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};

/// A Standard Webhooks signing secret: a shared one (`whsec_` + base64; signatures `v1`,
/// HMAC-SHA256) or an ed25519 secret key (`whsk_` + base64 of its 32-byte seed, or of the
/// seed followed by its public key; signatures `v1a`), whose public key
/// ([`Self::public_key`], `whpk_` + base64) the receiver verifies with. Its `Debug` never
/// shows the key, so a secret cannot leak through a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Key);

#[derive(Clone, PartialEq, Eq)]
enum Key {
    /// The `whsec_` text, as the `standardwebhooks` crate takes it.
    Shared(String),
    /// The ed25519 seed (boxed: most destinations sign with a shared secret).
    Ed25519(Box<[u8; ed25519_dalek::SECRET_KEY_LENGTH]>),
}

impl SigningSecret {
    /// Validates the `whsec_<base64>` or `whsk_<base64>` form.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if let Some(key) = raw.strip_prefix("whsk_") {
            return parse_ed25519(key).map(|seed| SigningSecret(Key::Ed25519(Box::new(seed))));
        }
        let Some(key) = raw.strip_prefix("whsec_") else {
            return Err("must start with `whsec_` (a shared secret) or `whsk_` (an ed25519 key)");
        };
        if key.is_empty() || standardwebhooks::Webhook::new(raw).is_err() {
            return Err("must be `whsec_` followed by base64");
        }
        Ok(SigningSecret(Key::Shared(raw.to_owned())))
    }

    /// The `webhook-signature` entry of `content` (`{id}.{timestamp}.{body}`):
    /// `v1,<base64>` or `v1a,<base64>`.
    pub(crate) fn sign(
        &self,
        webhook_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<String, String> {
        match &self.0 {
            // The crate's errors never include the key, so they are safe to surface.
            Key::Shared(secret) => standardwebhooks::Webhook::new(secret)
                .and_then(|webhook| webhook.sign(webhook_id, timestamp, body))
                .map_err(|e| e.to_string()),
            Key::Ed25519(seed) => {
                use ed25519_dalek::Signer;
                let mut content = format!("{webhook_id}.{timestamp}.").into_bytes();
                content.extend_from_slice(body);
                let signature = ed25519_dalek::SigningKey::from_bytes(seed).sign(&content);
                Ok(format!("v1a,{}", BASE64.encode(signature.to_bytes())))
            }
        }
    }

    /// The public key receivers verify `v1a` signatures with (`whpk_` + base64); `None`
    /// for a shared secret.
    pub fn public_key(&self) -> Option<String> {
        match &self.0 {
            Key::Shared(_) => None,
            Key::Ed25519(seed) => {
                let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
                Some(format!("whpk_{}", BASE64.encode(public.as_bytes())))
            }
        }
    }
}

/// The seed of a `whsk_` key: 32 bytes, or 64 whose second half is the seed's public key
/// (the form many libraries write a key pair in).
fn parse_ed25519(key: &str) -> Result<[u8; ed25519_dalek::SECRET_KEY_LENGTH], &'static str> {
    const MALFORMED: &str = "must be `whsk_` followed by the standard, padded base64 of a \
                             32-byte ed25519 seed (or of the seed and its 32-byte public key)";
    let bytes = BASE64.decode(key).map_err(|_| MALFORMED)?;
    let seed: [u8; ed25519_dalek::SECRET_KEY_LENGTH] = bytes
        .get(..ed25519_dalek::SECRET_KEY_LENGTH)
        .and_then(|s| s.try_into().ok())
        .ok_or(MALFORMED)?;
    match bytes.len() {
        32 => Ok(seed),
        64 => {
            let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
            if public.as_bytes()[..] == bytes[32..] {
                Ok(seed)
            } else {
                Err("is a `whsk_` key pair whose public half is not its seed's public key")
            }
        }
        _ => Err(MALFORMED),
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// Request headers that may carry credentials: their `Debug` shows the names only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretHeaders(Vec<(String, String)>);

impl SecretHeaders {
    /// Headers already checked (names a destination may set, values without line breaks).
    pub(crate) fn new(headers: Vec<(String, String)>) -> Self {
        SecretHeaders(headers)
    }

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

/// How a destination's OAuth2 client authenticates to its token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (`client_secret_basic`, what every token
    /// endpoint must accept).
    #[default]
    Basic,
    /// The client id and secret in the form body (`client_secret_post`).
    Body,
}

/// A destination's OAuth2 client-credentials grant: hookflow fetches an access token from
/// `token_url` and sends it as `Authorization: Bearer`. Its `Debug` never shows the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuth2Client {
    /// The token endpoint (under the SSRF guard like every request hookflow makes).
    pub token_url: url::Url,
    /// The client id.
    pub client_id: String,
    client_secret: String,
    /// The scopes asked for (none: the server's default).
    pub scopes: Vec<String>,
    /// How the client authenticates.
    pub client_auth: ClientAuth,
}

impl OAuth2Client {
    /// A client of already checked values.
    pub(crate) fn new(
        token_url: url::Url,
        client_id: String,
        client_secret: String,
        scopes: Vec<String>,
        client_auth: ClientAuth,
    ) -> Self {
        OAuth2Client {
            token_url,
            client_id,
            client_secret,
            scopes,
            client_auth,
        }
    }

    /// The client secret, for the token request only.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// A digest of every value: a token fetched with equal settings may be reused, one
    /// fetched before a change (of the secret, say) may not.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        let auth = match self.client_auth {
            ClientAuth::Basic => "basic",
            ClientAuth::Body => "body",
        };
        let scopes = self.scopes.join(" ");
        for part in [
            self.token_url.as_str(),
            &self.client_id,
            &self.client_secret,
            &scopes,
            auth,
        ] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
        digest.finalize().into()
    }
}

impl fmt::Debug for OAuth2Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Client")
            .field(
                "token_url",
                &crate::redaction::redact_url(self.token_url.as_str()),
            )
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}
