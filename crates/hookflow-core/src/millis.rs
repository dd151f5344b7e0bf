//! Durations in configuration: written in milliseconds (the `…_ms` keys), typed as
//! [`Duration`] once parsed, and never zero, so no caller converts or range-checks them.
//!
//! `#[serde(rename = "commit_interval_ms", with = "hookflow_core::millis")]` on a
//! `Duration` field.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de::Unexpected};

/// Reads a whole number of milliseconds, at least 1.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match u64::deserialize(deserializer)? {
        0 => Err(serde::de::Error::invalid_value(
            Unexpected::Unsigned(0),
            &"a duration of at least 1 millisecond",
        )),
        ms => Ok(Duration::from_millis(ms)),
    }
}

/// Writes whole milliseconds.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, serde::Serialize)]
    struct Section {
        #[serde(rename = "wait_ms", with = "super")]
        wait: Duration,
    }

    #[test]
    fn milliseconds_become_a_duration_and_zero_is_refused() {
        let section: Section = toml::from_str("wait_ms = 1500").expect("parses");
        assert_eq!(section.wait, Duration::from_millis(1500));
        assert_eq!(
            toml::to_string(&section).expect("writes"),
            "wait_ms = 1500\n"
        );
        let error = toml::from_str::<Section>("wait_ms = 0").expect_err("zero");
        assert!(
            error.to_string().contains("at least 1 millisecond"),
            "{error}"
        );
        assert!(toml::from_str::<Section>("wait_ms = \"soon\"").is_err());
    }
}
