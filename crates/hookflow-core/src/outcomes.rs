//! How a delivery ended ([`DeliveryOutcome`], the one meaning of "outcome" in hookflow; a
//! message's fate is its disposition, a start's result is what it found), and per-team
//! outcomes aggregated per (team, destination) over fixed time windows, so that a product
//! can show each team its webhook health without reading Temporal.
//!
//! Every worker process aggregates the deliveries it finished and publishes one
//! [`OutcomeSummary`] per (team, destination, window) to the outcomes topic; a reader sums
//! the summaries of one window across instances. The schema is documented in
//! `docs/outcomes.md`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// A 2xx arrived.
    Delivered,
    /// The endpoint or the guard refused it for good.
    FailedPermanently,
    /// Every allowed attempt failed, or the maximum age passed.
    GaveUp,
    /// An operator cancelled it.
    Cancelled,
    /// The destination was disabled (after 410 Gone, or by an operator).
    DestinationDisabled,
    /// The destination was deleted while the delivery was pending.
    DestinationDeleted,
}

impl DeliveryOutcome {
    /// A stable label for metrics and the search attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::FailedPermanently => "failed_permanently",
            Self::GaveUp => "gave_up",
            Self::Cancelled => "cancelled",
            Self::DestinationDisabled => "destination_disabled",
            Self::DestinationDeleted => "destination_deleted",
        }
    }

    /// Every outcome, in declaration order.
    pub const ALL: [DeliveryOutcome; 6] = [
        Self::Delivered,
        Self::FailedPermanently,
        Self::GaveUp,
        Self::Cancelled,
        Self::DestinationDisabled,
        Self::DestinationDeleted,
    ];

    /// The outcome [`DeliveryOutcome::as_str`] spells `name`, if any.
    pub fn parse(name: &str) -> Option<DeliveryOutcome> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// Whether a delivery that ended so may be run again by recovery (a replay with
    /// `--include-failed`, a bulk redelivery): it failed for a reason that may have passed.
    /// Deliveries an operator cancelled or whose destination was deleted stay ended.
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            Self::GaveUp | Self::FailedPermanently | Self::DestinationDisabled
        )
    }
}

/// The delivery workflow's result, shown in the Temporal UI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryResult {
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// How many HTTP attempts were made.
    pub attempts: u32,
    /// The last HTTP status received, if any.
    pub last_status: Option<u16>,
    /// The last attempt's description (`HTTP 503`, `timeout: …`), if any attempt was made.
    pub last_error: Option<String>,
}

/// One finished delivery, as the aggregator needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedDelivery {
    /// The event's team.
    pub team_id: i64,
    /// The destination.
    pub destination_id: String,
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// HTTP attempts made.
    pub attempts: u32,
    /// The last attempt's class (`5xx`, `timeout`, …) when the delivery failed.
    pub error_kind: Option<String>,
    /// The last attempt's description when the delivery failed.
    pub last_error: Option<String>,
}

/// What one (team, destination) saw in one window, on one hookflow instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeSummary {
    /// Schema version of this message.
    pub version: u32,
    /// The team.
    pub team_id: i64,
    /// The destination.
    pub destination_id: String,
    /// Start of the window (inclusive), RFC 3339.
    pub window_start: DateTime<Utc>,
    /// End of the window (exclusive), RFC 3339.
    pub window_end: DateTime<Utc>,
    /// The hookflow instance that finished these deliveries.
    pub instance: String,
    /// Deliveries delivered (2xx).
    pub successes: u64,
    /// Of `successes`, those that needed more than one attempt.
    pub successes_on_retry: u64,
    /// Deliveries that ended without delivery: failed permanently, gave up, or found their
    /// destination disabled or deleted.
    pub failures: u64,
    /// Deliveries an operator cancelled.
    pub cancelled: u64,
    /// Failures by the last attempt's kind: `4xx`, `5xx`, `timeout`, `connect`, `blocked`,
    /// `invalid`, `other`, `destination_disabled`, `deferred`.
    pub failures_by_kind: BTreeMap<String, u64>,
    /// The description of the window's last failure.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Tally {
    successes: u64,
    successes_on_retry: u64,
    failures: u64,
    cancelled: u64,
    failures_by_kind: BTreeMap<String, u64>,
    last_error: Option<String>,
}

/// Aggregates finished deliveries until the current window is drained.
pub struct OutcomeAggregator {
    instance: String,
    window_start: DateTime<Utc>,
    tallies: HashMap<(i64, String), Tally>,
}

/// The current version of [`OutcomeSummary`].
pub const OUTCOME_SCHEMA_VERSION: u32 = 1;

impl OutcomeAggregator {
    /// An aggregator for `instance` whose first window starts at `now`.
    pub fn new(instance: impl Into<String>, now: DateTime<Utc>) -> Self {
        OutcomeAggregator {
            instance: instance.into(),
            window_start: now,
            tallies: HashMap::new(),
        }
    }

