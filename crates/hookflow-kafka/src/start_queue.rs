//! The consumer's workflow starts in flight, and the order in which the starts waiting for a
//! place go: by their endpoint's [`Standing`], best first, and in arrival order within one
//! standing. After an outage the consumer meets a backlog and Temporal's start rate is the
//! limit; first in, first out would make every healthy delivery wait behind the starts of
//! the messages before it to failing or saturated endpoints. A start that has waited
//! [`StartQueue::new`]'s `max_wait` goes next whatever its standing, so a struggling
//! endpoint's deliveries are started later under a backlog, never starved by a steady
//! stream of healthy ones.
//!
//! Two caps keep the places free when a backlog begins (before any start waits, so before
//! the order can act) from going to endpoints that have not shown they can take deliveries:
//! struggling endpoints' starts hold at most a quarter of the places together, and the
//! starts to one endpoint not known healthy (struggling, or unknown: no answer here yet) at
//! most an eighth. A few starts in flight keep Temporal busy, and an endpoint that answers
//! becomes healthy and uncapped; one that hangs would otherwise take half the places of a
//! burst shared with a healthy one, and Temporal's time with them.

use std::{
    collections::{HashMap, VecDeque},
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
    /// `None` in a process that runs no worker: it knows no endpoint's standing, and its
    /// starts go in arrival order, uncapped.
    standing: Option<Arc<dyn EndpointStanding>>,
    state: Mutex<State>,
}

struct State {
    /// Places not taken (only while nobody waits who may take one).
    free: usize,
    /// Places held by starts to struggling endpoints.
    struggling: usize,
    /// The most places those may hold.
    struggling_cap: usize,
    /// Places held by the starts to each endpoint not known healthy.
    unproven: HashMap<EndpointKey, usize>,
    /// The most places one such endpoint's starts may hold.
    unproven_cap: usize,
    /// The waiting starts of each standing, oldest first ([`Standing::rank`] indexes).
    waiting: [VecDeque<Waiter>; 3],
}

struct Waiter {
    since: Instant,
    /// The endpoint whose places it counts against: set only when its standing is not
    /// healthy and the endpoint is known.
    capped: Option<EndpointKey>,
    place: oneshot::Sender<Place>,
}

/// A place in flight; the next waiting start takes it when this is dropped.
pub struct Place {
    queue: Option<Arc<StartQueue>>,
    standing: Standing,
    capped: Option<EndpointKey>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.release(self.standing, self.capped.take());
        }
    }
}

impl State {
    /// Whether a start of `standing` (counted against `capped`) may take a place now.
    fn may_take(&self, standing: Standing, capped: Option<&EndpointKey>) -> bool {
        let struggling_may =
            standing != Standing::Struggling || self.struggling < self.struggling_cap;
        let endpoint_may = capped.is_none_or(|endpoint| {
            self.unproven.get(endpoint).copied().unwrap_or(0) < self.unproven_cap
        });
        struggling_may && endpoint_may
    }

    /// Counts a place taken by a start of `standing`, counted against `capped`.
    fn take(&mut self, standing: Standing, capped: Option<&EndpointKey>) {
        self.free -= 1;
        if standing == Standing::Struggling {
            self.struggling += 1;
        }
        if let Some(endpoint) = capped {
            *self.unproven.entry(endpoint.clone()).or_default() += 1;
        }
    }

    /// Counts a place given back by a start of `standing`, counted against `capped`.
    fn give_back(&mut self, standing: Standing, capped: Option<&EndpointKey>) {
        self.free += 1;
        if standing == Standing::Struggling {
            self.struggling -= 1;
        }
        if let Some(endpoint) = capped
            && let Some(held) = self.unproven.get_mut(endpoint)
        {
            *held -= 1;
            if *held == 0 {
                self.unproven.remove(endpoint);
            }
        }
    }

    /// Takes the waiter to serve next out of its queue, with its standing: the oldest of
    /// those that may take a place and waited `max_wait` or more, else the first that may
    /// of the best standing that has one. Waiters held back by a cap are passed over (their
    /// number is bounded by the consumer's messages in flight).
    fn next_waiter(&mut self, max_wait: Duration, now: Instant) -> Option<(Standing, Waiter)> {
        let first_eligible: [Option<usize>; 3] = std::array::from_fn(|rank| {
            self.waiting[rank]
                .iter()
                .position(|w| self.may_take(Standing::ALL[rank], w.capped.as_ref()))
        });
        let candidates = || {
            first_eligible
                .iter()
                .enumerate()
                .filter_map(|(rank, index)| index.map(|index| (rank, index)))
        };
        let overdue = candidates()
            .map(|(rank, index)| (self.waiting[rank][index].since, rank, index))
            .filter(|(since, _, _)| now.duration_since(*since) >= max_wait)
            .min()
            .map(|(_, rank, index)| (rank, index));
        let (rank, index) = overdue.or_else(|| candidates().next())?;
        let waiter = self.waiting[rank].remove(index)?;
        Some((Standing::ALL[rank], waiter))
    }
}

