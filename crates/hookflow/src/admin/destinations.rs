//! A team's destinations: list, create, read, update, delete, pause, resume, and a test
//! send.
//!
//! A destination is shown without its secrets (`<redacted>`; a chat service's URL shows
//! only its host) with its `version`, `created_at` and `updated_at`; a single one also
//! carries its version as the `ETag`. An update, delete, pause or resume with `If-Match`
//! happens only if the destination is still at that version (412 otherwise), so two
//! clients editing one destination never overwrite each other silently. A body may be the
//! one read back: its placeholders keep the stored secrets (unless the URL moved to another
//! host), and `version`, `created_at`, `updated_at` and `uid` in it are ignored.

use axum::{
    Extension, Json, Router,
    extract::{State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hookflow_core::{
    ActionMatchedEvent, ActionRef, DeliveryInput, DestinationSpec, SigningSecret, request::prepare,
};
use serde_json::{Value, json};

use super::{
    AdminState, ApiError, ApiPath,
    tokens::{Caller, Reach},
};
use crate::destinations::postgres::writes::StoredDestination;

/// A team's destinations.
const COLLECTION: &str = "/v1/teams/{team}/destinations";
/// One of them.
const ONE: &str = "/v1/teams/{team}/destinations/{id}";
const PAUSE: &str = "/v1/teams/{team}/destinations/{id}/pause";
const RESUME: &str = "/v1/teams/{team}/destinations/{id}/resume";
const TEST: &str = "/v1/teams/{team}/destinations/{id}/test";
const ENABLE: &str = "/v1/teams/{team}/destinations/{id}/enable";

/// The paths of this resource, and what a team token reaches on each.
pub(super) const ROUTES: &[(&str, Reach)] = &[
    (COLLECTION, Reach::TeamCollection),
    (ONE, Reach::Destination),
    (PAUSE, Reach::Destination),
    (RESUME, Reach::Destination),
    (TEST, Reach::Destination),
    (ENABLE, Reach::Destination),
];

/// Adds this resource's routes.
pub(super) fn routes(router: Router<AdminState>) -> Router<AdminState> {
    router
        .route(COLLECTION, get(list).post(create))
        .route(ONE, get(read).put(update).delete(remove))
        .route(PAUSE, post(pause))
        .route(RESUME, post(resume))
        .route(TEST, post(send_test))
        .route(ENABLE, post(enable))
}

/// Fields a destination is shown with that a body may carry back and are not the spec's.
const READ_ONLY: [&str; 5] = [
    "version",
    "created_at",
    "updated_at",
    "public_key",
    "previous_public_key",
];

/// `stored` as shown: without secrets, with its version and times, and the public key of
/// each ed25519 signing key (what its receiver verifies `v1a` signatures with).
fn shown(stored: &StoredDestination) -> Value {
    let mut shown = serde_json::to_value(stored.spec.redacted()).unwrap_or_default();
    if let Some(object) = shown.as_object_mut() {
        object.insert("version".into(), stored.version.into());
        object.insert("created_at".into(), stored.created_at.to_rfc3339().into());
        object.insert("updated_at".into(), stored.updated_at.to_rfc3339().into());
        let public_key = |secret: &Option<String>| {
            let secret = SigningSecret::parse(secret.as_deref()?).ok()?;
            secret.public_key()
        };
        for (field, secret) in [
            ("public_key", &stored.spec.secret),
            ("previous_public_key", &stored.spec.previous_secret),
        ] {
            if let Some(key) = public_key(secret) {
                object.insert(field.into(), key.into());
            }
        }
    }
    shown
}

/// One destination's answer: shown, with its version as the `ETag`.
fn one(status: StatusCode, stored: &StoredDestination) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", stored.version))
        .unwrap_or(HeaderValue::from_static("\"0\""));
    (status, [(header::ETAG, etag)], Json(shown(stored))).into_response()
}

/// The version an `If-Match` header asks for (`"3"`, `W/"3"` or `3`); `None` without the
/// header or with `*` (any version).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ApiError::bad_request(
                "If-Match must be a destination's ETag (its version, quoted)",
                None,
            )
        })
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
    for field in READ_ONLY {
        object.remove(field);
    }
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

