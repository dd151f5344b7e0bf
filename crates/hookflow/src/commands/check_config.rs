//! `hookflow check-config`: loads the configuration (and a destinations file, when that is
//! the store) and says whether it is valid, without connecting to anything. A client
//! certificate in the file must be valid now: this is where a file's certificates are
//! written.

use crate::{
    destinations::file::FileDestinations,
    settings::{DestinationStoreKind, Settings},
};

/// Validates what `settings` names; an invalid destinations file is the error.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    match settings.destinations.store {
        DestinationStoreKind::File => {
            let destinations =
                FileDestinations::load(&settings.destinations.file, settings.validation_rules())?;
            let now = chrono::Utc::now().timestamp();
            for destination in destinations.live().all() {
                destination.check_certificate_current(now).map_err(|e| {
                    anyhow::anyhow!("in {}: {e}", settings.destinations.file.display())
                })?;
            }
            println!(
                "configuration valid; {} destinations",
                hookflow_core::DestinationCatalog::len(destinations.live().as_ref())
            );
        }
        DestinationStoreKind::Postgres => {
            println!("configuration valid; destinations in the PostgreSQL catalog");
        }
    }
    Ok(())
}
