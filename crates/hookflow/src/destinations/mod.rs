//! Where destinations come from: a file kept in version control ([`file`], the embedded
//! default, reloaded when it changes), or the catalog in PostgreSQL ([`postgres`], managed
//! through the admin API, shared by every process and changed one destination at a time).
//! Either fills a [`LiveDestinations`] that delivery reads.
//!
//! - [`sealing`]: a destination's secrets sealed with a key ring, as the catalog keeps them;
//! - [`import`]: `hookflow destinations import` (a file, or the Redis hash an earlier version
//!   kept, into the catalog) and `reseal` (every row onto the current key);
//! - [`reload`]: what the file store does on every change.

pub mod file;
pub mod import;
pub mod postgres;
mod reload;
pub mod sealing;

use std::sync::Arc;

use hookflow_core::{DestinationCatalog, LiveDestinations};
use hookflow_telemetry::health::HealthHandle;
use tokio_util::sync::CancellationToken;

use self::{file::FileDestinations, postgres::Catalog};
use crate::settings::{DestinationStoreKind, Settings};

/// The destination store a process runs with.
pub enum Store {
    /// The destinations file.
    File(Arc<FileDestinations>),
    /// The catalog in PostgreSQL.
    Catalog(Arc<Catalog>),
}

impl Store {
    /// The store the settings name, followed (file: watched for changes; catalog: loaded
    /// and its changes applied) until `shutdown`, reporting to `health`.
    pub fn open(
        settings: &Settings,
        health: HealthHandle,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Store> {
        let rules = settings.validation_rules();
        match settings.destinations.store {
            DestinationStoreKind::Postgres => {
                let catalog = Arc::new(Catalog::open(
                    &settings.destinations.postgres,
                    rules,
                    health,
                )?);
                tokio::spawn(catalog.clone().follow(shutdown.clone()));
                Ok(Store::Catalog(catalog))
            }
            DestinationStoreKind::File => {
                let store = Arc::new(FileDestinations::load(&settings.destinations.file, rules)?);
                health.set_ready(true, "");
                let interval = settings.destinations.reload_interval;
                tokio::spawn(store.clone().watch(interval, health, shutdown.clone()));
                Ok(Store::File(store))
            }
        }
    }

    /// The destinations in use.
    pub fn live(&self) -> Arc<LiveDestinations> {
        match self {
            Store::File(store) => store.live(),
            Store::Catalog(catalog) => catalog.live(),
        }
    }

    /// The destinations in use, as delivery reads them.
    pub fn catalog(&self) -> Arc<dyn DestinationCatalog> {
        self.live()
    }

    /// The catalog, when it is the store (the admin API manages it).
    pub fn managed(&self) -> Option<Arc<Catalog>> {
        match self {
            Store::File(_) => None,
            Store::Catalog(catalog) => Some(catalog.clone()),
        }
    }

    /// Resolves once the destinations are loaded (the file is loaded when opened); `false`
    /// when `shutdown` came first.
    pub async fn wait_loaded(&self, shutdown: &CancellationToken) -> bool {
        match self {
            Store::File(_) => true,
            Store::Catalog(catalog) => catalog.wait_loaded(shutdown).await,
        }
    }
}
