//! Bearer-token checks of the admin API and the codec server: one comparison, in constant
//! time, so neither can be timed into revealing its token.

use axum::http::{HeaderMap, header::AUTHORIZATION};

/// Whether `headers` carry `Authorization: Bearer <token>`. An empty token never matches.
pub fn presents(headers: &HeaderMap, token: &str) -> bool {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    constant_time_eq(presented.as_bytes(), token.as_bytes())
}

/// Compares without an early exit, so the time taken does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
