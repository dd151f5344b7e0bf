//! The destination catalog on PostgreSQL: durable, transactional, one row per destination
//! and per team (`migrations/`), managed through the admin API.
//!
//! Every process loads the catalog once, then applies changes as they are committed:
//! writes take a change sequence under one row lock (so sequence order is commit order)
//! and `NOTIFY`; each process `LISTEN`s, reads the rows changed past the sequence it
//! applied, and applies them one destination at a time. A notification that goes missing
//! (a dropped connection) costs at most `catch_up_interval_ms`: the process also asks on
//! that interval, and at once after its listener reconnects.
//!
//! - [`rows`]: a stored row made a destination, and what is in use when one cannot be read;
//! - [`writes`]: the admin API's reads and transactional writes (optimistic concurrency on
//!   the row's version);
//! - this file: settings, the connection pool and migrations, the load and the change feed.
//!
//! Faults: until the first load a process is not ready and neither consumes nor works
//! (an empty catalog would skip every event). After it, PostgreSQL being away changes
//! nothing for delivery: the catalog in memory stays in use, writes answer 503, and the
//! changes other processes made meanwhile arrive once it is back.

mod rows;
pub mod writes;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::TryStreamExt;
use hookflow_core::{
    DestinationCatalog, DestinationSet, FieldError, LiveDestinations, Secret, ValidationRules,
    sync::LockUnpoisoned,
};
use hookflow_runtime::{Backoff, BackoffPolicy};
use hookflow_telemetry::{health::HealthHandle, names};
use hookflow_temporal::codec::CodecError;
use serde::Deserialize;
use sqlx::{
    ConnectOptions, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;

use self::rows::{Feed, Row};
use super::sealing::{Sealer, SealingSettings};

/// The notification channel of committed changes (its payload: the change sequence).
const CHANNEL: &str = "hookflow_destinations";
/// How often the change feed reports to liveness while nothing else happens: well within
/// the 60 s deadline, whatever the catch-up interval.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Rows read per query of the change feed.
const FEED_PAGE: i64 = 1_000;

/// The schema's migrations, embedded in the binary. A database migrated by a later
/// version is accepted (`ignore_missing`): during a rollout or a rollback, a process of the
/// earlier version must still start. So every migration keeps the schema readable and
/// writable by the version before it (add columns with defaults; never drop or rename one
/// in the release that stops using it).
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// `[destinations.postgres]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: Secret,
    /// Connections each process keeps at most.
    pub max_connections: u32,
    /// Longest a connection or a query may take.
    #[serde(rename = "timeout_ms", with = "hookflow_core::millis")]
    pub timeout: Duration,
    /// How often a process asks for changes without a notification.
    #[serde(rename = "catch_up_interval_ms", with = "hookflow_core::millis")]
    pub catch_up_interval: Duration,
    /// Whether to run the migrations at start-up.
    pub migrate: bool,
    /// `[destinations.postgres.encryption]`
    #[serde(default)]
    pub encryption: SealingSettings,
}

impl PostgresSettings {
    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.url.expose().parse::<PgConnectOptions>().is_err() {
            return Err(FieldError::new(
                "url",
                "must be a postgres:// URL (set it with HOOKFLOW_DESTINATIONS__POSTGRES__URL)",
            ));
        }
        if self.max_connections == 0 {
            return Err(FieldError::new("max_connections", "must be at least 1"));
        }
        if let Err(error) = Sealer::from_settings(&self.encryption) {
            let problem = match error {
                CodecError::Settings(problem) => problem,
                other => other.to_string(),
            };
            return Err(FieldError::new(
                "encryption",
                format!(
                    "needs a current_key among its keys, which seal the destinations' secrets \
                     ({problem})"
                ),
            ));
        }
        Ok(())
    }

    /// A pool of `max_connections` that connects on first use (so a process starts with
    /// PostgreSQL down).
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        self.pool_of(self.max_connections)
    }

    fn pool_of(&self, connections: u32) -> Result<PgPool, sqlx::Error> {
        Ok(PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(self.timeout)
            .connect_lazy_with(self.connect_options()?))
    }

    /// How every connection is made. Waiting for a lock is bounded by the timeout on the
    /// server: a session holding the change sequence's row lock cannot block every team's
    /// writes for good.
    fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        let options: PgConnectOptions = self.url.expose().parse()?;
        let lock_timeout = self.timeout.as_millis().to_string();
        Ok(options
            .application_name("hookflow")
            .options([("lock_timeout", lock_timeout.as_str())]))
    }
}

