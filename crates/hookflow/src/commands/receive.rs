//! `hookflow receive`: a local webhook receiver that prints each delivery and, given the
//! destination's secret, verifies its Standard Webhooks signature.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, body::Bytes, http::HeaderMap, http::StatusCode, routing::post};

/// Serves until Ctrl-C, answering 204 to every POST on any path.
pub async fn serve(listen: SocketAddr, secret: Option<&str>) -> anyhow::Result<()> {
    let verifier = secret
        .map(standardwebhooks::Webhook::new)
        .transpose()?
        .map(Arc::new);
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
