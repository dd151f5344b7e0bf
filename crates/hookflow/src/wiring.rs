//! The parts several commands build the same way from the settings: the destinations as
//! delivery sees them, the delivery HTTP client, the deliveries' defaults, a replayer.
//! Commands call in here; nothing here calls a command.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use hookflow_core::{DeliveryDefaults, DestinationCatalog};
use hookflow_http::{DeliveryClient, HttpSettings};
use hookflow_telemetry::health::Health;
use hookflow_temporal::TemporalScheduler;
use tokio_util::sync::CancellationToken;

use crate::{destinations::Store, replay::Replayer, settings::Settings};

/// A component that has not reported for this long is presumed stalled (liveness fails).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(60);

/// The destinations as delivery sees them, for a one-shot command: the file, or the
/// catalog once loaded.
pub async fn destinations_now(settings: &Settings) -> anyhow::Result<Arc<dyn DestinationCatalog>> {
    let health = Health::default().register("destinations", PROBE_DEADLINE);
    let stop = CancellationToken::new();
    let store = Store::open(settings, health, &stop)?;
    tokio::time::timeout(Duration::from_secs(30), store.wait_loaded(&stop))
        .await
        .context("the destination catalog did not load within 30 s")?;
    Ok(store.catalog())
}

/// What a replay runs with, on `client`'s Temporal and these `destinations`.
pub fn replayer(
    settings: &Settings,
    client: hookflow_temporal::Client,
    destinations: Arc<dyn DestinationCatalog>,
) -> Replayer {
    Replayer {
        kafka: settings.kafka.clone(),
        destinations,
        defaults: delivery_defaults(settings),
        scheduler: TemporalScheduler::new(client, &settings.temporal).for_recovery(),
    }
}

/// The retry policy and history bound every delivery starts with.
pub fn delivery_defaults(settings: &Settings) -> DeliveryDefaults {
    DeliveryDefaults {
        retry: settings.retry.clone(),
        history: settings.temporal.history_bound(),
    }
}

/// The HTTP client deliveries and test sends go out with (the SSRF guard included).
pub fn delivery_client(settings: &Settings) -> anyhow::Result<DeliveryClient> {
    Ok(DeliveryClient::new(&HttpSettings {
        connect_timeout: settings.http.connect_timeout,
        allowed_hosts: settings.http.allowed_hosts.clone(),
        user_agent: format!("hookflow/{}", env!("CARGO_PKG_VERSION")),
        max_response_body_bytes: settings.http.max_response_body_bytes,
        proxy: settings.http.egress_proxy()?,
        proxies: settings.http.named_proxies()?,
    })?)
}
