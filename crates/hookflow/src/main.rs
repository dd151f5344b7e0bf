//! `hookflow`: reliable webhook delivery. This file only parses the command line and hands
//! over to the subcommand; the wiring lives in `run.rs`.

mod admin;
mod bearer;
mod cli;
mod codec_server;
mod destinations;
mod receiver;
mod replay;
mod replay_command;
mod replay_jobs;
mod run;
mod sample;
mod settings;

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
