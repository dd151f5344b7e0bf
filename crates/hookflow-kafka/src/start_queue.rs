//! The consumer's workflow starts in flight, and the order in which the starts waiting for a
//! place go: by their endpoint's [`Standing`], best first, and in arrival order within one
//! standing. After an outage the consumer meets a backlog and Temporal's start rate is the
//! limit; first in, first out would make every healthy delivery wait behind the starts of
//! the messages before it to failing or saturated endpoints. A start that has waited
//! [`StartQueue::new`]'s `max_wait` goes next whatever its standing, so a struggling
//! endpoint's deliveries are started later under a backlog, never starved by a steady
//! stream of healthy ones. Struggling endpoints' starts hold at most a quarter of the places
//! at once, so the places free when a backlog begins are not all taken by them before the
//! healthy starts queue up (a few starts in flight are enough to keep Temporal busy).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hookflow_core::{EndpointKey, EndpointStanding, Standing, sync::LockUnpoisoned};
use tokio::sync::oneshot;

/// How long a start waits behind better-standing ones at most: long enough for a burst of
/// a few hundred healthy starts to go first, short enough that a struggling endpoint's
/// deliveries start within a second or so of their turn.
pub const MAX_REORDER_WAIT: Duration = Duration::from_secs(1);

/// See the module documentation.
pub struct StartQueue {
    max_wait: Duration,
    standing: Arc<dyn EndpointStanding>,
    state: Mutex<State>,
}

struct State {
    /// Places not taken (only while nobody waits who may take one).
    free: usize,
    /// Places held by starts to struggling endpoints.
    struggling: usize,
    /// The most places those may hold.
    struggling_cap: usize,
    /// The waiting starts of each standing, oldest first ([`Standing::rank`] indexes).
    waiting: [VecDeque<Waiter>; 3],
}

struct Waiter {
    since: Instant,
    place: oneshot::Sender<Place>,
}

/// A place in flight; the next waiting start takes it when this is dropped.
pub struct Place {
    queue: Option<Arc<StartQueue>>,
    standing: Standing,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.release(self.standing);
        }
    }
}

impl State {
    /// Whether a start of `standing` may take a place now (one being free or freed).
    fn may_take(&self, standing: Standing) -> bool {
        standing != Standing::Struggling || self.struggling < self.struggling_cap
    }

    /// Counts a place taken by a start of `standing`.
    fn take(&mut self, standing: Standing) {
        if standing == Standing::Struggling {
            self.struggling += 1;
        }
    }

    /// Counts a place given back by a start of `standing`.
    fn give_back(&mut self, standing: Standing) {
        if standing == Standing::Struggling {
            self.struggling -= 1;
        }
    }
}

impl StartQueue {
    /// `places` starts in flight at most, ordered by the standing `standing` tells; a start
    /// waits behind better-standing ones for at most `max_wait`.
    pub fn new(
        places: usize,
        max_wait: Duration,
        standing: Arc<dyn EndpointStanding>,
    ) -> Arc<StartQueue> {
        let places = places.max(1);
        Arc::new(StartQueue {
            max_wait,
            standing,
            state: Mutex::new(State {
                free: places,
                struggling: 0,
                struggling_cap: (places / 4).max(1),
                waiting: Default::default(),
            }),
        })
    }

    /// Waits for a place for a start to `endpoint` (unknown standing when `None`).
    pub async fn enter_for(self: &Arc<Self>, endpoint: Option<&EndpointKey>) -> Place {
        let standing = endpoint.map_or(Standing::Unknown, |e| self.standing.standing(e));
        self.enter(standing).await
    }

    /// Waits for a place for a start to an endpoint of `standing`.
    pub async fn enter(self: &Arc<Self>, standing: Standing) -> Place {
        let (place, granted) = oneshot::channel();
        {
            let mut state = self.state.lock_unpoisoned();
            if state.free > 0 && state.may_take(standing) {
                state.free -= 1;
                state.take(standing);
                return Place {
                    queue: Some(self.clone()),
                    standing,
                };
            }
            state.waiting[standing.rank()].push_back(Waiter {
                since: Instant::now(),
                place,
            });
        }
        match granted.await {
            Ok(place) => place,
            // The queue lives as long as the `Arc` this holds: a waiter is always answered.
            Err(_) => unreachable!("a start queue dropped its waiter"),
        }
    }

    /// Takes back the place of a start of `freed` and hands it to the next waiter who may
    /// take it, or keeps it free. A waiter that stopped waiting (its start was cancelled) is
    /// passed over.
    fn release(self: &Arc<Self>, freed: Standing) {
        self.state.lock_unpoisoned().give_back(freed);
        loop {
            let (standing, next) = {
                let mut state = self.state.lock_unpoisoned();
                let struggling_may = state.may_take(Standing::Struggling);
                let now = Instant::now();
                match next_waiter(&mut state.waiting, self.max_wait, now, struggling_may) {
                    Some((standing, waiter)) => {
                        state.take(standing);
                        (standing, waiter)
                    }
                    None => {
                        state.free += 1;
                        return;
                    }
                }
            };
            let place = Place {
                queue: Some(self.clone()),
                standing,
            };
            match next.place.send(place) {
                Ok(()) => return,
                // Not handed over: take it back without releasing it again.
                Err(mut place) => {
                    drop(place.queue.take());
                    self.state.lock_unpoisoned().give_back(standing);
                }
            }
        }
    }
}

