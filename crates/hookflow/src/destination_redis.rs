//! The Redis destination store, for deployments managed through the admin API: every
//! destination is a JSON [`DestinationSpec`] in one Redis hash (`<prefix>:destinations`,
//! field = id), and a counter (`<prefix>:destinations:version`) goes up on every change.
//! Each hookflow process keeps the validated set in memory and re-reads the hash when the
//! counter moved (checked every `destinations.reload_interval_ms`), so a change reaches
//! every process within seconds. While Redis is unreachable the last set stays in use.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use hookflow_core::{
    Destination, DestinationFileError, DestinationSet, DestinationSpec, LiveDestinations,
    ValidationRules,
};
use hookflow_http::{LinkError, RedisLink};

use crate::destination_reload::{every, keep_last_good, swap_in};
use tokio_util::sync::CancellationToken;

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The destination is invalid; names the field.
    #[error(transparent)]
    Invalid(#[from] DestinationFileError),
    /// No destination has this id (for this team).
    #[error("no destination {0}")]
    NotFound(String),
    /// A destination with this id exists already.
    #[error("destination {0} exists already")]
    Conflict(String),
    /// Redis did not answer.
    #[error(transparent)]
    Unavailable(#[from] LinkError),
}

/// Destinations kept in Redis, loaded into [`RedisDestinations::live`].
pub struct RedisDestinations {
    redis: RedisLink,
    rules: ValidationRules,
    key: String,
    version_key: String,
    live: Arc<LiveDestinations>,
    /// The version of the loaded set; `None` before the first load.
    loaded: Mutex<Option<u64>>,
}

impl RedisDestinations {
    /// The store; loads what Redis holds now, or starts empty (and keeps trying) when Redis
    /// is unreachable.
    pub async fn open(redis: RedisLink, rules: ValidationRules) -> RedisDestinations {
        let store = RedisDestinations {
            key: redis.key(&["destinations"]),
            version_key: redis.key(&["destinations", "version"]),
            redis,
            rules,
            live: Arc::default(),
            loaded: Mutex::new(None),
        };
        if let Err(error) = store.refresh().await {
            tracing::warn!(%error, "destinations not loaded from redis yet; retrying");
        }
        store
    }

    /// The destinations in use, kept current by [`RedisDestinations::watch`].
    pub fn live(&self) -> Arc<LiveDestinations> {
        self.live.clone()
    }

    /// Re-reads the destinations whenever the version moves, until `shutdown`.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        every(interval, shutdown, || async {
            if let Err(error) = self.refresh().await {
                tracing::debug!(%error, "destinations not refreshed from redis");
            }
        })
        .await;
    }

    /// Reloads from Redis if the version changed.
    pub async fn refresh(&self) -> Result<(), LinkError> {
        let version_key = self.version_key.clone();
        let version: Option<u64> = self
            .redis
            .run(
                |mut c| async move { redis::cmd("GET").arg(version_key).query_async(&mut c).await },
            )
            .await?;
        let version = version.unwrap_or(0);
        if *self.loaded() == Some(version) {
            return Ok(());
        }
        let specs = self.all_specs().await?;
        let mut destinations = Vec::new();
        for spec in specs.into_values() {
            let id = spec.id.clone();
            match spec.validate_one(&self.rules) {
                Ok(destination) => destinations.push(destination),
                Err(error) => {
                    tracing::error!(destination = %id, %error, "invalid destination in redis skipped")
                }
            }
        }
        match DestinationSet::new(destinations) {
            Ok(set) => swap_in(&self.live, set, &"redis"),
            Err(error) => keep_last_good(&"redis", &error),
        }
        // A version that cannot be used is reported once, not every second: the next change
        // bumps the version.
        *self.loaded() = Some(version);
        Ok(())
    }

    /// Every destination's spec, by id.
    pub async fn all_specs(&self) -> Result<HashMap<String, DestinationSpec>, LinkError> {
        let key = self.key.clone();
        let stored: HashMap<String, String> = self
            .redis
            .run(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await?;
        Ok(stored
            .into_iter()
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
    /// agree). `create` refuses an existing id; otherwise the id must exist.
    pub async fn put(&self, spec: DestinationSpec, create: bool) -> Result<(), StoreError> {
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
        let (key, version_key, id) = (self.key.clone(), self.version_key.clone(), spec.id.clone());
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
                    .cmd("INCR")
                    .arg(&version_key)
                    .query_async(&mut c)
                    .await?;
                Ok(written)
            })
            .await?;
        if create && written == 0 {
            return Err(StoreError::Conflict(spec.id));
        }
        self.refresh().await?;
        Ok(())
    }

    /// Deletes a team's destination.
    pub async fn delete(&self, team_id: i64, id: &str) -> Result<(), StoreError> {
        self.spec(team_id, id).await?;
        let (key, version_key, field) = (self.key.clone(), self.version_key.clone(), id.to_owned());
        self.redis
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HDEL")
                    .arg(&key)
                    .arg(&field)
                    .cmd("INCR")
                    .arg(&version_key)
                    .query_async::<(i64, i64)>(&mut c)
                    .await
            })
            .await?;
        self.refresh().await?;
        Ok(())
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
