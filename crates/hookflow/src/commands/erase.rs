//! `hookflow erase --team T --distinct-id D`: deletes one person's deliveries of one team
//! from Temporal (cancelling those still going) and prints the report as JSON.

use anyhow::Context;

use crate::settings::Settings;

/// Erases and prints what was erased.
pub async fn run(settings: &Settings, team_id: i64, distinct_id: &str) -> anyhow::Result<()> {
    let key = settings.temporal.person_key().context(
        "erasure finds a person's deliveries by their hash: set temporal.person_hash_key",
    )?;
    let client = hookflow_temporal::connect(&settings.temporal).await?;
    let report = hookflow_temporal::erasure::erase(&client, &key, team_id, distinct_id).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
