//! The command line: `run`, `register-search-attributes`, `check-config`, `migrate`,
//! `destinations`, `replay`, `erase`, `codec-server`, `send-sample`, `receive`. Parsing only: each
//! subcommand is a module of `commands`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{
    commands::{self, destinations::DestinationsCommand, run::Role},
    settings::Settings,
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
    Replay(commands::replay::ReplayArgs),
    /// Erase one person's deliveries of one team from Temporal: those still going are
    /// cancelled, every run is deleted with its event (needs temporal.person_hash_key).
    Erase {
        /// The team.
        #[arg(long)]
        team: i64,
        /// The person's distinct id, as the events carry it; `-` reads it from standard
        /// input (out of the process list and the shell's history).
        #[arg(long)]
        distinct_id: String,
    },
    /// Serve Temporal's codec-server API (`/decode`, `/encode`) with the configured payload
    /// keys, so the Temporal UI and CLI can show encrypted deliveries.
    CodecServer,
    /// Run a local webhook receiver that prints every request (and verifies signatures).
    Receive {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: std::net::SocketAddr,
        /// The destination's Standard Webhooks secret (`whsec_…`) or, for an ed25519-signed
        /// one, its public key (`whpk_…`), to verify signatures with.
        #[arg(long, env = "HOOKFLOW_RECEIVER_SECRET")]
        secret: Option<String>,
    },
}

impl Cli {
    /// Runs the chosen subcommand.
    pub async fn execute(self) -> anyhow::Result<()> {
        let config = self.config;
        let settings = || Settings::load(config.as_deref());
        match self.command {
            Command::Run { role } => commands::run::run(settings()?, role).await,
            Command::RegisterSearchAttributes => {
                commands::register_search_attributes::run(&settings()?).await
            }
            Command::CheckConfig => commands::check_config::run(&settings()?),
            Command::Migrate => commands::migrate::run(&settings()?).await,
            Command::Destinations(command) => {
                commands::destinations::run(&settings()?, command).await
            }
            Command::SendSample {
                team,
                action,
                count,
            } => commands::send_sample::send(&settings()?.kafka, team, action, count)
                .await
                .context("sending sample events"),
            Command::Replay(args) => commands::replay::replay(&settings()?, args).await,
            Command::Erase { team, distinct_id } => {
                commands::erase::run(&settings()?, team, &distinct_id).await
            }
            Command::CodecServer => commands::codec_server::run(&settings()?).await,
            Command::Receive { listen, secret } => {
                commands::receive::serve(listen, secret.as_deref()).await
            }
        }
    }
}
