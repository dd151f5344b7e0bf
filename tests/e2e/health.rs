//! Health probes on the operations port: ready only while Temporal, Kafka and Redis answer,
//! alive while every loop keeps reporting; the SDK's worker metrics on their own port.

use std::time::Duration;

use hookflow_e2e::{eventually, free_port, scenario::Scenario};

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_dependencies_and_liveness_the_loops() {
    let mut s = Scenario::new().await;
    s.destination("d", "d", "");

    let ready = s.deployment.start();
    let body = eventually(Duration::from_secs(60), "readiness", || async {
        ready
            .probe("/_readiness")
            .await
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
    })
    .await;
    assert_eq!(body["healthy"], true);
    assert_eq!(body["components"]["temporal"]["ready"], true);
    assert_eq!(body["components"]["kafka_consumer"]["ready"], true);
    assert_eq!(body["components"]["redis"]["ready"], true);
    assert_eq!(body["components"]["temporal_worker"]["alive"], true);
    assert_eq!(
        ready.probe("/_liveness").await.map(|(status, _)| status),
        Some(200)
    );
    let sdk = eventually(
        Duration::from_secs(30),
        "the SDK's worker metrics",
        || async {
            let url = format!("http://127.0.0.1:{}/metrics", ready.sdk_metrics_port);
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            text.contains("temporal_worker_task_slots_available")
                .then_some(text)
        },
    )
    .await;
    assert!(
        sdk.contains(&format!("task_queue=\"{}\"", s.deployment.task_queue)),
        "labelled with the task queue"
    );

    // Nothing listens on this port: the process lives, but is not ready, and says why.
    s.deployment
        .temporal_address(&format!("http://127.0.0.1:{}", free_port()));
    let unreachable = s.deployment.start();
    let (status, body) = eventually(Duration::from_secs(30), "the probe to answer", || async {
        unreachable.probe("/_readiness").await
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["components"]["temporal"]["ready"], false);
    assert!(
        body["components"]["temporal"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    assert_eq!(
        unreachable
            .probe("/_liveness")
            .await
            .map(|(status, _)| status),
        Some(200)
    );
}
