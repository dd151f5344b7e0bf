//! The admin API's replay jobs: each runs a [`Replayer`] in the background of the admin
//! process, with counts to poll and a cancel. A job's progress lives in Kafka (its consumer
//! group), so a job cancelled, or lost with its process, resumes when started again with
//! the same id; the job list itself is the process's, in memory.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::replay::{CountsView, ReplayCounts, ReplayEnd, ReplayPlan, Replayer};

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// What it replays (its `job` is the job's id).
    #[serde(flatten)]
    pub plan: ReplayPlan,
    /// Where it stands.
    pub state: JobState,
    /// Why it failed.
    pub error: Option<String>,
    /// What it did so far.
    pub counts: CountsView,
}

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
        }
    }
}

/// Why a job cannot start.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A job with that id is running.
    #[error("replay job {0} is running")]
    Running(String),
    /// The plan names destinations the team does not have.
    #[error("{0}")]
    Invalid(String),
}

/// Every replay job of this process.
pub struct ReplayJobs {
    replayer: Arc<Replayer>,
    jobs: Mutex<HashMap<(i64, String), Arc<Job>>>,
}

impl ReplayJobs {
    /// No jobs yet; they run with `replayer`.
    pub fn new(replayer: Replayer) -> Self {
        ReplayJobs {
            replayer: Arc::new(replayer),
            jobs: Mutex::new(HashMap::new()),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, String), Arc<Job>>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts `plan` (or resumes it, when a job of its id ran before) in the background.
    pub fn start(&self, plan: ReplayPlan) -> Result<JobView, JobError> {
        self.replayer
            .chosen(&plan)
            .map_err(|e| JobError::Invalid(e.to_string()))?;
        let key = (plan.team_id, plan.job.clone());
        let job = Arc::new(Job {
            plan,
            counts: ReplayCounts::default(),
            cancel: CancellationToken::new(),
            state: Mutex::new((JobState::Running, None)),
        });
        {
            let mut jobs = self.jobs();
            if jobs
                .get(&key)
                .is_some_and(|j| j.state().0 == JobState::Running)
            {
                return Err(JobError::Running(key.1));
            }
            jobs.insert(key, job.clone());
        }
        let replayer = self.replayer.clone();
        let running = job.clone();
        tokio::spawn(async move {
            let ended = replayer
                .run(&running.plan, &running.counts, &running.cancel)
                .await;
            let state = match ended {
                Ok(ReplayEnd::Completed) => (JobState::Completed, None),
                Ok(ReplayEnd::Cancelled) => (JobState::Cancelled, None),
                Err(error) => {
                    tracing::error!(job = %running.plan.job, error = format!("{error:#}"), "replay job failed");
                    (JobState::Failed, Some(format!("{error:#}")))
                }
            };
            *running.state() = state;
        });
        Ok(job.view())
    }

    /// Team `team_id`'s job `id`.
    pub fn get(&self, team_id: i64, id: &str) -> Option<JobView> {
        self.jobs()
            .get(&(team_id, id.to_owned()))
            .map(|job| job.view())
    }

    /// Cancels team `team_id`'s job `id` (it stops after the starts in flight).
    pub fn cancel(&self, team_id: i64, id: &str) -> Option<JobView> {
        let job = self.jobs().get(&(team_id, id.to_owned())).cloned()?;
        job.cancel.cancel();
        Some(job.view())
    }
}