/// Runs the schema's migrations on `pool` (under PostgreSQL's advisory lock, so processes
/// starting together run them once).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    migrator().run(pool).await
}

/// Why a process does not load the catalog: rows are sealed with keys its ring lacks, or
/// with keys its ring holds other material under (none of their rows opens with it).
#[derive(Debug, thiserror::Error)]
#[error("{}", unusable_keys(.missing, .wrong))]
struct UnusableKeys {
    missing: BTreeSet<String>,
    wrong: BTreeSet<String>,
}

fn unusable_keys(missing: &BTreeSet<String>, wrong: &BTreeSet<String>) -> String {
    let list = |keys: &BTreeSet<String>| keys.iter().cloned().collect::<Vec<_>>().join(", ");
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "destinations are sealed with keys this process lacks ({})",
            list(missing)
        ));
    }
    if !wrong.is_empty() {
        problems.push(format!(
            "this process's keys open none of the destinations sealed with them ({})",
            list(wrong)
        ));
    }
    format!(
        "{}: set destinations.postgres.encryption.keys right",
        problems.join("; ")
    )
}

/// The catalog, loaded into [`Catalog::live`] and kept current by [`Catalog::follow`].
pub struct Catalog {
    /// Reads and writes of the admin API, and the load.
    pool: PgPool,
    /// The one connection that listens for notifications, in a pool of its own.
    listener_pool: PgPool,
    settings: PostgresSettings,
    sealer: Sealer,
    rules: ValidationRules,
    live: Arc<LiveDestinations>,
    feed: std::sync::Mutex<Feed>,
    /// Serialises applying changes, so each is applied once, in order; holds the change
    /// feed's own connection between catch-ups. Not a pooled one: a catch-up given up on
    /// (a connection that stopped answering) drops its connection, where the pool would
    /// keep a slot for it until TCP gives up.
    applying: tokio::sync::Mutex<Option<PgConnection>>,
    health: HealthHandle,
    loaded: tokio::sync::watch::Sender<bool>,
    /// Whether PostgreSQL answered last time, so a change is logged once.
    up: std::sync::atomic::AtomicBool,
}

