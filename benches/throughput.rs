//! Throughput at saturation, and what each delivery costs Temporal: a backlog of N events
//! (as after an outage) drained by hookflow to one healthy endpoint, beside two references
//! on the same Temporal server in the same run, started through the same SDK: the engine
//! floor (a minimal workflow with one no-op regular activity) and the engine ceiling (the
//! fastest workflow Temporal runs: started eagerly, completed in its first workflow task,
//! nothing else).
//!
//! Reported for both: deliveries (workflows) per second, history events and Temporal Cloud
//! actions (`hookflow_temporal::actions`) per workflow,
//! Temporal server CPU ms per workflow (from /proc of the dev server), and for hookflow its
//! own CPU ms per delivery (all its processes together) and peak RSS (the largest process).
//! The Temporal server keeps its state in a database file, as a real one does.
//!
//! The three run in rounds (`HOOKFLOW_BENCH_ROUNDS`, default 3); the ratios are reported
//! per round and as their median and spread. Then the same backlog drained by one consumer
//! and two workers (scale-out), and latency at low load: events produced at 5 per second (`HOOKFLOW_BENCH_LOW_RATE`) to a fresh
//! deployment, p50 and p99 from produce to receipt.
//!
//! `cargo build --release -p hookflow && cargo bench --workspace --bench throughput`
//! (`HOOKFLOW_BENCH_EVENTS`, default 600, changes the backlog).
// The Temporal macros generate undocumented items beside the documented methods.
#![allow(missing_docs)]

use std::{
    collections::BTreeSet,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

mod load;

use futures::{StreamExt, stream};
use hookflow_e2e::{scenario::Scenario, stack::stack, temporal};
use temporalio_client::{Client, WorkflowStartOptions};
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, Runtime, Worker, WorkerOptions, WorkflowContext, WorkflowResult,
    activities::{ActivityContext, ActivityError},
    runtime::RuntimeOptions,
};

/// One side's figures.
struct Figures {
    name: &'static str,
    workflows: usize,
    elapsed: Duration,
    history_events: f64,
    /// Temporal Cloud actions per workflow (`hookflow_temporal::actions`).
    actions: f64,
    temporal_cpu_ms: f64,
    own_cpu_ms: Option<f64>,
    peak_rss_mib: Option<f64>,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.workflows as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self) {
        println!(
            "{:<10} {:>6} workflows in {:>6.1} s: {:>6.1}/s, {:>5.1} history events and \
             {:>4.1} actions each, Temporal {:>5.1} ms CPU each{}{}",
            self.name,
            self.workflows,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.history_events,
            self.actions,
            self.temporal_cpu_ms,
            self.own_cpu_ms
                .map(|ms| format!(", own {ms:.1} ms CPU each"))
                .unwrap_or_default(),
            self.peak_rss_mib
                .map(|mib| format!(", peak RSS {mib:.0} MiB"))
                .unwrap_or_default(),
        );
    }
}

/// CPU time (user + system) a process has used, in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // procfs counts in clock ticks of 1/100 s on Linux.
    ticks * 10.0
}

/// Peak resident set size (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    hookflow_e2e::proc_status_kib(&pid.to_string(), "VmHWM") as f64 / 1024.0
}

/// The pid of the Temporal dev server keeping its state in `db` (not its shell guard).
fn temporal_pid(db: &str) -> u32 {
    let out = Command::new("pgrep")
        .args(["-f", db])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "temporal")
        })
        .expect("the temporal server process")
}

/// History events and Temporal Cloud actions of a few of `ids`, on average.
async fn history_costs(client: &Client, ids: &[String]) -> (f64, f64) {
    let sample = &ids[..ids.len().min(10)];
    let (mut events, mut actions) = (0, 0);
    for id in sample {
        let history = temporal::history(client, id).await;
        events += history.len();
        actions += hookflow_temporal::actions::ActionCount::of(&history).total();
    }
    let n = sample.len() as f64;
    (events as f64 / n, f64::from(actions) / n)
}