impl StartQueue {
    /// `places` starts in flight at most, ordered by the standing `standing` tells (in
    /// arrival order without one); a start waits behind better-standing ones for at most
    /// `max_wait`.
    pub fn new(
        places: usize,
        max_wait: Duration,
        standing: Option<Arc<dyn EndpointStanding>>,
    ) -> Arc<StartQueue> {
        let places = places.max(1);
        Arc::new(StartQueue {
            max_wait,
            standing,
            state: Mutex::new(State {
                free: places,
                struggling: 0,
                struggling_cap: (places / 4).max(1),
                unproven: HashMap::new(),
                unproven_cap: (places / 8).max(1),
                waiting: Default::default(),
            }),
        })
    }

    /// Waits for a place for a start to `endpoint` (unknown standing, uncapped, when `None`
    /// or when this queue knows no standing).
    pub async fn enter_for(self: &Arc<Self>, endpoint: Option<&EndpointKey>) -> Place {
        match (&self.standing, endpoint) {
            (Some(standing), Some(endpoint)) => {
                let standing = standing.standing(endpoint);
                let capped = (standing != Standing::Healthy).then(|| endpoint.clone());
                self.wait_for_place(standing, capped).await
            }
            _ => self.wait_for_place(Standing::Unknown, None).await,
        }
    }

    async fn wait_for_place(
        self: &Arc<Self>,
        standing: Standing,
        capped: Option<EndpointKey>,
    ) -> Place {
        let (place, granted) = oneshot::channel();
        {
            let mut state = self.state.lock_unpoisoned();
            if state.free > 0 && state.may_take(standing, capped.as_ref()) {
                state.take(standing, capped.as_ref());
                return Place {
                    queue: Some(self.clone()),
                    standing,
                    capped,
                };
            }
            state.waiting[standing.rank()].push_back(Waiter {
                since: Instant::now(),
                capped,
                place,
            });
        }
        match granted.await {
            Ok(place) => place,
            // The queue lives as long as the `Arc` this holds: a waiter is always answered.
            Err(_) => unreachable!("a start queue dropped its waiter"),
        }
    }

    /// Takes back the place of a start of `standing` counted against `capped`, and hands
    /// out the free places.
    fn release(self: &Arc<Self>, standing: Standing, capped: Option<EndpointKey>) {
        self.state
            .lock_unpoisoned()
            .give_back(standing, capped.as_ref());
        self.hand_out();
    }

