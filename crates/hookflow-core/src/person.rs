//! Finding one person's deliveries without recording who they are: each delivery carries a
//! keyed hash of its team and event's distinct id (HMAC-SHA256 under the deployment's
//! `temporal.person_hash_key`, 128 bits in hex), which an erasure looks for. Without the
//! key, the hash says nothing: a distinct id cannot be guessed from it, nor tested against
//! it, and one team's person hashes differently in another team.

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key of the person hash. Its `Debug` never shows it.
#[derive(Clone)]
pub struct PersonKey(Vec<u8>);

impl PersonKey {
    /// The key written as base64 of at least 32 bytes.
    pub fn from_base64(text: &str) -> Result<PersonKey, &'static str> {
        match BASE64.decode(text.trim()) {
            Ok(bytes) if bytes.len() >= 32 => Ok(PersonKey(bytes)),
            _ => Err("must be the standard base64 of at least 32 random bytes"),
        }
    }

    /// The hash of `distinct_id` in team `team_id`: 32 lowercase hex digits.
    pub fn hash(&self, team_id: i64, distinct_id: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(format!("{team_id}\n{distinct_id}").as_bytes());
        mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The key deliveries are hashed with now, and the keys they were hashed with before a
/// rotation: an erasure looks for every hash, so a rotation loses no delivery made before
/// it (keep a previous key until its deliveries leave Temporal's retention).
#[derive(Debug, Clone)]
pub struct PersonKeys {
    /// The key new deliveries are hashed with.
    pub current: PersonKey,
    /// Keys earlier deliveries were hashed with.
    pub previous: Vec<PersonKey>,
}

impl PersonKeys {
    /// The hashes of `distinct_id` in team `team_id` under every key, the current one first.
    pub fn hashes(&self, team_id: i64, distinct_id: &str) -> Vec<String> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|key| key.hash(team_id, distinct_id))
            .collect()
    }
}

impl std::fmt::Debug for PersonKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_hashes_per_team_and_key_never_as_their_id() {
        let key = PersonKey::from_base64(&BASE64.encode([7u8; 32])).expect("key");
        let hash = key.hash(2, "alice@example.com");
        assert_eq!(hash.len(), 32);
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(hash, key.hash(2, "alice@example.com"), "stable");
        assert_ne!(hash, key.hash(3, "alice@example.com"), "another team");
        assert_ne!(hash, key.hash(2, "bob@example.com"));
        let other = PersonKey::from_base64(&BASE64.encode([8u8; 32])).expect("key");
        assert_ne!(hash, other.hash(2, "alice@example.com"), "another key");
        // HMAC-SHA256 of "2\nalice@example.com" under 32 bytes of 7, its first 16 bytes
        // (as Python's `hmac` module computes it).
        assert_eq!(hash, "3c4e799193fc5c47b07833c00128cdf3");
        assert!(!format!("{key:?}").contains('7'));
        let keys = PersonKeys {
            current: other.clone(),
            previous: vec![key.clone()],
        };
        assert_eq!(
            keys.hashes(2, "alice@example.com"),
            [other.hash(2, "alice@example.com"), hash.clone()]
        );
        assert!(PersonKey::from_base64("c2hvcnQ=").is_err(), "too short");
        assert!(PersonKey::from_base64("not base64!").is_err());
    }
}
