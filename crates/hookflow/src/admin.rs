//! The admin HTTP API (described by `docs/openapi.yaml`): JSON over HTTP with bearer-token
//! auth, managing the destinations of the Redis store per team, their deliveries (listed,
//! redelivered, stopped) and replay jobs.
//!
//! Client mistakes are answered 400 (with the field at fault), 401 (no or a wrong token),
//! 404 (unknown id) or 409 (id taken), never 500; Redis being unreachable is a 503.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{
        FromRequestParts, Path, Query, Request, State,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::StatusCode,
    http::request::Parts,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use hookflow_core::{
    ActionMatchedEvent, ActionRef, DeliveryDefaults, DeliveryId, DeliveryInput, DeliveryOutcome,
    Destination, DestinationCatalog, DestinationError, DestinationSpec, DestinationState,
    request::prepare,
};
use hookflow_http::{DeliveryClient, isolation::DisabledDestinations};
use hookflow_temporal::{
    Client, TemporalError,
    deliveries::{DeliveryFilter, DeliveryPage},
    recovery::{RedeliveryCounts, Rerun, RerunInput},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    destination_redis::{RedisDestinations, StoreError},
    replay::ReplayPlan,
    replay_jobs::{JobError, JobView, ReplayJobs},
};

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The destination store the API manages.
    pub store: Arc<RedisDestinations>,
    /// The bearer token every request must carry.
    pub token: Arc<str>,
    /// Temporal, for the deliveries.
    pub temporal: Client,
    /// The HTTP client of test sends (with the same SSRF guard as deliveries).
    pub http: DeliveryClient,
    /// Where links in messages point.
    pub site_url: Arc<str>,
    /// The task queue of delivery workflows (for redeliveries).
    pub task_queue: Arc<str>,
    /// The replay jobs.
    pub replays: Arc<ReplayJobs>,
    /// The retry policy and history bound deliveries start with (a redelivery is planned
    /// again with them).
    pub defaults: DeliveryDefaults,
    /// Destinations disabled after 410 Gone (a redelivery to one is refused).
    pub disabled: Arc<DisabledDestinations>,
}

/// Every path the API serves; a test holds `docs/openapi.yaml` to exactly these.
const PATHS: [&str; 15] = [
    "/v1/teams/{team}/destinations",
    "/v1/teams/{team}/destinations/{id}",
    "/v1/teams/{team}/destinations/{id}/pause",
    "/v1/teams/{team}/destinations/{id}/resume",
    "/v1/teams/{team}/destinations/{id}/test",
    "/v1/teams/{team}/destinations/{id}/deliveries",
    "/v1/teams/{team}/destinations/{id}/deliveries/{event_uuid}",
    "/v1/teams/{team}/destinations/{id}/cancel-pending",
    "/v1/teams/{team}/destinations/{id}/terminate-pending",
    "/v1/teams/{team}/destinations/{id}/deliveries/{event_uuid}/redeliver",
    "/v1/destinations/restore",
    "/v1/teams/{team}/destinations/{id}/redeliver",
    "/v1/teams/{team}/replays",
    "/v1/teams/{team}/replays/{job}",
    "/v1/teams/{team}/replays/{job}/cancel",
];

/// The API's routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(PATHS[0], get(list).post(create))
        .route(PATHS[1], get(read).put(update).delete(remove))
        .route(PATHS[2], post(pause))
        .route(PATHS[3], post(resume))
        .route(PATHS[4], post(send_test))
        .route(PATHS[5], get(deliveries))
        .route(PATHS[6], get(delivery))
        .route(PATHS[7], post(cancel_pending))
        .route(PATHS[8], post(terminate_pending))
        .route(PATHS[9], post(redeliver))
        .route(PATHS[10], post(restore))
        .route(PATHS[11], post(redeliver_failed))
        .route(PATHS[12], post(start_replay))
        .route(PATHS[13], get(replay_job))
        .route(PATHS[14], post(cancel_replay))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// An error answer: `{"error": "...", "field": "..."}`.
struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    fn not_found(message: String) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message,
            field: None,
        }
    }

    fn bad_request(message: impl Into<String>, field: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "field": self.field});
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let message = error.to_string();
        let (status, field) = match &error {
            StoreError::Invalid(DestinationError::Invalid { field, .. }) => {
                (StatusCode::BAD_REQUEST, Some(*field))
            }
            StoreError::Invalid(_) => (StatusCode::BAD_REQUEST, None),
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, None),
            StoreError::Conflict(_) => (StatusCode::CONFLICT, Some("id")),
            StoreError::Unavailable(_) | StoreError::Lost => {
                (StatusCode::SERVICE_UNAVAILABLE, None)
            }
            StoreError::NotLost => (StatusCode::CONFLICT, None),
        };
        ApiError {
            status,
            message,
            field,
        }
    }
}