async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    ApiPath(team): ApiPath<i64>,
) -> Result<Json<Value>, ApiError> {
    let destinations: Vec<Value> = state
        .store
        .list(team)
        .await?
        .iter()
        .filter(|stored| caller.sees(Some(&stored.spec.id)))
        .map(shown)
        .collect();
    Ok(Json(json!({ "destinations": destinations })))
}

async fn create(
    State(state): State<AdminState>,
    ApiPath(team): ApiPath<i64>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let spec = spec_of(team, body)?;
    let stored = state.store.create(team, spec).await?;
    Ok(one(StatusCode::CREATED, &stored))
}

async fn read(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
) -> Result<Response, ApiError> {
    Ok(one(StatusCode::OK, &state.store.read(team, &id).await?))
}

async fn update(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let version = if_match(&headers)?;
    let spec = spec_of(team, body)?;
    if spec.id != id {
        return Err(ApiError::bad_request(
            "id differs from the id in the path",
            Some("id"),
        ));
    }
    let stored = state.store.update(team, spec, version).await?;
    Ok(one(StatusCode::OK, &stored))
}

async fn remove(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.store.delete(team, &id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(
    state: State<AdminState>,
    path: ApiPath<(i64, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    set_state(state, path, &headers, Some("paused")).await
}

async fn resume(
    state: State<AdminState>,
    path: ApiPath<(i64, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    set_state(state, path, &headers, None).await
}

/// Enables the destination (of its current uid) again after its endpoint got it disabled
/// (410 Gone, or failing every attempt: `auto_disabled`): its endpoint is attempted again,
/// a new failure streak starts (also for one only warned about), and `destination.enabled`
/// goes out. Its deliveries that ended
/// `destination_disabled` meanwhile are redelivered with `…/redeliver`. Pausing and
/// resuming are the catalog's `state`; this is the endpoint's.
async fn enable(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
) -> Result<Json<Value>, ApiError> {
    let destination = state.store.destination(team, &id).await?;
    let notice = crate::auto_disable::enable_destination(&state.disabled, &destination)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("disabled destinations are kept in Redis: {e}"),
                None,
            )
        })?;
    let was_disabled = notice.is_some();
    if let Some(notice) = notice {
        // Not on the answer's path: a broker or Temporal that is down would hold it up.
        let sender = state.notices.clone();
        tokio::spawn(async move { sender.send(&notice).await });
    }
    Ok(Json(json!({ "was_disabled": was_disabled })))
}

async fn set_state(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
    headers: &HeaderMap,
    new_state: Option<&'static str>,
) -> Result<Response, ApiError> {
    let stored = state
        .store
        .change(team, &id, if_match(headers)?, move |spec| {
            spec.state = new_state.map(str::to_owned);
            spec.disabled_reason = None;
        })
        .await?;
    Ok(one(StatusCode::OK, &stored))
}

/// Sends a test event (action "Test", event `hookflow.test`) to the destination once, as a
/// delivery would (format, headers, signature), and answers what happened. The destination
/// is read from the catalog now, not from this process's copy.
async fn send_test(
    State(state): State<AdminState>,
    ApiPath((team, id)): ApiPath<(i64, String)>,
) -> Result<Json<Value>, ApiError> {
    let destination = state.store.destination(team, &id).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_reads_an_etag_and_refuses_anything_else() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_MATCH, value.parse().expect("header"));
            headers
        };
        assert_eq!(if_match(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(if_match(&with("\"3\"")).ok(), Some(Some(3)));
        assert_eq!(if_match(&with("W/\"4\"")).ok(), Some(Some(4)));
        assert_eq!(if_match(&with("5")).ok(), Some(Some(5)));
        assert_eq!(if_match(&with("*")).ok(), Some(None));
        assert!(if_match(&with("\"v1\"")).is_err());
    }
}