/// The processes that drain the backlog: `["all"]`, or `["consumer", "worker", "worker"]`.
async fn hookflow_backlog(
    name: &'static str,
    scenario: &mut Scenario,
    roles: &[&str],
    events: usize,
    temporal_db: &str,
) -> Figures {
    scenario.destination("healthy", "healthy", "");
    let uuids = scenario.produce_events(events).await;
    let temporal = temporal_pid(temporal_db);
    let temporal_before = cpu_ms(temporal);
    let started = Instant::now();
    let processes: Vec<_> = roles
        .iter()
        .map(|role| scenario.deployment.start_as(role))
        .collect();
    let expected: BTreeSet<String> = uuids.iter().map(|u| format!("healthy:{u}")).collect();
    scenario
        .receiver
        .wait_for_ids(&expected, Duration::from_secs(1800))
        .await;
    let last = scenario
        .receiver
        .received_on("healthy")
        .iter()
        .map(|r| r.at)
        .max()
        .expect("deliveries");
    // Workflows finish just after their request: let the last ones close.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let own_cpu: f64 = processes.iter().map(|p| cpu_ms(p.pid())).sum();
    let peak_rss = processes
        .iter()
        .map(|p| peak_rss_mib(p.pid()))
        .fold(0.0, f64::max);
    let (history_events, actions) = history_costs(
        &scenario.temporal,
        &expected.iter().cloned().collect::<Vec<_>>(),
    )
    .await;
    Figures {
        name,
        workflows: events,
        elapsed: last - started,
        history_events,
        actions,
        temporal_cpu_ms: (cpu_ms(temporal) - temporal_before) / events as f64,
        own_cpu_ms: Some(own_cpu / events as f64),
        peak_rss_mib: Some(peak_rss),
    }
}

/// The engine ceiling's workflow: nothing; it completes in its first workflow task.
#[workflow]
#[derive(Default)]
pub struct CeilingWorkflow;

#[workflow_methods]
impl CeilingWorkflow {
    #[run]
    pub async fn run(_ctx: &mut WorkflowContext<Self>, input: u32) -> WorkflowResult<u32> {
        Ok(input)
    }
}

/// The two references hookflow is measured against.
#[derive(Clone, Copy, PartialEq)]
enum Engine {
    /// One no-op regular activity, started as any workflow is.
    Floor,
    /// Nothing, started eagerly: the fastest workflow the server runs.
    Ceiling,
}

/// The engine floor's workflow: one no-op regular activity.
#[workflow]
#[derive(Default)]
pub struct FloorWorkflow;

#[workflow_methods]
impl FloorWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: u32) -> WorkflowResult<u32> {
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30)).build();
        let echoed = ctx
            .execute_activity(FloorActivities::noop, input, options)
            .await
            .unwrap_or(0);
        Ok(echoed)
    }
}

pub struct FloorActivities;

#[activities]
impl FloorActivities {
    #[activity]
    pub async fn noop(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: u32,
    ) -> Result<u32, ActivityError> {
        Ok(input)
    }
}