impl Catalog {
    /// The catalog of `settings` (not loaded yet: [`Catalog::follow`] loads it). `health`
    /// is not ready until it is loaded.
    pub fn open(
        settings: &PostgresSettings,
        rules: ValidationRules,
        health: HealthHandle,
    ) -> anyhow::Result<Catalog> {
        let pool = settings.pool()?;
        let listener_pool = settings.pool_of(1)?;
        let sealer = Sealer::from_settings(&settings.encryption)?;
        health.set_ready(false, "destinations: the catalog is not loaded yet");
        metrics::gauge!(names::DESTINATION_CATALOG_UP).set(0.0);
        Ok(Catalog {
            pool,
            listener_pool,
            settings: settings.clone(),
            sealer,
            rules,
            live: Arc::default(),
            feed: std::sync::Mutex::default(),
            applying: tokio::sync::Mutex::new(None),
            health,
            loaded: tokio::sync::watch::Sender::new(false),
            up: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// The destinations in use.
    pub fn live(&self) -> Arc<LiveDestinations> {
        self.live.clone()
    }

    /// Resolves once the catalog is loaded; `false` when `shutdown` came first.
    pub async fn wait_loaded(&self, shutdown: &CancellationToken) -> bool {
        let mut loaded = self.loaded.subscribe();
        tokio::select! {
            result = loaded.wait_for(|loaded| *loaded) => result.is_ok(),
            _ = shutdown.cancelled() => false,
        }
    }

    /// Loads the catalog (retrying until PostgreSQL answers), then applies every committed
    /// change until `shutdown`: at once on a notification, and every catch-up interval.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        });
        // Every turn of every loop below reports progress, whether PostgreSQL answers or
        // not: liveness fails only when the loop itself stalls (a restart would not bring
        // PostgreSQL back, and would lose the catalog in memory that delivers meanwhile).
        loop {
            self.health.beat();
            match self.load().await {
                Ok(()) => break,
                Err(error) => {
                    if error.is::<UnusableKeys>() {
                        tracing::error!(error = %error, "destination catalog not loaded");
                    } else {
                        self.unavailable(&error);
                    }
                    self.health.set_ready(
                        false,
                        format!("destinations: the catalog is not loaded yet: {error:#}"),
                    );
                    if !backoff.wait(&shutdown).await {
                        return;
                    }
                }
            }
        }
        let mut tick = tokio::time::interval(self.settings.catch_up_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A quiet catalog with a long catch-up interval must still report in.
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        while !shutdown.is_cancelled() {
            self.health.beat();
            let mut listener = match self.listen().await {
                Ok(listener) => listener,
                Err(error) => {
                    self.unavailable(&error);
                    // Changes still arrive, by the interval, until a listener connects.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tick.tick() => self.catch_up_and_report().await,
                        _ = heartbeat.tick() => {}
                    }
                    continue;
                }
            };
            // Whatever was committed before the listener connected.
            self.catch_up_and_report().await;
            loop {
                self.health.beat();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = heartbeat.tick() => {}
                    _ = tick.tick() => self.catch_up_and_report().await,
                    notified = listener.try_recv() => match notified {
                        // A notification; or the connection dropped and came back (and some
                        // may have been missed): either way, read what changed.
                        Ok(_) => self.catch_up_and_report().await,
                        Err(error) => {
                            self.unavailable(&anyhow::Error::from(error));
                            break;
                        }
                    },
                }
            }
        }
    }

    async fn listen(&self) -> anyhow::Result<PgListener> {
        self.bounded(async {
            let mut listener = PgListener::connect_with(&self.listener_pool).await?;
            listener.listen(CHANNEL).await?;
            Ok(listener)
        })
        .await
    }

    /// `work` (a connection and a query), given up after twice the timeout: a connection
    /// that stopped answering without closing (a dead host, a dropped route) must not stall
    /// the change feed, whose progress liveness watches.
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let limit = self.settings.timeout * 2;
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer within {limit:?}"))?
    }

    /// Readies the catalog for a command that only writes (import, reseal): the schema
    /// migrated when configured, and the change feed placed at the sequence committed now,
    /// without loading a row (so a row this process could not read never stops it, and a
    /// write applies only itself).
    pub async fn for_commands(&self) -> anyhow::Result<()> {
        if self.settings.migrate {
            migrate(&self.pool).await?;
        }
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM hookflow_catalog_sequence")
            .fetch_one(&self.pool)
            .await?;
        self.feed.lock_unpoisoned().applied_seq = seq;
        Ok(())
    }

