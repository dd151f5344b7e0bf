//! The admin HTTP API (described by `docs/openapi.yaml`): JSON over HTTP with bearer-token
//! auth, managing each team's destinations in the PostgreSQL catalog, their deliveries and
//! replay jobs.
//!
//! # Layout
//!
//! - this file: the state the handlers share, the router, authentication, and the errors
//!   and extractors every handler answers with;
//! - [`destinations`]: a team's destinations (list, create, read, update with `If-Match`,
//!   delete, pause, resume, test send);
//! - [`deliveries`]: a destination's deliveries (history, one, redelivery of one or of the
//!   failed ones in bulk, cancel or terminate the pending ones);
//! - [`replays`]: replay jobs (start or resume, show, cancel);
//! - [`tokens`]: team tokens, and what each caller may reach ([`tokens::Caller`]).
//!
//! Each resource's file declares its paths beside its handlers. Client mistakes are
//! answered 400 (with the field at fault), 401 (no, a wrong or an expired token), 403 (a
//! team token's own team's route it may not use), 404 (unknown id, or another team's),
//! 409 (id taken, or not now) or 412 (a stale `If-Match`), never 500 for them; a dependency
//! that does not answer (PostgreSQL, Temporal, Redis) is a 503 naming it.

mod deliveries;
mod destinations;
mod erasures;
mod replays;
pub mod tokens;

use std::sync::Arc;

use axum::{
    Json, RequestExt, Router,
    extract::{
        FromRequestParts, MatchedPath, Path, Query, RawPathParams, Request, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use hookflow_core::{DeliveryDefaults, DeliveryOutcome, DestinationError};
use hookflow_http::{DeliveryClient, isolation::DisabledDestinations};
use hookflow_temporal::{Client, TemporalError};
use serde_json::json;

use crate::{
    destinations::postgres::{Catalog, writes::StoreError},
    notices::NoticeSender,
    replay::jobs::{JobError, ReplayJobs},
};
use tokens::{Caller, Reach, Refusal, TokenKeys};

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The destination catalog the API manages.
    pub store: Arc<Catalog>,
    /// The operator's bearer token: every route of every team.
    pub token: Arc<str>,
    /// The keys of team tokens, when they are on.
    pub team_tokens: Option<Arc<TokenKeys>>,
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
    /// Destinations disabled after 410 Gone or a failure streak (a redelivery to one is
    /// refused).
    pub disabled: Arc<DisabledDestinations>,
    /// Where `destination.enabled` goes.
    pub notices: NoticeSender,
    /// The key of the person hash deliveries carry, when erasure is on.
    pub person_keys: Option<hookflow_core::person::PersonKeys>,
}

/// Every route the API serves, with what a team token reaches on it: each resource
/// declares its own beside its handlers.
fn routes() -> impl Iterator<Item = &'static (&'static str, Reach)> {
    [
        destinations::ROUTES,
        deliveries::ROUTES,
        replays::ROUTES,
        tokens::ROUTES,
        erasures::ROUTES,
    ]
    .into_iter()
    .flatten()
}

/// What a team token reaches on `route` (as declared): the operator alone on a route no
/// resource declares, so a route added without a thought for team tokens is closed to them.
fn reach_of(route: Option<&str>) -> Reach {
    routes()
        .find(|(declared, _)| Some(*declared) == route)
        .map_or(Reach::Operator, |(_, reach)| *reach)
}

/// Every path the API serves; a test holds `docs/openapi.yaml` to exactly these.
#[cfg(test)]
fn paths() -> Vec<&'static str> {
    routes().map(|(path, _)| *path).collect()
}

