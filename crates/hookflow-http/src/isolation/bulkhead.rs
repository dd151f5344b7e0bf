//! Per-endpoint concurrency caps (bulkheads): at most `max_in_flight` attempts to one
//! endpoint at once in this worker, so a slow endpoint cannot take every activity slot.
//!
//! Each bulkhead is a counter checked against the cap the endpoint has now, so a changed
//! `max_in_flight` applies to the next attempt without a restart (a lowered cap lets
//! attempts already out finish, and admits none until they are under it). A bulkhead with
//! nothing in flight that has not been used for the idle time is dropped.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use hookflow_core::{EndpointKey, sync::LockUnpoisoned};
use hookflow_telemetry::names;

struct Bulkhead {
    /// Attempts out now; a [`Slot`] holds a reference and lowers it when dropped.
    in_flight: Arc<AtomicU32>,
    /// Last time an attempt entered.
    last_used: Instant,
}

/// The bulkheads of the endpoints this worker has attempted recently.
#[derive(Default)]
pub struct Bulkheads {
    slots: Mutex<HashMap<EndpointKey, Bulkhead>>,
}

/// One attempt's place in its endpoint's bulkhead, given back when dropped.
pub struct Slot {
    in_flight: Arc<AtomicU32>,
}

impl Bulkheads {
    /// A place for one more attempt to `endpoint`, or `None` when `max_in_flight` are out.
    pub fn try_enter(&self, endpoint: &EndpointKey, max_in_flight: u32) -> Option<Slot> {
        let mut slots = self.lock();
        let bulkhead = slots.entry(endpoint.clone()).or_insert_with(|| Bulkhead {
            in_flight: Arc::default(),
            last_used: Instant::now(),
        });
        // Increments happen under the map's lock, so the check and the increment cannot
        // interleave with another entry; a release only ever lowers the count.
        if bulkhead.in_flight.load(Ordering::Acquire) >= max_in_flight {
            return None;
        }
        bulkhead.in_flight.fetch_add(1, Ordering::AcqRel);
        bulkhead.last_used = Instant::now();
        metrics::gauge!(names::ATTEMPTS_IN_FLIGHT).increment(1);
        Some(Slot {
            in_flight: bulkhead.in_flight.clone(),
        })
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
        metrics::gauge!(names::ATTEMPTS_IN_FLIGHT).decrement(1);
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
        let first = bulkheads.try_enter(&a, 2);
        let second = bulkheads.try_enter(&a, 2);
        assert!(first.is_some() && second.is_some());
        assert!(
            bulkheads.try_enter(&a, 2).is_none(),
            "third is over the cap"
        );
        assert!(
            bulkheads.try_enter(&b, 2).is_some(),
            "other endpoints are not affected"
        );
        drop(first);
        assert!(
            bulkheads.try_enter(&a, 2).is_some(),
            "a freed slot is reused"
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
