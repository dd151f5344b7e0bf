//! `hookflow codec-server`: Temporal's codec-server HTTP API over hookflow's payload codec,
//! so an operator can read encrypted deliveries in the Temporal UI (or the CLI's
//! `--codec-endpoint`) without the keys ever leaving hookflow.
//!
//! `POST /decode` and `POST /encode` take and answer `{"payloads": [{"metadata": {k:
//! base64}, "data": base64}]}`. With `codec_server.token` set, every request must carry
//! `Authorization: Bearer <token>`; without one the server only listens on loopback.
//! Browsers may call it from `codec_server.allowed_origins` (the UI's origin), with the
//! headers the UI sends.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header::AUTHORIZATION},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hookflow_core::Secret;
use hookflow_temporal::codec::{EncryptionCodec, Payload};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// `[codec_server]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecServerSettings {
    /// Where it listens.
    pub address: SocketAddr,
    /// The bearer token every request must carry; empty allows only a loopback address.
    #[serde(default)]
    pub token: Secret,
    /// Browser origins allowed to call it (the Temporal UI's, for example
    /// `http://localhost:8233`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// Payloads as Temporal's codec-server API carries them (protobuf JSON: bytes in base64).
#[derive(Debug, Serialize, Deserialize)]
pub struct JsonPayloads {
    /// The payloads.
    pub payloads: Vec<JsonPayload>,
}

/// One payload.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct JsonPayload {
    /// Metadata, values in base64.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Data, in base64.
    #[serde(default)]
    pub data: String,
}

impl JsonPayload {
    fn into_payload(self) -> Result<Payload, String> {
        let decode = |what: &str, text: &str| {
            STANDARD
                .decode(text)
                .map_err(|_| format!("{what} is not base64"))
        };
        let mut metadata = std::collections::HashMap::new();
        for (key, value) in self.metadata {
            let bytes = decode(&format!("metadata.{key}"), &value)?;
            metadata.insert(key, bytes);
        }
        Ok(Payload {
            metadata,
            data: decode("data", &self.data)?,
            external_payloads: Vec::new(),
        })
    }

    fn from_payload(payload: Payload) -> Self {
        JsonPayload {
            metadata: payload
                .metadata
                .into_iter()
                .map(|(k, v)| (k, STANDARD.encode(v)))
                .collect(),
            data: STANDARD.encode(payload.data),
        }
    }
}

#[derive(Clone)]
struct CodecState {
    codec: EncryptionCodec,
    token: Arc<Secret>,
}

/// `hookflow codec-server`: serves with the keys of `temporal.codec` until Ctrl-C.
pub async fn run(settings: &crate::settings::Settings) -> anyhow::Result<()> {
    hookflow_telemetry::init_tracing(
        &settings.telemetry.log_filter,
        hookflow_telemetry::LogFormat::Text,
    );
    let codec = EncryptionCodec::from_settings(&settings.temporal.codec)?
        .context("temporal.codec has no keys: there is nothing to decode")?;
    serve(&settings.codec_server, codec).await
}

/// Serves the codec-server API until the process is stopped.
pub async fn serve(settings: &CodecServerSettings, codec: EncryptionCodec) -> anyhow::Result<()> {
    if settings.token.is_empty() && !settings.address.ip().is_loopback() {
        anyhow::bail!(
            "codec_server.token must be set to listen on {} (without one, only loopback)",
            settings.address
        );
    }
    let listener = tokio::net::TcpListener::bind(settings.address)
        .await
        .with_context(|| format!("cannot listen on codec_server.address {}", settings.address))?;
    tracing::info!(address = %settings.address, "codec server listening");
    axum::serve(listener, router(settings, codec)).await?;
    Ok(())
}

/// The server's routes, with authentication and CORS.
pub fn router(settings: &CodecServerSettings, codec: EncryptionCodec) -> Router {
    let origins: Vec<HeaderValue> = settings
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::POST])
        .allow_headers([
            AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static("x-namespace"),
        ])
        .allow_credentials(true);
    let state = CodecState {
        codec,
        token: Arc::new(settings.token.clone()),
    };
    Router::new()
        .route("/decode", post(decode))
        .route("/encode", post(encode))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        // Outermost, so a preflight (which carries no token) is answered before auth.
        .layer(cors)
        .with_state(state)
}

async fn authorize(State(state): State<CodecState>, request: Request, next: Next) -> Response {
    // Without a token the server listens on loopback only (see `serve`).
    if !state.token.is_empty() && !crate::bearer::presents(request.headers(), state.token.expose())
    {
        let body = json!({"error": "a valid bearer token is required"});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    next.run(request).await
}

fn refuse(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

async fn decode(State(state): State<CodecState>, Json(body): Json<JsonPayloads>) -> Response {
    let mut out = Vec::new();
    for payload in body.payloads {
        let payload = match payload.into_payload() {
            Ok(payload) => payload,
            Err(message) => return refuse(message),
        };
        match state.codec.decrypt(payload) {
            Ok(payload) => out.push(JsonPayload::from_payload(payload)),
            Err(error) => return refuse(error.to_string()),
        }
    }
    Json(JsonPayloads { payloads: out }).into_response()
}

async fn encode(State(state): State<CodecState>, Json(body): Json<JsonPayloads>) -> Response {
    let mut out = Vec::new();
    for payload in body.payloads {
        match payload.into_payload() {
            Ok(payload) => out.push(JsonPayload::from_payload(state.codec.encrypt(&payload))),
            Err(message) => return refuse(message),
        }
    }
    Json(JsonPayloads { payloads: out }).into_response()
}
