//! `hookflow erase --team T --distinct-id D`: deletes one person's deliveries of one team
//! from Temporal (cancelling those still going) and prints the report as JSON. `-` reads
//! the distinct id from standard input, keeping it out of the process list and the shell's
//! history.

use std::io::BufRead;

use anyhow::Context;

use crate::settings::Settings;

/// Erases and prints what was erased; an error when a run could not be deleted.
pub async fn run(settings: &Settings, team_id: i64, distinct_id: &str) -> anyhow::Result<()> {
    let keys = settings.temporal.person_keys().context(
        "erasure finds a person's deliveries by their hash: set temporal.person_hash_key",
    )?;
    let distinct_id = match distinct_id {
        "-" => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the distinct id from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
        given => given.to_owned(),
    };
    anyhow::ensure!(!distinct_id.is_empty(), "the distinct id is empty");
    let client = hookflow_temporal::connect(&settings.temporal).await?;
    let report = hookflow_temporal::erasure::erase(&client, &keys, team_id, &distinct_id).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    anyhow::ensure!(
        report.failed.is_empty(),
        "{} deliveries could not be erased: erase again",
        report.failed.len()
    );
    Ok(())
}
