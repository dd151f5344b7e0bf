//! Exponential backoff that gives up when shutdown comes: the one waiting rule for every
//! "retry while a dependency is down" loop (workflow starts, dead letters, connecting to
//! Temporal), so none of them holds shutdown up and all of them back off alike.

use std::time::Duration;

use hookflow_core::doubling::doubled;
use tokio_util::sync::CancellationToken;

/// First and longest wait between retries.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

/// One retry loop's state: how many waits it has slept, each double the one before, up
/// to the maximum.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    waited: u32,
}

impl Backoff {
    /// A fresh loop starting at `policy.initial`.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff { policy, waited: 0 }
    }

    /// The wait the next [`Backoff::wait`] will sleep, for log lines: the first is
    /// `initial` (even above the maximum), each later one double the one before, up to
    /// the maximum.
    pub fn next_wait(&self) -> Duration {
        if self.waited == 0 {
            return self.policy.initial;
        }
        // In nanoseconds, so a sub-millisecond policy doubles too (u64 holds 584 years).
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(doubled(
            nanos(self.policy.initial),
            self.waited,
            nanos(self.policy.max),
        ))
    }

    /// Sleeps the next wait; `false` when shutdown came first (stop retrying).
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let wait = self.next_wait();
        self.waited = self.waited.saturating_add(1);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_up_to_the_maximum_and_stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(3),
        });
        let mut waits = Vec::new();
        for _ in 0..4 {
            waits.push(backoff.next_wait());
            assert!(backoff.wait(&shutdown).await);
        }
        assert_eq!(waits, [1, 2, 3, 3].map(Duration::from_secs));
        shutdown.cancel();
        assert!(!backoff.wait(&shutdown).await);
    }

    fn waits(initial: Duration, max: Duration, count: usize) -> Vec<Duration> {
        let mut backoff = Backoff::new(BackoffPolicy { initial, max });
        (0..count)
            .map(|_| {
                let wait = backoff.next_wait();
                backoff.waited += 1;
                wait
            })
            .collect()
    }

    #[test]
    fn a_sub_millisecond_policy_doubles_and_a_first_wait_above_the_maximum_is_kept() {
        let micros = Duration::from_micros;
        assert_eq!(
            waits(micros(300), micros(1_000), 4),
            [micros(300), micros(600), micros(1_000), micros(1_000)]
        );
        let secs = Duration::from_secs;
        assert_eq!(waits(secs(5), secs(2), 3), [secs(5), secs(2), secs(2)]);
    }
}
