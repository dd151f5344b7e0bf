//! `hookflow run`: the consumer, the worker and the admin API, or one role of them.
//! Telemetry first, then destinations, then Temporal (retried until reachable), then the
//! consumer and/or the worker (with its endpoint gate, Redis link and outcomes publisher),
//! all stopped by one cancellation token that SIGINT and SIGTERM cancel.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use clap::ValueEnum;
use hookflow_core::{DestinationCatalog, EndpointStanding, outcomes::OutcomeAggregator};
use hookflow_http::{
    ActivityMemo,
    isolation::{DisabledDestinations, EndpointGate, FailureStreaks, WorkerRegistry},
};
use hookflow_kafka::{
    ConsumerError, Pipeline,
    outcomes::OutcomePublisher,
    start_queue::{MAX_REORDER_WAIT, StartQueue},
};
use hookflow_runtime::{Backoff, BackoffPolicy, RedisLink};
use hookflow_telemetry::{
    health::{Health, HealthHandle},
    ops,
};
use hookflow_temporal::{TemporalScheduler, activities::DeliveryActivities};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{self, AdminState, tokens::TokenKeys},
    destinations::{Store, postgres::Catalog},
    notices::{NoticeSender, NoticeWebhooks},
    replay::jobs::{JobRecords, ReplayJobs},
    settings::Settings,
    wiring::{PROBE_DEADLINE, delivery_client, delivery_defaults, replayer},
};

/// Which parts of hookflow a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Kafka consumer and Temporal worker.
    All,
    /// Only the Kafka consumer (starts workflows).
    Consumer,
    /// Only the Temporal worker (runs workflows and HTTP attempts).
    Worker,
    /// Only the admin API (needs `admin.address` and the PostgreSQL catalog).
    Admin,
}

