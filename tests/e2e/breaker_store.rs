//! The shared circuit breakers against a real Redis, as two workers use them: one worker's
//! trip is the other's refusal, exactly one probe goes out across both, and with Redis
//! down each falls back to a breaker of its own, then shares again once Redis is back.

use std::time::{Duration, Instant};

use hookflow_core::{
    EndpointKey,
    breaker::{Admission, BreakerPolicy},
};
use hookflow_e2e::{stack::RedisServer, unique};
use hookflow_http::{RedisLink, RedisSettings, isolation::SharedBreakers};

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

/// Two workers' breakers on one Redis (each with its own connection, as two processes).
fn two_workers(redis: &RedisServer) -> (SharedBreakers, SharedBreakers, RedisLink) {
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
    let (a, b) = (link(), link());
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
