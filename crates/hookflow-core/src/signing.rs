//! Standard Webhooks signing (<https://www.standardwebhooks.com/>), through the reference
//! `standardwebhooks` crate: `webhook-signature` is `v1,<base64 HMAC-SHA256 of
//! "{webhook-id}.{webhook-timestamp}.{body}">`.
//!
//! During a secret rotation a destination holds its new and its previous secret; the
//! header then carries one signature per secret, space-separated (the spec allows
//! several), so a receiver verifying with either accepts.

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
            // The error types of the crate never include the key, so they are safe to
            // surface.
            standardwebhooks::Webhook::new(secret.expose())
                .and_then(|webhook| webhook.sign(webhook_id, timestamp, body))
                .map_err(|e| SigningError(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_verifies_the_signature_with_the_same_secret() {
        let secret =
            SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"type":"action.performed"}"#;
        let signature = signature_header([&secret], "d-1:abc", now, body).expect("sign");
        assert!(signature.starts_with("v1,"));

        let mut headers = http_headers(&[
            ("webhook-id", "d-1:abc".to_owned()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", signature),
        ]);
        let receiver = standardwebhooks::Webhook::new(secret.expose()).expect("receiver");
        receiver.verify(body, &headers).expect("valid signature");

        headers.insert("webhook-id", "d-1:other".parse().expect("header"));
        assert!(
            receiver.verify(body, &headers).is_err(),
            "the id is part of what is signed"
        );
    }

    #[test]
    fn during_a_rotation_receivers_with_either_secret_accept() {
        let new = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("new");
        let old = SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("old");
        let stranger =
            SigningSecret::parse("whsec_dGhpcyBpcyBub3QgdGhlIGtleSBvZiBhbnlvbmU=").expect("other");
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
        for (secret, accepts) in [(&new, true), (&old, true), (&stranger, false)] {
            let receiver = standardwebhooks::Webhook::new(secret.expose()).expect("receiver");
            assert_eq!(receiver.verify(body, &headers).is_ok(), accepts);
        }
    }

    fn http_headers(pairs: &[(&'static str, String)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }
}