/// The API's routes.
pub fn router(state: AdminState) -> Router {
    let router = Router::new();
    let router = destinations::routes(router);
    let router = deliveries::routes(router);
    let router = replays::routes(router);
    let router = tokens::routes(router);
    let router = erasures::routes(router);
    // A route layer runs once the route is matched, so it knows the route and its
    // parameters (the team, the destination) a team token is checked against.
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// An error answer: `{"error": "...", "field": "..."}`.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        message: impl Into<String>,
        field: Option<&'static str>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            field,
        }
    }

    fn not_found(message: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message, None)
    }

    fn bad_request(message: impl Into<String>, field: Option<&'static str>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message, field)
    }

    fn conflict(message: impl Into<String>, field: Option<&'static str>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message, field)
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
            StoreError::Conflict(_) | StoreError::Deleted(_) => (StatusCode::CONFLICT, Some("id")),
            StoreError::UidTaken { .. } => (StatusCode::CONFLICT, Some("uid")),
            StoreError::Stale { .. } => (StatusCode::PRECONDITION_FAILED, None),
            StoreError::Unreadable { .. } => (StatusCode::INTERNAL_SERVER_ERROR, None),
            StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
        };
        ApiError::new(status, message, field)
    }
}

impl From<TemporalError> for ApiError {
    fn from(error: TemporalError) -> ApiError {
        let status = match error {
            TemporalError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, error.to_string(), None)
    }
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> ApiError {
        match error {
            JobError::Running(_) => ApiError::conflict(error.to_string(), Some("id")),
            JobError::Invalid(message) => ApiError::bad_request(message, Some("destination_id")),
            JobError::Records(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string(), None)
            }
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

/// Lets the request through when its caller may reach its route, with the [`Caller`] in
/// its extensions for the handlers that show a team's destinations.
async fn authorize(State(state): State<AdminState>, mut request: Request, next: Next) -> Response {
    match caller_of(&state, &mut request).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

/// Who sent `request`, if they may reach its route.
async fn caller_of(state: &AdminState, request: &mut Request) -> Result<Caller, ApiError> {
    if crate::bearer::presents(request.headers(), &state.token) {
        return Ok(Caller::Operator);
    }
    let claims = crate::bearer::presented(request.headers())
        .zip(state.team_tokens.as_deref())
        .and_then(|(token, keys)| keys.verify(token))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required",
                None,
            )
        })?;
    let reach = reach_of(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let params = request
        .extract_parts::<RawPathParams>()
        .await
        .map_err(|e| ApiError::bad_request(e.body_text(), None))?;
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
    };
    // A team that is not a number is no team of the token's.
    let team = param("team")
        .and_then(|team| team.parse::<i64>().ok())
        .ok_or(Refusal::NotFound)?;
    // Another team's route costs no look at the catalog (`admits` refuses it too).
    if claims.team != team {
        return Err(Refusal::NotFound.into());
    }
    if let Some(limit) = &claims.destination {
        // A token of one destination reaches nothing once it is gone, on any route (a
        // replay names it in its body), nor another destination of the same id since.
        let current = state.store.uid_of(team, &limit.id).await?;
        if current.map(|uid| uid.to_string()).as_deref() != Some(limit.uid.as_str()) {
            return Err(Refusal::NotFound.into());
        }
    }
    let caller = Caller::Team(claims);
    caller.admits(reach, request.method(), team, param("id").as_deref())?;
    Ok(caller)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_says_what_a_team_token_reaches_and_only_minting_and_erasure_are_the_operators() {
        let operators: Vec<&str> = routes()
            .filter(|(_, reach)| *reach == Reach::Operator)
            .map(|(path, _)| *path)
            .collect();
        assert_eq!(
            operators,
            ["/v1/teams/{team}/tokens", "/v1/teams/{team}/erasures"]
        );
        assert!(
            paths()
                .iter()
                .all(|path| path.starts_with("/v1/teams/{team}/"))
        );
        assert_eq!(reach_of(Some("/v1/teams/{team}/unknown")), Reach::Operator);
        assert_eq!(reach_of(None), Reach::Operator);
        for (path, reach) in routes() {
            assert_eq!(
                path.contains("{id}"),
                *reach == Reach::Destination,
                "{path}: a route names a destination if and only if a token of one is held \
                 to it by the path"
            );
        }
    }

    #[test]
    fn the_openapi_document_describes_exactly_these_paths() {
        let document = include_str!("../../../../docs/openapi.yaml");
        let mut documented: Vec<&str> = document
            .lines()
            .filter(|l| l.starts_with("  /v1/"))
            .map(|l| l.trim().trim_end_matches(':'))
            .collect();
        documented.sort_unstable();
        let mut served = paths();
        served.sort_unstable();
        assert_eq!(documented, served);
    }
}