    /// Gives free places to the waiters who may take them, in order, until one or the other
    /// runs out: a place given back can free a cap as well as a place, so it can let more
    /// than one waiter go. A waiter that stopped waiting (its start was cancelled) is passed
    /// over.
    fn hand_out(self: &Arc<Self>) {
        loop {
            let (standing, waiter) = {
                let mut state = self.state.lock_unpoisoned();
                if state.free == 0 {
                    return;
                }
                let Some((standing, waiter)) = state.next_waiter(self.max_wait, Instant::now())
                else {
                    return;
                };
                state.take(standing, waiter.capped.as_ref());
                (standing, waiter)
            };
            let place = Place {
                queue: Some(self.clone()),
                standing,
                capped: waiter.capped,
            };
            // Not handed over: give it back without handing out again from its drop.
            if let Err(mut place) = waiter.place.send(place) {
                drop(place.queue.take());
                self.state
                    .lock_unpoisoned()
                    .give_back(standing, place.capped.as_ref());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl StartQueue {
        /// Waits for a place for a start of `standing`, counted against no endpoint.
        async fn enter(self: &Arc<Self>, standing: Standing) -> Place {
            self.wait_for_place(standing, None).await
        }
    }

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
        let queue = StartQueue::new(1, Duration::from_secs(60), None);
        let order = order(&queue, &[Struggling, Unknown, Healthy, Struggling, Healthy]).await;
        assert_eq!(order, [Healthy, Healthy, Unknown, Struggling, Struggling]);
    }

    #[tokio::test]
    async fn a_start_that_waited_too_long_goes_next_whatever_its_standing() {
        use Standing::*;
        let queue = StartQueue::new(1, Duration::from_millis(5), None);
        // The struggling one has waited past max_wait when the first place frees.
        let order = order(&queue, &[Struggling, Unknown, Unknown, Healthy]).await;
        assert_eq!(order[0], Struggling);
    }

    #[tokio::test]
    async fn struggling_endpoints_starts_hold_at_most_a_quarter_of_the_places() {
        let queue = StartQueue::new(8, Duration::from_secs(60), None);
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
        assert!(state.unproven.is_empty());
    }

    #[tokio::test]
    async fn places_free_while_nobody_waits_and_a_cancelled_waiter_is_passed_over() {
        let queue = StartQueue::new(2, Duration::from_secs(60), None);
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

    /// Standings set per endpoint, by its name (unknown until set).
    struct Fixed(Mutex<Vec<(&'static str, Standing)>>);

    impl Fixed {
        fn set(&self, name: &'static str, standing: Standing) {
            self.0.lock_unpoisoned().push((name, standing));
        }
    }

    impl EndpointStanding for Fixed {
        fn standing(&self, endpoint: &EndpointKey) -> Standing {
            self.0
                .lock_unpoisoned()
                .iter()
                .rev()
                .find(|(name, _)| endpoint == &key(name))
                .map_or(Standing::Unknown, |(_, standing)| *standing)
        }
    }

    fn key(name: &str) -> EndpointKey {
        EndpointKey::of_url(&format!("http://{name}:80/").parse().expect("url"))
    }

    /// Whether entering `queue` for `endpoint` gets a place within 20 ms (held if so).
    async fn try_enter(queue: &Arc<StartQueue>, endpoint: &str) -> Option<Place> {
        tokio::time::timeout(
            Duration::from_millis(20),
            queue.enter_for(Some(&key(endpoint))),
        )
        .await
        .ok()
    }

    #[tokio::test]
    async fn one_endpoint_not_known_healthy_holds_at_most_an_eighth_of_the_places() {
        let standing = Fixed(Mutex::new(vec![
            ("healthy", Standing::Healthy),
            ("failing", Standing::Struggling),
        ]));
        let queue = StartQueue::new(16, Duration::from_secs(60), Some(Arc::new(standing)));
        let mut held = Vec::new();
        for endpoint in ["new", "new", "failing", "failing", "other"] {
            held.push(try_enter(&queue, endpoint).await.expect("under the caps"));
        }
        assert!(try_enter(&queue, "new").await.is_none(), "unknown: 2 of 16");
        assert!(
            try_enter(&queue, "failing").await.is_none(),
            "struggling: 2 of 16"
        );
        for _ in 0..10 {
            held.push(
                try_enter(&queue, "healthy")
                    .await
                    .expect("healthy is uncapped"),
            );
        }
        assert_eq!(queue.state.lock_unpoisoned().free, 1);
        // A waiting start to the capped endpoint goes once one of its own places frees,
        // though a place is free all along.
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.enter_for(Some(&key("new"))).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "capped, not out of places");
        drop(held.remove(0));
        let waited = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("its own place freed")
            .expect("task");
        drop((waited, held));
        let state = queue.state.lock_unpoisoned();
        assert_eq!((state.free, state.struggling), (16, 0));
        assert!(state.unproven.is_empty(), "{:?}", state.unproven);
    }

    #[tokio::test]
    async fn a_place_given_back_lets_every_waiter_it_uncaps_go() {
        // Of 8 places, struggling starts hold 2 at most, one endpoint's 1.
        let standing = Arc::new(Fixed(Mutex::new(vec![
            ("a", Standing::Struggling),
            ("b", Standing::Struggling),
            ("c", Standing::Struggling),
        ])));
        let queue = StartQueue::new(8, Duration::from_secs(60), Some(standing.clone()));
        let a = try_enter(&queue, "a").await.expect("a place");
        let b = try_enter(&queue, "b").await.expect("a place");
        // a is now unknown: its next start waits for a's own cap, c's for the struggling one.
        standing.set("a", Standing::Unknown);
        let waiters: Vec<_> = ["a", "c"]
            .into_iter()
            .map(|endpoint| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.enter_for(Some(&key(endpoint))).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()), "both capped");
        // One place given back frees both caps: both waiters go, to two of the free places.
        drop(a);
        let mut places = Vec::new();
        for waiter in waiters {
            let place = tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("a place while the other's is held")
                .expect("task");
            places.push(place);
        }
        drop((places, b));
        assert_eq!(queue.state.lock_unpoisoned().free, 8);
    }

    #[tokio::test]
    async fn without_standing_every_start_goes_in_arrival_order_uncapped() {
        let queue = StartQueue::new(8, Duration::from_secs(60), None);
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(
                try_enter(&queue, "one")
                    .await
                    .expect("no cap without standing"),
            );
        }
        assert!(try_enter(&queue, "one").await.is_none(), "out of places");
    }
}
