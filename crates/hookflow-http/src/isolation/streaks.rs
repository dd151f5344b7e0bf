//! Failure streaks: how long each destination's endpoint has failed every attempt, shared
//! by every worker, so a destination that stays dead is warned about and then disabled
//! (`[auto_disable]`) instead of being probed forever.
//!
//! Each streak lives in Redis as JSON (`<prefix>:streak:<team>:<id>:<uid>`, named like the
//! disabled registry's entries, [`disabled_key`]) and is changed by compare-and-set
//! ([`change_shared_json`]), so when two workers' batches cross a line at once exactly one
//! of them is told to warn or to disable ([`FailureStreak::apply`]). Attempts are counted in
//! the worker and flushed every `flush_interval_ms`, so the attempt path never waits on
//! Redis; a batch Redis does not take (it is down, or contended) waits for the next flush.
//! Without Redis configured each worker keeps its own streaks.
//!
//! A destination enabled again starts a new streak: enabling deletes it
//! ([`super::DisabledDestinations::enable`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use hookflow_core::{
    AttemptReport, Destination, FieldError,
    destination::MAX_AUTO_DISABLE_AFTER_MS,
    streak::{AttemptBatch, FailureStreak, StreakCall, StreakPolicy, counts_as},
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
        if self.enabled && self.warn_after >= self.after {
            return Err(FieldError::new(
                "warn_after_ms",
                "must be below after_ms: the warning comes before the disable",
            ));
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

/// A streak after a flush: its destination, what the flush newly called for, and the
/// streak then.
#[derive(Debug, Clone)]
pub struct Flushed {
    /// The destination, as the attempts flushed saw it.
    pub destination: Arc<Destination>,
    /// A warning or a disable, when this flush crossed that line.
    pub call: Option<StreakCall>,
    /// The streak after the flush.
    pub streak: FailureStreak,
}

/// A destination's attempts counted since the last flush.
struct Counted {
    destination: Arc<Destination>,
    batch: AttemptBatch,
}

/// Streaks changed in Redis at once in one flush.
const FLUSH_CONCURRENCY: usize = 16;

/// The failure streaks of every destination. See the module documentation.
pub struct FailureStreaks {
    redis: Option<RedisLink>,
    settings: AutoDisableSettings,
    counted: Mutex<HashMap<String, Counted>>,
    /// The streaks of this process, without Redis (only failing ones are kept).
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

    /// Counts an attempt at `destination`'s endpoint (no I/O), if it counts
    /// ([`counts_as`]).
    pub fn record(&self, destination: &Arc<Destination>, report: &AttemptReport) {
        let Some(failed) = counts_as(report) else {
            return;
        };
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

    /// Adds the attempts counted since the last flush to the streaks; the streaks that
    /// crossed a line in this flush (each line is crossed by one flush, whichever worker
    /// makes it), and those already disabled (so the caller can check the disable took
    /// effect). A batch Redis did not take is put back and flushed next time, so a success
    /// is never lost to a Redis blip, nor a line crossed by a worker's copy alone.
    pub async fn flush(&self) -> Vec<Flushed> {
        let counted: Vec<(String, Counted)> = self.counted.lock_unpoisoned().drain().collect();
        let applied: Vec<Option<Flushed>> = futures::stream::iter(counted)
            .filter(|(_, counted)| std::future::ready(!counted.batch.is_empty()))
            .map(|(key, Counted { destination, batch })| async move {
                let policy = self.settings.policy_of(&destination);
                match self.apply(&key, &batch, &policy, unix_now_ms()).await {
                    Some((streak, call)) => Some(Flushed {
                        destination,
                        call,
                        streak,
                    }),
                    None => {
                        self.put_back(key, destination, batch);
                        None
                    }
                }
            })
            .buffer_unordered(FLUSH_CONCURRENCY)
            .collect()
            .await;
        // A disabled streak is handed back only while disabling is on: turned off, nothing
        // disables.
        let enabled = self.settings.enabled;
        applied
            .into_iter()
            .flatten()
            .filter(|flushed| flushed.call.is_some() || (enabled && flushed.streak.disabled))
            .collect()
    }

    /// Puts a batch that was not flushed in front of what was counted since.
    fn put_back(&self, key: String, destination: Arc<Destination>, batch: AttemptBatch) {
        let mut counted = self.counted.lock_unpoisoned();
        match counted.get_mut(&key) {
            Some(since) => {
                let later = std::mem::replace(&mut since.batch, batch);
                since.batch.absorb_later(later);
            }
            None => {
                counted.insert(key, Counted { destination, batch });
            }
        }
    }

    /// The streak after `batch`, and what it newly calls for; `None` when Redis did not
    /// take it.
    async fn apply(
        &self,
        key: &str,
        batch: &AttemptBatch,
        policy: &StreakPolicy,
        now: u64,
    ) -> Option<(FailureStreak, Option<StreakCall>)> {
        let Some(redis) = &self.redis else {
            let mut local = self.local.lock_unpoisoned();
            let streak = local.entry(key.to_owned()).or_default();
            let call = streak.apply(batch, policy, now);
            let after = streak.clone();
            // Only failing streaks are kept: memory follows the failing destinations.
            if after.failing_since_ms.is_none() {
                local.remove(key);
            }
            return Some((after, call));
        };
        // Kept twice the longer of its times, so a streak outlives quiet spells between
        // attempts (an open breaker's probes); an idle one goes.
        let ttl = policy
            .disable_after_ms
            .max(policy.warn_after_ms)
            .min(MAX_AUTO_DISABLE_AFTER_MS)
            * 2;
        let changed = change_shared_json(
            redis,
            &streak_key(redis, key),
            ttl,
            |streak: &mut FailureStreak| streak.apply(batch, policy, now),
        )
        .await;
        match changed {
            Ok(applied) => Some(applied),
            Err(error) => {
                tracing::debug!(%error, key, "failure streak not flushed; kept for the next flush");
                None
            }
        }
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

    fn failed() -> AttemptReport {
        AttemptReport::response(503, None, 1)
    }

    #[tokio::test]
    async fn one_teams_failing_destination_is_disabled_not_another_teams_of_the_same_id() {
        let streaks = FailureStreaks::new(None, settings(1_000));
        let (failing, healthy) = (destination(1, Some(1)), destination(2, Some(1)));
        streaks.record(&failing, &failed());
        streaks.record(&healthy, &AttemptReport::response(200, None, 1));
        streaks.record(&failing, &failed());
        tokio::time::sleep(Duration::from_millis(5)).await;
        let flushed = streaks.flush().await;
        assert_eq!(flushed.len(), 1, "{flushed:?}");
        assert_eq!(flushed[0].destination.team_id, 1);
        assert_eq!(flushed[0].call, Some(StreakCall::Disable));
        assert_eq!(flushed[0].streak.attempts, 2);
        // Once: the next flush of more failures calls for nothing, and still shows it
        // disabled (for the caller to check the disable took effect).
        streaks.record(&failing, &failed());
        let flushed = streaks.flush().await;
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].call, None);
        assert!(flushed[0].streak.disabled);
        // The healthy one kept nothing.
        assert_eq!(streaks.local.lock_unpoisoned().len(), 1);
    }

    #[tokio::test]
    async fn requests_never_sent_and_408s_count_for_nothing() {
        let streaks = FailureStreaks::new(None, settings(1_000));
        let failing = destination(1, Some(1));
        let blocked = AttemptReport::failed(hookflow_core::AttemptErrorKind::Blocked, "ssrf", 0);
        streaks.record(&failing, &blocked);
        streaks.record(&failing, &AttemptReport::response(408, None, 1));
        assert!(streaks.counted.lock_unpoisoned().is_empty());
        streaks.record(&failing, &AttemptReport::response(404, None, 1));
        assert_eq!(streaks.counted.lock_unpoisoned().len(), 1);
    }

    #[tokio::test]
    async fn a_batch_redis_does_not_take_waits_for_the_next_flush() {
        let redis = RedisLink::new(&hookflow_runtime::RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            key_prefix: "test".into(),
            command_timeout: Duration::from_millis(100),
            retry_after: Duration::from_millis(10),
        })
        .expect("settings")
        .expect("a link");
        let streaks = FailureStreaks::new(Some(redis), settings(1_000));
        let failing = destination(1, None);
        streaks.record(&failing, &failed());
        streaks.record(&failing, &failed());
        assert!(streaks.flush().await.is_empty());
        streaks.record(&failing, &failed());
        let counted = streaks.counted.lock_unpoisoned();
        let batch = counted
            .get(&disabled_key(&failing))
            .expect("put back")
            .batch;
        assert_eq!(batch.failures(), 3);
        assert!(
            streaks.local.lock_unpoisoned().is_empty(),
            "no copy of its own"
        );
    }
}
