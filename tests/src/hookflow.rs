//! The real `hookflow` binary as a child process, with a configuration generated for one
//! test: its own topics, consumer group, task queue and metrics port, and a short retry
//! schedule so retries happen within seconds.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{free_port, stack::Stack, unique};

/// The test deployments' catalog key (32 bytes, base64): not a secret.
pub const CATALOG_KEY: &str = "dGVzdC1rZXktb2YtdGhpcnR5LXR3by1ieXRlcy0tLS0=";

/// One test's hookflow deployment: configuration and destinations; processes are started
/// from it with [`Deployment::start`].
pub struct Deployment {
    dir: tempfile::TempDir,
    /// Events topic.
    pub topic: String,
    /// Dead-letter topic.
    pub dead_letter_topic: String,
    /// Topic of the per-team outcome summaries (one-second windows).
    pub outcomes_topic: String,
    /// Task queue.
    pub task_queue: String,
    /// Consumer group.
    pub group: String,
    /// Prefix of the deployment's Redis keys.
    pub redis_prefix: String,
    brokers: String,
    temporal: String,
    redis: String,
    postgres: crate::stack::PostgresServer,
    /// The deployment's catalog database, once it keeps destinations there.
    catalog: Option<String>,
    destinations: String,
    allowed_hosts: Vec<String>,
    /// The egress proxy (`http.proxy`), if any.
    proxy: Option<String>,
    /// Named egress proxies (`http.proxies`).
    proxies: Vec<(String, String)>,
    endpoint_labels: bool,
    admin: Option<(u16, String)>,
    /// Overrides layered over the generated configuration.
    extra: toml::Table,
}

/// A running hookflow process; killed when dropped.
pub struct Process {
    child: Child,
    /// Where its standard output goes.
    log: PathBuf,
    /// Its metrics port.
    pub metrics_port: u16,
    /// The port of the Temporal SDK's metrics.
    pub sdk_metrics_port: u16,
}

impl Deployment {
    /// A deployment with a fresh events topic of `partitions` partitions on the shared stack.
    pub fn new(stack: &Stack, partitions: u32) -> Self {
        let topic = unique("events");
        let dead_letter_topic = format!("{topic}-dlq");
        stack.create_topic(&topic, partitions);
        stack.create_topic(&dead_letter_topic, 1);
        let outcomes_topic = format!("{topic}-outcomes");
        stack.create_topic(&outcomes_topic, 1);
        Deployment {
            dir: tempfile::tempdir().expect("tempdir"),
            topic,
            dead_letter_topic,
            outcomes_topic,
            task_queue: unique("deliveries"),
            group: unique("hookflow"),
            redis_prefix: unique("hookflow"),
            brokers: stack.kafka.clone(),
            temporal: stack.temporal.clone(),
            redis: stack.redis.url(),
            postgres: stack.postgres.clone(),
            catalog: None,
            destinations: String::new(),
            allowed_hosts: vec!["127.0.0.1".into()],
            proxy: None,
            proxies: Vec::new(),
            endpoint_labels: false,
            admin: None,
            extra: toml::Table::new(),
        }
    }

    /// Adds a destination; `extra` holds more TOML lines (actions, secret, timeout_ms).
    pub fn destination(&mut self, id: &str, team: i64, url: &str, extra: &str) -> &mut Self {
        self.destinations.push_str(&format!(
            "[[destination]]\nid = \"{id}\"\nteam_id = {team}\nurl = \"{url}\"\n{extra}\n\n"
        ));
        self
    }

    /// Sends every delivery through the forward proxy `url` (`http.proxy`).
    pub fn proxy(&mut self, url: &str) -> &mut Self {
        self.proxy = Some(url.to_owned());
        self
    }

    /// Adds the named egress proxy `name` at `url` (`http.proxies`), for destinations
    /// that choose it.
    pub fn named_proxy(&mut self, name: &str, url: &str) -> &mut Self {
        self.proxies.push((name.to_owned(), url.to_owned()));
        self
    }

    /// Replaces the SSRF allow-list (default: 127.0.0.1).
    pub fn allowed_hosts(&mut self, hosts: &[&str]) -> &mut Self {
        self.allowed_hosts = hosts.iter().map(|h| h.to_string()).collect();
        self
    }

    /// Points the deployment at another Temporal address (for example one nothing listens on).
    pub fn temporal_address(&mut self, address: &str) -> &mut Self {
        self.temporal = address.to_owned();
        self
    }

    /// Points the deployment at another Redis (for example one the test stops).
    pub fn redis_url(&mut self, url: &str) -> &mut Self {
        self.redis = url.to_owned();
        self
    }

