//! A destination's credentials: its Standard Webhooks signing secrets and the request
//! headers it sets (which may carry an `Authorization` value). Neither type's `Debug` shows
//! a value, so a credential cannot leak through a log line or an error message.

use std::fmt;

/// A Standard Webhooks signing secret (`whsec_` + base64). Its `Debug` and `Display` never
/// show the key, so a secret cannot leak through a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// Validates the `whsec_<base64>` form.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let Some(key) = raw.strip_prefix("whsec_") else {
            return Err("must start with `whsec_`");
        };
        if key.is_empty() || standardwebhooks::Webhook::new(raw).is_err() {
            return Err("must be `whsec_` followed by base64");
        }
        Ok(SigningSecret(raw.to_owned()))
    }

    /// The secret itself, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
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