async fn engine(client: Client, engine: Engine, workflows: usize, temporal_db: &str) -> Figures {
    let name = match engine {
        Engine::Floor => "floor",
        Engine::Ceiling => "ceiling",
    };
    let task_queue = format!("{name}-{}", uuid::Uuid::new_v4());
    let runtime =
        Runtime::from_current_tokio(RuntimeOptions::builder().build().expect("runtime options"))
            .expect("runtime");
    let options = WorkerOptions::new(&task_queue)
        .register_workflow::<FloorWorkflow>()
        .expect("workflow")
        .register_workflow::<CeilingWorkflow>()
        .expect("workflow")
        .register_activities(FloorActivities)
        .build();
    let mut worker = Worker::new(&runtime, client.clone(), options).expect("worker");
    let stop = worker.shutdown_handle();
    let temporal = temporal_pid(temporal_db);
    let ids: Vec<String> = (0..workflows)
        .map(|n| format!("{task_queue}-{n}"))
        .collect();
    let run = async {
        let temporal_before = cpu_ms(temporal);
        let started = Instant::now();
        // As many starts in flight as hookflow's consumer allows (kafka.max_starts_in_flight).
        stream::iter(ids.iter().enumerate())
            .for_each_concurrent(32, |(n, id)| {
                let client = client.clone();
                let task_queue = task_queue.clone();
                async move {
                    // Eager start hands the first workflow task to this process's worker
                    // in the start's answer, as hookflow's starts do.
                    let options = WorkflowStartOptions::new(task_queue, id.clone())
                        .enable_eager_workflow_start(engine == Engine::Ceiling)
                        .build();
                    let started = match engine {
                        Engine::Floor => client
                            .start_workflow(FloorWorkflow::run, n as u32, options)
                            .await
                            .map(drop),
                        Engine::Ceiling => client
                            .start_workflow(CeilingWorkflow::run, n as u32, options)
                            .await
                            .map(drop),
                    };
                    started.expect("start");
                }
            })
            .await;
        for id in &ids {
            // Both return their input: one handle type reads either's result.
            let handle = client.get_workflow_handle::<FloorWorkflow>(id);
            handle
                .get_result(Default::default())
                .await
                .expect("engine workflow");
        }
        let elapsed = started.elapsed();
        let temporal_cpu = cpu_ms(temporal) - temporal_before;
        stop();
        (elapsed, temporal_cpu)
    };
    let (worked, (elapsed, temporal_cpu)) = tokio::join!(worker.run(), run);
    worked.expect("engine worker");
    let (history_events, actions) = history_costs(&client, &ids).await;
    Figures {
        name,
        workflows,
        elapsed,
        history_events,
        actions,
        temporal_cpu_ms: temporal_cpu / workflows as f64,
        own_cpu_ms: None,
        peak_rss_mib: None,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !load::benchmarking() {
        return;
    }
    let events = load::env_or("HOOKFLOW_BENCH_EVENTS", 600) as usize;
    let low_rate = load::env_or("HOOKFLOW_BENCH_LOW_RATE", 5) as f64;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("temporal.db");
    let db_text = db.display().to_string();
    let (stack, _server) = stack().with_own_temporal(&db);
    let client = temporal::client(&stack.temporal).await;

    let rounds = load::env_or("HOOKFLOW_BENCH_ROUNDS", 3).max(1) as usize;
    println!(
        "backlog of {events} events, one healthy endpoint, Temporal dev server with a database file"
    );
    // Each round runs the floor, the ceiling and hookflow (a fresh topic and team) on the
    // same server; the ratios within a round are what is compared, over rounds their
    // median and spread.
    let mut ratios: [Vec<f64>; 4] = Default::default();
    let mut last = None;
    for round in 0..rounds {
        println!("round {}:", round + 1);
        let floor = engine(client.clone(), Engine::Floor, events, &db_text).await;
        let ceiling = engine(client.clone(), Engine::Ceiling, events, &db_text).await;
        let mut scenario = Scenario::on(stack.clone(), 1).await;
        let hookflow =
            hookflow_backlog("hookflow", &mut scenario, &["all"], events, &db_text).await;
        floor.print();
        ceiling.print();
        hookflow.print();
        let round_ratios = [
            hookflow.per_second() / floor.per_second(),
            hookflow.temporal_cpu_ms / floor.temporal_cpu_ms,
            hookflow.per_second() / ceiling.per_second(),
            hookflow.temporal_cpu_ms / ceiling.temporal_cpu_ms,
        ];
        for (all, ratio) in ratios.iter_mut().zip(round_ratios) {
            all.push(ratio);
        }
        for (reference, rates) in [(&floor, &round_ratios[..2]), (&ceiling, &round_ratios[2..])] {
            println!(
                "hookflow / {}: throughput {:.2}x, history events {:.2}x, Temporal CPU per \
                 workflow {:.2}x",
                reference.name,
                rates[0],
                hookflow.history_events / reference.history_events,
                rates[1],
            );
        }
        last = Some(hookflow);
    }
    println!("over {rounds} rounds:");
    let labels = [
        "floor throughput:    ",
        "floor Temporal CPU:  ",
        "ceiling throughput:  ",
        "ceiling Temporal CPU:",
    ];
    for (label, rounds) in labels.iter().zip(&ratios) {
        let target = if label.starts_with("ceiling throughput") {
            " (target >= 0.85x)"
        } else {
            ""
        };
        println!("hookflow / {label} {}{target}", load::Spread::of(rounds));
    }

    // Scale-out: the same backlog (a fresh topic and team) drained by one consumer and two
    // workers, beside the last round's single process.
    let mut split = Scenario::on(stack.clone(), 1).await;
    let scaled = hookflow_backlog(
        "1c+2w",
        &mut split,
        &["consumer", "worker", "worker"],
        events,
        &db_text,
    )
    .await;
    scaled.print();
    if let Some(hookflow) = &last {
        println!(
            "one consumer and two workers / one process: throughput {:.2}x",
            scaled.per_second() / hookflow.per_second()
        );
    }

    // Low load on a fresh deployment (its own topic and team) on the same server.
    let mut low = Scenario::on(stack, 1).await;
    low.destination("low", "low", "");
    let process = low.deployment.start();
    load::eventually_ready(&process).await;
    let count = (low_rate * 12.0) as usize;
    let figures = load::steady_load(&low, "low", count, low_rate).await;
    println!(
        "low load   {count} events at {low_rate}/s: delivered {} ({:.1}/s), p50 {} ms, p99 {} ms",
        figures.delivered,
        figures.per_second,
        figures.p50.as_millis(),
        figures.p99.as_millis()
    );
}
