//! The command line: `run`, `register-search-attributes`, `check-config`, `migrate`,
//! `destinations`, `replay`, `codec-server`, `send-sample`, `receive`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{
    destinations::{file::FileDestinations, import, postgres::Catalog},
    run::Role,
    settings::{DestinationStoreKind, Settings},
};

/// Reliable webhook delivery: Kafka → Temporal → signed HTTP.
#[derive(Debug, Parser)]
#[command(name = "hookflow", version)]
pub struct Cli {
    /// Configuration file layered over the built-in defaults (config/default.toml);
    /// HOOKFLOW_<SECTION>__<KEY> environment variables override both.
    #[arg(long, short, global = true, env = "HOOKFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume events and deliver them (consumer and worker in one process by default).
    Run {
        /// Which parts to run, so they can be scaled separately.
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
    },
    /// Register hookflow's search attributes on the configured namespace (idempotent).
    RegisterSearchAttributes,
    /// Validate the configuration and the destinations file, then exit.
    CheckConfig,
    /// Bring the destination catalog's schema in PostgreSQL up to date (also done at
    /// start-up unless destinations.postgres.migrate is off), then exit.
    Migrate,
    /// Operator actions on destinations.
    #[command(subcommand)]
    Destinations(DestinationsCommand),
    /// Produce sample action-matched events to the events topic.
    SendSample {
        /// Team of the events.
        #[arg(long, default_value_t = 2)]
        team: i64,
        /// Action id the events matched.
        #[arg(long, default_value_t = 17)]
        action: i64,
        /// How many events.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Replay a time range of the events topic into a destination, or all of a team's: a
    /// pair already delivered is not delivered again; one whose delivery failed is re-run
    /// with --include-failed.
    Replay(crate::replay_command::ReplayArgs),
    /// Serve Temporal's codec-server API (`/decode`, `/encode`) with the configured payload
    /// keys, so the Temporal UI and CLI can show encrypted deliveries.
    CodecServer,
    /// Run a local webhook receiver that prints every request (and verifies signatures).
    Receive {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: std::net::SocketAddr,
        /// Standard Webhooks secret to verify signatures with.
        #[arg(long, env = "HOOKFLOW_RECEIVER_SECRET")]
        secret: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DestinationsCommand {
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
    /// List destinations disabled after 410 Gone, with the reason.
    Disabled,
    /// Re-enable a destination disabled after 410 Gone; its endpoint is attempted again.
    Enable {
        /// The team whose destination it is.
        #[arg(long)]
        team: i64,
        /// The destination's id.
        id: String,
    },
}

impl Cli {
    /// Runs the chosen subcommand.
    pub async fn execute(self) -> anyhow::Result<()> {
        let config = self.config;
        let settings = || Settings::load(config.as_deref());
        match self.command {
            Command::Run { role } => crate::run::run(settings()?, role).await,
            Command::RegisterSearchAttributes => {
                let settings = settings()?;
                let client = hookflow_temporal::connect(&settings.temporal).await?;
                let namespace = &settings.temporal.namespace;
                let added =
                    hookflow_temporal::search_attributes::register(&client, namespace).await?;
                if added.is_empty() {
                    println!("search attributes already registered on {namespace}");
                } else {
                    println!("registered on {namespace}: {}", added.join(", "));
                }
                Ok(())
            }
            Command::CheckConfig => {
                let settings = settings()?;
                match settings.destinations.store {
                    DestinationStoreKind::File => {
                        let destinations = FileDestinations::load(
                            &settings.destinations.file,
                            settings.validation_rules(),
                        )?;
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
            Command::Migrate => {
                let settings = settings()?;
                let pool = settings.destinations.postgres.pool()?;
                crate::destinations::postgres::migrate(&pool)
                    .await
                    .context("migrating the destination catalog")?;
                println!("the destination catalog's schema is up to date");
                Ok(())
            }
            Command::Destinations(command) => destinations(&settings()?, command).await,
            Command::SendSample {
                team,
                action,
                count,
            } => crate::sample::send(&settings()?.kafka, team, action, count)
                .await
                .context("sending sample events"),
            Command::Replay(args) => crate::replay_command::replay(&settings()?, args).await,
            Command::CodecServer => {
                let settings = settings()?;
                hookflow_telemetry::init_tracing(
                    &settings.telemetry.log_filter,
                    hookflow_telemetry::LogFormat::Text,
                );
                let codec = hookflow_temporal::codec::EncryptionCodec::from_settings(
                    &settings.temporal.codec,
                )?
                .context("temporal.codec has no keys: there is nothing to decode")?;
                crate::codec_server::serve(&settings.codec_server, codec).await
            }
            Command::Receive { listen, secret } => {
                crate::receiver::serve(listen, secret.as_deref()).await
            }
        }
    }
}

/// The catalog of `settings` for a one-shot command that writes (nothing loaded).
async fn command_catalog(settings: &Settings) -> anyhow::Result<Catalog> {
    anyhow::ensure!(
        settings.destinations.store == DestinationStoreKind::Postgres,
        "destinations.store is not \"postgres\": there is no catalog"
    );
    let health = hookflow_telemetry::health::Health::default()
        .register("destinations", std::time::Duration::from_secs(60));
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

async fn destinations(settings: &Settings, command: DestinationsCommand) -> anyhow::Result<()> {
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
                "{} destinations sealed again under the current key",
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
    let redis = hookflow_http::RedisLink::new(&settings.redis)?
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
            if registry.enable(team, &id).await? {
                println!("team {team}'s {id} enabled: its deliveries are attempted again");
            } else {
                println!("team {team}'s {id} was not disabled");
            }
        }
        DestinationsCommand::Import { .. } | DestinationsCommand::Reseal => {}
    }
    Ok(())
}
