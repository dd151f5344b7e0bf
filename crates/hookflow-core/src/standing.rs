//! How an endpoint has been doing lately, as this process saw it: the order in which a
//! backlog's workflow starts go. Temporal starts are the scarce resource after an outage
//! (a few hundred a second at most), so a burst to healthy endpoints is started before a
//! burst to endpoints that are failing or saturated, instead of each healthy delivery
//! waiting behind a struggling one; every start still happens, only later (see the
//! consumer's start queue).

use crate::EndpointKey;

/// An endpoint's standing, best first (the order of the variants is the order of starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Standing {
    /// Its breaker is closed and its last attempt here succeeded.
    Healthy,
    /// Nothing is known of it here (no attempt yet, or only ones that were not sent).
    Unknown,
    /// Its breaker is open or half-open, its last attempt here failed, or it is at its
    /// concurrency cap (a delivery started now would only wait, or be deferred).
    Struggling,
}

impl Standing {
    /// Every standing, best first.
    pub const ALL: [Standing; 3] = [Standing::Healthy, Standing::Unknown, Standing::Struggling];

    /// Its place in [`Standing::ALL`].
    pub fn rank(self) -> usize {
        self as usize
    }
}

/// Tells an endpoint's standing, from what this process knows without asking anyone (it
/// is asked once per start).
pub trait EndpointStanding: Send + Sync + 'static {
    /// `endpoint`'s standing now.
    fn standing(&self, endpoint: &EndpointKey) -> Standing;
}
