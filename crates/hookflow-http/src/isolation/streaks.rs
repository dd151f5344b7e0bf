//! Failure streaks: how long each destination's endpoint has failed every attempt, shared
//! by every worker, so a destination that stays dead is warned about and then disabled
//! (`[auto_disable]`) instead of being probed forever.
//!
//! Each streak lives in Redis as JSON (`<prefix>:streak:<team>:<id>:<uid>`, named like the
//! disabled registry's entries, [`disabled_key`]) and is changed by compare-and-set
//! ([`change_shared_json`]), so when two workers' batches cross a line at once exactly one
//! of them is told to warn or to disable ([`FailureStreak::apply`]). Attempts are counted in
//! the worker and flushed every `flush_interval_ms`, so the attempt path never waits on
//! Redis. Without Redis (or while it is down) each worker keeps its own streaks.
//!
//! A destination enabled again starts a new streak: enabling deletes it
//! ([`super::DisabledDestinations::enable`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use hookflow_core::{
    Destination, FieldError,
    destination::MAX_AUTO_DISABLE_AFTER_MS,
    streak::{AttemptBatch, FailureStreak, StreakCall, StreakPolicy},
    sync::LockUnpoisoned,
};
use hookflow_runtime::{RedisLink, change_shared_json, unix_now_ms};
use serde::Deserialize;

use super::disabled::disabled_key;

/// `[auto_disable]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoDisableSettings {
    /// Whether failing destinations are disabled; warnings go out either way.
    pub enabled: bool,
    /// Failing every attempt this long disables a destination (a destination may set its
    /// own, `auto_disable_after_ms`).
    #[serde(rename = "after_ms", with = "hookflow_core::millis")]
    pub after: Duration,
    /// The failed attempts a disable needs at least, however long it failed.
    pub min_attempts: u64,
    /// Failing every attempt this long sends the warning.
    #[serde(rename = "warn_after_ms", with = "hookflow_core::millis")]
    pub warn_after: Duration,
    /// How often a worker adds the attempts it counted to the shared streaks.
    #[serde(rename = "flush_interval_ms", with = "hookflow_core::millis")]
    pub flush_interval: Duration,
}

