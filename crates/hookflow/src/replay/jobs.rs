//! The admin API's replay jobs: each runs a [`Replayer`] in the background of the admin
//! process that started it, with counts to poll and a cancel.
//!
//! Every job is recorded in Redis ([`JobRecords`]), refreshed every second while it runs,
//! so any admin process shows it, also after the one that ran it restarted, and a cancel
//! sent to another admin process reaches it. A job whose record stopped being refreshed
//! while it ran is shown `interrupted`. Its progress lives in Kafka (its consumer group),
//! so a job cancelled, interrupted or failed resumes when started again with the same id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use hookflow_runtime::{Backoff, BackoffPolicy, LinkError, RedisLink};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::replay::{CountsView, ReplayCounts, ReplayEnd, ReplayPlan, Replayer};

/// How often a running job's record is refreshed (and a cancel looked for).
const REFRESH: Duration = Duration::from_secs(1);
/// A running job whose record is older than this lost its process.
const STALE_MS: i64 = 15_000;
/// How long a job's record is kept after its last refresh.
const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a cancel request waits for the job's process to see it.
const CANCEL_KEPT: Duration = Duration::from_secs(3600);
/// How recording a job's end is retried while Redis is away.
const END_RECORD_BACKOFF: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(10),
};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Reading and starting.
    Running,
    /// The whole range was replayed.
    Completed,
    /// Cancelled; starting it again with the same id resumes.
    Cancelled,
    /// Stopped by an error (in `error`); starting it again resumes.
    Failed,
    /// Its process stopped while it ran; starting it again with the same id resumes.
    Interrupted,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    /// What it replays (its `job` is the job's id).
    #[serde(flatten)]
    pub plan: ReplayPlan,
    /// Where it stands.
    pub state: JobState,
    /// Why it failed.
    pub error: Option<String>,
    /// What it did so far (in this run of it: a resumed job counts from where it resumed).
    pub counts: CountsView,
    /// When its record was last written, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

impl JobView {
    /// The view as it stands now: a running job whose record went stale was interrupted.
    fn seen_at(mut self, now_ms: i64) -> JobView {
        if self.state == JobState::Running && now_ms - self.updated_at_ms > STALE_MS {
            self.state = JobState::Interrupted;
        }
        self
    }
}

/// The jobs' records in Redis: `<prefix>:replay_job:<team>:<job>` holds the job's view as
/// JSON, and `<prefix>:replay_job_cancel:<team>:<job>` a cancel asked of another process.
#[derive(Clone)]
pub struct JobRecords {
    redis: RedisLink,
}

impl JobRecords {
    /// Records on `redis`.
    pub fn new(redis: RedisLink) -> Self {
        JobRecords { redis }
    }

    fn key(&self, team_id: i64, job: &str) -> String {
        self.redis.key(&["replay_job", &team_id.to_string(), job])
    }

    fn cancel_key(&self, team_id: i64, job: &str) -> String {
        self.redis
            .key(&["replay_job_cancel", &team_id.to_string(), job])
    }

    /// Sets `key` to `value`, to expire after `ttl`.
    async fn set_expiring(
        &self,
        key: String,
        value: String,
        ttl: Duration,
    ) -> Result<(), LinkError> {
        self.redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("EX")
                    .arg(ttl.as_secs())
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    async fn save(&self, view: &JobView) -> Result<(), LinkError> {
        let key = self.key(view.plan.team_id, &view.plan.job);
        let json = serde_json::to_string(view).unwrap_or_default();
        self.set_expiring(key, json, KEEP).await
    }

    async fn load(&self, team_id: i64, job: &str) -> Result<Option<JobView>, LinkError> {
        let key = self.key(team_id, job);
        let json: Option<String> = self
            .redis
            .run(|mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await })
            .await?;
        // A record this version cannot read is as good as none.
        Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
    }

