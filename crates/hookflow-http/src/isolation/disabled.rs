//! Destinations disabled because their endpoint answered 410 Gone: recorded with the
//! reason in a Redis hash (`<prefix>:disabled`, field = destination id, value = JSON) that
//! every worker reads, so no worker attempts them again until an operator re-enables them
//! (`hookflow destinations enable <id>`).
//!
//! Each worker keeps a copy refreshed every few seconds. A disable that cannot be written
//! (Redis down) stays in this process and is written when Redis is back.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use hookflow_core::sync::LockUnpoisoned;
use hookflow_telemetry::names;
use serde::{Deserialize, Serialize};

use crate::redis_link::{LinkError, RedisLink};

/// How long the local copy is trusted.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Why and when a destination was disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disablement {
    /// What happened, for the operator.
    pub reason: String,
    /// When, RFC 3339.
    pub at: String,
}

/// This process's view of the disabled set: what Redis said at the last refresh, and
/// disablements Redis has not taken yet (written again on the next refresh).
#[derive(Default)]
struct LocalView {
    disabled: HashMap<String, Disablement>,
    unwritten: HashMap<String, Disablement>,
    refreshed_at: Option<Instant>,
}

/// The disabled destinations, shared through Redis when configured.
pub struct DisabledDestinations {
    redis: Option<RedisLink>,
    key: String,
    view: Mutex<LocalView>,
}

impl DisabledDestinations {
    /// The registry, shared through `redis` when given (else kept in this process only).
    pub fn new(redis: Option<RedisLink>) -> Self {
        let key = redis
            .as_ref()
            .map(|r| r.key(&["disabled"]))
            .unwrap_or_default();
        DisabledDestinations {
            redis,
            key,
            view: Mutex::default(),
        }
    }

    /// Why `destination` is disabled, or `None` when it is not.
    pub async fn check(&self, destination: &str) -> Option<Disablement> {
        let stale = self
            .lock()
            .refreshed_at
            .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        if stale {
            self.refresh().await;
        }
        self.lock().disabled.get(destination).cloned()
    }

    /// Disables `destination` for `reason`.
    pub async fn disable(&self, destination: &str, reason: String) {
        let disablement = Disablement {
            reason,
            at: chrono::Utc::now().to_rfc3339(),
        };
        metrics::counter!(names::DESTINATIONS_DISABLED).increment(1);
        tracing::warn!(destination, reason = %disablement.reason, "destination disabled; re-enable with `hookflow destinations enable`");
        {
            let mut view = self.lock();
            view.disabled
                .insert(destination.to_owned(), disablement.clone());
            view.unwritten.insert(destination.to_owned(), disablement);
        }
        self.refresh().await;
    }

    /// Re-enables `destination`; whether it was disabled.
    pub async fn enable(&self, destination: &str) -> Result<bool, LinkError> {
        self.lock().unwritten.remove(destination);
        let removed = match &self.redis {
            Some(redis) => {
                let (key, field) = (self.key.clone(), destination.to_owned());
                redis
                    .run(|mut c| async move {
                        redis::cmd("HDEL")
                            .arg(key)
                            .arg(field)
                            .query_async::<i64>(&mut c)
                            .await
                    })
                    .await?
                    > 0
            }
            None => false,
        };
        let local = self.lock().disabled.remove(destination).is_some();
        Ok(removed || local)
    }

    /// Every disabled destination, read from Redis.
    pub async fn list(&self) -> Result<HashMap<String, Disablement>, LinkError> {
        self.refresh_from_redis().await?;
        Ok(self.lock().disabled.clone())
    }

    async fn refresh(&self) {
        if let Err(error) = self.refresh_from_redis().await {
            tracing::debug!(%error, "disabled destinations: using the local copy");
        }
        self.lock().refreshed_at = Some(Instant::now());
    }

    /// Writes disables that could not be written before, then reads the whole hash.
    async fn refresh_from_redis(&self) -> Result<(), LinkError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let unwritten: Vec<(String, String)> = self
            .lock()
            .unwritten
            .iter()
            .map(|(id, d)| (id.clone(), serde_json::to_string(d).unwrap_or_default()))
            .collect();
        for (id, json) in unwritten {
            let key = self.key.clone();
            let field = id.clone();
            redis
                .run(|mut c| async move {
                    redis::cmd("HSET")
                        .arg(key)
                        .arg(field)
                        .arg(json)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await?;
            self.lock().unwritten.remove(&id);
        }
        let key = self.key.clone();
        let stored: HashMap<String, String> = redis
            .run(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await?;
        let mut view = self.lock();
        let mut disabled: HashMap<String, Disablement> = stored
            .into_iter()
            .map(|(id, json)| {
                let disablement = serde_json::from_str(&json).unwrap_or(Disablement {
                    reason: json,
                    at: String::new(),
                });
                (id, disablement)
            })
            .collect();
        disabled.extend(view.unwritten.clone());
        view.disabled = disabled;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalView> {
        self.view.lock_unpoisoned()
    }
}
