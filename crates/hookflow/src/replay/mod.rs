//! Replaying a time range of the events topic into one destination, or all of a team's:
//! the engine behind `hookflow replay` and the admin API's replay jobs.
//!
//! Each message of the range is matched against the destinations' current action filters
//! and a delivery is started for every pair, under the same workflow id as live traffic:
//! a pair delivered (or delivering) already is left alone and counted so; a pair whose
//! delivery failed is counted as failed, and re-run (a new run of the same id, the same
//! `webhook-id`) only with `include_failed`. Starts are paced (`max_starts_per_second`),
//! go through the task queue below live traffic's priority, and the deliveries they start
//! go through the same rate limits and breakers as live ones. Progress is committed per
//! batch under the job's own consumer group, so a job stopped (cancelled, crashed) resumes
//! where it stopped when run again under the same id.

pub mod jobs;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use futures::StreamExt;
use hookflow_core::{
    ActionMatchedEvent, DeliveryDefaults, DeliveryInput, DeliveryScheduler, Destination,
    DestinationCatalog, ScheduleErrorKind, Scheduled, plan_deliveries,
};
use hookflow_kafka::{
    KafkaSettings,
    range::{RangeMessage, RangeReader, TimeRange},
};
use hookflow_runtime::{Backoff, BackoffPolicy};
use hookflow_temporal::{
    TemporalScheduler, ownership,
    recovery::{self, Latest, Rerun, RerunInput},
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Messages read and committed together.
const BATCH: usize = 64;
/// Starts in flight at once.
const CONCURRENT_STARTS: usize = 16;

/// What to replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayPlan {
    /// The job's id: its progress is kept under it, and running it again resumes.
    pub job: String,
    /// The team whose events are replayed.
    pub team_id: i64,
    /// Only into this destination (of the team); into all of the team's when `None`.
    pub destination_id: Option<String>,
    /// The first instant replayed, RFC 3339.
    pub since: chrono::DateTime<chrono::Utc>,
    /// The first instant not replayed; up to the topic's end when `None`.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Count what would happen, start nothing, commit no progress.
    pub dry_run: bool,
    /// Re-run pairs whose earlier delivery failed.
    pub include_failed: bool,
    /// At most this many starts a second.
    pub max_starts_per_second: u32,
}

impl ReplayPlan {
    /// A new job id: the time and a random suffix.
    pub fn new_job_id() -> String {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            &suffix[..6]
        )
    }

    /// The consumer group the job keeps its progress under: of its team and id, so two
    /// teams' jobs of the same id never share (or resume from) each other's progress.
    pub fn consumer_group(&self, live_group: &str) -> String {
        format!("{live_group}-replay-{}-{}", self.team_id, self.job)
    }

    /// Whether `id` can name a job (it becomes part of a consumer group id).
    pub fn valid_job_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }
}

/// What a replay did (in a dry run: would do), as it goes.
#[derive(Debug, Default)]
pub struct ReplayCounts {
    total: AtomicU64,
    read: AtomicU64,
    malformed: AtomicU64,
    skipped: AtomicU64,
    started: AtomicU64,
    already_started: AtomicU64,
    failed: AtomicU64,
    rerun: AtomicU64,
    unstartable: AtomicU64,
}

/// A snapshot of [`ReplayCounts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsView {
    /// Offsets in the range when the job (or this resumption of it) began.
    pub total: u64,
    /// Messages read so far.
    pub read: u64,
    /// Messages that are not events (they were dead-lettered when first consumed).
    pub malformed: u64,
    /// Events no chosen destination wants (another team's, or no matching action).
    pub skipped: u64,
    /// Deliveries started (dry run: that would start).
    pub started: u64,
    /// Pairs delivered or delivering already: nothing started.
    pub already_started: u64,
    /// Pairs whose earlier delivery failed, left alone (without `include_failed`).
    pub failed: u64,
    /// Pairs whose failed delivery was run again (dry run: would be).
    pub rerun: u64,
    /// Deliveries Temporal cannot start (input over the payload limit).
    pub unstartable: u64,
}

