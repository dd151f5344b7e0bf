//! Moving destinations into the catalog, and keeping its sealed secrets on the current key.
//!
//! `hookflow destinations import --file F` creates the destinations of a destinations file;
//! `--redis-url U` those of the Redis hash an earlier version kept them in
//! (`<prefix>:destinations`), keeping each one's uid, so deliveries pending for it still
//! reach it. A destination whose team already has its id is left as it is (an import run
//! twice imports nothing twice). `hookflow destinations reseal` seals every row's secrets
//! again under the current key, so an old key can leave the key ring.

use std::collections::HashMap;

use anyhow::Context;
use hookflow_core::{DestinationSpec, destination::specs_from_toml};

use super::postgres::{Catalog, writes::StoreError};

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Destinations created.
    pub created: usize,
    /// Destinations whose team already had their id: left as they were.
    pub existing: usize,
    /// Destinations deleted from the catalog since an earlier import: they stay deleted.
    pub deleted: usize,
}

/// Reads the destinations of the file at `path` (each is validated as it is created).
pub fn specs_of_file(path: &std::path::Path) -> anyhow::Result<Vec<DestinationSpec>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    specs_from_toml(&text).with_context(|| format!("in {}", path.display()))
}

/// Reads the destinations an earlier version kept in Redis (`<prefix>:destinations`).
pub async fn specs_of_redis(url: &str, prefix: &str) -> anyhow::Result<Vec<DestinationSpec>> {
    let client = redis::Client::open(url).context("the Redis URL")?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let stored: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{prefix}:destinations"))
        .query_async(&mut connection)
        .await
        .context("reading the destinations hash")?;
    stored
        .into_iter()
        .filter(|(field, _)| !field.starts_with('#'))
        .map(|(id, json)| {
            serde_json::from_str(&json).with_context(|| format!("destination {id} in Redis"))
        })
        .collect()
}

/// Creates each of `specs` in the catalog (keeping its uid), unless its team has its id.
pub async fn import(catalog: &Catalog, specs: Vec<DestinationSpec>) -> anyhow::Result<Imported> {
    let mut imported = Imported::default();
    for spec in specs {
        let (team_id, id) = (spec.team_id, spec.id.clone());
        match catalog.import(team_id, spec).await {
            Ok(_) => imported.created += 1,
            Err(StoreError::Conflict(_)) => imported.existing += 1,
            Err(StoreError::Deleted(_)) => imported.deleted += 1,
            Err(error) => {
                return Err(error).with_context(|| format!("team {team_id}'s destination {id}"));
            }
        }
    }
    Ok(imported)
}
