//! The operations HTTP listener: `/metrics` (Prometheus text), `/_liveness` and
//! `/_readiness` (200 or 503, with a JSON body naming each component's state).

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::health::{Health, HealthReport};

#[derive(Clone)]
struct Ops {
    metrics: PrometheusHandle,
    health: Health,
}

/// The router, for serving on a listener of the caller's.
pub fn router(metrics: PrometheusHandle, health: Health) -> Router {
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
    metrics: PrometheusHandle,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
}
