//! Standard Webhooks signing (<https://www.standardwebhooks.com/>) of
//! `"{webhook-id}.{webhook-timestamp}.{body}"`: with a shared secret, through the reference
//! `standardwebhooks` crate, `v1,<base64 HMAC-SHA256>`; with an ed25519 key, `v1a,<base64
//! signature>` (the spec's asymmetric scheme, which the reference libraries do not
//! implement: signed with `ed25519-dalek`).
//!
//! During a secret rotation a destination holds its new and its previous secret, of either
//! kind; the header then carries one signature per secret, space-separated (the spec allows
//! several), so a receiver verifying with either accepts, and one moving from a shared
//! secret to a key pair (or back) keeps verifying through the switch.

use crate::credentials::SigningSecret;

/// Why a body could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the delivery: {0}")]
pub struct SigningError(String);

/// The `webhook-signature` header value for one attempt: one signature per secret, in
/// order, space-separated.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a SigningSecret>,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let signatures = secrets
        .into_iter()
        .map(|secret| {
            secret
                .sign(webhook_id, timestamp, body)
                .map_err(SigningError)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

/// Checks that one of the `v1a` signatures in `header` is `public_key`'s (`whpk_` + base64)
/// over `{webhook_id}.{timestamp}.{body}`: what a receiver of an ed25519-signed destination
/// does (`hookflow receive`). The timestamp's age is the caller's to check.
pub fn verify_v1a(
    public_key: &str,
    webhook_id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
) -> Result<(), SigningError> {
    use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let key: [u8; 32] = public_key
        .strip_prefix("whpk_")
        .and_then(|key| BASE64.decode(key).ok())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| SigningError("the public key is not `whpk_` + base64 of 32 bytes".into()))?;
    let key = VerifyingKey::from_bytes(&key)
        .map_err(|_| SigningError("the public key is not an ed25519 point".into()))?;
    let mut signed = format!("{webhook_id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let verified = header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1a,"))
        .filter_map(|signature| BASE64.decode(signature).ok())
        .filter_map(|signature| Signature::from_slice(&signature).ok())
        .any(|signature| key.verify(&signed, &signature).is_ok());
    if verified {
        Ok(())
    } else {
        Err(SigningError("no v1a signature of this key".into()))
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD as BASE64};

    use super::*;

    #[test]
    fn a_receiver_verifies_the_signature_with_the_same_secret() {
        let raw = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let secret = SigningSecret::parse(raw).expect("secret");
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"type":"action.performed"}"#;
        let signature = signature_header([&secret], "d-1:abc", now, body).expect("sign");
        assert!(signature.starts_with("v1,"));

        let mut headers = http_headers(&[
            ("webhook-id", "d-1:abc".to_owned()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", signature),
        ]);
        let receiver = standardwebhooks::Webhook::new(raw).expect("receiver");
        receiver.verify(body, &headers).expect("valid signature");

        headers.insert("webhook-id", "d-1:other".parse().expect("header"));
        assert!(
            receiver.verify(body, &headers).is_err(),
            "the id is part of what is signed"
        );
    }

    #[test]
    fn during_a_rotation_receivers_with_either_secret_accept() {
        let raws = [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_dGhpcyBpcyBub3QgdGhlIGtleSBvZiBhbnlvbmU=",
        ];
        let [new, old, _] = raws.map(|raw| SigningSecret::parse(raw).expect("secret"));
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"type":"action.performed"}"#;
        let signature = signature_header([&new, &old], "d-1:abc", now, body).expect("sign");
        assert_eq!(signature.split(' ').count(), 2);
        assert!(signature.split(' ').all(|s| s.starts_with("v1,")));
        let headers = http_headers(&[
            ("webhook-id", "d-1:abc".to_owned()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", signature),
        ]);
        for (raw, accepts) in raws.into_iter().zip([true, true, false]) {
            let receiver = standardwebhooks::Webhook::new(raw).expect("receiver");
            assert_eq!(receiver.verify(body, &headers).is_ok(), accepts);
        }
    }

    /// RFC 8032's first test vector pins the seed and public key encodings (the signature
    /// is checked by an independent implementation in tests/e2e/signatures.rs).
    const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn whsk(hex_seed: &str) -> String {
        let bytes: Vec<u8> = (0..hex_seed.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex_seed[i..i + 2], 16).expect("hex"))
            .collect();
        format!("whsk_{}", BASE64.encode(bytes))
    }

    #[test]
    fn an_ed25519_key_signs_v1a_that_its_public_key_verifies() {
        use ed25519_dalek::{Signature, Verifier, VerifyingKey};
        let secret = SigningSecret::parse(&whsk(RFC8032_SEED)).expect("key");
        let public = secret.public_key().expect("a public key");
        assert_eq!(public, whsk(RFC8032_PUBLIC).replace("whsk_", "whpk_"));
        let now = 1_700_000_000;
        let body = br#"{"type":"action.performed"}"#;
        let header = signature_header([&secret], "d-1:abc", now, body).expect("sign");
        let signature = header.strip_prefix("v1a,").expect("v1a");
        let signature =
            Signature::from_slice(&BASE64.decode(signature).expect("base64")).expect("64 bytes");
        let key_bytes: [u8; 32] = BASE64
            .decode(public.trim_start_matches("whpk_"))
            .expect("base64")
            .try_into()
            .expect("32 bytes");
        let key = VerifyingKey::from_bytes(&key_bytes).expect("key");
        let signed = format!(
            "d-1:abc.{now}.{}",
            std::str::from_utf8(body).expect("utf-8")
        );
        assert!(key.verify(signed.as_bytes(), &signature).is_ok());
        let other = format!(
            "d-1:other.{now}.{}",
            std::str::from_utf8(body).expect("utf-8")
        );
        assert!(key.verify(other.as_bytes(), &signature).is_err());
        let now = now.to_string();
        assert!(verify_v1a(&public, "d-1:abc", &now, body, &header).is_ok());
        assert!(verify_v1a(&public, "d-1:other", &now, body, &header).is_err());
        assert!(verify_v1a("whpk_AAAA", "d-1:abc", &now, body, &header).is_err());
    }

    #[test]
    fn a_switch_to_a_key_pair_signs_with_both_and_the_shared_one_still_verifies() {
        let shared = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let secrets = [
            SigningSecret::parse(&whsk(RFC8032_SEED)).expect("key"),
            SigningSecret::parse(shared).expect("shared"),
        ];
        let now = chrono::Utc::now().timestamp();
        let body = b"{}";
        let header = signature_header(&secrets, "d-1:abc", now, body).expect("sign");
        let kinds: Vec<&str> = header
            .split(' ')
            .map(|s| s.split(',').next().unwrap_or_default())
            .collect();
        assert_eq!(kinds, ["v1a", "v1"]);
        let headers = http_headers(&[
            ("webhook-id", "d-1:abc".to_owned()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", header),
        ]);
        let receiver = standardwebhooks::Webhook::new(shared).expect("receiver");
        receiver
            .verify(body, &headers)
            .expect("the reference library skips v1a");
    }

    #[test]
    fn malformed_keys_are_refused_with_what_is_wrong() {
        let seed_and_public = format!("{RFC8032_SEED}{RFC8032_PUBLIC}");
        assert!(SigningSecret::parse(&whsk(&seed_and_public)).is_ok());
        let wrong_public = format!("{RFC8032_SEED}{}", "00".repeat(32));
        let refused = |raw: &str| SigningSecret::parse(raw).err().unwrap_or_default();
        assert!(refused(&whsk(&wrong_public)).contains("public half"));
        assert!(refused(&whsk("00")).contains("32-byte"));
        assert!(refused("whsk_not base64!").contains("32-byte"));
        assert!(refused("sk_123").contains("`whsk_`"));
        assert_eq!(
            SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .expect("shared")
                .public_key(),
            None
        );
    }

    fn http_headers(pairs: &[(&'static str, String)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }
}
