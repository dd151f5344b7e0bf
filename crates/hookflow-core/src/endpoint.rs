//! Endpoints, the unit of isolation: the rate limit, the concurrency cap and the circuit
//! breaker belong to an endpoint, not to a destination, so one team's destinations that
//! share a host share its protection; every team has its own. Also what an attempt that was not made reports instead (a
//! [`Deferral`]), and the wait the workflow derives from it.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::FieldError;

/// Identifies an endpoint: by default the destination URL's `scheme://host:port` and its
/// team (one team's failures must not open another's breaker); or a key a destination
/// chose, which is always its team's own. [`EndpointKey::of_url`] alone names a host, whose
/// bulkhead caps what every team sends it together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey(String);

impl EndpointKey {
    /// The default key of `url`: scheme, host and port (the scheme's default port when the
    /// URL names none). Never the path, the query or credentials.
    pub fn of_url(url: &Url) -> EndpointKey {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(0);
        EndpointKey(format!("{}://{host}:{port}", url.scheme()))
    }

    /// The key of `team_id`'s destination at `url`: the URL's endpoint, per team
    /// (`scheme://host:port team=<id>`). Endpoints are never shared between teams: one
    /// team's failures, 429s or limits never defer another team's deliveries to the same
    /// host, and no team's settings can refuse or reveal another's. What all teams send to
    /// one host together is capped by the host's bulkhead ([`EndpointKey::of_url`]).
    pub fn of_destination(url: &Url, team_id: i64) -> EndpointKey {
        EndpointKey(format!("{} team={team_id}", Self::of_url(url)))
    }

    /// The same endpoint reached through the named egress proxy `route`: a key of its own,
    /// so a proxy that is down opens no breaker for the destinations that go another way.
    pub fn via(self, route: &str) -> EndpointKey {
        EndpointKey(format!("{} via={route}", self.0))
    }

    /// The key `team_id`'s destination chose; 1 to 128 printable ASCII characters without
    /// spaces. It is scoped to the team, so no team can join another's endpoint by naming
    /// its key.
    pub fn custom(team_id: i64, key: &str) -> Result<EndpointKey, &'static str> {
        if (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(EndpointKey(format!("team={team_id} {key}")))
        } else {
            Err("must be 1 to 128 printable ASCII characters without spaces")
        }
    }

    /// The key as text (used in Redis keys and logs, never as a metric label).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How hard one endpoint may be driven.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointLimits {
    /// Requests per second, in total across every hookflow worker.
    pub rate_per_second: f64,
    /// Requests that may go at once after a quiet period, in total.
    pub burst: u32,
    /// Attempts in flight at once, per worker process.
    pub max_in_flight: u32,
}

impl Default for EndpointLimits {
    /// 50 requests per second with a burst of 50; 10 in flight per worker.
    fn default() -> Self {
        EndpointLimits {
            rate_per_second: 50.0,
            burst: 50,
            max_in_flight: 10,
        }
    }
}

impl EndpointLimits {
    /// The most requests per second a limit may allow.
    pub const MAX_RATE_PER_SECOND: f64 = 100_000.0;

    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(self.rate_per_second > 0.0 && self.rate_per_second <= Self::MAX_RATE_PER_SECOND) {
            return Err(FieldError::new(
                "rate_per_second",
                format!("must be above 0 and at most {}", Self::MAX_RATE_PER_SECOND),
            ));
        }
        if self.burst == 0 {
            return Err(FieldError::new("burst", "must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(FieldError::new("max_in_flight", "must be at least 1"));
        }
        Ok(())
    }

    /// This worker's share when `workers` processes split the limits: the rate divided
    /// evenly, the burst too but never below 1.
    pub fn share(&self, workers: u32) -> (f64, u32) {
        let workers = workers.max(1);
        (
            self.rate_per_second / f64::from(workers),
            (self.burst / workers).max(1),
        )
    }
}

/// Why an attempt was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeferralReason {
    /// The endpoint's rate limit has no request left now.
    RateLimited,
    /// This worker already has the endpoint's maximum of attempts in flight.
    ConcurrencyCap,
    /// The endpoint's circuit breaker is open (or half-open with its probe out).
    BreakerOpen,
    /// The destination is paused.
    Paused,
}

