//! `hookflow receive`: a local webhook receiver that prints each delivery and, given the
//! destination's secret (`whsec_…`) or public key (`whpk_…`), verifies its Standard
//! Webhooks signature (`v1` or `v1a`).

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, body::Bytes, http::HeaderMap, http::StatusCode, routing::post};

/// Serves until Ctrl-C, answering 204 to every POST on any path.
pub async fn serve(listen: SocketAddr, secret: Option<&str>) -> anyhow::Result<()> {
    let verifier = secret.map(Verifier::new).transpose()?.map(Arc::new);
    let app = Router::new().fallback(post(move |headers: HeaderMap, body: Bytes| {
        let verifier = verifier.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            let signature = match &verifier {
                Some(v) => match v.verify(&body, &headers) {
                    Ok(()) => "valid".to_owned(),
                    Err(e) => format!("INVALID ({e})"),
                },
                None => "not checked (no --secret)".to_owned(),
            };
            println!(
                "webhook-id: {}  webhook-timestamp: {}  signature: {signature}\n{}\n",
                header("webhook-id"),
                header("webhook-timestamp"),
                String::from_utf8_lossy(&body)
            );
            StatusCode::NO_CONTENT
        }
    }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("receiving webhooks on http://{listen}/ (Ctrl-C to stop)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// What checks the signatures: the destination's shared secret (`v1`) or its public key
/// (`v1a`).
enum Verifier {
    Shared(standardwebhooks::Webhook),
    Public(String),
}

impl Verifier {
    fn new(secret: &str) -> anyhow::Result<Self> {
        if secret.starts_with("whpk_") {
            return Ok(Verifier::Public(secret.to_owned()));
        }
        Ok(Verifier::Shared(standardwebhooks::Webhook::new(secret)?))
    }

    fn verify(&self, body: &[u8], headers: &HeaderMap) -> Result<(), String> {
        match self {
            Verifier::Shared(webhook) => webhook.verify(body, headers).map_err(|e| e.to_string()),
            Verifier::Public(key) => {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                };
                hookflow_core::signing::verify_v1a(
                    key,
                    header("webhook-id"),
                    header("webhook-timestamp"),
                    body,
                    header("webhook-signature"),
                )
                .map_err(|e| e.to_string())
            }
        }
    }
}
