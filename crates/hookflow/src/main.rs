//! `hookflow`: reliable webhook delivery. This file only declares the parts and hands the
//! command line over to the chosen subcommand.
//!
//! # Layout
//!
//! - [`cli`]: the command line, parsed with clap and dispatched to [`commands`];
//! - [`commands`]: one module per subcommand (`run`, `destinations`, `replay`, …);
//! - [`wiring`]: what several commands build the same way from the settings (the
//!   destinations, the delivery client, the deliveries' defaults, a replayer);
//! - [`settings`]: the layered configuration (built-in defaults, a file, the environment);
//! - [`destinations`]: the destination stores (a file, or the catalog in PostgreSQL);
//! - [`admin`]: the admin HTTP API, one module per resource;
//! - [`replay`]: replaying a time range of the topic, in the foreground or as jobs;
//! - [`auto_disable`]: the worker's flush of failure streaks, and what it does when one
//!   crosses a line; [`notices`]: where a destination notice goes;
//! - [`bearer`]: the token check of the admin API and the codec server.
//!
//! The library crates hold delivery itself: `hookflow-core` (the model, pure), and
//! `hookflow-kafka`, `hookflow-temporal`, `hookflow-http` and `hookflow-telemetry` around it
//! (docs/architecture.md draws them).

mod admin;
mod auto_disable;
mod bearer;
mod cli;
mod commands;
mod destinations;
mod notices;
mod replay;
mod settings;
mod wiring;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.execute().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hookflow: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