    async fn ask_cancel(&self, team_id: i64, job: &str) -> Result<(), LinkError> {
        let key = self.cancel_key(team_id, job);
        self.set_expiring(key, "1".into(), CANCEL_KEPT).await
    }

    /// Whether a cancel was asked (and forgets it).
    async fn take_cancel(&self, team_id: i64, job: &str) -> Result<bool, LinkError> {
        let key = self.cancel_key(team_id, job);
        let deleted: i64 = self
            .redis
            .run(|mut c| async move { redis::cmd("DEL").arg(&key).query_async(&mut c).await })
            .await?;
        Ok(deleted > 0)
    }
}

/// A job running in this process.
struct Job {
    plan: ReplayPlan,
    counts: ReplayCounts,
    cancel: CancellationToken,
    state: Mutex<(JobState, Option<String>)>,
}

impl Job {
    fn state(&self) -> std::sync::MutexGuard<'_, (JobState, Option<String>)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn view(&self) -> JobView {
        let (state, error) = self.state().clone();
        JobView {
            plan: self.plan.clone(),
            state,
            error,
            counts: self.counts.view(),
            updated_at_ms: now_ms(),
        }
    }
}

fn now_ms() -> i64 {
    i64::try_from(hookflow_runtime::unix_now_ms()).unwrap_or(i64::MAX)
}

/// Why a job cannot be started, shown or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A job with that id is running.
    #[error("replay job {0} is running")]
    Running(String),
    /// The plan names destinations the team does not have.
    #[error("{0}")]
    Invalid(String),
    /// The jobs' records cannot be read or written.
    #[error("replay jobs: {0}")]
    Records(#[from] LinkError),
}

/// The replay jobs of this process, and the records of every admin process's.
pub struct ReplayJobs {
    replayer: Arc<Replayer>,
    records: JobRecords,
    jobs: Mutex<HashMap<(i64, String), Arc<Job>>>,
}

