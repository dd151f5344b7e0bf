//! The shared circuit breakers against a real Redis, as two workers use them: one worker's
//! trip is the other's refusal, exactly one probe goes out across both, and with Redis
//! down each falls back to a breaker of its own, then shares again once Redis is back. A
//! half-open refusal ends when the other worker's probe closes the breaker, and the probe
//! that closes it wakes the deliveries still parked, never itself.

use std::{
    sync::{Arc, atomic::AtomicU32},
    time::{Duration, Instant},
};

use hookflow_core::{
    AttemptReport, DeferralReason, Destination, DestinationSpec, EndpointKey, ValidationRules,
    breaker::{Admission, BreakerPolicy},
};
use hookflow_e2e::{stack::RedisServer, unique};
use hookflow_http::isolation::{EndpointGate, IsolationSettings, SharedBreakers, Waiter};
use hookflow_runtime::{RedisLink, RedisSettings};

const LEASE: Duration = Duration::from_secs(5);
const CACHE_TTL: Duration = Duration::from_millis(300);

fn policy() -> BreakerPolicy {
    BreakerPolicy {
        window_ms: 60_000,
        min_attempts: 4,
        failure_ratio: 0.5,
        cooldown_ms: 1_500,
        max_cooldown_ms: 10_000,
    }
}

/// Two workers' links to one Redis (each its own connection, as two processes).
fn two_links(redis: &RedisServer) -> (RedisLink, RedisLink) {
    let prefix = unique("breakers");
    let link = || {
        RedisLink::new(&RedisSettings {
            url: redis.url(),
            key_prefix: prefix.clone(),
            command_timeout: Duration::from_millis(250),
            retry_after: Duration::from_millis(300),
        })
        .expect("redis url")
        .expect("configured")
    };
    (link(), link())
}

/// Two workers' breakers on one Redis.
fn two_workers(redis: &RedisServer) -> (SharedBreakers, SharedBreakers, RedisLink) {
    let (a, b) = two_links(redis);
    (
        SharedBreakers::new(Some(a.clone()), CACHE_TTL),
        SharedBreakers::new(Some(b), CACHE_TTL),
        a,
    )
}

fn endpoint(name: &str) -> EndpointKey {
    EndpointKey::of_url(&url::Url::parse(&format!("http://{name}.example/")).expect("url"))
}

async fn fail(breakers: &SharedBreakers, endpoint: &EndpointKey, n: usize) {
    for _ in 0..n {
        let admission = breakers.admit(endpoint, &policy(), LEASE).await;
        assert_eq!(admission, Admission::Allow);
        breakers.record(endpoint, &policy(), admission, true).await;
    }
}

