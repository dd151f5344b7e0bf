//! Per-endpoint concurrency caps (bulkheads): at most `max_in_flight` attempts to one
//! endpoint at once in this worker, so a slow endpoint cannot take every activity slot.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use hookflow_core::EndpointKey;
use hookflow_telemetry::names;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bulkheads of every endpoint this worker has attempted.
#[derive(Default)]
pub struct Bulkheads {
    slots: Mutex<HashMap<EndpointKey, Arc<Semaphore>>>,
}

/// One attempt's place in its endpoint's bulkhead, given back when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Bulkheads {
    /// A place for one more attempt to `endpoint`, or `None` when `max_in_flight` are out.
    pub fn try_enter(&self, endpoint: &EndpointKey, max_in_flight: u32) -> Option<Slot> {
        let semaphore = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(endpoint.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(max_in_flight as usize)))
            .clone();
        let permit = semaphore.try_acquire_owned().ok()?;
        metrics::gauge!(names::ATTEMPTS_IN_FLIGHT).increment(1);
        Some(Slot { _permit: permit })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!(names::ATTEMPTS_IN_FLIGHT).decrement(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_attempts_per_endpoint_and_frees_on_drop() {
        let bulkheads = Bulkheads::default();
        let a = EndpointKey::custom("a").expect("key");
        let b = EndpointKey::custom("b").expect("key");
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
}
