//! Per-endpoint rate limits, in process with `governor`, holding in total across workers by
//! an explicit split of the quota: each worker allows `rate / N` per second (burst
//! `burst / N`, at least 1), where N is the number of live workers that the
//! [`crate::isolation::WorkerRegistry`] counts in Redis.
//!
//! Why a split rather than a Redis limiter: the limiter is consulted on every attempt, and
//! the split keeps Redis off that path entirely; it can only err on the safe side (a worker
//! that gets little traffic leaves part of its share unused, so the total stays at or below
//! the configured rate).
//!
//! When N or the limits change, every endpoint's limiter is rebuilt with the new share on
//! its next use, as full as the old one was (the share of its burst it had left): a rolling
//! deploy changes N on every worker at once, and limiters rebuilt full would let every
//! worker's whole new burst through on top of what it just sent. A worker that joins others
//! takes its share from them: for the first refill time of a share (burst / rate) after it
//! started, its new limiters start empty and fill at their rate.
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
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::{InMemoryState, NotKeyed},
};
use hookflow_core::{EndpointKey, EndpointLimits, sync::LockUnpoisoned};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

struct Entry {
    share: (f64, u32),
    limiter: Limiter,
    last_used: Instant,
    /// Requests the bucket had left after the last one it let through, and when.
    left: Option<(u32, Instant)>,
}

impl Entry {
    /// A limiter of `share` whose bucket is `level` full (0 to 1).
    fn new(share: (f64, u32), level: f64) -> Self {
        let limiter = limiter_for(share);
        let burst = share.1;
        let used = burst - ((level.clamp(0.0, 1.0) * f64::from(burst)).floor() as u32);
        if let Some(used) = NonZeroU32::new(used) {
            // At most the burst: always accommodated.
            let _ = limiter.check_n(used);
        }
        Entry {
            share,
            limiter,
            last_used: Instant::now(),
            left: None,
        }
    }

    /// How full the bucket is now (0 to 1), from what it had left after its last request.
    fn level(&self) -> f64 {
        let (rate, burst) = self.share;
        match self.left {
            None => 1.0,
            Some((left, at)) => {
                let refilled = at.elapsed().as_secs_f64() * rate;
                ((f64::from(left) + refilled) / f64::from(burst)).min(1.0)
            }
        }
    }

    /// How long an unused limiter takes to be full again.
    fn refill_time(&self) -> Duration {
        refill_time(self.share)
    }
}

fn refill_time((rate, burst): (f64, u32)) -> Duration {
    Duration::try_from_secs_f64(f64::from(burst) / rate).unwrap_or(Duration::MAX)
}

/// Rate limiters of every endpoint this worker has attempted.
pub struct EndpointRateLimiter {
    workers: Arc<AtomicU32>,
    entries: Mutex<HashMap<EndpointKey, Entry>>,
    clock: DefaultClock,
    started: Instant,
}

impl EndpointRateLimiter {
    /// Limiters that split each endpoint's rate by the live worker count in `workers`,
    /// of a worker that starts now.
    pub fn new(workers: Arc<AtomicU32>) -> Self {
        Self::started_at(workers, Instant::now())
    }

    /// Limiters of a worker that started at `started`.
    pub fn started_at(workers: Arc<AtomicU32>, started: Instant) -> Self {
        EndpointRateLimiter {
            workers,
            entries: Mutex::default(),
            clock: DefaultClock::default(),
            started,
        }
    }

    /// Takes one request from `endpoint`'s share now, or says how long until one is free.
    pub fn check(&self, endpoint: &EndpointKey, limits: &EndpointLimits) -> Result<(), Duration> {
        let workers = self.workers.load(Ordering::Relaxed);
        let share = limits.share(workers);
        let mut entries = self.entries.lock_unpoisoned();
        let entry = entries.entry(endpoint.clone()).or_insert_with(|| {
            // Alone, nobody else sent this endpoint's quota; joining others, their buckets
            // may have just let the whole burst through.
            let joining = workers > 1 && self.started.elapsed() < refill_time(share);
            Entry::new(share, if joining { 0.0 } else { 1.0 })
        });
        if entry.share != share {
            *entry = Entry::new(share, entry.level());
        }
        entry.last_used = Instant::now();
        match entry.limiter.check() {
            Ok(state) => {
                entry.left = Some((state.remaining_burst_capacity(), Instant::now()));
                Ok(())
            }
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
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

fn limiter_for((rate, burst): (f64, u32)) -> Limiter {
    // `EndpointLimits::validate` keeps the rate positive and bounded, so the period is a
    // positive, finite duration; the fallbacks only guard against a future caller.
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .ok()
        .filter(|p| !p.is_zero())
        .unwrap_or(Duration::from_micros(10));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
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

    /// A start before the tests' refill times (8 s at most): limiters start full.
    fn long_ago() -> Instant {
        Instant::now()
            .checked_sub(Duration::from_secs(30))
            .expect("the machine is up for 30 s")
    }

    #[test]
    fn each_of_n_workers_gets_a_share() {
        let workers = Arc::new(AtomicU32::new(2));
        let limiter = EndpointRateLimiter::started_at(workers.clone(), long_ago());
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
            limiter.check(&key, &limits(2.0, 4)).is_err(),
            "rebuilt with the whole quota, as empty as the share was"
        );
    }

    #[test]
    fn a_rebuilt_limiter_is_as_full_as_its_share_was() {
        let workers = Arc::new(AtomicU32::new(1));
        let limiter = EndpointRateLimiter::started_at(workers.clone(), long_ago());
        let (used, idle) = (
            EndpointKey::custom(1, "used").expect("key"),
            EndpointKey::custom(1, "idle").expect("key"),
        );
        for _ in 0..8 {
            assert!(limiter.check(&used, &limits(1.0, 8)).is_ok());
        }
        assert!(limiter.check(&idle, &limits(1.0, 8)).is_ok());
        // A rolling deploy: a second worker joins, both shares are rebuilt. The one that
        // sent its whole burst stays empty; the other keeps 7/8 of its new burst of 4.
        workers.store(2, Ordering::Relaxed);
        assert!(limiter.check(&used, &limits(1.0, 8)).is_err());
        let mut allowed = 0;
        while limiter.check(&idle, &limits(1.0, 8)).is_ok() {
            allowed += 1;
        }
        assert_eq!(allowed, 3);
    }

    #[test]
    fn a_worker_joining_others_starts_its_limiters_empty() {
        let key = EndpointKey::custom(1, "a").expect("key");
        let joining = EndpointRateLimiter::new(Arc::new(AtomicU32::new(2)));
        let wait = joining
            .check(&key, &limits(2.0, 4))
            .expect_err("its share was the others' a moment ago");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        let alone = EndpointRateLimiter::new(Arc::new(AtomicU32::new(1)));
        assert!(
            alone.check(&key, &limits(2.0, 4)).is_ok(),
            "nobody else sent"
        );
    }
}