impl DeferralReason {
    /// Every reason, for metrics.
    pub const ALL: [DeferralReason; 4] = [
        DeferralReason::RateLimited,
        DeferralReason::ConcurrencyCap,
        DeferralReason::BreakerOpen,
        DeferralReason::Paused,
    ];

    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::ConcurrencyCap => "concurrency_cap",
            Self::BreakerOpen => "breaker_open",
            Self::Paused => "paused",
        }
    }
}

/// An attempt that was not made, and the earliest moment it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferral {
    /// Why.
    pub reason: DeferralReason,
    /// How long from now, in milliseconds.
    pub wait_ms: u64,
}

/// How the waits of repeated rate-limit, concurrency-cap and pause deferrals grow: from
/// `initial_ms`, doubling with every deferral in a row, up to `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferralBackoff {
    /// The first wait, in milliseconds.
    pub initial_ms: u64,
    /// The longest wait, in milliseconds.
    pub max_ms: u64,
}

impl Deferral {
    /// The workflow's wait before trying again, when this is the `in_a_row`-th deferral
    /// (1-based) since the last attempt, plus up to half of it (at least 100 ms) of jitter
    /// so deliveries deferred together do not return together. `random` is uniform in
    /// `[0, 1)`.
    ///
    /// A breaker's refusal names the end of its cooldown, so that wait is kept. The
    /// limiter and the cap only know the next free slot, which a backlog of deliveries
    /// competes for, and a pause has no end the gate knows; so their waits follow
    /// `backoff` (250 ms doubling up to 30 s by default), never shorter than the wait the
    /// gate asked for unless that is beyond the back-off's maximum. That bounds how often a
    /// long backlog wakes up, and with it the load on Temporal.
    pub fn delay(&self, backoff: &DeferralBackoff, random: f64, in_a_row: u32) -> Duration {
        let wait_ms = match self.reason {
            DeferralReason::BreakerOpen => self.wait_ms,
            DeferralReason::RateLimited
            | DeferralReason::ConcurrencyCap
            | DeferralReason::Paused => {
                let floor = crate::doubling::doubled(
                    backoff.initial_ms,
                    in_a_row.saturating_sub(1),
                    backoff.max_ms,
                );
                self.wait_ms.max(floor).min(backoff.max_ms)
            }
        };
        let spread = spread_ms(wait_ms) as f64;
        Duration::from_millis(wait_ms + (spread * random.clamp(0.0, 1.0)) as u64)
    }

    /// The longest the workflow may wait on a breaker's refusal of this length: the wait and
    /// its whole spread (see [`Deferral::delay`]).
    pub fn longest_breaker_wait_ms(wait_ms: u64) -> u64 {
        wait_ms.saturating_add(spread_ms(wait_ms))
    }
}