/// Starts the admin API when `admin.address` is set.
async fn serve_admin(
    settings: &Settings,
    store: Arc<Catalog>,
    redis: RedisLink,
    temporal: hookflow_temporal::Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(address) = settings.admin_address()? else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on admin.address {address}"))?;
    let disabled = Arc::new(DisabledDestinations::new(Some(redis.clone())));
    let replays = Arc::new(ReplayJobs::new(
        replayer(settings, temporal.clone(), store.live()),
        JobRecords::new(redis),
    ));
    let webhooks = NoticeWebhooks::new(settings, temporal.clone(), store.live());
    let notices = NoticeSender::new(settings, Some(webhooks))?;
    let router = admin::router(AdminState {
        store,
        token: settings.admin.token.expose().into(),
        team_tokens: TokenKeys::from_settings(&settings.admin.team_tokens)
            .map_err(|problem| anyhow::anyhow!("admin.team_tokens.{problem}"))?
            .map(Arc::new),
        temporal,
        http: delivery_client(settings)?,
        site_url: settings.destinations.site_url.trim_end_matches('/').into(),
        task_queue: settings.temporal.task_queue.as_str().into(),
        replays,
        defaults: delivery_defaults(settings),
        disabled,
        notices,
        person_keys: settings.temporal.person_keys(),
    });
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(error) = serve.await {
            tracing::error!(%error, "admin API stopped");
        }
    });
    tracing::info!(%address, "admin API listening");
    Ok(())
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(settings: Settings, role: Role) -> anyhow::Result<()> {
    hookflow_telemetry::init_tracing(
        &settings.telemetry.log_filter,
        settings.telemetry.log_format,
    );
    let metrics = ops::Exposition::new(hookflow_telemetry::install_prometheus()?);

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let redis = RedisLink::new(&settings.redis).context("redis.url")?;
    let health = Health::default();
    let destinations_health = health.register("destinations", PROBE_DEADLINE);
    let store = Store::open(&settings, destinations_health, &shutdown)?;
    let (destinations, managed) = (store.catalog(), store.managed());
    tracing::info!(?role, "hookflow starting");
    if settings.isolation.shared_hosts.is_some() {
        tracing::warn!(
            "isolation.shared_hosts is no longer read: every host's endpoints are kept per \
             team; remove it"
        );
    }

    // The operations listener comes up before Temporal is reached, so probes see "not
    // ready" with a reason rather than no answer at all.
    let ops_address = settings.telemetry.ops_address;
    let listener = tokio::net::TcpListener::bind(ops_address)
        .await
        .with_context(|| format!("cannot listen on telemetry.ops_address {ops_address}"))?;
    tokio::spawn(ops::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    // Every role that has Redis configured depends on it: workers for isolation, the admin
    // API for replay jobs.
    if let Some(link) = &redis {
        let redis_health = health.register("redis", PROBE_DEADLINE);
        tokio::spawn(
            link.clone()
                .probe(Duration::from_secs(5), redis_health, shutdown.clone()),
        );
    }
    let temporal_health = health.register("temporal", PROBE_DEADLINE);
    temporal_health.set_ready(false, "connecting");
    // Known from the start, so readiness cannot pass before they are up. The consumer's loop
    // may legitimately pause for a whole drain during a rebalance, hence its longer deadline.
    let drain_deadline = settings.kafka.drain_timeout + PROBE_DEADLINE;
    let consumer_health = matches!(role, Role::All | Role::Consumer)
        .then(|| health.register_starting("kafka_consumer", drain_deadline));
    let worker_health = matches!(role, Role::All | Role::Worker)
        .then(|| health.register_starting("temporal_worker", PROBE_DEADLINE));

    if role == Role::Admin && (managed.is_none() || settings.admin_address()?.is_none()) {
        anyhow::bail!(
            "--role admin serves only the admin API: it needs admin.address and \
             destinations.store = \"postgres\""
        );
    }
    let starts = consumer_health.is_some();
    let Some(client) = connect_temporal(&settings, starts, &shutdown, &temporal_health).await
    else {
        return Ok(());
    };
    // The admin API is served by `all` and `admin` processes, so a deployment that runs
    // the roles apart serves it from its admin pods only. (Settings refuse an admin API
    // without Redis, where its replay jobs are recorded.)
    if let (Some(store), Some(redis)) = (&managed, &redis)
        && matches!(role, Role::All | Role::Admin)
    {
        let (store, redis) = (store.clone(), redis.clone());
        serve_admin(&settings, store, redis, client.clone(), &shutdown).await?;
    }
    tokio::spawn(hookflow_temporal::connection::probe(
        client.clone(),
        temporal_health,
        shutdown.clone(),
    ));
    // An empty set before the first load would skip every event and end every pending
    // retry as deleted: neither the consumer nor the worker starts until the store loaded.
    if !store.wait_loaded(&shutdown).await {
        return Ok(());
    }
    tracing::info!(destinations = destinations.len(), "destinations loaded");

    if role == Role::Admin {
        shutdown.cancelled().await;
        tracing::info!("hookflow stopped");
        return Ok(());
    }

    // Shutdown order: SIGINT/SIGTERM cancels `shutdown`; the consumer stops receiving and
    // drains its in-flight messages; the worker finishes its running tasks; only then does
    // the outcomes publisher stop, so deliveries finished during the drain are published.
    let isolation = worker_health
        .is_some()
        .then(|| Isolation::new(&settings, redis.clone()));
    if let Some(isolation) = &isolation {
        metrics.add(isolation.gate.clone());
    }
    // The worker's gate tells the consumer how endpoints are doing, so a backlog's starts
    // to healthy endpoints go first; a consumer-only process starts in arrival order.
    let standing = isolation
        .as_ref()
        .map(|isolation| isolation.gate.clone() as Arc<dyn EndpointStanding>);
    let consumer = consumer_health.map(|consumer_health| {
        start_consumer(
            &settings,
            client.clone(),
            destinations.clone(),
            standing,
            &health,
            consumer_health,
            &shutdown,
        )
    });
    if let (Some(worker_health), Some(isolation)) = (worker_health, isolation) {
        run_worker(
            &settings,
            client,
            destinations,
            redis,
            isolation,
            worker_health,
            &shutdown,
        )
        .await?;
    }
    if let Some(consumer) = consumer {
        consumer.await.context("consumer task")??;
    }
    tracing::info!("hookflow stopped");
    Ok(())
}

/// Connects to Temporal, retrying with backoff while it is unreachable (or, for a process
/// that `starts` deliveries, while they could not carry their person hash); `None` on
/// shutdown.
async fn connect_temporal(
    settings: &Settings,
    starts: bool,
    shutdown: &CancellationToken,
    health: &HealthHandle,
) -> Option<hookflow_temporal::Client> {
    let mut backoff = Backoff::new(BackoffPolicy {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(30),
    });
    loop {
        health.beat();
        match hookflow_temporal::connect(&settings.temporal).await {
            Ok(client) if !starts => return Some(client),
            Ok(client) => {
                use hookflow_temporal::search_attributes::check_person_hash;
                match check_person_hash(&client, &settings.temporal).await {
                    Ok(()) => return Some(client),
                    Err(error) => {
                        let retry_in_ms = backoff.next_wait().as_millis() as u64;
                        tracing::error!(%error, retry_in_ms, "cannot start deliveries yet");
                        health.set_ready(false, error.to_string());
                    }
                }
            }
            Err(error) => {
                let retry_in_ms = backoff.next_wait().as_millis() as u64;
                tracing::warn!(%error, retry_in_ms, "Temporal unreachable; retrying");
                health.set_ready(false, error.to_string());
            }
        }
        if !backoff.wait(shutdown).await {
            return None;
        }
    }
}

/// This process's name in outcome summaries: host name and process id.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hookflow".to_owned());
    format!("{host}-{}", std::process::id())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop hookflow with SIGKILL");
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

/// Starts the Kafka consumer in a task of its own; a consumer that cannot run cancels
/// `shutdown`, taking the process down rather than idling silently.
fn start_consumer(
    settings: &Settings,
    client: hookflow_temporal::Client,
    destinations: Arc<dyn DestinationCatalog>,
    standing: Option<Arc<dyn EndpointStanding>>,
    health: &Health,
    consumer_health: HealthHandle,
    shutdown: &CancellationToken,
) -> JoinHandle<Result<(), ConsumerError>> {
    let scheduler = Arc::new(TemporalScheduler::new(client, &settings.temporal));
    let backoff = BackoffPolicy {
        initial: settings.kafka.start_retry_initial,
        max: settings.kafka.start_retry_max,
    };
    let pipeline = Arc::new(Pipeline::new(
        scheduler,
        destinations,
        delivery_defaults(settings),
        StartQueue::new(
            settings.kafka.max_starts_in_flight,
            MAX_REORDER_WAIT,
            standing,
        ),
        backoff,
        health.register_readiness("temporal_starts"),
        shutdown.clone(),
    ));
    let kafka = settings.kafka.clone();
    let token = shutdown.clone();
    consumer_health.set_ready(false, "joining the consumer group");
    tokio::spawn(async move {
        let result =
            hookflow_kafka::consumer::run(&kafka, pipeline, consumer_health, token.clone()).await;
        token.cancel();
        result
    })
}

/// A worker's endpoint isolation: the gate every attempt passes, and the registry of live
/// workers its rate limits are split by.
struct Isolation {
    registry: WorkerRegistry,
    gate: Arc<EndpointGate>,
}

impl Isolation {
    fn new(settings: &Settings, redis: Option<RedisLink>) -> Self {
        let registry = WorkerRegistry::new(redis.clone(), &settings.temporal.task_queue);
        let gate = Arc::new(
            EndpointGate::new(&settings.isolation, redis, registry.live())
                .with_endpoint_labels(settings.telemetry.endpoint_labels),
        );
        Isolation { registry, gate }
    }
}

/// Runs the Temporal worker (with its endpoint isolation and outcomes publisher) on this
/// task until `shutdown`, then lets it finish its running tasks and publishes the last
/// outcomes.
async fn run_worker(
    settings: &Settings,
    client: hookflow_temporal::Client,
    destinations: Arc<dyn DestinationCatalog>,
    redis: Option<RedisLink>,
    Isolation { registry, gate }: Isolation,
    worker_health: HealthHandle,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let http = delivery_client(settings)?;
    if redis.is_none() {
        tracing::warn!("no redis.url: breakers and rate limits are per process");
    }
    registry.register().await;
    tokio::spawn(gate.clone().sweep(shutdown.clone()));
    tokio::spawn(registry.run(shutdown.clone()));
    let disabled = Arc::new(DisabledDestinations::new(redis.clone()));
    let streaks = Arc::new(FailureStreaks::new(
        redis.clone(),
        settings.auto_disable.clone(),
    ));
    let webhooks = NoticeWebhooks::new(settings, client.clone(), destinations.clone());
    let notices = NoticeSender::new(settings, Some(webhooks))?;
    tokio::spawn(crate::auto_disable::run(
        streaks.clone(),
        disabled.clone(),
        notices,
        shutdown.clone(),
    ));
    let mut activities = DeliveryActivities::new(http, destinations, gate, disabled)
        .with_memo(ActivityMemo::new(redis))
        .with_streaks(streaks)
        .with_site_url(&settings.destinations.site_url);
    let outcomes = OutcomesPublishing::start(settings)?;
    if let Some(aggregator) = outcomes.aggregator() {
        activities = activities.with_outcomes(aggregator);
    }
    let mut worker = hookflow_temporal::worker::build(
        client,
        &settings.temporal.task_queue,
        activities,
        settings.sdk_metrics_address()?,
    )?;
    let stop_worker = worker.shutdown_handle();
    // Beats from the task that polls the worker: if that task stalls (something blocks
    // it), the beats stop and liveness fails after the deadline.
    worker_health.beat();
    worker_health.set_ready(true, "");
    // The worker's future is not Send: it runs here, on the caller's task.
    let (result, (), ()) = tokio::join!(
        worker.run(),
        async {
            shutdown.cancelled().await;
            stop_worker();
        },
        hookflow_runtime::every(Duration::from_secs(5), shutdown, || {
            worker_health.beat();
            std::future::ready(())
        })
    );
    shutdown.cancel();
    outcomes.stop_after_worker().await?;
    result.context("temporal worker")
}

/// The per-team outcomes publisher, when `outcomes.topic` is set. It has a stop of its
/// own: it must outlive the worker, whose last deliveries it still publishes.
struct OutcomesPublishing {
    running: Option<(Arc<Mutex<OutcomeAggregator>>, JoinHandle<()>)>,
    stop: CancellationToken,
}

impl OutcomesPublishing {
    fn start(settings: &Settings) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        if settings.outcomes.topic.is_empty() {
            return Ok(OutcomesPublishing {
                running: None,
                stop,
            });
        }
        let aggregator = Arc::new(Mutex::new(OutcomeAggregator::new(
            instance_name(),
            chrono::Utc::now(),
        )));
        let publisher = OutcomePublisher::new(&settings.kafka.client_config(), &settings.outcomes)
            .context("outcomes producer")?;
        let task = tokio::spawn(publisher.run(aggregator.clone(), stop.clone()));
        Ok(OutcomesPublishing {
            running: Some((aggregator, task)),
            stop,
        })
    }

    /// What the attempt activities record outcomes into, when publishing.
    fn aggregator(&self) -> Option<Arc<Mutex<OutcomeAggregator>>> {
        self.running
            .as_ref()
            .map(|(aggregator, _)| aggregator.clone())
    }

    /// Publishes what is left and stops; call once the worker has stopped.
    async fn stop_after_worker(self) -> anyhow::Result<()> {
        self.stop.cancel();
        if let Some((_, task)) = self.running {
            task.await.context("outcomes task")?;
        }
        Ok(())
    }
}