    /// Counts one finished delivery in the current window.
    pub fn record(&mut self, delivery: &FinishedDelivery) {
        let tally = self
            .tallies
            .entry((delivery.team_id, delivery.destination_id.clone()))
            .or_default();
        match delivery.outcome {
            DeliveryOutcome::Delivered => {
                tally.successes += 1;
                if delivery.attempts > 1 {
                    tally.successes_on_retry += 1;
                }
            }
            DeliveryOutcome::Cancelled => tally.cancelled += 1,
            DeliveryOutcome::FailedPermanently
            | DeliveryOutcome::GaveUp
            | DeliveryOutcome::DestinationDisabled
            | DeliveryOutcome::DestinationDeleted => {
                tally.failures += 1;
                let kind = match (delivery.outcome, &delivery.error_kind) {
                    (DeliveryOutcome::DestinationDisabled, _) => "destination_disabled".into(),
                    (DeliveryOutcome::DestinationDeleted, _) => "destination_deleted".into(),
                    (_, Some(kind)) => kind.clone(),
                    (_, None) => "deferred".into(),
                };
                *tally.failures_by_kind.entry(kind).or_default() += 1;
                if delivery.last_error.is_some() {
                    tally.last_error.clone_from(&delivery.last_error);
                }
            }
        }
    }

    /// Closes the current window at `now`: its summaries (sorted by team and destination),
    /// and a new, empty window from `now`.
    pub fn drain(&mut self, now: DateTime<Utc>) -> Vec<OutcomeSummary> {
        let window_start = std::mem::replace(&mut self.window_start, now);
        let mut summaries: Vec<OutcomeSummary> = self
            .tallies
            .drain()
            .map(|((team_id, destination_id), t)| OutcomeSummary {
                version: OUTCOME_SCHEMA_VERSION,
                team_id,
                destination_id,
                window_start,
                window_end: now,
                instance: self.instance.clone(),
                successes: t.successes,
                successes_on_retry: t.successes_on_retry,
                failures: t.failures,
                cancelled: t.cancelled,
                failures_by_kind: t.failures_by_kind,
                last_error: t.last_error,
            })
            .collect();
        summaries
            .sort_by(|a, b| (a.team_id, &a.destination_id).cmp(&(b.team_id, &b.destination_id)));
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn finished(
        team_id: i64,
        destination: &str,
        outcome: DeliveryOutcome,
        attempts: u32,
        error: Option<(&str, &str)>,
    ) -> FinishedDelivery {
        FinishedDelivery {
            team_id,
            destination_id: destination.into(),
            outcome,
            attempts,
            error_kind: error.map(|(k, _)| k.into()),
            last_error: error.map(|(_, e)| e.into()),
        }
    }

    #[test]
    fn aggregates_per_team_and_destination_per_window() {
        let mut agg = OutcomeAggregator::new("w-1", at("2026-11-21T10:00:00Z"));
        agg.record(&finished(2, "a", DeliveryOutcome::Delivered, 1, None));
        agg.record(&finished(2, "a", DeliveryOutcome::Delivered, 3, None));
        agg.record(&finished(
            2,
            "a",
            DeliveryOutcome::GaveUp,
            8,
            Some(("5xx", "HTTP 503")),
        ));
        agg.record(&finished(
            2,
            "a",
            DeliveryOutcome::FailedPermanently,
            1,
            Some(("4xx", "HTTP 400")),
        ));
        agg.record(&finished(2, "a", DeliveryOutcome::Cancelled, 1, None));
        agg.record(&finished(
            3,
            "b",
            DeliveryOutcome::DestinationDisabled,
            0,
            None,
        ));
        agg.record(&finished(3, "b", DeliveryOutcome::GaveUp, 0, None));

        let summaries = agg.drain(at("2026-11-21T10:01:00Z"));
        assert_eq!(summaries.len(), 2);
        let a = &summaries[0];
        assert_eq!((a.team_id, a.destination_id.as_str()), (2, "a"));
        assert_eq!(
            (a.successes, a.successes_on_retry, a.failures, a.cancelled),
            (2, 1, 2, 1)
        );
        assert_eq!(
            a.failures_by_kind,
            BTreeMap::from([("4xx".into(), 1), ("5xx".into(), 1)])
        );
        assert_eq!(a.last_error.as_deref(), Some("HTTP 400"));
        assert_eq!(a.window_start, at("2026-11-21T10:00:00Z"));
        assert_eq!(a.window_end, at("2026-11-21T10:01:00Z"));
        let b = &summaries[1];
        assert_eq!(
            b.failures_by_kind,
            BTreeMap::from([("deferred".into(), 1), ("destination_disabled".into(), 1)])
        );

        let next = agg.drain(at("2026-11-21T10:02:00Z"));
        assert!(
            next.is_empty(),
            "a window without deliveries publishes nothing"
        );
    }

    #[test]
    fn the_json_shape_is_the_documented_one() {
        let mut agg = OutcomeAggregator::new("w-1", at("2026-11-21T10:00:00Z"));
        agg.record(&finished(2, "a", DeliveryOutcome::Delivered, 2, None));
        let json = serde_json::to_value(&agg.drain(at("2026-11-21T10:01:00Z"))[0]).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1,
                "team_id": 2,
                "destination_id": "a",
                "window_start": "2026-11-21T10:00:00Z",
                "window_end": "2026-11-21T10:01:00Z",
                "instance": "w-1",
                "successes": 1,
                "successes_on_retry": 1,
                "failures": 0,
                "cancelled": 0,
                "failures_by_kind": {},
                "last_error": null
            })
        );
    }
}
