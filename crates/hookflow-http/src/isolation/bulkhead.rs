//! Per-endpoint concurrency caps (bulkheads): at most `max_in_flight` attempts to one
//! endpoint at once in this worker, so a slow endpoint cannot take every activity slot.
//!
//! Each bulkhead is a counter checked against the cap the endpoint has now, so a changed
//! `max_in_flight` applies to the next attempt without a restart (a lowered cap lets
//! attempts already out finish, and admits none until they are under it). A bulkhead with
//! nothing in flight that has not been used for the idle time is dropped.
//!
//! [`Bulkheads::enter`] waits a little for a place (the gate's `concurrency_wait_ms`): at a
//! busy but healthy endpoint one frees within milliseconds, and waiting for it here is far
//! cheaper than a deferral (a durable timer and a workflow task). A slow endpoint's places
//! do not free in that time, and the attempt is deferred.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use hookflow_core::{EndpointKey, sync::LockUnpoisoned};

struct Bulkhead {
    /// Attempts out now; a [`Slot`] holds a reference and lowers it when dropped.
    in_flight: Arc<AtomicU32>,
    /// Told when a place frees, for attempts waiting in [`Bulkheads::enter`].
    freed: Arc<Notify>,
    /// Last time an attempt entered.
    last_used: Instant,
    /// The cap the last attempt to enter was held to.
    cap: u32,
}

/// The bulkheads of the endpoints this worker has attempted recently.
#[derive(Default)]
pub struct Bulkheads {
    slots: Mutex<HashMap<EndpointKey, Bulkhead>>,
}

/// One attempt's place in its endpoint's bulkhead, given back when dropped.
pub struct Slot {
    in_flight: Arc<AtomicU32>,
    freed: Arc<Notify>,
}

impl Bulkheads {
    /// A place for one more attempt to `endpoint`, waiting up to `patience` for one while
    /// `max_in_flight` are out; `None` when none freed in that time.
    pub async fn enter(
        &self,
        endpoint: &EndpointKey,
        max_in_flight: u32,
        patience: Duration,
    ) -> Option<Slot> {
        let give_up_at = tokio::time::Instant::now() + patience;
        loop {
            let freed = match self.try_enter_or_wait(endpoint, max_in_flight) {
                Ok(slot) => return Some(slot),
                Err(freed) => freed,
            };
            // A place freed between the check and here left a permit: no wake-up is lost.
            if tokio::time::timeout_at(give_up_at, freed.notified())
                .await
                .is_err()
            {
                return self.try_enter(endpoint, max_in_flight);
            }
        }
    }

    /// A place for one more attempt to `endpoint`, or `None` when `max_in_flight` are out.
    pub fn try_enter(&self, endpoint: &EndpointKey, max_in_flight: u32) -> Option<Slot> {
        self.try_enter_or_wait(endpoint, max_in_flight).ok()
    }

    /// A place, or what tells of the next one freed.
    fn try_enter_or_wait(
        &self,
        endpoint: &EndpointKey,
        max_in_flight: u32,
    ) -> Result<Slot, Arc<Notify>> {
        let mut slots = self.lock();
        let bulkhead = slots.entry(endpoint.clone()).or_insert_with(|| Bulkhead {
            in_flight: Arc::default(),
            freed: Arc::default(),
            last_used: Instant::now(),
            cap: max_in_flight,
        });
        bulkhead.cap = max_in_flight;
        // Increments happen under the map's lock, so the check and the increment cannot
        // interleave with another entry; a release only ever lowers the count.
        if bulkhead.in_flight.load(Ordering::Acquire) >= max_in_flight {
            return Err(bulkhead.freed.clone());
        }
        bulkhead.in_flight.fetch_add(1, Ordering::AcqRel);
        bulkhead.last_used = Instant::now();
        Ok(Slot {
            in_flight: bulkhead.in_flight.clone(),
            freed: bulkhead.freed.clone(),
        })
    }

