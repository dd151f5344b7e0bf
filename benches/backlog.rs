//! Backlog isolation: does a backlog to failing endpoints slow a healthy one when Temporal,
//! not the network, is the limit?
//!
//! Two runs on one stack, each with its own topic, task queue and team, hookflow started and
//! warmed up before the burst. Alone: N events (default 60) to one healthy endpoint,
//! produced at once. Beside: N events each matching three destinations on three endpoints,
//! the healthy one, one that hangs past its 2 s timeout and one that always answers 503,
//! produced at once. Reported: the healthy endpoint's p50/p99 from produce to receipt and
//! throughput in both runs and their ratio (target: p99 beside at most 1.5x alone); for each
//! endpoint of the second run, the history events its deliveries wrote within the first
//! minute, on average, and the requests the failing endpoints received (target: a failing
//! delivery at most 2x the history events of a healthy one).
//!
//! The p99 of 60 deliveries is their slowest but one, so one run's ratio moves by a few
//! tenths from run to run: the pair of runs is repeated (`HOOKFLOW_BENCH_ROUNDS`, 5) and
//! the median ratio reported; the history figures come from the first round. Each round's
//! failing deliveries are terminated at its end, so later rounds run on a quiet server.
//!
//! `cargo build --release -p hookflow && cargo bench --workspace --bench backlog`
//! (`HOOKFLOW_BENCH_EVENTS` changes N).

mod load;

use std::time::{Duration, Instant};

use hookflow_e2e::{
    receiver::{Answer, Receiver},
    scenario::Scenario,
    temporal,
};
use hookflow_temporal::deliveries;
use load::{LoadFigures, Pace, env_or, eventually_ready};

/// The timeout of every destination, as in the scenario the issue measured.
const TIMEOUT: &str = "timeout_ms = 2000";

async fn alone(events: usize) -> LoadFigures {
    let mut s = Scenario::new().await;
    s.destination("healthy", "healthy", TIMEOUT);
    let process = s.deployment.start();
    eventually_ready(&process).await;
    load::load(&s, "healthy", events, Pace::Burst).await
}

/// The healthy endpoint's figures beside the failing ones; with `history`, also what
/// each delivery wrote within the first minute (which waits for that minute to pass).
async fn beside_failing(events: usize, history: bool) -> LoadFigures {
    let mut s = Scenario::new().await;
    let (hanging, failing) = (Receiver::start().await, Receiver::start().await);
    hanging.script("hanging", vec![Answer::Hang(Duration::from_secs(120))]);
    failing.script("failing", vec![Answer::Status(503, None)]);
    s.destination("healthy", "healthy", TIMEOUT);
    s.destination_on(&hanging, "hanging", "hanging", TIMEOUT);
    s.destination_on(&failing, "failing", "failing", TIMEOUT);
    let process = s.deployment.start();
    eventually_ready(&process).await;
    let burst = Instant::now();
    let figures = load::load(&s, "healthy", events, Pace::Burst).await;
    if history {
        first_minute(&s, &hanging, &failing, burst).await;
    }
    // Left alone, the failing deliveries would retry on this server through later rounds.
    for destination in ["hanging", "failing"] {
        let reason = "backlog bench: round over";
        let stopped = deliveries::stop_pending(&s.temporal, s.team, destination, true, reason);
        stopped
            .await
            .expect("terminate the round's failing deliveries");
    }
    drop(process);
    figures
}

/// Prints what each destination's deliveries wrote within the first minute after `burst`,
/// and the requests the failing endpoints received.
async fn first_minute(s: &Scenario, hanging: &Receiver, failing: &Receiver, burst: Instant) {
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(burst.elapsed())).await;
    let requests = |receiver: &Receiver, path: &str| receiver.received_on(path).len();
    let (hanging_requests, failing_requests) =
        (requests(hanging, "hanging"), requests(failing, "failing"));
    let healthy_ids = delivery_ids(s, "healthy");
    let mut events_per_delivery = Vec::new();
    for destination in ["healthy", "hanging", "failing"] {
        // The same events went to every destination: the healthy receiver saw their ids.
        let mut total = 0;
        for id in &healthy_ids {
            let uuid = id.split_once(':').map_or("", |(_, uuid)| uuid);
            total += temporal::history(&s.temporal, &format!("{destination}:{uuid}"))
                .await
                .len();
        }
        events_per_delivery.push((destination, total as f64 / healthy_ids.len() as f64));
    }
    println!(
        "  first minute: requests to the hanging endpoint {hanging_requests}, to the failing \
         one {failing_requests}"
    );
    for (destination, average) in &events_per_delivery {
        println!("  first minute: {destination:<8} {average:>5.1} history events per delivery");
    }
    let healthy = events_per_delivery[0].1;
    for (destination, average) in &events_per_delivery[1..] {
        println!(
            "  {destination} / healthy history events: {:.2}x (target <= 2x)",
            average / healthy
        );
    }
}

/// The delivery ids of the events measured (warm-up included) on `path`.
fn delivery_ids(s: &Scenario, path: &str) -> Vec<String> {
    s.receiver
        .received_on(path)
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

#[tokio::main]
async fn main() {
    if !load::benchmarking() {
        return;
    }
    let events = env_or("HOOKFLOW_BENCH_EVENTS", 60) as usize;
    let rounds = env_or("HOOKFLOW_BENCH_ROUNDS", 5).max(1) as usize;
    println!("backlog isolation: a burst of {events} events, every destination's timeout 2 s");
    let mut ratios = Vec::new();
    for round in 0..rounds {
        println!("round {}:", round + 1);
        // The server slows a little as its database grows, so the pair's order alternates
        // (alone first in odd rounds, beside first in even ones) rather than always
        // measuring beside on the bigger database.
        let (baseline, beside) = if round % 2 == 0 {
            let baseline = alone(events).await;
            (baseline, beside_failing(events, round == 0).await)
        } else {
            let beside = beside_failing(events, false).await;
            (alone(events).await, beside)
        };
        baseline.print("healthy endpoint alone");
        beside.print("healthy beside hanging and 503");
        let ratio = beside.p99.as_secs_f64() / baseline.p99.as_secs_f64().max(f64::EPSILON);
        println!(
            "healthy beside failing / alone: p99 {ratio:.2}x, throughput {:.2}x",
            beside.per_second / baseline.per_second
        );
        ratios.push(ratio);
    }
    println!(
        "healthy p99 beside failing / alone over {rounds} rounds: {} (target <= 1.5x)",
        load::Spread::of(&ratios)
    );
}
