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

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use hookflow_e2e::{
    receiver::{Answer, Receiver},
    scenario::Scenario,
};
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};

struct Figures {
    delivered: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(events: usize, rate: u64, hanging: bool) -> Figures {
    let mut s = Scenario::new().await;
    let other = Receiver::start().await;
    if hanging {
        other.script("other", vec![Answer::Hang(Duration::from_secs(120))]);
    }
    s.destination("healthy", "healthy", "timeout_ms = 2000");
    s.destination_on(&other, "other", "other", "timeout_ms = 2000");
    let process = s.deployment.start();
    eventually_ready(&process).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.stack.kafka)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    // Warm up: one event delivered end to end, so the consumer group has joined and the
    // worker polls before anything is measured.
    let (_, warm_up) = hookflow_e2e::events::event(s.team, &[(1, "Any")]);
    producer
        .send(
            FutureRecord::<(), str>::to(&s.deployment.topic).payload(&warm_up.to_string()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
    while s.receiver.received_on("healthy").is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut produced_at: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let first = Instant::now();
    for _ in 0..events {
        tick.tick().await;
        let (uuid, event) = hookflow_e2e::events::event(s.team, &[(1, "Any")]);
        let payload = event.to_string();
        produced_at.insert(format!("healthy:{uuid}"), Instant::now());
        producer
            .send(
                FutureRecord::<(), str>::to(&s.deployment.topic).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    let measured = || -> Vec<hookflow_e2e::receiver::Received> {
        s.receiver
            .received_on("healthy")
            .into_iter()
            .filter(|r| produced_at.contains_key(r.header("webhook-id")))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while measured().len() < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = measured();
    let mut latencies: Vec<Duration> = received
        .iter()
        .filter_map(|r| Some(r.at - *produced_at.get(r.header("webhook-id"))?))
        .collect();
    latencies.sort_unstable();
    let last = received.iter().map(|r| r.at).max().unwrap_or(first);
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
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
    Figures {
        delivered: received.len(),
        per_second: received.len() as f64 / (last - first).as_secs_f64(),
        p50: quantile(0.50),
        p99: quantile(0.99),
    }
}

async fn eventually_ready(process: &hookflow_e2e::hookflow::Process) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if matches!(process.probe("/_readiness").await, Some((200, _))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("hookflow did not become ready");
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<28} delivered {:>4}  {:>6.1}/s  p50 {:>6} ms  p99 {:>6} ms",
        f.delivered,
        f.per_second,
        f.p50.as_millis(),
        f.p99.as_millis()
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) is a dry
    // run that only checks the benchmark builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events = env_or("HOOKFLOW_BENCH_EVENTS", 300) as usize;
    let rate = env_or("HOOKFLOW_BENCH_RATE", 15);
    println!("isolation: {events} events at {rate}/s, each to a healthy and a second endpoint");
    let baseline = run(events, rate, false).await;
    print("both endpoints healthy", &baseline);
    let isolated = run(events, rate, true).await;
    print("other endpoint hanging", &isolated);
    println!(
        "healthy throughput {:.1}% of baseline (target >= 95%), p99 {:.2}x baseline (target <= 1.5x)",
        100.0 * isolated.per_second / baseline.per_second,
        isolated.p99.as_secs_f64() / baseline.p99.as_secs_f64().max(f64::EPSILON)
    );
}