    /// Reads every row in use and the change sequence they are current at, in one snapshot,
    /// and puts them in use.
    async fn load(&self) -> anyhow::Result<()> {
        if self.settings.migrate {
            migrate(&self.pool).await?;
        }
        let started = std::time::Instant::now();
        let mut snapshot = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *snapshot)
            .await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM hookflow_catalog_sequence")
            .fetch_one(&mut *snapshot)
            .await?;
        // Rows are applied as they stream in, so a large catalog is never held twice (as
        // rows and as destinations) at once.
        let _applying = self.applying.lock().await;
        let mut set = DestinationSet::default();
        let mut feed = Feed::default();
        // A key this process lacks, or holds other material under (not one row sealed with
        // it opens), is its own configuration's fault, not the rows': loading without it
        // would leave those destinations out and skip their events for good. So it loads
        // nothing, stays unready and consumes nothing until its keys are right (the
        // processes whose keys are go on). A row that does not open while others of its
        // key do is refused alone, as are rows changed later.
        let mut missing = BTreeSet::new();
        // Per key id this process has: whether a row sealed with it opened. One that opens
        // proves the key, so only the rows before it are opened twice (here and to apply).
        let mut proven: HashMap<String, bool> = HashMap::new();
        {
            let mut rows = sqlx::query_as::<_, Row>(rows::SELECT_LIVE).fetch(&mut *snapshot);
            while let Some(row) = rows.try_next().await? {
                match Sealer::key_id_of(&row.sealed) {
                    Some(key) if !self.sealer.has_key(&key) => {
                        missing.insert(key);
                    }
                    Some(key) => {
                        let opens = proven.entry(key).or_default();
                        if !*opens {
                            *opens = self.sealer.opens(&row.sealed, row.binding());
                        }
                    }
                    None => {}
                }
                if missing.is_empty() {
                    feed.apply(&row, &self.sealer, &self.rules, &mut set);
                }
            }
        }
        snapshot.commit().await?;
        let wrong: BTreeSet<String> = proven
            .into_iter()
            .filter(|(_, opens)| !opens)
            .map(|(key, _)| key)
            .collect();
        if !missing.is_empty() || !wrong.is_empty() {
            self.available();
            return Err(UnusableKeys { missing, wrong }.into());
        }
        feed.applied_seq = seq;
        let count = set.len();
        self.live.replace(set);
        feed.report();
        *self.feed.lock_unpoisoned() = feed;
        metrics::gauge!(names::DESTINATIONS_LOADED).set(count as f64);
        self.available();
        tracing::info!(
            destinations = count,
            seq,
            load_ms = started.elapsed().as_millis() as u64,
            "destination catalog loaded"
        );
        self.health.set_ready(true, "");
        self.loaded.send_replace(true);
        Ok(())
    }

    /// Applies what was committed past the sequence this process applied; how many rows.
    async fn catch_up(&self) -> Result<usize, sqlx::Error> {
        let mut applying = self.applying.lock().await;
        // Taken out while in use: given back only after a catch-up that went through, so a
        // failed or abandoned one never leaves a connection in an unknown state behind.
        let mut connection = match applying.take() {
            Some(connection) => connection,
            None => self.settings.connect_options()?.connect().await?,
        };
        let mut applied = 0;
        loop {
            let after = self.feed.lock_unpoisoned().applied_seq;
            let rows: Vec<Row> = sqlx::query_as(rows::SELECT_CHANGED)
                .bind(after)
                .bind(FEED_PAGE)
                .fetch_all(&mut connection)
                .await?;
            let page = rows.len();
            {
                let mut feed = self.feed.lock_unpoisoned();
                self.live.change(|set| {
                    for row in &rows {
                        feed.apply(row, &self.sealer, &self.rules, set);
                        feed.applied_seq = feed.applied_seq.max(row.change_seq);
                    }
                });
                feed.report();
            }
            applied += page;
            if (page as i64) < FEED_PAGE {
                break;
            }
        }
        if applied > 0 {
            metrics::gauge!(names::DESTINATIONS_LOADED).set(self.live.len() as f64);
        }
        *applying = Some(connection);
        Ok(applied)
    }

    /// Applies what was committed since, bounded ([`Catalog::bounded`]); whether PostgreSQL
    /// answered is reported.
    pub(crate) async fn catch_up_and_report(&self) {
        let caught_up = self.bounded(async { Ok(self.catch_up().await?) }).await;
        match caught_up {
            Ok(_) => self.available(),
            Err(error) => self.unavailable(&error),
        }
    }

    /// PostgreSQL answered again: logged when it comes back.
    fn available(&self) {
        metrics::gauge!(names::DESTINATION_CATALOG_UP).set(1.0);
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("destination catalog reachable again; its changes are applied");
        }
    }

    /// PostgreSQL did not answer: the catalog in memory stays in use. Logged when it goes.
    fn unavailable(&self, error: &anyhow::Error) {
        metrics::gauge!(names::DESTINATION_CATALOG_UP).set(0.0);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                error = format!("{error:#}"),
                "destination catalog unreachable; the destinations in memory stay in use"
            );
        }
    }

    /// The pool, for the admin API's writes.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }
}