impl AutoDisableSettings {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.flush_interval.is_zero() {
            return Err(FieldError::new("flush_interval_ms", "must be at least 1"));
        }
        if self.min_attempts == 0 {
            return Err(FieldError::new("min_attempts", "must be at least 1"));
        }
        if self.after.is_zero() || self.warn_after.is_zero() {
            return Err(FieldError::new(
                if self.after.is_zero() {
                    "after_ms"
                } else {
                    "warn_after_ms"
                },
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The policy of `destination`'s streak.
    pub fn policy_of(&self, destination: &Destination) -> StreakPolicy {
        let after = destination
            .auto_disable_after_ms
            .unwrap_or(millis(self.after));
        StreakPolicy {
            warn_after_ms: millis(self.warn_after),
            // Never disabled while turned off: the streak still warns.
            disable_after_ms: if self.enabled { after } else { u64::MAX },
            min_attempts: self.min_attempts,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A streak crossing a line: its destination, what it calls for, and the streak then.
#[derive(Debug, Clone)]
pub struct StreakCrossing {
    /// The destination, as the attempts that crossed the line saw it.
    pub destination: Arc<Destination>,
    /// A warning or a disable.
    pub call: StreakCall,
    /// The streak after the batch.
    pub streak: FailureStreak,
}

/// A destination's attempts counted since the last flush.
struct Counted {
    destination: Arc<Destination>,
    batch: AttemptBatch,
}

/// The failure streaks of every destination. See the module documentation.
pub struct FailureStreaks {
    redis: Option<RedisLink>,
    settings: AutoDisableSettings,
    counted: Mutex<HashMap<String, Counted>>,
    /// The streaks of this process, without Redis or while it is down.
    local: Mutex<HashMap<String, FailureStreak>>,
}

impl FailureStreaks {
    /// Streaks shared through `redis` when given (else per process), under `settings`.
    pub fn new(redis: Option<RedisLink>, settings: AutoDisableSettings) -> Self {
        FailureStreaks {
            redis,
            settings,
            counted: Mutex::default(),
            local: Mutex::default(),
        }
    }

    /// How often [`Self::flush`] should run.
    pub fn flush_interval(&self) -> Duration {
        self.settings.flush_interval
    }

    /// Counts an attempt at `destination`'s endpoint (no I/O).
    pub fn record(&self, destination: &Arc<Destination>, failed: bool) {
        let at = unix_now_ms();
        let mut counted = self.counted.lock_unpoisoned();
        let entry = counted
            .entry(disabled_key(destination))
            .or_insert_with(|| Counted {
                destination: destination.clone(),
                batch: AttemptBatch::default(),
            });
        entry.destination = destination.clone();
        entry.batch.record(at, failed);
    }

    /// Adds the attempts counted since the last flush to the shared streaks; the streaks
    /// that crossed a line in this flush (each line is crossed by one flush, whichever
    /// worker makes it).
    pub async fn flush(&self) -> Vec<StreakCrossing> {
        let counted: Vec<(String, Counted)> = self.counted.lock_unpoisoned().drain().collect();
        let mut crossings = Vec::new();
        for (key, Counted { destination, batch }) in counted {
            if batch.is_empty() {
                continue;
            }
            let policy = self.settings.policy_of(&destination);
            let now = unix_now_ms();
            let (streak, call) = self.apply(&key, &batch, &policy, now).await;
            if let Some(call) = call {
                crossings.push(StreakCrossing {
                    destination,
                    call,
                    streak,
                });
            }
        }
        crossings
    }

    async fn apply(
        &self,
        key: &str,
        batch: &AttemptBatch,
        policy: &StreakPolicy,
        now: u64,
    ) -> (FailureStreak, Option<StreakCall>) {
        if let Some(redis) = &self.redis {
            let shared_key = streak_key(redis, key);
            // Kept twice the longer of its times, so a streak outlives quiet spells between
            // attempts (an open breaker's probes); an idle one goes.
            let ttl = policy
                .disable_after_ms
                .max(policy.warn_after_ms)
                .min(MAX_AUTO_DISABLE_AFTER_MS)
                * 2;
            let changed =
                change_shared_json(redis, &shared_key, ttl, |streak: &mut FailureStreak| {
                    streak.apply(batch, policy, now)
                })
                .await;
            match changed {
                Ok(applied) => {
                    self.local.lock_unpoisoned().remove(key);
                    return applied;
                }
                Err(error) => {
                    tracing::debug!(%error, key, "failure streak applied locally");
                }
            }
        }
        let mut local = self.local.lock_unpoisoned();
        let streak = local.entry(key.to_owned()).or_default();
        let call = streak.apply(batch, policy, now);
        (streak.clone(), call)
    }
}

/// The Redis key of the streak of the destination named `name` ([`disabled_key`]).
pub(super) fn streak_key(redis: &RedisLink, name: &str) -> String {
    redis.key(&["streak", name])
}

#[cfg(test)]
mod tests {
    use hookflow_core::{DestinationSpec, ValidationRules};

    use super::*;

    fn settings(after_ms: u64) -> AutoDisableSettings {
        AutoDisableSettings {
            enabled: true,
            after: Duration::from_millis(after_ms),
            min_attempts: 2,
            warn_after: Duration::from_millis(after_ms / 2),
            flush_interval: Duration::from_millis(10),
        }
    }

    fn destination(team_id: i64, override_ms: Option<u64>) -> Arc<Destination> {
        let spec: DestinationSpec = serde_json::from_value(serde_json::json!({
            "id": "d-1", "team_id": team_id, "url": "https://hooks.example.com/d-1",
            "auto_disable_after_ms": override_ms,
        }))
        .expect("spec");
        Arc::new(
            spec.validate_one(&ValidationRules::default())
                .expect("valid"),
        )
    }

    #[test]
    fn a_destination_may_set_its_own_disable_time_and_turned_off_nothing_disables() {
        let settings = settings(1_000);
        assert_eq!(
            settings.policy_of(&destination(1, None)).disable_after_ms,
            1_000
        );
        assert_eq!(
            settings
                .policy_of(&destination(1, Some(50)))
                .disable_after_ms,
            50
        );
        let off = AutoDisableSettings {
            enabled: false,
            ..settings
        };
        assert_eq!(
            off.policy_of(&destination(1, Some(50))).disable_after_ms,
            u64::MAX
        );
        assert_eq!(off.policy_of(&destination(1, None)).warn_after_ms, 500);
    }

    #[tokio::test]
    async fn one_teams_failing_destination_is_disabled_not_another_teams_of_the_same_id() {
        let streaks = FailureStreaks::new(None, settings(0));
        let (failing, healthy) = (destination(1, Some(1)), destination(2, Some(1)));
        streaks.record(&failing, true);
        streaks.record(&healthy, false);
        streaks.record(&failing, true);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let crossings = streaks.flush().await;
        assert_eq!(crossings.len(), 1, "{crossings:?}");
        assert_eq!(crossings[0].destination.team_id, 1);
        assert_eq!(crossings[0].call, StreakCall::Disable);
        assert_eq!(crossings[0].streak.attempts, 2);
        // Once: the next flush of more failures crosses nothing.
        streaks.record(&failing, true);
        assert!(streaks.flush().await.is_empty());
    }
}
