//! The Redis destination store, for deployments managed through the admin API: every
//! destination is a JSON [`DestinationSpec`] in one Redis hash (`<prefix>:destinations`,
//! field = id), and the hash's field `#version` goes up on every change. Each hookflow
//! process keeps the validated set in memory and re-reads the hash when the version moved
//! (checked every `destinations.reload_interval_ms`), so a change reaches every process
//! within seconds. While Redis is unreachable the last set stays in use.
//!
//! The version lives inside the hash so that whatever empties the store (a Redis restart
//! without persistence, a flush, an eviction) takes it too: a store without a version is
//! never read as "every destination deleted". Before the first load the process does not
//! consume (readiness names the store); after it, a store that comes back without its
//! version is **lost**: the last good set stays in use, the loss is logged once, counted
//! and exported for alerting, and writes are refused until an operator restores the store
//! ([`RedisDestinations::restore`], `POST /v1/destinations/restore`) from this process's
//! last good copy, or from a backup.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use hookflow_core::{
    Destination, DestinationError, DestinationSet, DestinationSpec, LiveDestinations,
    ValidationRules, sync::LockUnpoisoned,
};
use hookflow_http::{LinkError, RedisLink};
use hookflow_telemetry::{health::HealthHandle, names};
use tokio_util::sync::CancellationToken;

use crate::destination_reload::{every, keep_last_good, swap_in};

/// The hash field holding the store's version. Destination ids are `[A-Za-z0-9_.-]`, so
/// no destination can be called this.
const VERSION_FIELD: &str = "#version";

/// Writes every (field, value) pair of ARGV into the hash, unless it has a version: a
/// restore never overwrites a store that came back or was rebuilt meanwhile. Returns 1
/// when written.
const RESTORE_SCRIPT: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"#;

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The destination is invalid; names the field.
    #[error(transparent)]
    Invalid(#[from] DestinationError),
    /// No destination has this id (for this team).
    #[error("no destination {0}")]
    NotFound(String),
    /// A destination with this id exists already.
    #[error("destination {0} exists already")]
    Conflict(String),
    /// Redis did not answer.
    #[error(transparent)]
    Unavailable(#[from] LinkError),
    /// The store came back without its version; changes wait for a restore.
    #[error(
        "the destination store in redis was lost (it came back without its version); \
         hookflow keeps delivering with the last good destinations, and changes are refused \
         until it is restored (POST /v1/destinations/restore)"
    )]
    Lost,
    /// A restore was asked of a store that is not lost.
    #[error("the destination store is not lost: nothing to restore")]
    NotLost,
}

/// What was loaded last: the version and the stored JSON of every destination.
struct Snapshot {
    version: u64,
    specs: HashMap<String, String>,
}

enum StoreState {
    /// Nothing loaded yet; the process must not act on an empty set.
    NotLoaded,
    /// The set of this snapshot is in use.
    Loaded(Snapshot),
    /// The store lost its version after this snapshot was loaded; its set stays in use.
    Lost(Snapshot),
}

/// Destinations kept in Redis, loaded into [`RedisDestinations::live`].
pub struct RedisDestinations {
    redis: RedisLink,
    rules: ValidationRules,
    key: String,
    live: Arc<LiveDestinations>,
    state: Mutex<StoreState>,
    health: HealthHandle,
    loaded: tokio::sync::watch::Sender<bool>,
    restore_script: redis::Script,
}

impl RedisDestinations {
    /// The store; loads what Redis holds now. `health` is not ready until a load
    /// succeeded, with the reason.
    pub async fn open(
        redis: RedisLink,
        rules: ValidationRules,
        health: HealthHandle,
    ) -> RedisDestinations {
        metrics::gauge!(names::DESTINATION_STORE_LOST).set(0.0);
        let key = redis.key(&["destinations"]);
        health.set_ready(
            false,
            format!("destinations: loading the redis store {key}"),
        );
        let store = RedisDestinations {
            key,
            redis,
            rules,
            live: Arc::default(),
            state: Mutex::new(StoreState::NotLoaded),
            health,
            loaded: tokio::sync::watch::Sender::new(false),
            restore_script: redis::Script::new(RESTORE_SCRIPT),
        };
        store.refresh_and_report().await;
        store
    }

    /// The destinations in use, kept current by [`RedisDestinations::watch`].
    pub fn live(&self) -> Arc<LiveDestinations> {
        self.live.clone()
    }

    /// Resolves once a set has been loaded; `false` when `shutdown` came first.
    pub async fn wait_loaded(&self, shutdown: &CancellationToken) -> bool {
        let mut loaded = self.loaded.subscribe();
        tokio::select! {
            result = loaded.wait_for(|loaded| *loaded) => result.is_ok(),
            _ = shutdown.cancelled() => false,
        }
    }

