//! `hookflow destinations`: operator actions on destinations. Import into and reseal the
//! PostgreSQL catalog; list and re-enable destinations disabled after 410 Gone or a
//! failure streak (kept in Redis).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::{
    destinations::{import, postgres::Catalog},
    notices::{NoticeSender, NoticeWebhooks},
    settings::{DestinationStoreKind, Settings},
    wiring::{PROBE_DEADLINE, destinations_now},
};

#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// Create destinations in the PostgreSQL catalog from a destinations file, or from the
    /// Redis hash an earlier version kept them in (keeping their uids). A team's id that
    /// exists is left as it is, so running it again imports nothing twice.
    Import {
        /// A destinations file.
        #[arg(
            long,
            conflicts_with = "redis_url",
            required_unless_present = "redis_url"
        )]
        file: Option<PathBuf>,
        /// The Redis of an earlier version's destination store.
        #[arg(long)]
        redis_url: Option<String>,
        /// That store's key prefix (`<prefix>:destinations`).
        #[arg(long, default_value = "hookflow")]
        redis_prefix: String,
    },
    /// Seal every destination's secrets in the catalog again under the current key, so an
    /// older key can leave destinations.postgres.encryption.keys.
    Reseal,
    /// List destinations disabled after 410 Gone or a failure streak (`auto_disabled`),
    /// with the reason.
    Disabled,
    /// Re-enable a destination disabled after 410 Gone or a failure streak; its endpoint is
    /// attempted again, and `destination.enabled` goes to the outcomes topic.
    Enable {
        /// The team whose destination it is.
        #[arg(long)]
        team: i64,
        /// The destination's id.
        id: String,
    },
}

/// The catalog of `settings` for a one-shot command that writes (nothing loaded).
async fn command_catalog(settings: &Settings) -> anyhow::Result<Catalog> {
    anyhow::ensure!(
        settings.destinations.store == DestinationStoreKind::Postgres,
        "destinations.store is not \"postgres\": there is no catalog"
    );
    let health =
        hookflow_telemetry::health::Health::default().register("destinations", PROBE_DEADLINE);
    let catalog = Catalog::open(
        &settings.destinations.postgres,
        settings.validation_rules(),
        health,
    )?;
    catalog
        .for_commands()
        .await
        .context("the destination catalog")?;
    Ok(catalog)
}

/// Runs `command`.
pub async fn run(settings: &Settings, command: DestinationsCommand) -> anyhow::Result<()> {
    match command {
        DestinationsCommand::Import {
            file,
            redis_url,
            redis_prefix,
        } => {
            let specs = match (file, redis_url) {
                (Some(file), _) => import::specs_of_file(&file)?,
                (None, Some(url)) => import::specs_of_redis(&url, &redis_prefix).await?,
                (None, None) => anyhow::bail!("give --file or --redis-url"),
            };
            let catalog = command_catalog(settings).await?;
            let imported = import::import(&catalog, specs).await?;
            println!(
                "imported {} destinations; {} existed already and were left as they were; \
                 {} were deleted from the catalog since and stay deleted",
                imported.created, imported.existing, imported.deleted
            );
            return Ok(());
        }
        DestinationsCommand::Reseal => {
            let catalog = command_catalog(settings).await?;
            let resealed = catalog.reseal().await?;
            println!(
                "{} destinations sealed again under the current key (bound to their rows \
                 with bind_rows)",
                resealed.moved
            );
            // A row no key opens stays as it is: keep the key that sealed it until it is
            // fixed (or the destination deleted), and say so with a failing exit.
            for (team, id, problem) in &resealed.unreadable {
                eprintln!("team {team} destination {id} left as it was: {problem}");
            }
            if !resealed.unreadable.is_empty() {
                anyhow::bail!(
                    "{} destinations could not be sealed again",
                    resealed.unreadable.len()
                );
            }
            return Ok(());
        }
        DestinationsCommand::Disabled | DestinationsCommand::Enable { .. } => {}
    }
    // The disabled-destinations registry lives in Redis, so these commands need it.
    let redis = hookflow_runtime::RedisLink::new(&settings.redis)?
        .context("redis.url is empty: disabled destinations are only kept in Redis")?;
    let registry = hookflow_http::isolation::DisabledDestinations::new(Some(redis));
    match command {
        DestinationsCommand::Disabled => {
            let mut disabled: Vec<_> = registry.list().await?.into_iter().collect();
            disabled.sort_by(|a, b| a.0.cmp(&b.0));
            if disabled.is_empty() {
                println!("no destination is disabled");
            }
            // <team>:<id>:<uid> (`-` without a uid), tab-separated.
            for (key, disablement) in disabled {
                let columns = key.replace(':', "\t");
                println!("{columns}\t{}\t{}", disablement.at, disablement.reason);
            }
        }
        DestinationsCommand::Enable { team, id } => {
            let enabled = crate::auto_disable::enable(&registry, team, &id).await?;
            if !enabled.is_empty() {
                // Best effort: it is enabled already, and the topic still gets the notice.
                let webhooks = match notice_webhooks(settings).await {
                    Ok(webhooks) => Some(webhooks),
                    Err(error) => {
                        eprintln!("the team's notices destinations are not told: {error:#}");
                        None
                    }
                };
                let notices = NoticeSender::new(settings, webhooks)?;
                for notice in &enabled {
                    notices.send(notice).await;
                }
            }
            if !enabled.is_empty() {
                println!("team {team}'s {id} enabled: its deliveries are attempted again");
            } else {
                println!("team {team}'s {id} was not disabled");
            }
        }
        DestinationsCommand::Import { .. } | DestinationsCommand::Reseal => {}
    }
    Ok(())
}

/// The teams' notices destinations, for a one-shot command to start deliveries to.
async fn notice_webhooks(settings: &Settings) -> anyhow::Result<NoticeWebhooks> {
    let client = hookflow_temporal::connect(&settings.temporal).await?;
    let destinations = destinations_now(settings).await?;
    Ok(NoticeWebhooks::new(settings, client, destinations))
}
