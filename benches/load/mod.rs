//! Shared by the benchmarks: waiting for hookflow to be ready, a load (at a fixed rate, or
//! a burst as fast as the producer goes) with each delivery's latency from producing the
//! event to its request arriving, and the median and spread of a figure over rounds.
// Every benchmark includes this module and uses a part of it.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use hookflow_e2e::{hookflow::Process, scenario::Scenario};
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};

/// What a steady load measured on one receiver path.
pub struct LoadFigures {
    /// Requests that arrived for the produced events.
    pub delivered: usize,
    /// Of those, per second from the first event produced to the last request.
    pub per_second: f64,
    /// Median latency from produce to receipt.
    pub p50: Duration,
    /// 99th percentile of the same.
    pub p99: Duration,
}

impl LoadFigures {
    /// One line of figures, under `name`.
    pub fn print(&self, name: &str) {
        println!(
            "{name:<34} delivered {:>4}  {:>6.1}/s  p50 {:>6} ms  p99 {:>6} ms",
            self.delivered,
            self.per_second,
            self.p50.as_millis(),
            self.p99.as_millis()
        );
    }
}

/// Whether `cargo bench` runs this benchmark: it passes `--bench`; anything else (`cargo
/// test --benches`, say) is a dry run that only checks the benchmark builds.
/// A figure over rounds: its median, and the lowest and highest round.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// The median (the upper one of an even count).
    pub median: f64,
    /// The lowest round.
    pub min: f64,
    /// The highest round.
    pub max: f64,
}

impl Spread {
    /// The spread of `rounds` (at least one).
    pub fn of(rounds: &[f64]) -> Spread {
        let mut sorted = rounds.to_vec();
        sorted.sort_by(f64::total_cmp);
        Spread {
            median: sorted[sorted.len() / 2],
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.2}x, from {:.2}x to {:.2}x",
            self.median, self.min, self.max
        )
    }
}

pub fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A whole-number setting from the environment.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until `process` answers ready.
pub async fn eventually_ready(process: &Process) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if matches!(process.probe("/_readiness").await, Some((200, _))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("hookflow did not become ready");
}

/// How fast a load's events are produced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// This many events per second.
    Steady(f64),
    /// All at once: a backlog, as after an outage.
    Burst,
}

/// Produces `events` events at `rate` per second to the scenario's topic; see [`load`].
pub async fn steady_load(s: &Scenario, path: &str, events: usize, rate: f64) -> LoadFigures {
    load(s, path, events, Pace::Steady(rate)).await
}

/// Produces `events` events at `pace` to the scenario's topic, after one warm-up event
/// delivered end to end (so the consumer group has joined and the worker polls), and
/// measures the requests arriving on the destination at `path`.
pub async fn load(s: &Scenario, path: &str, events: usize, pace: Pace) -> LoadFigures {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.stack.kafka)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let produce = |payload: String| {
        let producer = producer.clone();
        let topic = s.deployment.topic.clone();
        async move {
            producer
                .send(
                    FutureRecord::<(), str>::to(&topic).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    };
    let (_, warm_up) = hookflow_e2e::events::event(s.team, &[(1, "Any")]);
    produce(warm_up.to_string()).await;
    while s.receiver.received_on(path).is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut produced_at: HashMap<String, Instant> = HashMap::new();
    let mut tick = match pace {
        Pace::Steady(rate) => Some(tokio::time::interval(Duration::from_secs_f64(1.0 / rate))),
        Pace::Burst => None,
    };
    let first = Instant::now();
    for _ in 0..events {
        if let Some(tick) = &mut tick {
            tick.tick().await;
        }
        let (uuid, event) = hookflow_e2e::events::event(s.team, &[(1, "Any")]);
        produced_at.insert(format!("{path}:{uuid}"), Instant::now());
        produce(event.to_string()).await;
    }
    let measured = || -> Vec<hookflow_e2e::receiver::Received> {
        s.receiver
            .received_on(path)
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
    LoadFigures {
        delivered: received.len(),
        per_second: received.len() as f64 / (last - first).as_secs_f64(),
        p50: quantile(0.50),
        p99: quantile(0.99),
    }
}