    /// Keeps destinations in a PostgreSQL catalog of its own and serves the admin API; its
    /// base URL and token.
    pub fn admin_api(&mut self) -> (String, String) {
        let port = free_port();
        let token = unique("admin-token-0123456789");
        self.admin = Some((port, token.clone()));
        self.catalog_url();
        (format!("http://127.0.0.1:{port}"), token)
    }

    /// Keeps destinations in a PostgreSQL catalog of its own (created on first call); its
    /// URL.
    pub fn catalog_url(&mut self) -> String {
        let name = self
            .catalog
            .get_or_insert_with(|| unique("catalog").replace('-', "_"))
            .clone();
        if self
            .postgres
            .sql(
                "postgres",
                &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
            )
            .is_empty()
        {
            self.postgres.create_database(&name);
        }
        self.postgres.url(&name)
    }

    /// Points the catalog at another PostgreSQL (for example one the test stops).
    pub fn postgres(&mut self, server: &crate::stack::PostgresServer) -> &mut Self {
        self.postgres = server.clone();
        self
    }

    /// Turns on the per-endpoint failure metric (`telemetry.endpoint_labels`).
    pub fn endpoint_labels(&mut self) -> &mut Self {
        self.endpoint_labels = true;
        self
    }

    /// Layers TOML over the generated configuration: new sections are added, keys of
    /// existing ones (`[retry]`, `[temporal]`, …) override the generated values.
    pub fn config(&mut self, toml: &str) -> &mut Self {
        let overrides: toml::Table = toml.parse().expect("test configuration is TOML");
        merge(&mut self.extra, overrides);
        self
    }

    /// Drops every override [`Deployment::config`] layered so far.
    pub fn reset_config(&mut self) -> &mut Self {
        self.extra = toml::Table::new();
        self
    }

    /// Uses a new consumer group (as a fresh deployment reading from offset 0 would).
    pub fn new_group(&mut self) -> &mut Self {
        self.group = unique("hookflow");
        self
    }

    /// Forgets every destination added so far (to add a new set and write it).
    pub fn clear_destinations(&mut self) {
        self.destinations.clear();
    }

    /// Writes the destinations file (a running process picks the change up within a
    /// second); its path.
    pub fn write_destinations(&self) -> PathBuf {
        self.write_destinations_text(&self.destinations)
    }

    /// Writes `text` as the destinations file, valid or not; its path.
    pub fn write_destinations_text(&self, text: &str) -> PathBuf {
        let destinations = self.dir.path().join("destinations.toml");
        // Write and rename, as editors and config managers do, so a reader never sees half.
        let partial = self.dir.path().join("destinations.toml.partial");
        std::fs::write(&partial, text).expect("write destinations");
        std::fs::rename(&partial, &destinations).expect("replace destinations");
        destinations
    }

    fn write_config(&self, metrics_port: u16, sdk_metrics_port: u16) -> PathBuf {
        let destinations = self.write_destinations();
        let allowed: Vec<String> = self
            .allowed_hosts
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect();
        let config = format!(
            r#"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
dead_letter_topic = "{dlq}"
group_id = "{group}"
session_timeout_ms = 6000
heartbeat_interval_ms = 500
commit_interval_ms = 200
drain_timeout_ms = 10000
start_retry_initial_ms = 200
start_retry_max_ms = 2000

[temporal]
address = "{temporal}"
task_queue = "{task_queue}"

[http]
allowed_hosts = [{allowed}]
proxy = "{proxy}"
proxies = {{ {proxies} }}

[destinations]
file = "{destinations}"
store = "{store}"

[destinations.postgres]
url = "{catalog}"
catch_up_interval_ms = 1000

[destinations.postgres.encryption]
current_key = "test"
keys = {{ test = "{catalog_key}" }}

[admin]
address = "{admin_address}"
token = "{admin_token}"

[retry]
schedule_ms = [1000, 1000, 1000, 1000]
jitter = 0.0
max_age_ms = 120000
max_retry_after_ms = 10000

[outcomes]
topic = "{outcomes_topic}"
window_ms = 1000

[redis]
url = "{redis}"
key_prefix = "{redis_prefix}"

[telemetry]
ops_address = "127.0.0.1:{metrics_port}"
sdk_metrics_address = "127.0.0.1:{sdk_metrics_port}"
endpoint_labels = {endpoint_labels}
log_filter = "info,temporalio_sdk_core=warn"
"#,
            brokers = self.brokers,
            topic = self.topic,
            dlq = self.dead_letter_topic,
            group = self.group,
            temporal = self.temporal,
            task_queue = self.task_queue,
            allowed = allowed.join(", "),
            proxy = self.proxy.as_deref().unwrap_or_default(),
            proxies = self
                .proxies
                .iter()
                .map(|(name, url)| format!("{name} = \"{url}\""))
                .collect::<Vec<_>>()
                .join(", "),
            destinations = destinations.display(),
            redis = self.redis,
            outcomes_topic = self.outcomes_topic,
            redis_prefix = self.redis_prefix,
            endpoint_labels = self.endpoint_labels,
            store = if self.catalog.is_some() {
                "postgres"
            } else {
                "file"
            },
            catalog = self
                .catalog
                .as_deref()
                .map(|name| self.postgres.url(name))
                .unwrap_or_default(),
            catalog_key = CATALOG_KEY,
            admin_address = self
                .admin
                .as_ref()
                .map(|(port, _)| format!("127.0.0.1:{port}"))
                .unwrap_or_default(),
            admin_token = self
                .admin
                .as_ref()
                .map(|(_, t)| t.as_str())
                .unwrap_or_default(),
        );
        let mut config: toml::Table = config.parse().expect("generated configuration is TOML");
        merge(&mut config, self.extra.clone());
        let path = self
            .dir
            .path()
            .join(format!("hookflow-{metrics_port}.toml"));
        std::fs::write(&path, config.to_string()).expect("write config");
        path
    }

