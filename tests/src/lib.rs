//! The end-to-end harness: a real Kafka-compatible broker (tansu) and a real Temporal dev
//! server, started once per test binary on free loopback ports (so they never collide with
//! a running `make run`); real HTTP receivers; and the real `hookflow` binary run as a child
//! process with a generated configuration.

pub mod admin;
pub mod events;
pub mod hookflow;
pub mod kafka;
pub mod receiver;
pub mod scenario;
pub mod stack;
pub mod temporal;
pub mod tls;

use std::{future::Future, time::Duration};

/// The command that runs `name`: the copy deploy/local/install-deps.sh put in the
/// workspace's Python venv (`.hookflow/venv/bin`) when there is one, so the tests and
/// benches find it without `make` putting the venv on PATH; else `name` on PATH.
pub fn tool(name: &str) -> String {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.hookflow/venv/bin")
        .join(name);
    if venv.is_file() {
        venv.display().to_string()
    } else {
        name.to_owned()
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller to use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A name unique to this test run, for topics, groups, task queues and destinations.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// A `kB` field of `/proc/<pid>/status` (`pid` a number or `self`: `VmRSS`, `VmHWM`, …), in
/// KiB; 0 when it cannot be read.
pub fn proc_status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A team id unique to this run, so visibility queries see only one test's workflows.
pub fn unique_team() -> i64 {
    i64::from(uuid::Uuid::new_v4().as_u128() as u32 >> 1) + 1_000
}

/// Polls `check` every 200 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