impl ReplayCounts {
    /// The counts now.
    pub fn view(&self) -> CountsView {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountsView {
            total: get(&self.total),
            read: get(&self.read),
            malformed: get(&self.malformed),
            skipped: get(&self.skipped),
            started: get(&self.started),
            already_started: get(&self.already_started),
            failed: get(&self.failed),
            rerun: get(&self.rerun),
            unstartable: get(&self.unstartable),
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of a pair that exists, its latest run `latest`: re-run (when `rerun` and
    /// that run failed), failed and left, or already started.
    fn existing(&self, latest: &Latest, rerun: bool) -> &AtomicU64 {
        match latest.recoverable_run() {
            Some(_) if rerun => &self.rerun,
            Some(_) => &self.failed,
            None => &self.already_started,
        }
    }
}

/// How a replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayEnd {
    /// The whole range was read.
    Completed,
    /// It was cancelled; running the job again resumes.
    Cancelled,
}

/// What a replay runs with.
pub struct Replayer {
    /// The events topic and brokers.
    pub kafka: KafkaSettings,
    /// The destinations, as live delivery sees them.
    pub destinations: Arc<dyn DestinationCatalog>,
    /// Retry policy and history bound of the deliveries it starts.
    pub defaults: DeliveryDefaults,
    /// Starts recovery deliveries ([`TemporalScheduler::for_recovery`]).
    pub scheduler: TemporalScheduler,
}

impl Replayer {
    /// The destinations `plan` replays into: an error when a named one is not the team's.
    pub fn chosen(&self, plan: &ReplayPlan) -> anyhow::Result<Vec<Arc<Destination>>> {
        let team = self.destinations.for_team(plan.team_id);
        match &plan.destination_id {
            None if team.is_empty() => {
                anyhow::bail!("team {} has no destinations", plan.team_id)
            }
            None => Ok(team),
            Some(id) => team
                .into_iter()
                .find(|d| &d.id == id)
                .map(|d| vec![d])
                .with_context(|| format!("team {} has no destination {id}", plan.team_id)),
        }
    }

    /// Runs `plan` until the range is read or `cancel`, counting into `counts`.
    pub async fn run(
        &self,
        plan: &ReplayPlan,
        counts: &ReplayCounts,
        cancel: &CancellationToken,
    ) -> anyhow::Result<ReplayEnd> {
        let chosen = self.chosen(plan)?;
        let range = TimeRange {
            since_ms: plan.since.timestamp_millis(),
            until_ms: plan.until.map(|u| u.timestamp_millis()),
        };
        let group = plan.consumer_group(&self.kafka.group_id);
        let mut reader = RangeReader::open(&self.kafka, &group, range).await?;
        counts.total.store(reader.total(), Ordering::Relaxed);
        let pace = Duration::from_secs_f64(1.0 / f64::from(plan.max_starts_per_second.max(1)));
        let mut ticks = tokio::time::interval(pace);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ticks = tokio::sync::Mutex::new(ticks);
        while !reader.is_done() {
            let batch = tokio::select! {
                _ = cancel.cancelled() => return Ok(ReplayEnd::Cancelled),
                batch = reader.next_batch(BATCH) => batch?,
            };
            let deliveries: Vec<DeliveryInput> = batch
                .iter()
                .flat_map(|message| self.plan_message(message, &chosen, counts))
                .collect();
            let finished = futures::stream::iter(deliveries)
                .map(|delivery| async {
                    ticks.lock().await.tick().await;
                    self.deliver(delivery, plan, counts, cancel).await
                })
                .buffer_unordered(CONCURRENT_STARTS)
                .collect::<Vec<Result<bool, anyhow::Error>>>()
                .await;
            let mut interrupted = false;
            for done in finished {
                interrupted |= !done?;
            }
            if interrupted {
                // Progress stops before the batch: resuming starts it again.
                return Ok(ReplayEnd::Cancelled);
            }
            if !plan.dry_run {
                reader.commit(&batch).await?;
            }
        }
        Ok(ReplayEnd::Completed)
    }

    /// The deliveries one message needs, counted.
    fn plan_message(
        &self,
        message: &RangeMessage,
        chosen: &[Arc<Destination>],
        counts: &ReplayCounts,
    ) -> Vec<DeliveryInput> {
        ReplayCounts::add(&counts.read);
        let Some(event) = message
            .payload
            .as_deref()
            .and_then(|p| ActionMatchedEvent::from_json(p).ok())
        else {
            ReplayCounts::add(&counts.malformed);
            return Vec::new();
        };
        // The produce time is not the start time of a replayed delivery: no end-to-end
        // latency is recorded for it.
        let deliveries =
            plan_deliveries(&event, chosen.iter().map(Arc::as_ref), &self.defaults, None);
        if deliveries.is_empty() {
            ReplayCounts::add(&counts.skipped);
        }
        deliveries
    }

    /// Starts (or, in a dry run, looks up) one delivery, counted; `false` when `cancel`
    /// came while a start was being retried.
    async fn deliver(
        &self,
        delivery: DeliveryInput,
        plan: &ReplayPlan,
        counts: &ReplayCounts,
        cancel: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let client = self.scheduler.client();
        // This team's delivery: another team's may hold its id (`ownership`).
        let (team_id, planned_id) = (delivery.event.team_id, delivery.delivery_id.clone());
        let owned = || ownership::workflow_of(client, team_id, &planned_id);
        if plan.dry_run {
            let latest = recovery::latest(client, owned().await?.as_str()).await?;
            let counter = match latest {
                Latest::None => &counts.started,
                _ => counts.existing(&latest, plan.include_failed),
            };
            ReplayCounts::add(counter);
            return Ok(true);
        }
        let counter = match self.start(&delivery, cancel).await {
            StartEnd::Cancelled => return Ok(false),
            StartEnd::Unstartable => &counts.unstartable,
            StartEnd::Scheduled(Scheduled::Started) => &counts.started,
            StartEnd::Scheduled(Scheduled::AlreadyExists) if plan.include_failed => {
                let id = owned().await?;
                let task_queue = self.scheduler.task_queue();
                let input = RerunInput::Planned(Box::new(delivery.with_delivery_id(id.clone())));
                match recovery::rerun(client, task_queue, id.as_str(), input).await? {
                    Rerun::Started => &counts.rerun,
                    _ => &counts.already_started,
                }
            }
            StartEnd::Scheduled(Scheduled::AlreadyExists) => {
                let id = owned().await?;
                counts.existing(&recovery::latest(client, id.as_str()).await?, false)
            }
        };
        ReplayCounts::add(counter);
        Ok(true)
    }

    /// Starts `delivery`, retrying while Temporal is unavailable or refuses, until `cancel`.
    async fn start(&self, delivery: &DeliveryInput, cancel: &CancellationToken) -> StartEnd {
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        });
        loop {
            match self.scheduler.schedule(delivery).await {
                Ok(scheduled) => return StartEnd::Scheduled(scheduled),
                Err(error) if error.kind == ScheduleErrorKind::Event => {
                    tracing::error!(delivery_id = %delivery.delivery_id, %error, "replay: delivery cannot be started");
                    return StartEnd::Unstartable;
                }
                Err(error) => {
                    tracing::warn!(delivery_id = %delivery.delivery_id, %error, "replay: start failed; retrying");
                    if !backoff.wait(cancel).await {
                        return StartEnd::Cancelled;
                    }
                }
            }
        }
    }
}

/// How [`Replayer::start`] ended.
enum StartEnd {
    /// Temporal answered the start.
    Scheduled(Scheduled),
    /// The event itself cannot be started (its input is over the payload limit).
    Unstartable,
    /// Cancelled while the start was being retried.
    Cancelled,
}