    /// Starts `hookflow run` with this configuration.
    pub fn start(&self) -> Process {
        self.start_as("all")
    }

    /// Starts `hookflow run --role <role>` (`all`, `consumer` or `worker`).
    pub fn start_as(&self, role: &str) -> Process {
        self.start_command(&["run", "--role", role])
    }

    /// Starts a long-running `hookflow` subcommand (`run …`, `codec-server`) with this
    /// configuration.
    pub fn start_command(&self, args: &[&str]) -> Process {
        let (metrics_port, sdk_metrics_port) = (free_port(), free_port());
        let config = self.write_config(metrics_port, sdk_metrics_port);
        let log = self.dir.path().join(format!("hookflow-{metrics_port}.log"));
        let child = Command::new(binary())
            .args(["--config", config.to_str().expect("utf-8 path")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
            .stderr(Stdio::from(
                std::fs::File::create(log.with_extension("err")).expect("log"),
            ))
            .spawn()
            .expect("start hookflow");
        Process {
            child,
            log,
            metrics_port,
            sdk_metrics_port,
        }
    }

    /// Runs a one-shot `hookflow` command (for example `destinations enable ID`) with this
    /// configuration; its exit success and standard output.
    pub fn command(&self, args: &[&str]) -> (bool, String) {
        let config = self.write_config(free_port(), free_port());
        let mut all = vec!["--config", config.to_str().expect("utf-8 path")];
        all.extend(args);
        run(&all)
    }

    /// The logs of every process this deployment started, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("log" | "err")
            ) {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        out
    }
}

/// Deep-merges `overrides` into `base`: tables merge key by key, other values replace.
fn merge(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(value)) => {
                merge(existing, value);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Runs the `hookflow` binary with `args`; its exit success and its output (standard output
/// and error).
pub fn run(args: &[&str]) -> (bool, String) {
    run_with_env(args, &[])
}

/// [`run`] with these variables added to the environment.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run hookflow");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The hookflow binary built next to this test binary (`cargo build` builds it first).
fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let target = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let binary = target.join("hookflow");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --workspace` first",
        binary.display()
    );
    binary
}

impl Process {
    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a graceful exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Whether it has exited (and how: `Some(true)` when successfully).
    pub fn exited(&mut self) -> Option<bool> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|status| status.success())
    }

    /// What it wrote to standard output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident set size, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        crate::proc_status_kib(&self.child.id().to_string(), "VmRSS")
    }

    /// GETs an operations endpoint (`/_liveness`, `/_readiness`): its status and JSON body.
    pub async fn probe(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.metrics_port))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// The value of a metric series (exact name with labels, e.g.
    /// `hookflow_consumer_dead_letters_total{reason="not_json"}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.series(series).await.unwrap_or(0.0)
    }

    /// Waits until a metric series reaches `at_least` (panics after `timeout`); its value.
    pub async fn wait_for_metric(&self, series: &str, at_least: f64, timeout: Duration) -> f64 {
        crate::eventually(timeout, series, || async {
            let value = self.metric(series).await;
            (value >= at_least).then_some(value)
        })
        .await
    }

    /// The whole `/metrics` page.
    pub async fn metrics_page(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        reqwest::get(url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of a metric series, `None` when it is not exported.
    pub async fn series(&self, series: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        text.lines()
            .filter_map(|line| line.rsplit_once(' '))
            .find(|(name, _)| *name == series)
            .and_then(|(_, value)| value.parse().ok())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_9();
    }
}
