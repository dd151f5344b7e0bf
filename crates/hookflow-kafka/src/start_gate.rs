//! The gate every workflow start passes. While starts succeed it stands open and they run
//! concurrently. When one fails for a reason that is not the event's (Temporal is down, or
//! refuses starts because of how the deployment is set up), the gate closes: one start at a
//! time, the probe, retries with back-off and every other start waits, so an outage costs
//! one request per back-off step instead of one per message; the consumer stops taking
//! messages as its slots fill; readiness says why, and the reason is logged once. The first
//! start that succeeds opens the gate and everything resumes. Every refused start also
//! waits its own back-off before it comes back to the gate (the pipeline's), so partial
//! throttling, where other starts keep opening the gate, does not turn into retries at once.

use std::time::Instant;

use hookflow_core::{ScheduleError, ScheduleErrorKind};
use hookflow_telemetry::health::HealthHandle;
use tokio::sync::{Semaphore, SemaphorePermit, watch};
use tokio_util::sync::CancellationToken;

/// Why the gate is closed, and since when.
#[derive(Debug, Clone)]
struct Closed {
    kind: ScheduleErrorKind,
    since: Instant,
}

/// What [`StartGate::enter`] lets a caller do.
pub enum Entry<'a> {
    /// The gate is open: start.
    Open,
    /// The gate is closed and this caller is the probe until it drops the permit.
    Probe(SemaphorePermit<'a>),
}

/// See the module documentation.
pub struct StartGate {
    closed: watch::Sender<Option<Closed>>,
    probe: Semaphore,
    health: HealthHandle,
}

impl StartGate {
    /// An open gate that reports to `health`.
    pub fn new(health: HealthHandle) -> Self {
        health.set_ready(true, "");
        StartGate {
            closed: watch::Sender::new(None),
            probe: Semaphore::new(1),
            health,
        }
    }

    /// Waits until the caller may try a start: at once while the gate is open; while it is
    /// closed, until it opens or the probe is free. `None` when `shutdown` came first.
    pub async fn enter(&self, shutdown: &CancellationToken) -> Option<Entry<'_>> {
        let mut closed = self.closed.subscribe();
        loop {
            if closed.borrow_and_update().is_none() {
                return Some(Entry::Open);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                permit = self.probe.acquire() => return permit.ok().map(Entry::Probe),
                changed = closed.changed() => changed.ok()?,
            }
        }
    }

    /// A start succeeded: open the gate.
    pub fn succeeded(&self) {
        let was = self.closed.send_replace(None);
        if let Some(closed) = was {
            self.health.set_ready(true, "");
            tracing::info!(
                closed_for_s = closed.since.elapsed().as_secs(),
                "workflow starts succeed again; consumption resumes"
            );
        }
    }

    /// A start failed with `error`, which is not the event's fault: close the gate (logged
    /// when it closes, and when the reason changes kind).
    pub fn failed(&self, error: &ScheduleError) {
        let reason = match error.kind {
            ScheduleErrorKind::Deployment => format!(
                "temporal refuses workflow starts, so nothing is consumed until an operator \
                 fixes it: {}",
                error.message
            ),
            _ => format!(
                "temporal is unavailable for workflow starts: {}",
                error.message
            ),
        };
        self.health.set_ready(false, reason.as_str());
        let changed = self.closed.send_if_modified(|closed| match closed {
            Some(closed) if closed.kind == error.kind => false,
            _ => {
                let since = closed.as_ref().map_or_else(Instant::now, |c| c.since);
                *closed = Some(Closed {
                    kind: error.kind,
                    since,
                });
                true
            }
        });
        if changed {
            match error.kind {
                ScheduleErrorKind::Deployment => tracing::error!("{reason}"),
                _ => tracing::warn!("{reason}; retrying with back-off"),
            }
        }
    }
}
