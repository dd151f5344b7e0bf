//! Standard Webhooks signing (<https://www.standardwebhooks.com/>), through the reference
//! `standardwebhooks` crate: `webhook-signature` is `v1,<base64 HMAC-SHA256 of
//! "{webhook-id}.{webhook-timestamp}.{body}">`.

use crate::destination::SigningSecret;

/// Why a body could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the delivery: {0}")]
pub struct SigningError(String);

/// The `webhook-signature` header value for one attempt.
pub fn signature_header(
    secret: &SigningSecret,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    // The error types of the crate never include the key, so they are safe to surface.
    let webhook =
        standardwebhooks::Webhook::new(secret.expose()).map_err(|e| SigningError(e.to_string()))?;
    webhook
        .sign(webhook_id, timestamp, body)
        .map_err(|e| SigningError(e.to_string()))
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
        let signature = signature_header(&secret, "d-1:abc", now, body).expect("sign");
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

    fn http_headers(pairs: &[(&'static str, String)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }
}
