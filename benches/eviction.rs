//! The idle-eviction benchmark: how much memory does per-endpoint isolation state keep?
//!
//! One endpoint gate (bulkheads, rate limiters, breakers; no Redis, so nothing leaves the
//! process) attempts 100,000 distinct endpoints once each, then leaves them idle past the
//! eviction time and sweeps; then does it again with 100,000 new endpoints. It reports the
//! process's resident set size (VmRSS) and the gate's entries at each step: without
//! eviction both would grow with every endpoint ever seen.
//!
//! `cargo bench -p hookflow-benches --bench eviction` (`HOOKFLOW_BENCH_ENDPOINTS`, default
//! 100000, changes the count).

use std::{
    sync::{Arc, atomic::AtomicU32},
    time::{Duration, Instant},
};

use hookflow_core::{
    AttemptReport, Destination, DestinationSpec, ValidationRules, breaker::BreakerPolicy,
};
use hookflow_http::isolation::{EndpointGate, IsolationSettings};

const IDLE: Duration = Duration::from_secs(1);

fn rss_kib() -> u64 {
    hookflow_e2e::proc_status_kib("self", "VmRSS")
}

fn destination(batch: usize, i: usize) -> Destination {
    let spec: DestinationSpec = serde_json::from_value(serde_json::json!({
        "id": format!("d-{batch}-{i}"),
        "team_id": 1,
        "url": format!("https://endpoint-{batch}-{i}.example.com/hook"),
    }))
    .expect("spec");
    spec.validate_one(&ValidationRules::default())
        .expect("valid")
}

async fn attempt_each(gate: &EndpointGate, batch: usize, count: usize) -> Duration {
    let started = Instant::now();
    let ok = AttemptReport::response(200, None, 1);
    for i in 0..count {
        let destination = destination(batch, i);
        let pass = gate.enter(&destination, None).await.expect("admitted");
        gate.leave(&destination, pass, &ok).await;
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("HOOKFLOW_BENCH_ENDPOINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let settings = IsolationSettings {
        rate_per_second: 50.0,
        burst: 50,
        max_in_flight: 10,
        breaker_cache: Duration::from_secs(1),
        concurrency_wait: Duration::ZERO,
        concurrency_retry: Duration::from_secs(1),
        idle_eviction: IDLE,
        shared_hosts: None,
        host_max_in_flight: 40,
        host_team_share: 0.25,
        breaker: BreakerPolicy {
            window_ms: 30_000,
            min_attempts: 10,
            failure_ratio: 0.5,
            cooldown_ms: 5_000,
            max_cooldown_ms: 300_000,
        },
    };
    let gate = EndpointGate::new(&settings, None, Arc::new(AtomicU32::new(1)));
    let start = rss_kib();
    println!("endpoints per batch: {count}; idle eviction after {IDLE:?}");
    println!("RSS at start: {start} KiB");
    for batch in 0..2 {
        let took = attempt_each(&gate, batch, count).await;
        let entries = gate.evict_idle(Duration::from_secs(3_600));
        let attempted = rss_kib();
        tokio::time::sleep(IDLE + Duration::from_millis(1_100)).await;
        let left = gate.evict_idle(IDLE);
        let evicted = rss_kib();
        println!(
            "batch {batch}: attempted in {took:.1?}; {entries} entries, RSS {attempted} KiB \
             (+{} KiB over start); after eviction {left} entries, RSS {evicted} KiB \
             (+{} KiB over start)",
            attempted.saturating_sub(start),
            evicted.saturating_sub(start),
        );
    }
}