/// The jitter added to a deferral's wait of `wait_ms`: up to half of it, at least 100 ms.
fn spread_ms(wait_ms: u64) -> u64 {
    (wait_ms / 2).max(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> String {
        EndpointKey::of_url(&Url::parse(url).expect("url"))
            .as_str()
            .to_owned()
    }

    #[test]
    fn the_default_key_is_scheme_host_and_port() {
        assert_eq!(
            key("https://Hooks.Example.com/a?b=c"),
            "https://hooks.example.com:443"
        );
        assert_eq!(
            key("http://user:pw@example.com:8080/x"),
            "http://example.com:8080"
        );
        assert_eq!(key("http://127.0.0.1/y"), "http://127.0.0.1:80");
        assert_eq!(key("https://a.example/1"), key("https://a.example:443/2"));
    }

    #[test]
    fn custom_keys_are_checked_and_scoped_to_their_team() {
        assert!(EndpointKey::custom(1, "slack-eu").is_ok());
        assert!(EndpointKey::custom(1, "").is_err());
        assert!(EndpointKey::custom(1, "has space").is_err());
        assert_ne!(
            EndpointKey::custom(1, "https://hooks.example.com:443"),
            Ok(EndpointKey::of_url(
                &Url::parse("https://hooks.example.com/").expect("url")
            )),
            "a key cannot name another team's endpoint"
        );
        assert_ne!(EndpointKey::custom(1, "k"), EndpointKey::custom(2, "k"));
    }

    #[test]
    fn every_team_has_its_own_endpoint_on_a_host() {
        let url = |u: &str| Url::parse(u).expect("url");
        let slack = url("https://hooks.slack.com/services/T1/B1/x");
        assert_ne!(
            EndpointKey::of_destination(&slack, 1),
            EndpointKey::of_destination(&slack, 2)
        );
        let own = url("https://hooks.example.com/a");
        assert_eq!(
            EndpointKey::of_destination(&own, 1).as_str(),
            "https://hooks.example.com:443 team=1"
        );
        assert_eq!(
            EndpointKey::of_destination(&own, 1),
            EndpointKey::of_destination(&url("https://hooks.example.com/b"), 1),
            "one team's destinations on a host share its endpoint"
        );
    }

    #[test]
    fn limits_split_evenly_between_workers() {
        let limits = EndpointLimits {
            rate_per_second: 10.0,
            burst: 5,
            max_in_flight: 3,
        };
        assert_eq!(limits.share(1), (10.0, 5));
        assert_eq!(limits.share(2), (5.0, 2));
        assert_eq!(limits.share(10), (1.0, 1), "the burst never drops below 1");
        assert_eq!(limits.share(0), (10.0, 5));
    }

    #[test]
    fn limits_validation_names_the_field() {
        let mut limits = EndpointLimits::default();
        assert_eq!(limits.validate(), Ok(()));
        limits.rate_per_second = 0.0;
        assert_eq!(limits.validate().unwrap_err().field, "rate_per_second");
        limits = EndpointLimits {
            burst: 0,
            ..Default::default()
        };
        assert_eq!(limits.validate().unwrap_err().field, "burst");
    }

    const BACKOFF: DeferralBackoff = DeferralBackoff {
        initial_ms: 250,
        max_ms: 30_000,
    };

    #[test]
    fn deferral_delay_adds_bounded_jitter() {
        let d = Deferral {
            reason: DeferralReason::BreakerOpen,
            wait_ms: 4_000,
        };
        assert_eq!(d.delay(&BACKOFF, 0.0, 1), Duration::from_millis(4_000));
        assert_eq!(d.delay(&BACKOFF, 0.5, 1), Duration::from_millis(5_000));
        assert_eq!(
            d.delay(&BACKOFF, 0.0, 9),
            Duration::from_millis(4_000),
            "a breaker's cooldown end is kept however often it refused"
        );
    }

    #[test]
    fn repeated_limiter_deferrals_back_off_to_a_cap() {
        let d = Deferral {
            reason: DeferralReason::RateLimited,
            wait_ms: 20,
        };
        let floors: Vec<u64> = (1..=10)
            .map(|n| d.delay(&BACKOFF, 0.0, n).as_millis() as u64)
            .collect();
        assert_eq!(
            floors,
            [
                250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
            ]
        );
        assert_eq!(d.delay(&BACKOFF, 0.5, 1), Duration::from_millis(312));
        let slow = Deferral {
            reason: DeferralReason::ConcurrencyCap,
            wait_ms: 1_000,
        };
        assert_eq!(
            slow.delay(&BACKOFF, 0.0, 1),
            Duration::from_millis(1_000),
            "a longer wait is kept"
        );
    }

    #[test]
    fn no_gate_wait_goes_past_the_back_off_maximum_but_a_breaker_cooldown_does() {
        let short = DeferralBackoff {
            initial_ms: 100,
            max_ms: 200,
        };
        let paused = Deferral {
            reason: DeferralReason::Paused,
            wait_ms: 1_000,
        };
        let waits: Vec<u64> = (1..=3)
            .map(|n| paused.delay(&short, 0.0, n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [200, 200, 200]);
        let open = Deferral {
            reason: DeferralReason::BreakerOpen,
            wait_ms: 5_000,
        };
        assert_eq!(open.delay(&short, 0.0, 3), Duration::from_secs(5));
    }
}