/// [`Path`], answering a malformed path (a team id that is not a 64-bit integer, say) with
/// the API's JSON 400 like every other mistake, not axum's plain text.
struct ApiPath<T>(T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text(), None)),
        }
    }
}

/// [`Query`], with the same JSON 400 for a malformed query.
struct ApiQuery<T>(T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text(), None)),
        }
    }
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if !crate::bearer::presents(request.headers(), &state.token) {
        return ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "a valid bearer token is required".into(),
            field: None,
        }
        .into_response();
    }
    next.run(request).await
}

/// The body as a spec of `team` (the path names the team; a body may omit `team_id`).
fn spec_of(
    team: i64,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<DestinationSpec, ApiError> {
    let Json(mut body) = body.map_err(|e| ApiError::bad_request(e.body_text(), None))?;
    let object = body
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object", None))?;
    match object.get("team_id") {
        None => {
            object.insert("team_id".into(), team.into());
        }
        Some(given) if given.as_i64() == Some(team) => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "team_id differs from the team in the path",
                Some("team_id"),
            ));
        }
    }
    serde_json::from_value(body).map_err(|e| ApiError::bad_request(e.to_string(), None))
}

/// Writes this process's last good destinations back to a lost store.
async fn restore(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let restored = state.store.restore().await?;
    Ok(Json(json!({ "restored": restored })))
}

async fn list(
    State(state): State<AdminState>,
    ApiPath(team): ApiPath<i64>,
) -> Result<Json<Value>, ApiError> {
    let mut specs: Vec<DestinationSpec> = state
        .store
        .all_specs()
        .await
        .map_err(StoreError::from)?
        .into_values()
        .filter(|spec| spec.team_id == team)
        .map(|spec| spec.redacted())
        .collect();
    specs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(json!({ "destinations": specs })))
}

async fn create(
    State(state): State<AdminState>,
    ApiPath(team): ApiPath<i64>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<DestinationSpec>), ApiError> {
    let spec = spec_of(team, body)?;
    let stored = state.store.put(spec, true).await?;
    Ok((StatusCode::CREATED, Json(stored.redacted())))
}

async fn read(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
) -> Result<Json<DestinationSpec>, ApiError> {
    Ok(Json(state.store.spec(team, &id).await?.redacted()))
}

async fn update(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<DestinationSpec>, ApiError> {
    let spec = spec_of(team, body)?;
    if spec.id != id {
        return Err(ApiError::bad_request(
            "id differs from the id in the path",
            Some("id"),
        ));
    }
    let stored = state.store.put(spec, false).await?;
    Ok(Json(stored.redacted()))
}

async fn remove(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.delete(team, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(
    state: State<AdminState>,
    path: ApiPath<(i64, String)>,
) -> Result<Json<DestinationSpec>, ApiError> {
    set_state(state, path, Some("paused")).await
}

async fn resume(
    state: State<AdminState>,
    path: ApiPath<(i64, String)>,
) -> Result<Json<DestinationSpec>, ApiError> {
    set_state(state, path, None).await
}

async fn set_state(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
    new_state: Option<&str>,
) -> Result<Json<DestinationSpec>, ApiError> {
    let mut spec = state.store.spec(team, &id).await?;
    spec.state = new_state.map(str::to_owned);
    spec.disabled_reason = None;
    let stored = state.store.put(spec, false).await?;
    Ok(Json(stored.redacted()))
}

impl From<TemporalError> for ApiError {
    fn from(error: TemporalError) -> ApiError {
        let status = match error {
            TemporalError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError {
            status,
            message: error.to_string(),
            field: None,
        }
    }
}

/// The destination as delivery sees it (validated), or 404.
async fn destination(
    state: &AdminState,
    team: i64,
    id: &str,
) -> Result<Arc<Destination>, ApiError> {
    state.store.spec(team, id).await?;
    state
        .store
        .live()
        .get(team, id)
        .ok_or_else(|| StoreError::NotFound(id.to_owned()).into())
}

/// Sends a test event (action "Test", event `hookflow.test`) to the destination once, as a
/// delivery would (format, headers, signature), and answers what happened.
async fn send_test(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
) -> Result<Json<Value>, ApiError> {
    let destination = destination(&state, team, &id).await?;
    let event = ActionMatchedEvent {
        uuid: uuid::Uuid::new_v4(),
        team_id: team,
        event: "hookflow.test".into(),
        distinct_id: Some("hookflow-test".into()),
        timestamp: chrono::Utc::now().to_rfc3339(),
        properties: Default::default(),
        person: None,
        matched_actions: vec![ActionRef {
            id: 0,
            name: "Test".into(),
        }],
    };
    let actions = event.matched_actions.clone();
    let delivery = DeliveryInput::new(&destination.id, event, actions);
    let timestamp = chrono::Utc::now().timestamp();
    let request = prepare(&destination, &delivery, &state.site_url, timestamp)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("secret")))?;
    let report = state.http.send_to(&destination, request).await;
    Ok(Json(json!({
        "delivered": report.is_success(),
        "status": report.status,
        "error": report.error.as_ref().map(|_| report.describe()),
        "duration_ms": report.duration_ms,
        "webhook_id": delivery.delivery_id.as_str(),
    })))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    page_token: Option<String>,
    /// Comma-separated outcomes.
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// An RFC 3339 instant of the request, or a 400 naming `field`.
fn instant(value: Option<&str>, field: &'static str) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::bad_request(format!("{field}: not RFC 3339: {e}"), Some(field))
                })
        })
        .transpose()
}

