//! What one HTTP attempt reported ([`AttemptReport`]), what it means for the delivery and
//! the endpoint ([`AttemptVerdict`]), and what the attempt activity did ([`AttemptStep`]):
//! made the request, deferred it, or found the destination gone.

use serde::{Deserialize, Serialize};

use crate::endpoint::Deferral;

/// Why an attempt got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptErrorKind {
    /// No complete response within the destination's timeout.
    Timeout,
    /// The connection could not be made (refused, reset, DNS failure, TLS).
    Connect,
    /// The destination resolves to an address hookflow must not contact (SSRF guard).
    Blocked,
    /// The destination no longer exists or cannot be turned into a request.
    Invalid,
    /// Anything else that went wrong on the way (a broken response, for example).
    Other,
    /// The endpoint refused the destination's TLS client certificate (mutual TLS): final,
    /// as any refusal is, until the destination is given a certificate it accepts.
    ///
    /// This kind and the next are recorded in histories by this release on; a release
    /// before it cannot read such a history (see docs/workflow-changes.md).
    Tls,
    /// The destination's OAuth2 token endpoint gave no usable token (down, slow, an error
    /// answer): retried, and a failure of the endpoint, which cannot be reached without it.
    Token,
}

impl AttemptErrorKind {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Blocked => "blocked",
            Self::Invalid => "invalid",
            Self::Other => "other",
            Self::Tls => "tls",
            Self::Token => "token",
        }
    }
}

/// What one attempt says, for the delivery (retry or not) and for its endpoint (does the
/// breaker count it as a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptVerdict {
    /// A 2xx: delivered. The endpoint is healthy.
    Delivered,
    /// A timeout, a connection error, a broken response, a 429 or a 5xx: worth retrying,
    /// and a failure of the endpoint.
    EndpointFailing,
    /// A 408: worth retrying; the endpoint answered, so it is healthy.
    TryAgain,
    /// Any other response (3xx, 4xx): the endpoint refused this delivery for good; it is
    /// healthy.
    Refused,
    /// The request never left (refused by the SSRF guard, or not a valid request): final,
    /// and it says nothing about the endpoint.
    NotSent,
}

impl AttemptVerdict {
    /// Whether another attempt may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::EndpointFailing | Self::TryAgain)
    }
}

/// An attempt that got no HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// What kind of failure.
    pub kind: AttemptErrorKind,
    /// A human-readable reason, free of URLs' credentials and secrets.
    pub message: String,
}

/// What one HTTP attempt reported back to the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptReport {
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// The response's `Retry-After`, in milliseconds, when it had a usable one.
    pub retry_after_ms: Option<u64>,
    /// Why no response arrived.
    pub error: Option<AttemptError>,
    /// How long the attempt took, in milliseconds.
    pub duration_ms: u64,
}

impl AttemptReport {
    /// A report of a response with `status`.
    pub fn response(status: u16, retry_after_ms: Option<u64>, duration_ms: u64) -> Self {
        AttemptReport {
            status: Some(status),
            retry_after_ms,
            error: None,
            duration_ms,
        }
    }

    /// A report of an attempt that got no response.
    pub fn failed(kind: AttemptErrorKind, message: impl Into<String>, duration_ms: u64) -> Self {
        let error = AttemptError {
            kind,
            message: message.into(),
        };
        AttemptReport {
            status: None,
            retry_after_ms: None,
            error: Some(error),
            duration_ms,
        }
    }

    /// What this attempt says about the delivery and about the endpoint: the one table
    /// the retry decision, the circuit breaker and the success checks all read.
    pub fn verdict(&self) -> AttemptVerdict {
        match (self.status, &self.error) {
            (Some(200..=299), _) => AttemptVerdict::Delivered,
            (Some(status), _) if status == 429 || status >= 500 => AttemptVerdict::EndpointFailing,
            // A 408 is the endpoint asking for the request again, not a sign of trouble.
            (Some(408), _) => AttemptVerdict::TryAgain,
            (Some(_), _) => AttemptVerdict::Refused,
            (None, Some(error)) => match error.kind {
                AttemptErrorKind::Timeout
                | AttemptErrorKind::Connect
                | AttemptErrorKind::Other
                | AttemptErrorKind::Token => AttemptVerdict::EndpointFailing,
                AttemptErrorKind::Tls => AttemptVerdict::Refused,
                AttemptErrorKind::Blocked | AttemptErrorKind::Invalid => AttemptVerdict::NotSent,
            },
            (None, None) => AttemptVerdict::EndpointFailing,
        }
    }

    /// Whether the endpoint accepted the delivery (a 2xx).
    pub fn is_success(&self) -> bool {
        self.verdict() == AttemptVerdict::Delivered
    }

    /// The outcome class of this attempt, for metrics: `2xx`…`5xx` or the error kind.
    pub fn class(&self) -> &'static str {
        match (self.status, &self.error) {
            (Some(s), _) => match s {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                500..=599 => "5xx",
                _ => "other",
            },
            (None, Some(e)) => e.kind.as_str(),
            (None, None) => "other",
        }
    }

    /// A one-line description for the workflow result and logs.
    pub fn describe(&self) -> String {
        match (self.status, &self.error) {
            (Some(status), _) => format!("HTTP {status}"),
            (None, Some(e)) => format!("{}: {}", e.kind.as_str(), e.message),
            (None, None) => "no response".to_owned(),
        }
    }
}

/// What the attempt activity did: made the request, deferred it (the endpoint's limiter,
/// concurrency cap or breaker said not now), or found the destination disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStep {
    /// One HTTP attempt was made (or refused by the SSRF guard).
    Attempted(AttemptReport),
    /// No request was made; try again after the deferral's wait. Not an attempt.
    Deferred(Deferral),
    /// The destination is disabled (for example after 410 Gone); the reason is recorded.
    DestinationDisabled(String),
    /// The destination no longer exists.
    DestinationDeleted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_classes_and_descriptions() {
        assert_eq!(AttemptReport::response(503, None, 1).class(), "5xx");
        assert_eq!(AttemptReport::response(503, None, 1).describe(), "HTTP 503");
        let timeout = AttemptReport::failed(AttemptErrorKind::Timeout, "after 5000 ms", 5_000);
        assert_eq!(timeout.class(), "timeout");
        assert_eq!(timeout.describe(), "timeout: after 5000 ms");
    }
}