    /// Re-reads the destinations whenever the version moves, until `shutdown`.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        every(interval, shutdown, || async {
            self.refresh_and_report().await;
            self.health.beat();
        })
        .await;
    }

    async fn refresh_and_report(&self) {
        if let Err(error) = self.refresh().await {
            if matches!(*self.state(), StoreState::NotLoaded) {
                let reason = format!("destinations: the redis store is not loaded yet: {error}");
                self.health.set_ready(false, reason);
            }
            tracing::debug!(%error, "destinations not refreshed from redis");
        }
    }

    /// Reloads from Redis if the version changed; notices a store that lost its version.
    pub async fn refresh(&self) -> Result<(), LinkError> {
        let version = self.stored_version().await?;
        match (&*self.state(), version) {
            (StoreState::Loaded(snapshot), Some(v)) if snapshot.version == v => return Ok(()),
            (StoreState::Lost(_), None) => return Ok(()),
            _ => {}
        }
        // One read of the whole hash, version included, so the set and its version agree.
        let mut specs = self.stored().await?;
        let version = specs
            .remove(VERSION_FIELD)
            .and_then(|v| v.parse::<u64>().ok());
        let Some(version) = version else {
            self.no_version();
            return Ok(());
        };
        let mut destinations = Vec::new();
        for (id, json) in &specs {
            let spec = match serde_json::from_str::<DestinationSpec>(json) {
                Ok(spec) => spec,
                Err(error) => {
                    tracing::error!(destination = %id, %error, "unreadable destination in redis skipped");
                    continue;
                }
            };
            match spec.validate_one(&self.rules) {
                Ok(destination) => destinations.push(destination),
                Err(error) => {
                    tracing::error!(destination = %id, %error, "invalid destination in redis skipped")
                }
            }
        }
        match DestinationSet::new(destinations) {
            Ok(set) => swap_in(&self.live, set, &"redis"),
            // A version that cannot be used is reported once, not every second: the next
            // change bumps the version.
            Err(error) => keep_last_good(&"redis", &error),
        }
        let was_lost = matches!(*self.state(), StoreState::Lost(_));
        *self.state() = StoreState::Loaded(Snapshot { version, specs });
        if was_lost {
            metrics::gauge!(names::DESTINATION_STORE_LOST).set(0.0);
            tracing::info!(
                version,
                "the destination store in redis is back; its set is in use"
            );
        }
        self.health.set_ready(true, "");
        self.loaded.send_replace(true);
        Ok(())
    }

    /// The store has no version: never written (nothing to load yet), or lost.
    fn no_version(&self) {
        let mut state = self.state();
        match std::mem::replace(&mut *state, StoreState::NotLoaded) {
            StoreState::NotLoaded => {
                drop(state);
                self.health.set_ready(
                    false,
                    format!(
                        "destinations: the redis store {} has no version: it was never written \
                         (create a destination through the admin API) or it was lost (restore \
                         it from a backup)",
                        self.key
                    ),
                );
            }
            StoreState::Loaded(snapshot) | StoreState::Lost(snapshot) => {
                tracing::error!(
                    key = %self.key,
                    destinations = snapshot.specs.len(),
                    version = snapshot.version,
                    "the destination store in redis came back without its version (a restart \
                     without persistence, a flush or an eviction): keeping the last good \
                     destinations and refusing changes until it is restored \
                     (POST /v1/destinations/restore)"
                );
                metrics::counter!(names::DESTINATION_RELOADS, "result" => "lost").increment(1);
                metrics::gauge!(names::DESTINATION_STORE_LOST).set(1.0);
                *state = StoreState::Lost(snapshot);
            }
        }
    }

    /// Writes the last good destinations back to a lost store, under a new version; how
    /// many. Refused when the store is not lost, or has been rebuilt meanwhile.
    pub async fn restore(&self) -> Result<usize, StoreError> {
        let (invocation, count) = {
            let state = self.state();
            let StoreState::Lost(snapshot) = &*state else {
                return Err(StoreError::NotLost);
            };
            let mut invocation = self.restore_script.key(&self.key);
            invocation
                .arg(VERSION_FIELD)
                .arg(VERSION_FIELD)
                .arg(snapshot.version + 1);
            for (id, json) in &snapshot.specs {
                invocation.arg(id).arg(json);
            }
            (invocation, snapshot.specs.len())
        };
        let written: i32 = self
            .redis
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        if written == 0 {
            return Err(StoreError::NotLost);
        }
        tracing::warn!(
            destinations = count,
            "destination store restored from the last good copy"
        );
        self.refresh().await?;
        Ok(count)
    }

    /// Every destination's spec, by id.
    pub async fn all_specs(&self) -> Result<HashMap<String, DestinationSpec>, LinkError> {
        Ok(self
            .stored()
            .await?
            .into_iter()
            .filter(|(id, _)| id != VERSION_FIELD)
            .filter_map(|(id, json)| match serde_json::from_str(&json) {
                Ok(spec) => Some((id, spec)),
                Err(error) => {
                    tracing::error!(destination = %id, %error, "unreadable destination in redis skipped");
                    None
                }
            })
            .collect())
    }

    /// One team's destination spec.
    pub async fn spec(&self, team_id: i64, id: &str) -> Result<DestinationSpec, StoreError> {
        let key = self.key.clone();
        let field = id.to_owned();
        let stored: Option<String> = self
            .redis
            .run(|mut c| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(field)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        stored
            .and_then(|json| serde_json::from_str::<DestinationSpec>(&json).ok())
            .filter(|spec| spec.team_id == team_id)
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    /// Writes `spec` after validating it (alone and with the others: endpoint limits must
    /// agree); the stored spec, with its uid. `create` refuses an existing id and gives the
    /// destination a new uid; otherwise the id must exist for the spec's team and keeps its
    /// uid, whatever the spec says, and every `<redacted>` the spec sends back keeps the
    /// stored secret, header value or URL credentials.
    pub async fn put(
        &self,
        mut spec: DestinationSpec,
        create: bool,
    ) -> Result<DestinationSpec, StoreError> {
        self.refuse_while_lost()?;
        let stored = if create {
            None
        } else {
            Some(self.spec(spec.team_id, &spec.id).await?)
        };
        spec.restore_redacted(stored.as_ref())?;
        spec.uid = match stored {
            Some(stored) => stored.uid,
            None => Some(uuid::Uuid::new_v4().to_string()),
        };
        let destination = spec.clone().validate_one(&self.rules)?;
        let mut others: Vec<Destination> = self
            .all_specs()
            .await?
            .into_values()
            .filter(|other| other.id != spec.id)
            .filter_map(|other| other.validate_one(&self.rules).ok())
            .collect();
        others.push(destination);
        DestinationSet::new(others)?;
        let json = serde_json::to_string(&spec).unwrap_or_default();
        let (key, id) = (self.key.clone(), spec.id.clone());
        let written: i64 = self
            .redis
            .run(|mut c| async move {
                // HSETNX for a create so two concurrent creates cannot both win.
                let command = if create { "HSETNX" } else { "HSET" };
                let (written, _): (i64, i64) = redis::pipe()
                    .atomic()
                    .cmd(command)
                    .arg(&key)
                    .arg(&id)
                    .arg(&json)
                    .cmd("HINCRBY")
                    .arg(&key)
                    .arg(VERSION_FIELD)
                    .arg(1)
                    .query_async(&mut c)
                    .await?;
                Ok(written)
            })
            .await?;
        if create && written == 0 {
            return Err(StoreError::Conflict(spec.id));
        }
        self.refresh().await?;
        Ok(spec)
    }

    /// Deletes a team's destination.
    pub async fn delete(&self, team_id: i64, id: &str) -> Result<(), StoreError> {
        self.refuse_while_lost()?;
        self.spec(team_id, id).await?;
        let (key, field) = (self.key.clone(), id.to_owned());
        self.redis
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HDEL")
                    .arg(&key)
                    .arg(&field)
                    .cmd("HINCRBY")
                    .arg(&key)
                    .arg(VERSION_FIELD)
                    .arg(1)
                    .query_async::<(i64, i64)>(&mut c)
                    .await
            })
            .await?;
        self.refresh().await?;
        Ok(())
    }

    /// A change to a lost store would make its few new entries the whole set, and every
    /// other destination's pending deliveries would end as deleted: restore first.
    fn refuse_while_lost(&self) -> Result<(), StoreError> {
        match *self.state() {
            StoreState::Lost(_) => Err(StoreError::Lost),
            _ => Ok(()),
        }
    }

    async fn stored_version(&self) -> Result<Option<u64>, LinkError> {
        let key = self.key.clone();
        let version: Option<String> = self
            .redis
            .run(|mut c| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(VERSION_FIELD)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(version.and_then(|v| v.parse().ok()))
    }

    async fn stored(&self) -> Result<HashMap<String, String>, LinkError> {
        let key = self.key.clone();
        self.redis
            .run(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await
    }

    fn state(&self) -> MutexGuard<'_, StoreState> {
        self.state.lock_unpoisoned()
    }
}
