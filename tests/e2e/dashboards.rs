//! The operator's view is checked against a real Prometheus: the alert rules pass promtool
//! (syntax and unit tests), and while a short end-to-end run is scraped, every query of the
//! Grafana dashboard returns data, so no panel names a metric or label that does not exist.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use hookflow_e2e::{
    eventually, free_port,
    hookflow::Process,
    receiver::{Answer, Receiver},
    scenario::Scenario,
};
use serde_json::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

#[test]
fn the_alert_rules_pass_promtool() {
    let dir = repository().join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["check", "config", "prometheus.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool (deploy/local/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Prometheus scraping `targets` every second; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(hookflow: &[&Process]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = |port: u16| format!("\"127.0.0.1:{port}\"");
        let ops: Vec<String> = hookflow.iter().map(|p| target(p.metrics_port)).collect();
        let sdk: Vec<String> = hookflow
            .iter()
            .map(|p| target(p.sdk_metrics_port))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: hookflow\n    static_configs:\n      - targets: [{}]\n  \
             - job_name: hookflow-temporal-sdk\n    static_configs:\n      - targets: [{}]\n",
            ops.join(", "),
            sdk.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("prometheus.log")).expect("log"),
            ))
            .spawn()
            .expect("prometheus (deploy/local/install-deps.sh installs it)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The result vector of an instant query, or the error Prometheus gave.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let response: Value = reqwest::Client::new()
            .get(url)
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if response["status"] != "success" {
            return Err(response["error"].to_string());
        }
        Ok(response["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every query of every panel, with Grafana's `$__rate_interval` made concrete.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repository().join("deploy/grafana/dashboards/hookflow.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                expr.replace("$__rate_interval", "1m"),
            ));
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "the dashboard has its panels");

    let mut s = Scenario::new().await;
    // A second endpoint with a tight rate limit, so deferrals happen.
    let slow = Receiver::start().await;
    s.receiver.script(
        "flaky",
        vec![Answer::Status(503, None), Answer::Status(200, None)],
    );
    s.destination("ok", "ok", "")
        .destination("flaky", "flaky", "");
    s.destination_on(
        &slow,
        "limited",
        "limited",
        "rate_per_second = 1.0\nburst = 1",
    );
    // A third endpoint that only fails, so its breaker opens (and the panel of breakers
    // open longest has one to show).
    let down = Receiver::start().await;
    down.script("down", vec![Answer::Status(503, None); 50]);
    s.destination_on(
        &down,
        "down",
        "down",
        "breaker_min_attempts = 2\nbreaker_failure_ratio = 0.5",
    );
    s.deployment.endpoint_labels();
    let process = s.deployment.start();
    let prometheus = Prometheus::start(&[&process]);

    s.produce(&[&serde_json::json!({"not": "an event"})]).await;
    s.produce_events(4).await;
    eventually(Duration::from_secs(60), "every delivery", || async {
        (s.receiver.received_on("ok").len() == 4
            && s.receiver.distinct_deliveries_on("flaky") == 4
            && slow.received_on("limited").len() == 4
            && down.received_on("down").len() >= 2)
            .then_some(())
    })
    .await;
    // Lag comes from librdkafka's statistics every 5 s; then a few more scrapes.
    tokio::time::sleep(Duration::from_secs(7)).await;

    let up = prometheus.query("up").await.expect("up");
    assert_eq!(up.len(), 2, "both targets scraped: {up:?}");
    assert!(up.iter().all(|s| s["value"][1] == "1"), "{up:?}");
    let mut empty = Vec::new();
    for (panel, expr) in &queries {
        match prometheus.query(expr).await {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => empty.push(format!("{panel}: no data for {expr}")),
            Err(error) => empty.push(format!("{panel}: {error} in {expr}")),
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
}