impl ReplayJobs {
    /// No jobs running yet; they run with `replayer` and are recorded in `records`.
    pub fn new(replayer: Replayer, records: JobRecords) -> Self {
        ReplayJobs {
            replayer: Arc::new(replayer),
            records,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, String), Arc<Job>>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn running_here(&self, team_id: i64, id: &str) -> Option<Arc<Job>> {
        self.jobs()
            .get(&(team_id, id.to_owned()))
            .filter(|job| job.state().0 == JobState::Running)
            .cloned()
    }

    /// Starts `plan` (or resumes it, when a job of its id ran before) in the background,
    /// unless a job of its id is running here or in another admin process.
    pub async fn start(&self, plan: ReplayPlan) -> Result<JobView, JobError> {
        self.replayer
            .chosen(&plan)
            .map_err(|e| JobError::Invalid(e.to_string()))?;
        let key = (plan.team_id, plan.job.clone());
        if self.running_here(plan.team_id, &plan.job).is_some() {
            return Err(JobError::Running(key.1));
        }
        let recorded = self.records.load(plan.team_id, &plan.job).await?;
        if recorded.is_some_and(|view| view.seen_at(now_ms()).state == JobState::Running) {
            return Err(JobError::Running(key.1));
        }
        // A cancel asked of an earlier run of the job is not this run's.
        self.records.take_cancel(plan.team_id, &plan.job).await?;
        let job = Arc::new(Job {
            plan,
            counts: ReplayCounts::default(),
            cancel: CancellationToken::new(),
            state: Mutex::new((JobState::Running, None)),
        });
        {
            // Checked again under the lock: another start of it may have come meanwhile.
            let mut jobs = self.jobs();
            if jobs
                .get(&key)
                .is_some_and(|j| j.state().0 == JobState::Running)
            {
                return Err(JobError::Running(key.1));
            }
            jobs.insert(key, job.clone());
        }
        // Its record is written at once by `run`'s first refresh.
        let view = job.view();
        tokio::spawn(run(self.replayer.clone(), self.records.clone(), job));
        Ok(view)
    }

    /// Team `team_id`'s job `id`: as this process runs it, or as recorded.
    pub async fn get(&self, team_id: i64, id: &str) -> Result<Option<JobView>, JobError> {
        if let Some(job) = self.running_here(team_id, id) {
            return Ok(Some(job.view()));
        }
        let recorded = self.records.load(team_id, id).await?;
        Ok(recorded.map(|view| view.seen_at(now_ms())))
    }

    /// Cancels team `team_id`'s job `id`: at once when it runs here (it stops after the
    /// starts in flight), within a second when it runs in another admin process.
    pub async fn cancel(&self, team_id: i64, id: &str) -> Result<Option<JobView>, JobError> {
        if let Some(job) = self.running_here(team_id, id) {
            job.cancel.cancel();
            return Ok(Some(job.view()));
        }
        let Some(view) = self.records.load(team_id, id).await? else {
            return Ok(None);
        };
        let view = view.seen_at(now_ms());
        if view.state == JobState::Running {
            self.records.ask_cancel(team_id, id).await?;
        }
        Ok(Some(view))
    }
}

/// Runs `job`, refreshing its record and looking for a cancel every [`REFRESH`], and
/// records how it ended.
async fn run(replayer: Arc<Replayer>, records: JobRecords, job: Arc<Job>) {
    let replay = replayer.run(&job.plan, &job.counts, &job.cancel);
    tokio::pin!(replay);
    let mut refresh = tokio::time::interval(REFRESH);
    let ended = loop {
        tokio::select! {
            ended = &mut replay => break ended,
            _ = refresh.tick() => {
                // Redis away: the job goes on; its record catches up once it is back.
                let _ = records.save(&job.view()).await;
                if records.take_cancel(job.plan.team_id, &job.plan.job).await.unwrap_or(false) {
                    job.cancel.cancel();
                }
            }
        }
    };
    let state = match ended {
        Ok(ReplayEnd::Completed) => (JobState::Completed, None),
        Ok(ReplayEnd::Cancelled) => (JobState::Cancelled, None),
        Err(error) => {
            tracing::error!(job = %job.plan.job, error = format!("{error:#}"), "replay job failed");
            (JobState::Failed, Some(format!("{error:#}")))
        }
    };
    *job.state() = state;
    // The end must be recorded, or the job would read as interrupted: retried while
    // Redis is away, as long as this process lives (no shutdown cuts it short).
    let mut backoff = Backoff::new(END_RECORD_BACKOFF);
    let forever = CancellationToken::new();
    while let Err(error) = records.save(&job.view()).await {
        tracing::warn!(job = %job.plan.job, %error, "replay job: recording its end");
        backoff.wait(&forever).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: JobState, updated_at_ms: i64) -> JobView {
        JobView {
            plan: ReplayPlan {
                job: "j".into(),
                team_id: 1,
                destination_id: None,
                since: chrono::DateTime::UNIX_EPOCH,
                until: None,
                dry_run: false,
                include_failed: false,
                max_starts_per_second: 50,
            },
            state,
            error: None,
            counts: CountsView::default(),
            updated_at_ms,
        }
    }

    #[test]
    fn a_running_job_whose_record_went_stale_was_interrupted() {
        let now = 1_000_000;
        let fresh = view(JobState::Running, now - 2_000).seen_at(now);
        assert_eq!(fresh.state, JobState::Running);
        let stale = view(JobState::Running, now - STALE_MS - 1).seen_at(now);
        assert_eq!(stale.state, JobState::Interrupted);
        let ended = view(JobState::Completed, 0).seen_at(now);
        assert_eq!(ended.state, JobState::Completed, "an ended job stays ended");
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let written = view(JobState::Cancelled, 42);
        let json = serde_json::to_string(&written).expect("json");
        let read: JobView = serde_json::from_str(&json).expect("read back");
        assert_eq!(
            serde_json::to_value(&read).expect("json"),
            serde_json::to_value(&written).expect("json")
        );
    }
}
