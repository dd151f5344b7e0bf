//! Destinations disabled because their endpoint answered 410 Gone or failed every attempt
//! for `auto_disable.after_ms` (reason `auto_disabled`, [`super::FailureStreaks`]): recorded
//! with the reason in a Redis hash (`<prefix>:disabled`, field = `<team>:<id>:<uid>`, value = JSON)
//! that every worker reads, so no worker attempts them again until an operator or the team
//! re-enables them (`hookflow destinations enable --team T <id>`, or the admin API's
//! `…/enable`).
//!
//! An entry names the destination by team, id and uid ([`disabled_key`]): ids are freed on
//! delete and taken again by any team, so a new destination under a disabled one's id (of
//! another team, or the same team's, recreated with a new uid) is not disabled with it; the
//! old entry is orphaned. A destination without a uid (the file store) is named by team and
//! id alone.
//!
//! Each worker keeps a copy refreshed every few seconds. A disable that cannot be written
//! (Redis down) stays in this process and is written when Redis is back.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use hookflow_core::{Destination, sync::LockUnpoisoned};
use hookflow_telemetry::names;
use serde::{Deserialize, Serialize};

use hookflow_runtime::{LinkError, RedisLink};

use super::streaks::streak_key;

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

/// The registry's name of `destination`: `<team>:<id>:<uid>` (`-` for no uid).
pub fn disabled_key(destination: &Destination) -> String {
    format!(
        "{}:{}:{}",
        destination.team_id,
        destination.id,
        destination
            .uid
            .map_or_else(|| "-".to_owned(), |uid| uid.to_string())
    )
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

    /// Why `destination` is disabled, or `None` when it is not. A copy a few seconds old
    /// answers "not disabled"; "disabled" ends a delivery, so it is read from Redis again
    /// first: a destination enabled a moment ago is attempted at once, not refused by a
    /// worker's old copy.
    pub async fn check(&self, destination: &Destination) -> Option<Disablement> {
        let stale = self
            .lock()
            .refreshed_at
            .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        if stale {
            self.refresh().await;
        }
        let key = disabled_key(destination);
        if !stale && self.lock().disabled.contains_key(&key) {
            self.refresh().await;
        }
        self.lock().disabled.get(&key).cloned()
    }

    /// Whether `destination` is disabled, read from Redis now; the copy when Redis cannot
    /// be read.
    pub async fn is_disabled_now(&self, destination: &Destination) -> bool {
        self.refresh().await;
        self.lock()
            .disabled
            .contains_key(&disabled_key(destination))
    }

    /// Disables `destination` for `reason`.
    pub async fn disable(&self, destination: &Destination, reason: String) {
        let disablement = Disablement {
            reason,
            at: chrono::Utc::now().to_rfc3339(),
        };
        metrics::counter!(names::DESTINATIONS_DISABLED).increment(1);
        tracing::warn!(team_id = destination.team_id, destination = %destination.id, reason = %disablement.reason, "destination disabled; re-enable with `hookflow destinations enable` or the admin API");
        let key = disabled_key(destination);
        {
            let mut view = self.lock();
            view.disabled.insert(key.clone(), disablement.clone());
            view.unwritten.insert(key, disablement);
        }
        self.refresh().await;
    }

    /// Re-enables `destination` (its uid only) and forgets its failure streak, disabled or
    /// not, so it starts afresh; whether it was disabled.
    pub async fn enable_destination(&self, destination: &Destination) -> Result<bool, LinkError> {
        let key = disabled_key(destination);
        let was_disabled = self.list().await?.contains_key(&key);
        self.remove(&[key]).await?;
        Ok(was_disabled)
    }

    /// Re-enables team `team_id`'s destination `id` (whatever its uid: an operator's
    /// command, which sees no catalog), and forgets the failure streaks of those it
    /// enables; the entries removed ([`disabled_key`]), none when it was not disabled.
    pub async fn enable(&self, team_id: i64, id: &str) -> Result<Vec<String>, LinkError> {
        let prefix = format!("{team_id}:{id}:");
        let mut fields: Vec<String> = self
            .list()
            .await?
            .into_keys()
            .filter(|key| key.starts_with(&prefix))
            .collect();
        fields.extend(
            self.lock()
                .disabled
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned(),
        );
        fields.sort();
        fields.dedup();
        self.remove(&fields).await?;
        Ok(fields)
    }

    /// Removes `fields` from the registry (here and in Redis), and their streaks (disabled
    /// or not).
    async fn remove(&self, fields: &[String]) -> Result<(), LinkError> {
        {
            let mut view = self.lock();
            for field in fields {
                view.unwritten.remove(field);
                view.disabled.remove(field);
            }
        }
        if let (Some(redis), false) = (&self.redis, fields.is_empty()) {
            let key = self.key.clone();
            let removed = fields.to_vec();
            let streaks: Vec<String> = fields.iter().map(|f| streak_key(redis, f)).collect();
            redis
                .run(|mut c| async move {
                    redis::pipe()
                        .atomic()
                        .cmd("HDEL")
                        .arg(key)
                        .arg(removed)
                        .ignore()
                        .cmd("DEL")
                        .arg(streaks)
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                })
                .await?;
        }
        Ok(())
    }

    /// Every disabled destination (by [`disabled_key`]), read from Redis.
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

#[cfg(test)]
mod tests {
    use hookflow_core::{DestinationSpec, ValidationRules};

    use super::*;

    fn destination(team_id: i64, uid: Option<&str>) -> Destination {
        let spec: DestinationSpec = serde_json::from_value(serde_json::json!({
            "id": "d-1", "team_id": team_id, "url": "https://hooks.example.com/d-1", "uid": uid,
        }))
        .expect("spec");
        spec.validate_one(&ValidationRules::default())
            .expect("valid")
    }

    #[tokio::test]
    async fn a_disablement_is_of_one_teams_destination_with_one_uid() {
        let registry = DisabledDestinations::new(None);
        let uid = "0190f3a4-0000-7000-8000-0000000000aa";
        let gone = destination(1, Some(uid));
        registry.disable(&gone, "410".into()).await;
        assert!(registry.check(&gone).await.is_some());
        let other_team = destination(2, Some(uid));
        assert!(registry.check(&other_team).await.is_none());
        let recreated = destination(1, Some("0190f3a4-0000-7000-8000-0000000000bb"));
        assert!(registry.check(&recreated).await.is_none());
        assert!(registry.enable(2, "d-1").await.expect("enable").is_empty());
        assert_eq!(
            registry.enable(1, "d-1").await.expect("enable"),
            [format!("1:d-1:{uid}")]
        );
        assert!(registry.check(&gone).await.is_none());
    }
}
