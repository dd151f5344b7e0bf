//! Replay jobs: a replay of a time range of the events topic into a destination of the
//! team, or all of its destinations, run in the background by this admin process and
//! recorded in Redis, so any admin process shows it and passes a cancel on to it. A team
//! token of one destination reaches the jobs of that destination only.

use axum::{
    Extension, Json, Router,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
    routing::{get, post},
};
use serde::Deserialize;

use super::{
    AdminState, ApiError, ApiPath, instant,
    tokens::{Caller, Reach},
};
use crate::replay::{ReplayPlan, jobs::JobView};

const JOBS: &str = "/v1/teams/{team}/replays";
const JOB: &str = "/v1/teams/{team}/replays/{job}";
const CANCEL: &str = "/v1/teams/{team}/replays/{job}/cancel";

/// The paths of this resource, and what a team token reaches on each.
pub(super) const ROUTES: &[(&str, Reach)] = &[
    (JOBS, Reach::ReplayJobs),
    (JOB, Reach::ReplayJobs),
    (CANCEL, Reach::ReplayJobs),
];

/// Adds this resource's routes.
pub(super) fn routes(router: Router<AdminState>) -> Router<AdminState> {
    router
        .route(JOBS, post(start_replay))
        .route(JOB, get(replay_job))
        .route(CANCEL, post(cancel_replay))
}

/// Starts per second of a replay that names none; the most a team token's replay gets.
const DEFAULT_PACE: u32 = 50;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    id: Option<String>,
    destination_id: Option<String>,
    since: String,
    until: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    include_failed: bool,
    max_starts_per_second: Option<u32>,
}

/// Starts (or resumes) a replay job.
async fn start_replay(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    ApiPath(team): ApiPath<i64>,
    body: Result<Json<ReplayBody>, JsonRejection>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text(), None))?;
    let job = body.id.unwrap_or_else(ReplayPlan::new_job_id);
    if !ReplayPlan::valid_job_id(&job) {
        return Err(ApiError::bad_request(
            "id must be 1 to 64 of [A-Za-z0-9._-]",
            Some("id"),
        ));
    }
    match &body.destination_id {
        _ if caller.sees(body.destination_id.as_deref()) => {}
        None => {
            return Err(ApiError::bad_request(
                "this token is for one destination: name it",
                Some("destination_id"),
            ));
        }
        Some(other) => return Err(ApiError::not_found(format!("no destination {other}"))),
    }
    // Nor may a token of one destination resume (and so move the progress of) a job of
    // another destination.
    if !caller.sees(None) {
        seen_job(&caller, state.replays.get(team, &job).await?, &job)?;
    }
    let since = instant(Some(&body.since), "since")?.unwrap_or_default();
    let until = instant(body.until.as_deref(), "until")?;
    if until.is_some_and(|until| until <= since) {
        return Err(ApiError::bad_request(
            "until must be after since",
            Some("until"),
        ));
    }
    let asked_pace = body.max_starts_per_second.unwrap_or(DEFAULT_PACE);
    let plan = ReplayPlan {
        job,
        team_id: team,
        destination_id: body.destination_id,
        since,
        until,
        dry_run: body.dry_run,
        include_failed: body.include_failed,
        max_starts_per_second: match &caller {
            Caller::Operator => asked_pace,
            // A team's replay shares the engine with every team's live traffic.
            Caller::Team(_) => asked_pace.min(DEFAULT_PACE),
        }
        .max(1),
    };
    let view = state.replays.start(plan).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

async fn replay_job(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    ApiPath((team, job)): ApiPath<(i64, String)>,
) -> Result<Json<JobView>, ApiError> {
    found_job(
        seen_job(&caller, state.replays.get(team, &job).await?, &job)?,
        &job,
    )
}

async fn cancel_replay(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    ApiPath((team, job)): ApiPath<(i64, String)>,
) -> Result<Json<JobView>, ApiError> {
    // Looked at before it is cancelled: a caller that may not see it must not cancel it.
    seen_job(&caller, state.replays.get(team, &job).await?, &job)?;
    found_job(state.replays.cancel(team, &job).await?, &job)
}

/// The job if `caller` may see it; 404 when it may not, as for a job that does not exist.
fn seen_job(
    caller: &Caller,
    view: Option<JobView>,
    job: &str,
) -> Result<Option<JobView>, ApiError> {
    match view {
        Some(view) if !caller.sees(view.plan.destination_id.as_deref()) => {
            Err(ApiError::not_found(format!("no replay job {job}")))
        }
        view => Ok(view),
    }
}

/// The job, or 404.
fn found_job(view: Option<JobView>, job: &str) -> Result<Json<JobView>, ApiError> {
    view.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no replay job {job}")))
}