    /// Whether `endpoint` is at its cap now: an attempt to it would have to wait.
    pub fn is_full(&self, endpoint: &EndpointKey) -> bool {
        self.lock()
            .get(endpoint)
            .is_some_and(|b| b.in_flight.load(Ordering::Acquire) >= b.cap)
    }

    /// Drops the bulkheads with nothing in flight that have not been entered for `idle`;
    /// how many are left.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let mut slots = self.lock();
        slots.retain(|_, bulkhead| {
            bulkhead.in_flight.load(Ordering::Acquire) > 0 || bulkhead.last_used.elapsed() < idle
        });
        slots.shrink_to_fit();
        slots.len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<EndpointKey, Bulkhead>> {
        self.slots.lock_unpoisoned()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> EndpointKey {
        EndpointKey::custom(1, k).expect("key")
    }

    #[test]
    fn caps_attempts_per_endpoint_and_frees_on_drop() {
        let bulkheads = Bulkheads::default();
        let (a, b) = (key("a"), key("b"));
        assert!(!bulkheads.is_full(&a), "never entered");
        let first = bulkheads.try_enter(&a, 2);
        assert!(!bulkheads.is_full(&a));
        let second = bulkheads.try_enter(&a, 2);
        assert!(first.is_some() && second.is_some());
        assert!(bulkheads.is_full(&a), "at its cap");
        assert!(
            bulkheads.try_enter(&a, 2).is_none(),
            "third is over the cap"
        );
        assert!(
            bulkheads.try_enter(&b, 2).is_some(),
            "other endpoints are not affected"
        );
        drop(first);
        assert!(!bulkheads.is_full(&a));
        assert!(
            bulkheads.try_enter(&a, 2).is_some(),
            "a freed slot is reused"
        );
    }

    #[tokio::test]
    async fn an_attempt_at_the_cap_waits_a_little_for_a_freed_place() {
        let bulkheads = Arc::new(Bulkheads::default());
        let a = key("a");
        let held = bulkheads.try_enter(&a, 1).expect("first");
        let patience = Duration::from_millis(50);
        assert!(
            bulkheads.enter(&a, 1, patience).await.is_none(),
            "nothing freed within the patience"
        );
        let waiting = tokio::spawn({
            let (bulkheads, a) = (bulkheads.clone(), a.clone());
            async move {
                bulkheads
                    .enter(&a, 1, Duration::from_secs(30))
                    .await
                    .is_some()
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(
            waiting.await.expect("task"),
            "the freed place goes to the waiter"
        );
    }

    #[test]
    fn a_changed_cap_applies_to_the_next_attempt() {
        let bulkheads = Bulkheads::default();
        let a = key("a");
        let held: Vec<Slot> = (0..2).filter_map(|_| bulkheads.try_enter(&a, 2)).collect();
        assert_eq!(held.len(), 2);
        assert!(bulkheads.try_enter(&a, 2).is_none());
        let raised = bulkheads.try_enter(&a, 3);
        assert!(raised.is_some(), "a raised cap admits one more at once");
        assert!(bulkheads.try_enter(&a, 3).is_none());
        drop(held);
        assert!(
            bulkheads.try_enter(&a, 1).is_none(),
            "lowered to 1 with one still out: none admitted"
        );
        drop(raised);
        assert!(bulkheads.try_enter(&a, 1).is_some());
    }

    #[test]
    fn idle_empty_bulkheads_are_dropped_busy_ones_kept() {
        let bulkheads = Bulkheads::default();
        let busy = bulkheads.try_enter(&key("busy"), 1);
        drop(bulkheads.try_enter(&key("idle"), 1));
        assert_eq!(
            bulkheads.evict_idle(Duration::from_secs(60)),
            2,
            "not idle yet"
        );
        assert_eq!(
            bulkheads.evict_idle(Duration::ZERO),
            1,
            "only the busy one stays"
        );
        drop(busy);
        assert_eq!(bulkheads.evict_idle(Duration::ZERO), 0);
    }
}
