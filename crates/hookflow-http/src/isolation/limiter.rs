//! Per-endpoint rate limits, in process with `governor`, holding in total across workers by
//! an explicit split of the quota: each worker allows `rate / N` per second (burst
//! `burst / N`, at least 1), where N is the number of live workers that the
//! [`crate::isolation::WorkerRegistry`] counts in Redis.
//!
//! Why a split rather than a Redis limiter: the limiter is consulted on every attempt, and
//! the split keeps Redis off that path entirely; it can only err on the safe side (a worker
//! that gets little traffic leaves part of its share unused, so the total stays at or below
//! the configured rate). When N changes, every endpoint's limiter is rebuilt with the new
//! share on its next use.
//!
//! A limiter unused for the idle time is dropped, but only once its bucket would have
//! refilled anyway (burst / rate), so dropping one never lets more through.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use hookflow_core::{EndpointKey, EndpointLimits, sync::LockUnpoisoned};

struct Entry {
    share: (f64, u32),
    limiter: Arc<DefaultDirectRateLimiter>,
    last_used: Instant,
}

impl Entry {
    fn new(share: (f64, u32)) -> Self {
        Entry {
            share,
            limiter: Arc::new(limiter_for(share)),
            last_used: Instant::now(),
        }
    }

    /// How long an unused limiter takes to be full again.
    fn refill_time(&self) -> Duration {
        let (rate, burst) = self.share;
        Duration::try_from_secs_f64(f64::from(burst) / rate).unwrap_or(Duration::MAX)
    }
}

/// Rate limiters of every endpoint this worker has attempted.
pub struct EndpointRateLimiter {
    workers: Arc<AtomicU32>,
    entries: Mutex<HashMap<EndpointKey, Entry>>,
    clock: DefaultClock,
}

impl EndpointRateLimiter {
    /// Limiters that split each endpoint's rate by the live worker count in `workers`.
    pub fn new(workers: Arc<AtomicU32>) -> Self {
        EndpointRateLimiter {
            workers,
            entries: Mutex::default(),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from `endpoint`'s share now, or says how long until one is free.
    pub fn check(&self, endpoint: &EndpointKey, limits: &EndpointLimits) -> Result<(), Duration> {
        let share = limits.share(self.workers.load(Ordering::Relaxed));
        let limiter = {
            let mut entries = self.entries.lock_unpoisoned();
            let entry = entries
                .entry(endpoint.clone())
                .or_insert_with(|| Entry::new(share));
            if entry.share != share {
                *entry = Entry::new(share);
            }
            entry.last_used = Instant::now();
            entry.limiter.clone()
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

impl EndpointRateLimiter {
    /// Drops the limiters unused for `idle` whose bucket is full again; how many are left.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let mut entries = self.entries.lock_unpoisoned();
        entries.retain(|_, entry| entry.last_used.elapsed() < idle.max(entry.refill_time()));
        entries.shrink_to_fit();
        entries.len()
    }
}

fn limiter_for((rate, burst): (f64, u32)) -> DefaultDirectRateLimiter {
    // `EndpointLimits::validate` keeps the rate positive and bounded, so the period is a
    // positive, finite duration; the fallbacks only guard against a future caller.
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .ok()
        .filter(|p| !p.is_zero())
        .unwrap_or(Duration::from_micros(10));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: f64, burst: u32) -> EndpointLimits {
        EndpointLimits {
            rate_per_second: rate,
            burst,
            max_in_flight: 1,
        }
    }

    #[test]
    fn allows_the_burst_then_says_when_the_next_request_may_go() {
        let limiter = EndpointRateLimiter::new(Arc::new(AtomicU32::new(1)));
        let key = EndpointKey::custom(1, "a").expect("key");
        for _ in 0..3 {
            assert!(limiter.check(&key, &limits(2.0, 3)).is_ok());
        }
        let wait = limiter
            .check(&key, &limits(2.0, 3))
            .expect_err("over the burst");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let other = EndpointKey::custom(1, "b").expect("key");
        assert!(
            limiter.check(&other, &limits(2.0, 3)).is_ok(),
            "endpoints are independent"
        );
    }

    #[test]
    fn idle_limiters_are_dropped_once_their_bucket_would_be_full() {
        let limiter = EndpointRateLimiter::new(Arc::new(AtomicU32::new(1)));
        let (fast, slow) = (
            EndpointKey::custom(1, "fast").expect("key"),
            EndpointKey::custom(1, "slow").expect("key"),
        );
        assert!(limiter.check(&fast, &limits(1_000.0, 1)).is_ok());
        assert!(limiter.check(&slow, &limits(0.001, 1)).is_ok());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            limiter.evict_idle(Duration::ZERO),
            1,
            "the slow one refills in 1000 s: kept, or its next request would come early"
        );
        assert!(
            limiter.check(&slow, &limits(0.001, 1)).is_err(),
            "still limited"
        );
    }

    #[test]
    fn each_of_n_workers_gets_a_share() {
        let workers = Arc::new(AtomicU32::new(2));
        let limiter = EndpointRateLimiter::new(workers.clone());
        let key = EndpointKey::custom(1, "a").expect("key");
        // Burst 4 split in two: 2 at once, then a wait of 1 / (2/s / 2) = 1 s.
        assert!(limiter.check(&key, &limits(2.0, 4)).is_ok());
        assert!(limiter.check(&key, &limits(2.0, 4)).is_ok());
        let wait = limiter
            .check(&key, &limits(2.0, 4))
            .expect_err("over the share");
        assert!(wait > Duration::from_millis(900), "{wait:?}");
        workers.store(1, Ordering::Relaxed);
        assert!(
            limiter.check(&key, &limits(2.0, 4)).is_ok(),
            "rebuilt with the whole quota"
        );
    }
}
