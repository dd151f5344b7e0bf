//! What both destination stores (file and Redis) share: checking for changes on an
//! interval, swapping a new validated set in, and reporting a set that cannot be used while
//! the last good one stays in use.

use std::{fmt::Display, future::Future, time::Duration};

use hookflow_core::{DestinationCatalog, DestinationSet, LiveDestinations};
use hookflow_telemetry::names;
use tokio_util::sync::CancellationToken;

/// Runs `check` every `interval` until `shutdown`.
pub async fn every<F, Fut>(interval: Duration, shutdown: CancellationToken, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => check().await,
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Puts `set` in use and reports it.
pub fn swap_in(live: &LiveDestinations, set: DestinationSet, source: &dyn Display) {
    let count = set.len();
    live.replace(set);
    metrics::gauge!(names::DESTINATIONS_LOADED).set(count as f64);
    metrics::counter!(names::DESTINATION_RELOADS, "result" => "ok").increment(1);
    tracing::info!(destinations = count, %source, "destinations reloaded");
}

/// Reports destinations that could not be loaded; the last good set stays in use.
pub fn keep_last_good(source: &dyn Display, error: &dyn Display) {
    metrics::counter!(names::DESTINATION_RELOADS, "result" => "error").increment(1);
    tracing::error!(%source, %error, "destinations not reloaded; the last good destinations stay in use");
}