fn is_deny(admission: Admission) -> bool {
    matches!(admission, Admission::Deny { .. })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_workers_trip_stops_the_other_and_exactly_one_probe_goes_out() {
    let redis = RedisServer::start();
    let (a, b, _) = two_workers(&redis);
    let hanging = endpoint("hanging");
    assert_eq!(b.admit(&hanging, &policy(), LEASE).await, Admission::Allow);

    fail(&a, &hanging, 4).await;
    assert!(is_deny(a.admit(&hanging, &policy(), LEASE).await));
    tokio::time::sleep(CACHE_TTL + Duration::from_millis(50)).await;
    assert!(
        is_deny(b.admit(&hanging, &policy(), LEASE).await),
        "b refuses once its copy is older than the cache ttl"
    );
    assert_eq!(
        b.admit(&endpoint("healthy"), &policy(), LEASE).await,
        Admission::Allow,
        "other endpoints are not affected"
    );

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let shared = policy();
    let (first, second) = tokio::join!(
        a.admit(&hanging, &shared, LEASE),
        b.admit(&hanging, &shared, LEASE)
    );
    let probes = [first, second]
        .iter()
        .filter(|x| **x == Admission::Probe)
        .count();
    assert_eq!(probes, 1, "one probe across workers: {first:?} {second:?}");
    let (prober, other) = if first == Admission::Probe {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(
        is_deny(other.admit(&hanging, &policy(), LEASE).await),
        "the probe is out"
    );

    prober
        .record(&hanging, &policy(), Admission::Probe, false)
        .await;
    assert_eq!(
        prober.admit(&hanging, &policy(), LEASE).await,
        Admission::Allow,
        "the probe closed it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_each_worker_falls_back_then_sharing_resumes() {
    let redis = RedisServer::start();
    let (a, b, link) = two_workers(&redis);
    let first = endpoint("first");
    assert_eq!(a.admit(&first, &policy(), LEASE).await, Admission::Allow);
    assert!(link.is_available());

    redis.stop();
    let started = Instant::now();
    fail(&a, &first, 4).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a dead Redis does not hold attempts up: {:?}",
        started.elapsed()
    );
    assert!(!link.is_available(), "the degradation is visible");
    assert!(
        is_deny(a.admit(&first, &policy(), LEASE).await),
        "a's own breaker tripped"
    );
    assert_eq!(
        b.admit(&first, &policy(), LEASE).await,
        Admission::Allow,
        "b cannot learn of it without Redis and keeps delivering"
    );

    redis.restart();
    let second = endpoint("second");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !link.is_available() {
        assert!(Instant::now() < deadline, "a did not reconnect to Redis");
        assert_eq!(a.admit(&second, &policy(), LEASE).await, Admission::Allow);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.admit(&second, &policy(), LEASE).await, Admission::Allow);
    fail(&a, &second, 4).await;
    tokio::time::sleep(CACHE_TTL + Duration::from_millis(50)).await;
    assert!(
        is_deny(b.admit(&second, &policy(), LEASE).await),
        "a trip after Redis came back reaches b again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_open_refusal_ends_when_the_other_workers_probe_closes_the_breaker() {
    let redis = RedisServer::start();
    let (a, b, _) = two_workers(&redis);
    let flaky = endpoint("flaky");
    fail(&a, &flaky, 4).await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(a.admit(&flaky, &policy(), LEASE).await, Admission::Probe);
    assert!(
        is_deny(b.admit(&flaky, &policy(), LEASE).await),
        "b sees the probe out"
    );
    a.record(&flaky, &policy(), Admission::Probe, false).await;
    // b's copy says half-open until the probe's lease ends (5 s); once it is older than
    // the cache ttl, b asks again and finds the breaker closed.
    tokio::time::sleep(CACHE_TTL + Duration::from_millis(50)).await;
    assert_eq!(
        b.admit(&flaky, &policy(), LEASE).await,
        Admission::Allow,
        "b sends again within its cache ttl of the close, not at the lease's end"
    );
}

/// Two workers' endpoint gates on one Redis, with [`policy`]'s breaker.
fn two_gates(redis: &RedisServer) -> (EndpointGate, EndpointGate) {
    let settings = IsolationSettings {
        rate_per_second: 1_000.0,
        burst: 1_000,
        max_in_flight: 10,
        breaker_cache: CACHE_TTL,
        concurrency_wait: Duration::ZERO,
        concurrency_retry: Duration::from_secs(1),
        idle_eviction: Duration::from_secs(60),
        shared_hosts: None,
        host_max_in_flight: 4,
        host_team_share: 0.5,
        breaker: policy(),
    };
    let (a, b) = two_links(redis);
    // Each alone as far as rate limits go: these gates are about the shared breaker.
    let workers = || Arc::new(AtomicU32::new(1));
    (
        EndpointGate::new(&settings, Some(a), workers()),
        EndpointGate::new(&settings, Some(b), workers()),
    )
}

fn destination() -> Destination {
    let spec: DestinationSpec = serde_json::from_value(serde_json::json!({
        "id": "flaky", "team_id": 1, "url": "https://flaky.example/hook",
    }))
    .expect("spec");
    spec.validate_one(&ValidationRules::default())
        .expect("valid")
}

fn waiter(workflow_id: &str, age_left_ms: u64) -> Option<Waiter<'_>> {
    Some(Waiter {
        workflow_id,
        age_left: Duration::from_millis(age_left_ms),
        after_breaker_wait: false,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_that_closes_a_breaker_wakes_the_parked_deliveries_but_not_itself() {
    let redis = RedisServer::start();
    let (a, b) = two_gates(&redis);
    let flaky = destination();
    for _ in 0..4 {
        let pass = a.enter(&flaky, None).await.expect("closed");
        let woken = a
            .leave(&flaky, pass, &AttemptReport::response(503, None, 5))
            .await;
        assert!(woken.is_empty());
    }
    let refused = |result: Result<_, hookflow_core::Deferral>| match result {
        Err(deferral) if deferral.reason == DeferralReason::BreakerOpen => deferral.wait_ms,
        Err(other) => panic!("deferred for {other:?}"),
        Ok(_) => panic!("let through an open breaker"),
    };
    // On b: the first refused for this probe time comes back to probe (1.5 s); one with
    // its whole age ahead parks for the longest cooldown (10 s); one with 5 s left parks
    // for two thirds of it less the 2 s margin.
    let probe_wait = refused(b.enter(&flaky, waiter("claims-probe", 120_000)).await);
    assert!(probe_wait <= 1_500, "{probe_wait}");
    assert_eq!(
        refused(b.enter(&flaky, waiter("parked-long", 120_000)).await),
        10_000
    );
    assert_eq!(
        refused(b.enter(&flaky, waiter("parked-short", 5_000)).await),
        2_000
    );

    // The short one's timer fires first (past the cooldown): it comes back, on a, as the
    // probe, and succeeds. It left the parked set as it came back: it must not be
    // signalled, it is in the workflow task that completes it.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let back = Waiter {
        after_breaker_wait: true,
        ..waiter("parked-short", 2_800).expect("waiter")
    };
    let pass = a.enter(&flaky, Some(back)).await.expect("the probe");
    let woken = a
        .leave(&flaky, pass, &AttemptReport::response(200, None, 5))
        .await;
    assert_eq!(
        woken,
        ["parked-long"],
        "the closer wakes the parked, not itself"
    );
}
