//! Deliveries waiting for an endpoint's breaker to close, so the one attempt that closes it
//! can wake them, instead of each waking at every probe time to be refused again.
//!
//! Of the deliveries an open breaker refuses for one probe time, the first in this process
//! comes back at that time to be the probe ([`Wait::ForProbe`]); the others are added to
//! the endpoint's set ([`Wait::ForClose`]: in Redis as `<prefix>:breaker_waiters:<endpoint>`,
//! a set of workflow ids, when Redis is configured; else in this process, as the breakers
//! are). The attempt whose probe closes the breaker takes the whole set and its caller
//! signals each workflow. A failed probe sets a new probe time, and the next refused
//! delivery comes back for that one.
//!
//! A delivery that cannot be added (Redis down) waits for the probe time, as every refused
//! delivery once did. One that was added but never signalled (its closer died before
//! signalling, or it was added in the instant the set was taken) wakes on its own fallback
//! timer: nothing waits forever.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use hookflow_core::{EndpointKey, sync::LockUnpoisoned};
use redis::Script;

use crate::redis_link::RedisLink;

/// How long a set in Redis outlives its last addition: past any fallback wait, after which
/// every waiter has woken by itself.
const SET_TTL: Duration = Duration::from_secs(24 * 3_600);

/// Returns the members of `KEYS[1]` and deletes it, in one step, so a waiter is taken once.
const TAKE_SCRIPT: &str = r#"
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
"#;

/// What this process keeps of one endpoint: which probe time a delivery already comes back
/// for, and the waiters when they are not in Redis.
struct LocalEndpoint {
    probe_claimed_for_ms: u64,
    workflow_ids: HashSet<String>,
    last_used: Instant,
}

/// How a delivery refused by an open breaker waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until the probe time: it comes back to probe (the first refused for that time in this
    /// process), or it could not be added to the waiters.
    ForProbe,
    /// Until the breaker closes (a signal wakes it): it was added to the waiters.
    ForClose,
}

/// The waiters of every endpoint, shared through Redis when configured.
pub struct BreakerWaiters {
    redis: Option<RedisLink>,
    take: Script,
    local: Mutex<HashMap<EndpointKey, LocalEndpoint>>,
}

impl BreakerWaiters {
    /// Waiters shared through `redis` when given (else kept in this process).
    pub fn new(redis: Option<RedisLink>) -> Self {
        BreakerWaiters {
            redis,
            take: Script::new(TAKE_SCRIPT),
            local: Mutex::default(),
        }
    }

    /// How the delivery `workflow_id`, refused by `endpoint`'s breaker until
    /// `probe_at_ms`, waits; it is added to the waiters unless it is to probe.
    pub async fn wait(&self, endpoint: &EndpointKey, probe_at_ms: u64, workflow_id: &str) -> Wait {
        let redis = {
            let mut local = self.local.lock_unpoisoned();
            let entry = local
                .entry(endpoint.clone())
                .or_insert_with(|| LocalEndpoint {
                    probe_claimed_for_ms: 0,
                    workflow_ids: HashSet::new(),
                    last_used: Instant::now(),
                });
            entry.last_used = Instant::now();
            if entry.probe_claimed_for_ms != probe_at_ms {
                entry.probe_claimed_for_ms = probe_at_ms;
                return Wait::ForProbe;
            }
            match &self.redis {
                Some(redis) => redis,
                None => {
                    entry.workflow_ids.insert(workflow_id.to_owned());
                    return Wait::ForClose;
                }
            }
        };
        if self.add_shared(redis, endpoint, workflow_id).await {
            Wait::ForClose
        } else {
            Wait::ForProbe
        }
    }

    /// Adds `workflow_id` to the waiters of `endpoint` in Redis; `false` when it could not
    /// be added, so nobody would wake it.
    async fn add_shared(
        &self,
        redis: &RedisLink,
        endpoint: &EndpointKey,
        workflow_id: &str,
    ) -> bool {
        let key = self.key(redis, endpoint);
        let added = redis
            .run(|mut c| {
                let (key, id) = (key.clone(), workflow_id.to_owned());
                async move {
                    redis::pipe()
                        .atomic()
                        .sadd(&key, id)
                        .ignore()
                        .pexpire(&key, SET_TTL.as_millis() as i64)
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await;
        match added {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, endpoint = %endpoint, "breaker waiter not added");
                false
            }
        }
    }

    /// Takes every waiter of `endpoint` (each is taken once); empty when none, or when Redis
    /// cannot be reached (they wake by their own timers then).
    pub async fn take_all(&self, endpoint: &EndpointKey) -> Vec<String> {
        let Some(redis) = &self.redis else {
            let mut local = self.local.lock_unpoisoned();
            let taken = local
                .get_mut(endpoint)
                .map(|e| std::mem::take(&mut e.workflow_ids));
            return taken.map_or_else(Vec::new, |ids| ids.into_iter().collect());
        };
        let key = self.key(redis, endpoint);
        let invocation = self.take.key(&key);
        let taken = redis
            .run(|mut c| async move { invocation.invoke_async::<Vec<String>>(&mut c).await })
            .await;
        taken.unwrap_or_else(|error| {
            tracing::warn!(%error, endpoint = %endpoint, "breaker waiters not taken; they wake by their own timers");
            Vec::new()
        })
    }

    /// Drops what this process keeps of endpoints no delivery was refused for in `idle`:
    /// by then every waiter has woken by its own timer. How many are left.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let mut local = self.local.lock_unpoisoned();
        local.retain(|_, entry| entry.last_used.elapsed() < idle);
        local.shrink_to_fit();
        local.len()
    }

    fn key(&self, redis: &RedisLink, endpoint: &EndpointKey) -> String {
        redis.key(&["breaker_waiters", endpoint.as_str()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> EndpointKey {
        EndpointKey::custom(1, k).expect("key")
    }

    #[tokio::test]
    async fn the_first_refused_for_a_probe_time_probes_the_rest_wait_and_are_taken_once() {
        let waiters = BreakerWaiters::new(None);
        let (a, b) = (key("a"), key("b"));
        assert_eq!(waiters.wait(&a, 5_000, "d:1").await, Wait::ForProbe);
        assert_eq!(waiters.wait(&a, 5_000, "d:2").await, Wait::ForClose);
        assert_eq!(waiters.wait(&a, 5_000, "d:3").await, Wait::ForClose);
        assert_eq!(
            waiters.wait(&a, 5_000, "d:3").await,
            Wait::ForClose,
            "woken once"
        );
        assert_eq!(
            waiters.wait(&b, 5_000, "e:1").await,
            Wait::ForProbe,
            "per endpoint"
        );
        assert_eq!(waiters.wait(&b, 5_000, "e:2").await, Wait::ForClose);
        // The probe failed: a new probe time, and the next refused comes back for it.
        assert_eq!(waiters.wait(&a, 15_000, "d:4").await, Wait::ForProbe);
        let mut taken = waiters.take_all(&a).await;
        taken.sort();
        assert_eq!(taken, ["d:2", "d:3"]);
        assert!(waiters.take_all(&a).await.is_empty());
        assert_eq!(waiters.take_all(&b).await, ["e:2"]);
    }

    #[tokio::test]
    async fn idle_endpoints_are_dropped() {
        let waiters = BreakerWaiters::new(None);
        waiters.wait(&key("a"), 5_000, "d:1").await;
        assert_eq!(waiters.evict_idle(Duration::from_secs(60)), 1);
        assert_eq!(waiters.evict_idle(Duration::ZERO), 0);
    }
}