/// Outcome names of the request, or a 400 naming `field`.
fn outcomes<'a>(
    names: impl IntoIterator<Item = &'a str>,
    field: &'static str,
) -> Result<Vec<DeliveryOutcome>, ApiError> {
    names
        .into_iter()
        .map(|name| {
            DeliveryOutcome::parse(name.trim()).ok_or_else(|| {
                let known: Vec<&str> = DeliveryOutcome::ALL.iter().map(|o| o.as_str()).collect();
                ApiError::bad_request(
                    format!("unknown outcome `{name}` (one of {})", known.join(", ")),
                    Some(field),
                )
            })
        })
        .collect()
}

async fn deliveries(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    state.store.spec(team, &id).await?;
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let filter = DeliveryFilter {
        outcomes: match &query.outcome {
            Some(names) => outcomes(names.split(','), "outcome")?,
            None => Vec::new(),
        },
        since: instant(query.since.as_deref(), "since")?,
        until: instant(query.until.as_deref(), "until")?,
        or_ended_without_outcome: false,
    };
    let page = hookflow_temporal::deliveries::page(
        &state.temporal,
        team,
        &id,
        &filter,
        limit,
        query.page_token.as_deref(),
    )
    .await?;
    Ok(Json(page))
}

async fn delivery(
    State(state): State<AdminState>,
    ApiPath((team, id, event_uuid)): ApiPath<(i64, String, String)>,
) -> Result<Json<Value>, ApiError> {
    state.store.spec(team, &id).await?;
    let uuid = uuid::Uuid::parse_str(&event_uuid)
        .map_err(|e| ApiError::bad_request(format!("not a uuid: {e}"), Some("event_uuid")))?;
    let delivery_id = DeliveryId::new(&id, uuid);
    match hookflow_temporal::deliveries::get(&state.temporal, team, &delivery_id).await? {
        Some(view) => Ok(Json(json!(view))),
        None => Err(ApiError::not_found(format!("no delivery {delivery_id}"))),
    }
}

/// Runs one delivery again (whatever its last run did), unless one of its runs is going.
async fn redeliver(
    State(state): State<AdminState>,
    ApiPath((team, id, event_uuid)): ApiPath<(i64, String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let destination = enabled_destination(&state, team, &id).await?;
    let uuid = uuid::Uuid::parse_str(&event_uuid)
        .map_err(|e| ApiError::bad_request(format!("not a uuid: {e}"), Some("event_uuid")))?;
    let delivery_id = DeliveryId::new(&id, uuid);
    let input = RerunInput::Recorded {
        destination: &destination,
        defaults: &state.defaults,
    };
    let ran = hookflow_temporal::recovery::redeliver(
        &state.temporal,
        &state.task_queue,
        delivery_id.as_str(),
        input,
    )
    .await?;
    match ran {
        Rerun::Started | Rerun::AlreadyRerun => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"workflow_id": delivery_id.as_str(), "webhook_id": delivery_id.as_str()})),
        )),
        Rerun::Pending => Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!(
                "delivery {delivery_id} is still running: wait for it, or cancel it first"
            ),
            field: None,
        }),
        Rerun::Unknown | Rerun::Replaced | Rerun::NotFailed => {
            Err(ApiError::not_found(format!("no delivery {delivery_id}")))
        }
    }
}

