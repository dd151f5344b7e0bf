//! `hookflow replay`: a replay in the foreground, with a progress bar on a terminal and
//! the counts at the end. Ctrl-C stops it; running it again with the same `--job` resumes.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::{
    replay::{CountsView, ReplayCounts, ReplayEnd, ReplayPlan},
    settings::Settings,
};

/// What `hookflow replay` is asked: a time range of the events topic into a destination,
/// or all of a team's. A pair already delivered is not delivered again; one whose delivery
/// failed is re-run with --include-failed.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The team whose events are replayed (destination ids are per team).
    #[arg(long)]
    pub team: i64,
    /// Only into this destination of the team; into all of the team's without it.
    #[arg(long)]
    pub destination: Option<String>,
    /// The first instant replayed (RFC 3339, by Kafka message timestamp).
    #[arg(long)]
    pub since: chrono::DateTime<chrono::Utc>,
    /// The first instant not replayed (RFC 3339); default: what the topic holds now.
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Count what would be started; start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also re-run pairs whose delivery gave up, failed permanently or found the
    /// destination disabled (a new run of the same delivery: the same webhook-id).
    #[arg(long)]
    pub include_failed: bool,
    /// The job's id; a job stopped before its end resumes when run again with it.
    #[arg(long)]
    pub job: Option<String>,
    /// At most this many deliveries started a second.
    #[arg(long, default_value_t = 50)]
    pub max_starts_per_second: u32,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs the replay `args` ask for.
pub async fn replay(settings: &Settings, args: ReplayArgs) -> anyhow::Result<()> {
    hookflow_telemetry::init_tracing("warn", hookflow_telemetry::LogFormat::Text);
    let destinations = crate::wiring::destinations_now(settings).await?;
    let team_id = args.team;
    if let Some(id) = &args.destination {
        destinations
            .get(team_id, id)
            .with_context(|| format!("team {team_id} has no destination {id}"))?;
    }
    let job = args.job.unwrap_or_else(ReplayPlan::new_job_id);
    anyhow::ensure!(
        ReplayPlan::valid_job_id(&job),
        "--job must be 1 to 64 of [A-Za-z0-9._-]"
    );
    if let Some(until) = args.until {
        anyhow::ensure!(until > args.since, "--until must be after --since");
    }
    let plan = ReplayPlan {
        job,
        team_id,
        destination_id: args.destination,
        since: args.since,
        until: args.until,
        dry_run: args.dry_run,
        include_failed: args.include_failed,
        max_starts_per_second: args.max_starts_per_second.max(1),
    };
    let client = hookflow_temporal::connect(&settings.temporal).await?;
    let replayer = crate::wiring::replayer(settings, client, destinations);
    replayer.chosen(&plan)?;
    if !args.json {
        println!(
            "replay job {}{}: run again with --job {} to resume",
            plan.job,
            if plan.dry_run { " (dry run)" } else { "" },
            plan.job
        );
    }

    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });
    let counts = Arc::new(ReplayCounts::default());
    // Drawn only on a terminal (indicatif hides it otherwise).
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} messages  {msg}")
            .context("progress bar template")?,
    );
    let shown = counts.clone();
    let progress = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            let now = shown.view();
            progress.set_length(now.total);
            progress.set_position(now.read);
            progress.set_message(format!(
                "started {} already {} rerun {}",
                now.started, now.already_started, now.rerun
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let end = replayer.run(&plan, &counts, &cancel).await;
    ticker.abort();
    bar.finish_and_clear();
    let end = end?;
    if args.json {
        let summary = serde_json::json!({"job": plan.job, "end": end, "counts": counts.view()});
        println!("{summary}");
    } else {
        print_counts(&counts.view(), end, plan.dry_run);
    }
    Ok(())
}

fn print_counts(counts: &CountsView, end: ReplayEnd, dry_run: bool) {
    let verb = if dry_run { "would start" } else { "started" };
    println!(
        "{}: read {} of {} messages",
        match end {
            ReplayEnd::Completed => "completed",
            ReplayEnd::Cancelled => "cancelled (resume with the same --job)",
        },
        counts.read,
        counts.total
    );
    println!("  {verb:<16} {}", counts.started);
    println!("  already started  {}", counts.already_started);
    println!(
        "  {:<16} {}",
        if dry_run { "would re-run" } else { "re-run" },
        counts.rerun
    );
    println!("  failed, left     {}", counts.failed);
    println!("  not wanted       {}", counts.skipped);
    println!("  malformed        {}", counts.malformed);
    println!("  unstartable      {}", counts.unstartable);
    if counts.failed > 0 {
        println!("  (--include-failed re-runs the failed ones)");
    }
}
