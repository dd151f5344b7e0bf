//! The destination catalog at size: 100,000 destinations of 10,000 teams in PostgreSQL.
//!
//! One stack, one catalog database. Reported:
//! - the import of N destinations from a file (`hookflow destinations import`), per second;
//! - a process's cold load (`load_ms` of its "destination catalog loaded" line) and its
//!   resident memory once ready, beside the same process on an empty catalog, per
//!   destination and beside what a destination takes in the database;
//! - how long a change committed through one process's admin API takes to be applied by
//!   another process (pause and resume, one at a time; seen by polling that process's
//!   `hookflow_destination_changes_total` every millisecond), p50 and p99;
//! - admin writes per second with 8 clients writing at once, and their p50 and p99.
//!
//! `cargo build --release -p hookflow && cargo bench --workspace --bench catalog`
//! (`HOOKFLOW_BENCH_DESTINATIONS` changes N; teams are N / 10).

mod load;

use std::time::{Duration, Instant};

use hookflow_e2e::{admin::AdminApi, free_port, hookflow::Process, scenario::Scenario};
use load::{env_or, eventually_ready};

/// Destinations per team.
const PER_TEAM: u64 = 10;
/// Changes timed one at a time from commit to another process applying them.
const CHANGES: usize = 200;
/// Clients writing at once, and how many writes each makes.
const WRITERS: usize = 8;
const WRITES_EACH: usize = 250;
const APPLIED: &str = r#"hookflow_destination_changes_total{result="applied"}"#;

#[tokio::main]
async fn main() {
    if !load::benchmarking() {
        return;
    }
    let n = env_or("HOOKFLOW_BENCH_DESTINATIONS", 100_000);
    let teams = (n / PER_TEAM).max(1);
    println!("catalog of {n} destinations, {teams} teams");
    let mut s = Scenario::new().await;
    let (base, token) = s.deployment.admin_api();
    let (ok, said) = s.deployment.command(&["migrate"]);
    assert!(ok, "{said}");

    let empty = s.deployment.start();
    eventually_ready(&empty).await;
    let empty_rss = empty.rss_kib();
    drop(empty);

    let first_team = s.team;
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let url = s.receiver.url("catalog");
    let mut text = String::with_capacity(n as usize * 120);
    for team in 0..teams {
        for d in 0..PER_TEAM {
            text.push_str(&format!(
                "[[destination]]\nid = \"d-{d}\"\nteam_id = {}\nurl = \"{url}\"\n",
                first_team + team as i64
            ));
        }
    }
    std::fs::write(file.path(), text).expect("write");
    let began = Instant::now();
    let path = file.path().to_str().expect("path");
    let (ok, said) = s
        .deployment
        .command(&["destinations", "import", "--file", path]);
    assert!(ok, "{said}");
    let import = began.elapsed();
    println!(
        "import        {n} destinations in {:.1} s ({:.0}/s)",
        import.as_secs_f64(),
        n as f64 / import.as_secs_f64()
    );

    let process = s.deployment.start();
    eventually_ready(&process).await;
    let rss = process.rss_kib();
    println!(
        "cold load     {} ms; RSS once ready {} MiB (empty catalog: {} MiB)",
        load_ms(&process),
        rss / 1024,
        empty_rss / 1024
    );
    // What a destination is as stored, beside what it costs in memory.
    let catalog = s.deployment.catalog_url();
    let database = catalog.rsplit('/').next().expect("database");
    let stored = s.stack.postgres.sql(
        database,
        "SELECT round(avg(octet_length(spec::text) + octet_length(sealed))) \
         FROM hookflow_destinations",
    );
    println!(
        "per destination {} bytes of RSS; {stored} bytes stored (spec + sealed secrets)",
        rss.saturating_sub(empty_rss) * 1024 / n
    );

    // Another process, applying the changes the first one's admin API commits.
    let other_port = free_port();
    s.deployment
        .config(&format!("[admin]\naddress = \"127.0.0.1:{other_port}\""));
    let other = s.deployment.start_as("consumer");
    eventually_ready(&other).await;
    let api = AdminApi::new(base, token);
    let mut applied_after = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        // Each destination paused, then resumed.
        let team = first_team + ((i / 2) as u64 % teams) as i64;
        let action = if i.is_multiple_of(2) {
            "pause"
        } else {
            "resume"
        };
        let before = other.metric(APPLIED).await;
        let began = Instant::now();
        let path = format!("/v1/teams/{team}/destinations/d-0/{action}");
        let (status, body) = api.call("POST", &path, None).await;
        assert_eq!(status, 200, "{body}");
        while other.metric(APPLIED).await <= before {
            assert!(began.elapsed() < Duration::from_secs(30), "never applied");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        applied_after.push(began.elapsed());
    }
    let (p50, p99) = percentiles(&mut applied_after);
    println!(
        "change        applied by another process p50 {:.1} ms  p99 {:.1} ms ({CHANGES} changes)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );

    let began = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut took = Vec::with_capacity(WRITES_EACH);
                for i in 0..WRITES_EACH {
                    // Each destination paused, then resumed.
                    let team = first_team + ((w * WRITES_EACH + i / 2) as u64 % teams) as i64;
                    let action = if i.is_multiple_of(2) {
                        "pause"
                    } else {
                        "resume"
                    };
                    let path = format!("/v1/teams/{team}/destinations/d-{w}/{action}");
                    let started = Instant::now();
                    let (status, body) = api.call("POST", &path, None).await;
                    assert_eq!(status, 200, "{body}");
                    took.push(started.elapsed());
                }
                took
            })
        })
        .collect();
    let mut took = Vec::new();
    for writer in writers {
        took.extend(writer.await.expect("writer"));
    }
    let elapsed = began.elapsed();
    let (p50, p99) = percentiles(&mut took);
    println!(
        "admin writes  {:.0}/s with {WRITERS} clients; p50 {:.1} ms  p99 {:.1} ms",
        took.len() as f64 / elapsed.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    drop((process, other));
}

/// The `load_ms` the process logged when its catalog loaded.
fn load_ms(process: &Process) -> String {
    let logs = process.output();
    logs.lines()
        .find(|l| l.contains("destination catalog loaded"))
        .and_then(|l| l.split("load_ms=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("?")
        .to_owned()
}

/// The median and 99th percentile of `samples`.
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5), at(0.99))
}
