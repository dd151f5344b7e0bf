//! hookflow's logs and metrics. Every metric name lives in [`names`], so the docs, the
//! dashboards and the code agree; labels never carry URLs, only bounded values (outcome,
//! status class, error kind).

pub mod health;
pub mod names;
pub mod ops;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    // A second call (tests, embedded use) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => registry.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
    };
}

/// Why the metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct RecorderError(String);

/// Installs the global Prometheus recorder and returns the handle that renders `/metrics`.
/// Must be called inside a tokio runtime: it spawns the recorder's periodic upkeep.
pub fn install_prometheus() -> Result<PrometheusHandle, RecorderError> {
    let handle = PrometheusBuilder::new()
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
