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
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use hookflow_core::{Destination, streak::FailureStreak, sync::LockUnpoisoned};
use hookflow_telemetry::names;
use redis::Script;
use serde::{Deserialize, Serialize};

use hookflow_runtime::{LinkError, RedisLink};

use super::streaks::streak_key;

/// How long the local copy is trusted.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How long a streak reset by an enable is kept (the next flush sets its own time).
const RESET_STREAK_TTL_MS: u64 = 2 * 86_400_000;

/// Writes the disablement `ARGV[2]` under `ARGV[1]` in the registry `KEYS[1]` if the
/// streak `KEYS[2]` still says disabled and the field is not there yet; 1 when written.
static DISABLE_FOR_STREAK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local s = redis.call('HGET', KEYS[2], 's')
if not s then return 0 end
local ok, streak = pcall(cjson.decode, s)
if not ok or streak['disabled'] ~= true then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// Removes `ARGV[1]` from the registry `KEYS[1]` and, if it was there, gives the streak
/// `KEYS[2]` a new version holding `ARGV[2]`, kept `ARGV[3]` ms; 1 when it was there.
static ENABLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
local v = tonumber(redis.call('HGET', KEYS[2], 'v') or '0')
redis.call('HSET', KEYS[2], 'v', v + 1, 's', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"#,
    )
});

/// Why and when a destination was disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disablement {
    /// What happened, for the operator.
    pub reason: String,
    /// When, RFC 3339.
    pub at: String,
}

impl Disablement {
    /// A disablement for `reason`, now.
    fn now(reason: String) -> Self {
        Disablement {
            reason,
            at: chrono::Utc::now().to_rfc3339(),
        }
    }

    /// Counts and logs it, once it took effect for `destination`.
    fn report(&self, destination: &Destination) {
        metrics::counter!(names::DESTINATIONS_DISABLED).increment(1);
        tracing::warn!(team_id = destination.team_id, destination = %destination.id, reason = %self.reason, "destination disabled; re-enable with `hookflow destinations enable` or the admin API");
    }
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
    /// answers "not disabled"; "disabled" ends a delivery, so that answer is confirmed in
    /// Redis first (one field): a destination enabled a moment ago is attempted at once,
    /// not refused by a worker's old copy.
    pub async fn check(&self, destination: &Destination) -> Option<Disablement> {
        let stale = self
            .lock()
            .refreshed_at
            .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        if stale {
            self.refresh().await;
        }
        let key = disabled_key(destination);
        let cached = self.lock().disabled.get(&key).cloned()?;
        if !stale && !self.lock().unwritten.contains_key(&key) && !self.still_disabled(&key).await {
            self.lock().disabled.remove(&key);
            return None;
        }
        Some(cached)
    }

    /// Whether Redis still holds `key` disabled; `true` when it cannot say (the copy
    /// stands).
    async fn still_disabled(&self, key: &str) -> bool {
        let Some(redis) = &self.redis else {
            return true;
        };
        let (hash, field) = (self.key.clone(), key.to_owned());
        redis
            .run(|mut c| async move {
                redis::cmd("HEXISTS")
                    .arg(hash)
                    .arg(field)
                    .query_async::<bool>(&mut c)
                    .await
            })
            .await
            .unwrap_or(true)
    }

    /// Disables `destination` for `reason`.
    pub async fn disable(&self, destination: &Destination, reason: String) {
        let disablement = Disablement::now(reason);
        disablement.report(destination);
        let key = disabled_key(destination);
        {
            let mut view = self.lock();
            view.disabled.insert(key.clone(), disablement.clone());
            view.unwritten.insert(key, disablement);
        }
        self.refresh().await;
    }

    /// Disables `destination` for `reason` if its failure streak in Redis still calls for
    /// it and it is not disabled yet, in one step: an enable in between (which resets the
    /// streak) wins, and of several workers acting on one streak one writes. Whether this
    /// call disabled it; `false` when Redis cannot be reached (the next flush tries again).
    /// Without Redis, disables it in this process.
    pub async fn disable_for_streak(&self, destination: &Destination, reason: String) -> bool {
        let Some(redis) = &self.redis else {
            self.disable(destination, reason).await;
            return true;
        };
        let key = disabled_key(destination);
        let disablement = Disablement::now(reason);
        let mut invocation = DISABLE_FOR_STREAK.key(&self.key);
        invocation
            .key(streak_key(redis, &key))
            .arg(&key)
            .arg(serde_json::to_string(&disablement).unwrap_or_default());
        let written = redis
            .run(|mut c| async move { invocation.invoke_async::<i32>(&mut c).await })
            .await;
        match written {
            Ok(1) => {
                disablement.report(destination);
                self.lock().disabled.insert(key, disablement);
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::debug!(%error, "disable not written; the next flush tries again");
                false
            }
        }
    }

    /// Re-enables `destination` (its uid only), and starts its failure streak afresh;
    /// whether this call enabled it (of two at once, one does).
    pub async fn enable_destination(&self, destination: &Destination) -> Result<bool, LinkError> {
        let enabled = self.remove(&[disabled_key(destination)]).await?;
        Ok(!enabled.is_empty())
    }

    /// Re-enables team `team_id`'s destination `id` (whatever its uid: an operator's
    /// command, which sees no catalog), and starts their failure streaks afresh; the
    /// entries this call removed ([`disabled_key`]), none when it was not disabled.
    pub async fn enable(&self, team_id: i64, id: &str) -> Result<Vec<String>, LinkError> {
        let prefix = format!("{team_id}:{id}:");
        let mut fields: Vec<String> = self
            .list()
            .await?
            .into_keys()
            .filter(|key| key.starts_with(&prefix))
            .collect();
        fields.sort();
        self.remove(&fields).await
    }

    /// Removes `fields` from the registry (here and in Redis) and resets the streak of
    /// each one removed (a new version holding only a success now, so failures from
    /// before the enable, flushed late, start nothing); those this call removed.
    async fn remove(&self, fields: &[String]) -> Result<Vec<String>, LinkError> {
        let local: Vec<String> = {
            let mut view = self.lock();
            fields
                .iter()
                .filter(|field| {
                    let unwritten = view.unwritten.remove(*field).is_some();
                    view.disabled.remove(*field).is_some() || unwritten
                })
                .cloned()
                .collect()
        };
        let Some(redis) = &self.redis else {
            return Ok(local);
        };
        let reset = FailureStreak {
            last_success_ms: Some(hookflow_runtime::unix_now_ms()),
            ..FailureStreak::default()
        };
        let reset = serde_json::to_string(&reset).unwrap_or_default();
        let mut removed = Vec::new();
        for field in fields {
            let mut invocation = ENABLE.key(&self.key);
            invocation
                .key(streak_key(redis, field))
                .arg(field)
                .arg(&reset)
                .arg(RESET_STREAK_TTL_MS);
            let done: i32 = redis
                .run(|mut c| async move { invocation.invoke_async(&mut c).await })
                .await?;
            if done == 1 {
                removed.push(field.clone());
            }
        }
        Ok(removed)
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
