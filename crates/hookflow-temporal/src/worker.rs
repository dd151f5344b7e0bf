//! The Temporal worker that runs delivery workflows and attempt activities.
//!
//! `Worker::run` returns a future that is not `Send`: drive it on the main task (as the
//! binary does) or a `LocalSet`, never `tokio::spawn`.
//!
//! The SDK's own worker metrics (task slots, poll and schedule-to-start latencies, sticky
//! cache) are served by the SDK's Prometheus exporter on a listener of their own, beside
//! hookflow's `/metrics`.

use std::{net::SocketAddr, sync::Arc};

use temporalio_client::Client;
use temporalio_common::telemetry::{
    PrometheusExporterOptions, TelemetryOptions, metrics::CoreMeter,
    start_prometheus_metric_exporter,
};
use temporalio_sdk::{Runtime, Worker, WorkerOptions, runtime::RuntimeOptions};

use crate::{
    activities::DeliveryActivities, connection::TemporalError, workflow::DeliveryWorkflow,
};

/// A worker for `task_queue` with the delivery workflow and activities registered; the
/// SDK's metrics are served on `sdk_metrics` when given.
pub fn build(
    client: Client,
    task_queue: &str,
    activities: DeliveryActivities,
    sdk_metrics: Option<SocketAddr>,
) -> Result<Worker, TemporalError> {
    let mut telemetry = TelemetryOptions::builder().build();
    if let Some(address) = sdk_metrics {
        let options = PrometheusExporterOptions::builder()
            .socket_addr(address)
            .counters_total_suffix(true)
            .use_seconds_for_durations(true)
            .build();
        let exporter = start_prometheus_metric_exporter(options).map_err(|e| {
            TemporalError::Settings(format!(
                "cannot serve the SDK's metrics on telemetry.sdk_metrics_address {address}: {e}"
            ))
        })?;
        let meter: Arc<dyn CoreMeter> = exporter.meter;
        telemetry.metrics = Some(meter);
    }
    let options = RuntimeOptions::builder()
        .telemetry_options(telemetry)
        .build()
        .map_err(|e| TemporalError::Settings(format!("temporal runtime options: {e}")))?;
    let runtime = Runtime::from_current_tokio(options)
        .map_err(|e| TemporalError::Settings(format!("temporal runtime: {e}")))?;
    let options = WorkerOptions::new(task_queue)
        .register_workflow::<DeliveryWorkflow>()
        .map_err(|e| TemporalError::Settings(format!("registering the delivery workflow: {e}")))?
        .register_activities(activities)
        .build();
    Worker::new(&runtime, client, options)
        .map_err(|e| TemporalError::Settings(format!("temporal worker: {e}")))
}
