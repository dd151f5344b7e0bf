//! What the file store does with each look at its file: swapping a new validated set in,
//! or reporting a set that cannot be used while the last good one stays in use.

use std::fmt::Display;

use hookflow_core::{DestinationCatalog, DestinationSet, LiveDestinations};
use hookflow_telemetry::names;

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
