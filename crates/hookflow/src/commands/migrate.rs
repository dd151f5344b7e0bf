//! `hookflow migrate`: brings the destination catalog's schema in PostgreSQL up to date
//! (also done at start-up unless `destinations.postgres.migrate` is off).

use anyhow::Context;

use crate::settings::Settings;

/// Runs the catalog's migrations once.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let pool = settings.destinations.postgres.pool()?;
    crate::destinations::postgres::migrate(&pool)
        .await
        .context("migrating the destination catalog")?;
    println!("the destination catalog's schema is up to date");
    Ok(())
}
