//! Deliveries parked until an endpoint's breaker closes, so the one attempt that closes it
//! can wake them, instead of each waking at every probe time to be refused again.
//!
//! Of the deliveries an open breaker refuses for one probe time, the first in this process
//! comes back at that time to be the probe ([`BreakerWaiters::claims_probe`]); the others
//! are parked ([`BreakerWaiters::park`]): in Redis as the set
//! `<prefix>:breaker_parked:<endpoint>` of workflow ids when Redis is configured, else in
//! this process, as the breakers are. The attempt whose probe closes the breaker takes the
//! set and its caller signals each workflow ([`BreakerWaiters::take_parked`]).
//!
//! Only deliveries still waiting may be signalled: a signal that reaches a workflow while
//! it is in the workflow task that completes it makes Temporal refuse that completion, and
//! the task runs again. So a delivery that comes back from its wait (by its own timer, or
//! woken) takes itself out before anything else ([`BreakerWaiters::unpark`]); parked and
//! then let through at once (the breaker closed while it parked), it takes itself out too.
//!
//! A delivery that cannot be parked (Redis down) waits for the probe time, as every refused
//! delivery once did. One that was parked but never signalled (its closer died before
//! signalling) wakes on its own fallback timer: nothing waits forever.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use hookflow_core::{EndpointKey, sync::LockUnpoisoned};
use redis::Script;

use hookflow_runtime::RedisLink;

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
/// for, and the parked deliveries when they are not in Redis.
struct LocalEndpoint {
    probe_claimed_for_ms: u64,
    parked: HashSet<String>,
    last_used: Instant,
}

/// The parked deliveries of every endpoint, shared through Redis when configured.
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

    /// Whether a delivery refused by `endpoint`'s breaker until `probe_at_ms` is the first
    /// refused for that probe time in this process: it comes back then, to probe, and is
    /// not parked.
    pub fn claims_probe(&self, endpoint: &EndpointKey, probe_at_ms: u64) -> bool {
        let mut local = self.local.lock_unpoisoned();
        let entry = local_entry(&mut local, endpoint);
        if entry.probe_claimed_for_ms == probe_at_ms {
            return false;
        }
        entry.probe_claimed_for_ms = probe_at_ms;
        true
    }

    /// Parks delivery `workflow_id` on `endpoint` until the breaker closes. `false` when it
    /// could not be parked, so nobody would wake it.
    pub async fn park(&self, endpoint: &EndpointKey, workflow_id: &str) -> bool {
        let Some(redis) = &self.redis else {
            let mut local = self.local.lock_unpoisoned();
            let entry = local_entry(&mut local, endpoint);
            entry.parked.insert(workflow_id.to_owned());
            return true;
        };
        let key = self.key(redis, endpoint);
        let added = redis
            .run(|mut c| {
                let id = workflow_id.to_owned();
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
                tracing::debug!(%error, endpoint = %endpoint, "breaker waiter not parked");
                false
            }
        }
    }

    /// Takes `workflow_id` out of `endpoint`'s parked deliveries: it is back from its wait,
    /// or goes ahead after all. Best effort: with Redis away the set is too.
    pub async fn unpark(&self, endpoint: &EndpointKey, workflow_id: &str) {
        let Some(redis) = &self.redis else {
            if let Some(entry) = self.local.lock_unpoisoned().get_mut(endpoint) {
                entry.parked.remove(workflow_id);
            }
            return;
        };
        let key = self.key(redis, endpoint);
        let removed = redis
            .run(|mut c| {
                let id = workflow_id.to_owned();
                async move {
                    redis::cmd("SREM")
                        .arg(key)
                        .arg(id)
                        .query_async::<i64>(&mut c)
                        .await
                }
            })
            .await;
        if let Err(error) = removed {
            tracing::debug!(%error, endpoint = %endpoint, "breaker waiter not unparked");
        }
    }

    /// Takes every delivery parked on `endpoint` (each is taken once): the ones to wake.
    /// Empty when none, or when Redis cannot be reached (they wake by their own timers then).
    pub async fn take_parked(&self, endpoint: &EndpointKey) -> Vec<String> {
        let Some(redis) = &self.redis else {
            let mut local = self.local.lock_unpoisoned();
            let taken = local
                .get_mut(endpoint)
                .map(|e| std::mem::take(&mut e.parked))
                .unwrap_or_default();
            return taken.into_iter().collect();
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
        redis.key(&["breaker_parked", endpoint.as_str()])
    }
}

/// `endpoint`'s entry, marked used now.
fn local_entry<'a>(
    local: &'a mut HashMap<EndpointKey, LocalEndpoint>,
    endpoint: &EndpointKey,
) -> &'a mut LocalEndpoint {
    let entry = local
        .entry(endpoint.clone())
        .or_insert_with(|| LocalEndpoint {
            probe_claimed_for_ms: 0,
            parked: HashSet::new(),
            last_used: Instant::now(),
        });
    entry.last_used = Instant::now();
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> EndpointKey {
        EndpointKey::custom(1, k).expect("key")
    }

    #[tokio::test]
    async fn the_first_refused_for_a_probe_time_probes_and_the_parked_are_taken_once() {
        let waiters = BreakerWaiters::new(None);
        let (a, b) = (key("a"), key("b"));
        assert!(waiters.claims_probe(&a, 5_000));
        assert!(!waiters.claims_probe(&a, 5_000));
        assert!(waiters.claims_probe(&b, 5_000), "per endpoint");
        for id in ["d:2", "d:3", "d:3"] {
            assert!(waiters.park(&a, id).await);
        }
        assert!(waiters.park(&b, "e:2").await);
        // The probe failed: a new probe time, and the next refused comes back for it.
        assert!(waiters.claims_probe(&a, 15_000));
        let mut taken = waiters.take_parked(&a).await;
        taken.sort();
        assert_eq!(taken, ["d:2", "d:3"], "each once");
        assert!(waiters.take_parked(&a).await.is_empty());
        assert_eq!(waiters.take_parked(&b).await, ["e:2"]);
    }

    #[tokio::test]
    async fn a_delivery_back_from_its_wait_is_not_woken() {
        let waiters = BreakerWaiters::new(None);
        let a = key("a");
        assert!(waiters.park(&a, "back").await);
        assert!(waiters.park(&a, "parked").await);
        waiters.unpark(&a, "back").await;
        assert_eq!(waiters.take_parked(&a).await, ["parked"]);
    }

    #[tokio::test]
    async fn idle_endpoints_are_dropped() {
        let waiters = BreakerWaiters::new(None);
        waiters.park(&key("a"), "d:1").await;
        assert_eq!(waiters.evict_idle(Duration::from_secs(60)), 1);
        assert_eq!(waiters.evict_idle(Duration::ZERO), 0);
    }
}
