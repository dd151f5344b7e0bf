//! The isolation benchmark: how much does a hanging endpoint cost a healthy one?
//!
//! Two runs on one stack, each with its own topic, task queue and team. Every event goes to
//! two destinations on two endpoints, produced at a steady rate. In the baseline both
//! endpoints are healthy; in the second run one of them never answers within its timeout,
//! so it receives half the traffic and its breaker opens. For the healthy endpoint the
//! benchmark reports deliveries per second and the p50/p99 latency from producing the event
//! to the request arriving, and the ratio of the two runs.
//!
//! `cargo build --release -p hookflow && cargo bench -p hookflow-benches --bench isolation`
//! (`HOOKFLOW_BENCH_EVENTS`, default 300, and `HOOKFLOW_BENCH_RATE`, events per second,
//! default 15, change the load).

mod load;

use std::time::Duration;

use hookflow_e2e::{
    receiver::{Answer, Receiver},
    scenario::Scenario,
};
use load::{LoadFigures, env_or, eventually_ready, steady_load};

async fn run(events: usize, rate: u64, hanging: bool) -> LoadFigures {
    let mut s = Scenario::new().await;
    let other = Receiver::start().await;
    if hanging {
        other.script("other", vec![Answer::Hang(Duration::from_secs(120))]);
    }
    s.destination("healthy", "healthy", "timeout_ms = 2000");
    s.destination_on(&other, "other", "other", "timeout_ms = 2000");
    let process = s.deployment.start();
    eventually_ready(&process).await;

    let figures = steady_load(&s, "healthy", events, rate as f64).await;
    if hanging {
        eprintln!(
            "  hanging endpoint: {} requests, breaker opened {} times, {} deferrals while open",
            other.received_on("other").len(),
            process
                .metric(r#"hookflow_breaker_transitions_total{from="closed",to="open"}"#)
                .await
                + process
                    .metric(r#"hookflow_breaker_transitions_total{from="half_open",to="open"}"#)
                    .await,
            process
                .metric(r#"hookflow_deferrals_total{reason="breaker_open"}"#)
                .await,
        );
    }
    figures
}

#[tokio::main]
async fn main() {
    if !load::benchmarking() {
        return;
    }
    let events = env_or("HOOKFLOW_BENCH_EVENTS", 300) as usize;
    let rate = env_or("HOOKFLOW_BENCH_RATE", 15);
    println!("isolation: {events} events at {rate}/s, each to a healthy and a second endpoint");
    let baseline = run(events, rate, false).await;
    baseline.print("both endpoints healthy");
    let isolated = run(events, rate, true).await;
    isolated.print("other endpoint hanging");
    println!(
        "healthy throughput {:.1}% of baseline (target >= 95%), p99 {:.2}x baseline (target <= 1.5x)",
        100.0 * isolated.per_second / baseline.per_second,
        isolated.p99.as_secs_f64() / baseline.p99.as_secs_f64().max(f64::EPSILON)
    );
}