/// The destination, unless it is disabled (by its state or a 410): its deliveries would only
/// end `destination_disabled` again, so redeliveries wait for it to be enabled.
async fn enabled_destination(
    state: &AdminState,
    team: i64,
    id: &str,
) -> Result<Arc<Destination>, ApiError> {
    let destination = destination(state, team, id).await?;
    let disabled = match &destination.state {
        DestinationState::Disabled(reason) => Some(reason.clone()),
        _ => state.disabled.check(&destination).await.map(|d| d.reason),
    };
    match disabled {
        Some(reason) => Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("destination {id} is disabled ({reason}): enable it first"),
            field: None,
        }),
        None => Ok(destination),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeliverBody {
    status: Option<Vec<String>>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

/// Re-runs the destination's failed deliveries that the body's filter finds.
async fn redeliver_failed(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
    body: Result<Json<RedeliverBody>, JsonRejection>,
) -> Result<Json<RedeliveryCounts>, ApiError> {
    let destination = enabled_destination(&state, team, &id).await?;
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text(), None))?;
    // Without a status, every failed delivery: the recoverable outcomes, and runs that
    // failed or timed out before they had one.
    let (statuses, or_ended_without_outcome) = match &body.status {
        Some(names) if !names.is_empty() => {
            (outcomes(names.iter().map(String::as_str), "status")?, false)
        }
        _ => (
            DeliveryOutcome::ALL
                .into_iter()
                .filter(|o| o.is_recoverable())
                .collect(),
            true,
        ),
    };
    if let Some(outcome) = statuses.iter().find(|o| !o.is_recoverable()) {
        return Err(ApiError::bad_request(
            format!(
                "deliveries that ended `{}` are not redelivered in bulk",
                outcome.as_str()
            ),
            Some("status"),
        ));
    }
    let filter = DeliveryFilter {
        outcomes: statuses,
        since: instant(body.since.as_deref(), "since")?,
        until: instant(body.until.as_deref(), "until")?,
        or_ended_without_outcome,
    };
    let limit = body.limit.unwrap_or(1000).clamp(1, 10_000);
    let counts = hookflow_temporal::recovery::redeliver_failed(
        &state.temporal,
        &state.task_queue,
        &destination,
        &state.defaults,
        &filter,
        limit,
    )
    .await?;
    Ok(Json(counts))
}

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
    let since = instant(Some(&body.since), "since")?.unwrap_or_default();
    let until = instant(body.until.as_deref(), "until")?;
    if until.is_some_and(|until| until <= since) {
        return Err(ApiError::bad_request(
            "until must be after since",
            Some("until"),
        ));
    }
    let plan = ReplayPlan {
        job,
        team_id: team,
        destination_id: body.destination_id,
        since,
        until,
        dry_run: body.dry_run,
        include_failed: body.include_failed,
        max_starts_per_second: body.max_starts_per_second.unwrap_or(50).max(1),
    };
    let view = state.replays.start(plan).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

async fn replay_job(
    State(state): State<AdminState>,
    ApiPath((team, job)): ApiPath<(i64, String)>,
) -> Result<Json<JobView>, ApiError> {
    found_job(state.replays.get(team, &job).await?, &job)
}

async fn cancel_replay(
    State(state): State<AdminState>,
    ApiPath((team, job)): ApiPath<(i64, String)>,
) -> Result<Json<JobView>, ApiError> {
    found_job(state.replays.cancel(team, &job).await?, &job)
}

/// The job, or 404.
fn found_job(view: Option<JobView>, job: &str) -> Result<Json<JobView>, ApiError> {
    view.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no replay job {job}")))
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> ApiError {
        match error {
            JobError::Running(_) => ApiError {
                status: StatusCode::CONFLICT,
                message: error.to_string(),
                field: Some("id"),
            },
            JobError::Invalid(message) => ApiError::bad_request(message, Some("destination_id")),
            JobError::Records(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: error.to_string(),
                field: None,
            },
        }
    }
}

async fn cancel_pending(
    state: State<AdminState>,
    path: ApiPath<(i64, String)>,
) -> Result<Json<Value>, ApiError> {
    stop_pending(state, path, false).await
}

async fn terminate_pending(
    state: State<AdminState>,
    path: ApiPath<(i64, String)>,
) -> Result<Json<Value>, ApiError> {
    stop_pending(state, path, true).await
}

async fn stop_pending(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
    terminate: bool,
) -> Result<Json<Value>, ApiError> {
    state.store.spec(team, &id).await?;
    let reason = if terminate {
        "terminated through the admin API"
    } else {
        "cancelled through the admin API"
    };
    let stopped =
        hookflow_temporal::deliveries::stop_pending(&state.temporal, team, &id, terminate, reason)
            .await?;
    Ok(Json(json!({ "stopped": stopped })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_exactly_these_paths() {
        let document = include_str!("../../../docs/openapi.yaml");
        let mut documented: Vec<&str> = document
            .lines()
            .filter(|l| l.starts_with("  /v1/"))
            .map(|l| l.trim().trim_end_matches(':'))
            .collect();
        documented.sort_unstable();
        let mut served = PATHS.to_vec();
        served.sort_unstable();
        assert_eq!(documented, served);
    }
}
