//! The operations HTTP listener: `/metrics` (Prometheus text), `/_liveness` and
//! `/_readiness` (200 or 503, with a JSON body naming each component's state).

use std::sync::{Arc, Mutex};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::health::{Health, HealthReport};
use hookflow_core::sync::LockUnpoisoned;

/// Series computed from live state at each scrape, after the recorded ones: bounded sets
/// whose members come and go (the longest-open breakers). A recorded gauge would keep
/// exporting a member after it left, so over time the page would grow without bound.
pub trait LiveSeries: Send + Sync {
    /// Appends its lines in the Prometheus text format, `# HELP` and `# TYPE` included.
    fn render(&self, out: &mut String);
}

/// What `/metrics` serves: the recorded metrics, then every live series registered so far
/// (parts of the process that start after the listener register theirs when they start).
#[derive(Clone)]
pub struct Exposition {
    recorded: PrometheusHandle,
    live: Arc<Mutex<Vec<Arc<dyn LiveSeries>>>>,
}

impl Exposition {
    /// The recorded metrics of `recorded`, no live series yet.
    pub fn new(recorded: PrometheusHandle) -> Self {
        Exposition {
            recorded,
            live: Arc::default(),
        }
    }

    /// Adds `series` to every later scrape.
    pub fn add(&self, series: Arc<dyn LiveSeries>) {
        self.live.lock_unpoisoned().push(series);
    }

    /// The whole page.
    pub fn render(&self) -> String {
        let mut page = self.recorded.render();
        for series in self.live.lock_unpoisoned().iter() {
            series.render(&mut page);
        }
        page
    }
}

/// `value` as a label value in the text format: backslash, double quote and line feed
/// escaped.
pub fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Clone)]
struct Ops {
    metrics: Exposition,
    health: Health,
}

/// The router, for serving on a listener of the caller's.
pub fn router(metrics: Exposition, health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(ops): State<Ops>| async move { ops.metrics.render() }),
        )
        .route(
            "/_liveness",
            get(|State(ops): State<Ops>| async move { verdict(ops.health.liveness()) }),
        )
        .route(
            "/_readiness",
            get(|State(ops): State<Ops>| async move { verdict(ops.health.readiness()) }),
        )
        .with_state(Ops { metrics, health })
}

fn verdict(report: HealthReport) -> (StatusCode, Json<HealthReport>) {
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

/// Serves the operations endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Exposition,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_what_the_text_format_requires() {
        assert_eq!(label_value(r#"team=1 a"b\c"#), r#"team=1 a\"b\\c"#);
        assert_eq!(label_value("a\nb"), "a\\nb");
        assert_eq!(label_value("http://h:80 team=2"), "http://h:80 team=2");
    }
}
