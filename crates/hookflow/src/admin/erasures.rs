//! Erasure of one person's deliveries of a team (operator only): `POST
//! /v1/teams/{team}/erasures` with `{"distinct_id": "…"}` deletes them from Temporal,
//! cancelling those still going, and answers what it erased
//! ([`hookflow_temporal::erasure`]).

use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
    routing::post,
};
use hookflow_temporal::erasure::ErasureReport;
use serde::Deserialize;

use super::{AdminState, ApiError, ApiPath, tokens::Reach};

const ERASURES: &str = "/v1/teams/{team}/erasures";

/// The paths of this resource, and what a team token reaches on each: nothing.
pub(super) const ROUTES: &[(&str, Reach)] = &[(ERASURES, Reach::Operator)];

/// Adds this resource's routes.
pub(super) fn routes(router: Router<AdminState>) -> Router<AdminState> {
    router.route(ERASURES, post(erase))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureBody {
    distinct_id: String,
}

/// Erases the person's deliveries of the team.
async fn erase(
    State(state): State<AdminState>,
    ApiPath(team): ApiPath<i64>,
    body: Result<Json<ErasureBody>, JsonRejection>,
) -> Result<Json<ErasureReport>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text(), None))?;
    if body.distinct_id.is_empty() {
        return Err(ApiError::bad_request(
            "must not be empty",
            Some("distinct_id"),
        ));
    }
    let keys = state.person_keys.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "erasure is off: set temporal.person_hash_key (deliveries then carry the hash \
             an erasure finds them by)",
            None,
        )
    })?;
    let report =
        hookflow_temporal::erasure::erase(&state.temporal, keys, team, &body.distinct_id).await?;
    Ok(Json(report))
}
