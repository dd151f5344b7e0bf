//! hookflow's logs and metrics. Every metric name lives in [`names`], so the docs, the
//! dashboards and the code agree; labels never carry URLs, only bounded values (outcome,
//! status class, error kind).

pub mod health;
pub mod names;
pub mod ops;

use std::io::IsTerminal;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log format (`telemetry.log_format`: `text` or `json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global tracing subscriber. `filter` uses `RUST_LOG` syntax; `RUST_LOG`
/// overrides it when set.
pub fn init_tracing(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let registry = tracing_subscriber::registry().with(filter);
    // Colour only on a terminal: a file or a log shipper would keep the escape codes
    // between every field name and its value.
    let ansi = std::io::stdout().is_terminal();
    // A second call (tests, embedded use) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_target(false).with_ansi(ansi))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
    };
}

/// Why the metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct RecorderError(String);

/// Bucket bounds of every `*_seconds` histogram: 5 ms to 1 h.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Bucket bounds of the attempts-per-delivery histogram.
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0];

/// Installs the global Prometheus recorder and returns the handle that renders `/metrics`.
/// Must be called inside a tokio runtime: it spawns the recorder's periodic upkeep.
pub fn install_prometheus() -> Result<PrometheusHandle, RecorderError> {
    // Histograms with buckets (not client-side summaries), so dashboards can aggregate
    // quantiles across processes with histogram_quantile().
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Suffix("_per_delivery".into()), COUNT_BUCKETS)
        })
        .map_err(|e| RecorderError(e.to_string()))?
        .install_recorder()
        .map_err(|e| RecorderError(e.to_string()))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}
