//! A task run on an interval until shutdown: probes, heartbeats, sweeps and reloads.

use std::{future::Future, time::Duration};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Runs `task` at once, then every `interval`, until `shutdown`. A turn that overruns the
/// interval delays the next one rather than running the missed ones back to back.
pub async fn every<F, Fut>(interval: Duration, shutdown: &CancellationToken, mut task: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        // Shutdown also ends a turn in progress: a probe stuck on a dead server must not
        // hold it up.
        tokio::select! {
            () = task() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn runs_at_once_then_every_interval_until_shutdown() {
        let shutdown = CancellationToken::new();
        let turns = Arc::new(AtomicU32::new(0));
        let counted = turns.clone();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                every(Duration::from_secs(10), &shutdown, || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(())
                })
                .await;
            }
        });
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(turns.load(Ordering::SeqCst), 3, "at 0, 10 and 20 s");
        shutdown.cancel();
        // Time runs on while the loop is still there to take more turns, if it ignored
        // the shutdown.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(turns.load(Ordering::SeqCst), 3, "none after shutdown");
        task.await.expect("stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_turn_that_hangs() {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                every(
                    Duration::from_secs(1),
                    &shutdown,
                    std::future::pending::<()>,
                )
                .await;
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("returned at shutdown")
            .expect("no panic");
    }
}
