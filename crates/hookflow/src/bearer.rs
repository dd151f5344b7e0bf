//! Bearer-token checks of the admin API and the codec server: one comparison, in constant
//! time, so neither can be timed into revealing its token, or its length.

use axum::http::{HeaderMap, header::AUTHORIZATION};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `headers` carry `Authorization: Bearer <token>`. An empty token never matches.
pub fn presents(headers: &HeaderMap, token: &str) -> bool {
    constant_time_eq(
        presented(headers).unwrap_or_default().as_bytes(),
        token.as_bytes(),
    )
}

/// The bearer token `headers` carry, if any.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Compares the two's digests in constant time (`subtle`): the time taken reveals neither
/// the token nor its length, which a comparison of the bytes themselves stops at.
fn constant_time_eq(presented: &[u8], token: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(presented), Sha256::digest(token));
    !token.is_empty() && bool::from(a.as_slice().ct_eq(b.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_in_full() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-tokeX", b"secret-token"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(
            !constant_time_eq(b"", b""),
            "an empty token never authorizes"
        );
    }

    #[test]
    fn only_a_bearer_header_with_the_token_matches() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().expect("header"));
            headers
        };
        assert!(presents(&with("Bearer secret-token"), "secret-token"));
        assert!(!presents(&with("Basic secret-token"), "secret-token"));
        assert!(!presents(&with("Bearer other"), "secret-token"));
        assert!(!presents(&HeaderMap::new(), "secret-token"));
    }
}
