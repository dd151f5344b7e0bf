//! Live latency during a replay: does re-sending a day's events slow live webhooks?
//!
//! One stack, one hookflow process. N events (default 1,000) matching action 3 are in the
//! topic before any destination wants them; the live destination wants action 1. First,
//! live events at 5/s to the live destination alone; then a destination wanting action 3 is
//! added and `hookflow replay` runs (default pace, 50 starts/s) while the same live load
//! runs again. Reported: the live p50/p99 from produce to receipt alone and during the
//! replay, and how long the replay took to deliver all N.
//!
//! `cargo build --release -p hookflow && cargo bench --workspace --bench replay`
//! (`HOOKFLOW_BENCH_EVENTS` changes N).

mod load;

use std::time::{Duration, Instant};

use hookflow_e2e::{events, scenario::Scenario};
use load::{Pace, env_or, eventually_ready};

/// Live events per second, and how many in each measurement.
const LIVE_RATE: f64 = 5.0;
const LIVE_EVENTS: usize = 100;

#[tokio::main]
async fn main() {
    if !load::benchmarking() {
        return;
    }
    let n = env_or("HOOKFLOW_BENCH_EVENTS", 1000) as usize;
    println!("replay of {n} events beside live events at {LIVE_RATE}/s");
    let mut s = Scenario::new().await;
    s.destination("live", "live", "actions = [1]");
    let since = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let backlog: Vec<serde_json::Value> = (0..n)
        .map(|_| events::event(s.team, &[(3, "Past")]).1)
        .collect();
    s.produce(&backlog.iter().collect::<Vec<_>>()).await;
    let process = s.deployment.start();
    eventually_ready(&process).await;

    let alone = load::load(&s, "live", LIVE_EVENTS, Pace::Steady(LIVE_RATE)).await;
    alone.print("live alone");

    s.destination("replayed", "replayed", "actions = [3]");
    s.deployment.write_destinations();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let began = Instant::now();
    let team = s.team.to_string();
    let args = [
        "replay",
        "--team",
        &team,
        "--destination",
        "replayed",
        "--since",
        since.as_str(),
        "--json",
    ];
    // The replay command blocks: it runs on a thread of its own beside the live load.
    let ((ok, output), during) = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let replay = scope.spawn(|| s.deployment.command(&args));
            let during = tokio::runtime::Handle::current().block_on(load::load(
                &s,
                "live",
                LIVE_EVENTS,
                Pace::Steady(LIVE_RATE),
            ));
            (replay.join().expect("replay thread"), during)
        })
    });
    let started_all = began.elapsed();
    assert!(ok, "replay failed: {output}");
    let deadline = Instant::now() + Duration::from_secs(600);
    while s.receiver.distinct_deliveries_on("replayed") < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered_all = began.elapsed();
    during.print("live during the replay");
    println!(
        "replay: {} delivered; all started after {:.1} s, all delivered after {:.1} s \
         ({:.1}/s)",
        s.receiver.distinct_deliveries_on("replayed"),
        started_all.as_secs_f64(),
        delivered_all.as_secs_f64(),
        n as f64 / delivered_all.as_secs_f64()
    );
    println!(
        "replay counts: {}",
        output.lines().last().unwrap_or_default()
    );
    println!(
        "live during / alone: p50 {:.2}x, p99 {:.2}x",
        during.p50.as_secs_f64() / alone.p50.as_secs_f64().max(f64::EPSILON),
        during.p99.as_secs_f64() / alone.p99.as_secs_f64().max(f64::EPSILON)
    );
    drop(process);
}
