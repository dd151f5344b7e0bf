//! `hookflow register-search-attributes`: registers hookflow's search attributes on the
//! configured Temporal namespace (idempotent).

use crate::settings::Settings;

/// Registers what is missing and says what was added.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let client = hookflow_temporal::connect(&settings.temporal).await?;
    let namespace = &settings.temporal.namespace;
    let added = hookflow_temporal::search_attributes::register(&client, namespace).await?;
    if added.is_empty() {
        println!("search attributes already registered on {namespace}");
    } else {
        println!("registered on {namespace}: {}", added.join(", "));
    }
    Ok(())
}
