//! A destination's deliveries, as Temporal has them: the history (paged, filtered by
//! outcome and time), one delivery, a redelivery of one (a new run of its workflow, whatever
//! its last run did) or of the failed ones in bulk, and cancelling or terminating the
//! pending ones. A redelivery reads the destination from the catalog now, and is refused
//! while the destination is disabled.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
    routing::{get, post},
};
use hookflow_core::{DeliveryId, DeliveryOutcome, Destination, DestinationState};
use hookflow_temporal::{
    deliveries::{DeliveryFilter, DeliveryPage},
    ownership,
    recovery::{RedeliveryCounts, Rerun, RerunInput},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminState, ApiError, ApiPath, ApiQuery, instant, outcomes, tokens::Reach};

const HISTORY: &str = "/v1/teams/{team}/destinations/{id}/deliveries";
const ONE: &str = "/v1/teams/{team}/destinations/{id}/deliveries/{event_uuid}";
const REDELIVER_ONE: &str = "/v1/teams/{team}/destinations/{id}/deliveries/{event_uuid}/redeliver";
const REDELIVER_FAILED: &str = "/v1/teams/{team}/destinations/{id}/redeliver";
const CANCEL_PENDING: &str = "/v1/teams/{team}/destinations/{id}/cancel-pending";
const TERMINATE_PENDING: &str = "/v1/teams/{team}/destinations/{id}/terminate-pending";

/// The paths of this resource, and what a team token reaches on each: all name their
/// destination.
pub(super) const ROUTES: &[(&str, Reach)] = &[
    (HISTORY, Reach::Destination),
    (ONE, Reach::Destination),
    (REDELIVER_ONE, Reach::Destination),
    (REDELIVER_FAILED, Reach::Destination),
    (CANCEL_PENDING, Reach::Destination),
    (TERMINATE_PENDING, Reach::Destination),
];

/// Adds this resource's routes.
pub(super) fn routes(router: Router<AdminState>) -> Router<AdminState> {
    router
        .route(HISTORY, get(history))
        .route(ONE, get(one))
        .route(REDELIVER_ONE, post(redeliver))
        .route(REDELIVER_FAILED, post(redeliver_failed))
        .route(CANCEL_PENDING, post(cancel_pending))
        .route(TERMINATE_PENDING, post(terminate_pending))
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
    page_token: Option<String>,
    /// Comma-separated outcomes.
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

async fn history(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    state.store.read(team, &id).await?;
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

/// The answer for a delivery the caller's team does not have: the same words whether
/// another team's delivery holds its id or none does, so ids do not leak.
fn no_delivery(id: &str, event_uuid: &str) -> String {
    format!("no delivery of event {event_uuid} to destination {id}")
}

/// The delivery of an event to the destination, from the path.
fn delivery_id(id: &str, event_uuid: &str) -> Result<DeliveryId, ApiError> {
    let uuid = uuid::Uuid::parse_str(event_uuid)
        .map_err(|e| ApiError::bad_request(format!("not a uuid: {e}"), Some("event_uuid")))?;
    Ok(DeliveryId::new(id, uuid))
}

async fn one(
    State(state): State<AdminState>,
    ApiPath((team, id, event_uuid)): ApiPath<(i64, String, String)>,
) -> Result<Json<Value>, ApiError> {
    state.store.read(team, &id).await?;
    let delivery_id = delivery_id(&id, &event_uuid)?;
    match hookflow_temporal::deliveries::get(&state.temporal, team, &delivery_id).await? {
        Some(view) => Ok(Json(json!(view))),
        None => Err(ApiError::not_found(no_delivery(&id, &event_uuid))),
    }
}

/// Runs one delivery again (whatever its last run did), unless one of its runs is going.
async fn redeliver(
    State(state): State<AdminState>,
    ApiPath((team, id, event_uuid)): ApiPath<(i64, String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let destination = enabled_destination(&state, team, &id).await?;
    let delivery_id = delivery_id(&id, &event_uuid)?;
    // This team's, never another team's that holds the same id.
    let delivery_id = ownership::workflow_of(&state.temporal, team, &delivery_id).await?;
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
        Rerun::Pending => Err(ApiError::conflict(
            format!("delivery {delivery_id} is still running: wait for it, or cancel it first"),
            None,
        )),
        Rerun::Unknown | Rerun::Replaced | Rerun::NotFailed => {
            Err(ApiError::not_found(no_delivery(&id, &event_uuid)))
        }
    }
}

/// The destination as the catalog has it now, unless it is disabled (by its state or a
/// 410): its deliveries would only end `destination_disabled` again, so redeliveries wait
/// for it to be enabled.
async fn enabled_destination(
    state: &AdminState,
    team: i64,
    id: &str,
) -> Result<Arc<Destination>, ApiError> {
    let destination = state.store.destination(team, id).await?;
    let disabled = match &destination.state {
        DestinationState::Disabled(reason) => Some(reason.clone()),
        _ => state.disabled.check(&destination).await.map(|d| d.reason),
    };
    match disabled {
        Some(reason) => Err(ApiError::conflict(
            format!("destination {id} is disabled ({reason}): enable it first"),
            None,
        )),
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
    state.store.read(team, &id).await?;
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