/// The waiter to serve next and its standing: the oldest of those that waited `max_wait`
/// or more, else the first of the best standing that has one; a struggling endpoint's only
/// when `struggling_may`.
fn next_waiter(
    waiting: &mut [VecDeque<Waiter>; 3],
    max_wait: Duration,
    now: Instant,
    struggling_may: bool,
) -> Option<(Standing, Waiter)> {
    let eligible = |rank: usize| struggling_may || Standing::ALL[rank] != Standing::Struggling;
    let overdue = waiting
        .iter()
        .enumerate()
        .filter(|(rank, _)| eligible(*rank))
        .filter_map(|(rank, queue)| queue.front().map(|w| (w.since, rank)))
        .filter(|(since, _)| now.duration_since(*since) >= max_wait)
        .min()
        .map(|(_, rank)| rank);
    let rank = overdue.or_else(|| {
        (0..waiting.len()).find(|rank| eligible(*rank) && !waiting[*rank].is_empty())
    })?;
    let waiter = waiting[rank].pop_front()?;
    Some((Standing::ALL[rank], waiter))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enters `queue` for each standing in turn (each waiting, as every place is taken),
    /// then frees places one by one: the standings in the order they got a place.
    async fn order(queue: &Arc<StartQueue>, standings: &[Standing]) -> Vec<Standing> {
        let held = queue.enter(Standing::Healthy).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for &standing in standings {
            let (queue, tx) = (queue.clone(), tx.clone());
            tokio::spawn(async move {
                let place = queue.enter(standing).await;
                let _ = tx.send(standing);
                // Held briefly, then freed for the next one.
                tokio::time::sleep(Duration::from_millis(1)).await;
                drop(place);
            });
            // Enqueued in this order.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(held);
        let mut order = Vec::new();
        for _ in standings {
            order.push(rx.recv().await.expect("a place"));
        }
        order
    }

    #[tokio::test]
    async fn healthy_endpoints_starts_go_first_then_unknown_then_struggling() {
        use Standing::*;
        let queue = StartQueue::new(
            1,
            Duration::from_secs(60),
            Arc::new(hookflow_core::NoStanding),
        );
        let order = order(&queue, &[Struggling, Unknown, Healthy, Struggling, Healthy]).await;
        assert_eq!(order, [Healthy, Healthy, Unknown, Struggling, Struggling]);
    }

    #[tokio::test]
    async fn a_start_that_waited_too_long_goes_next_whatever_its_standing() {
        use Standing::*;
        let queue = StartQueue::new(
            1,
            Duration::from_millis(5),
            Arc::new(hookflow_core::NoStanding),
        );
        // The struggling one has waited past max_wait when the first place frees.
        let order = order(&queue, &[Struggling, Unknown, Unknown, Healthy]).await;
        assert_eq!(order[0], Struggling);
    }

    #[tokio::test]
    async fn struggling_endpoints_starts_hold_at_most_a_quarter_of_the_places() {
        let queue = StartQueue::new(
            8,
            Duration::from_secs(60),
            Arc::new(hookflow_core::NoStanding),
        );
        let first = queue.enter(Standing::Struggling).await;
        let second = queue.enter(Standing::Struggling).await;
        let third = tokio::spawn({
            let queue = queue.clone();
            async move { queue.enter(Standing::Struggling).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            !third.is_finished(),
            "two of eight places are the most they hold"
        );
        let healthy = queue.enter(Standing::Healthy).await;
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .expect("a struggling place freed")
            .expect("task");
        drop((second, third, healthy));
        let state = queue.state.lock_unpoisoned();
        assert_eq!((state.free, state.struggling), (8, 0));
    }

    #[tokio::test]
    async fn places_free_while_nobody_waits_and_a_cancelled_waiter_is_passed_over() {
        let queue = StartQueue::new(
            2,
            Duration::from_secs(60),
            Arc::new(hookflow_core::NoStanding),
        );
        let (a, b) = (
            queue.enter(Standing::Unknown).await,
            queue.enter(Standing::Struggling).await,
        );
        let cancelled =
            tokio::time::timeout(Duration::from_millis(10), queue.enter(Standing::Healthy)).await;
        assert!(cancelled.is_err(), "both places are taken");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(1), queue.enter(Standing::Unknown))
            .await
            .expect("the freed place, not lost to the cancelled waiter");
        drop((b, c));
        assert_eq!(queue.state.lock_unpoisoned().free, 2);
    }
}
