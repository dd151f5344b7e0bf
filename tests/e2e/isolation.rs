//! Endpoint isolation with the real binary: a hanging endpoint's breaker opens and its
//! deliveries wait without requests while healthy ones flow; deliveries refused by an open
//! breaker are woken when a probe closes it; two workers share one
//! breaker; a rate limit holds in total across two workers; Redis can go away and come
//! back; 410 Gone disables a destination until an operator re-enables it.

use std::time::{Duration, Instant};

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    eventually,
    receiver::{Answer, Receiver},
    scenario::Scenario,
    stack::RedisServer,
    temporal,
};

const OPENED: &str = r#"hookflow_breaker_transitions_total{from="closed",to="open"}"#;
const DEFERRED_OPEN: &str = r#"hookflow_deferrals_total{reason="breaker_open"}"#;

/// A breaker that trips on 4 failures and stays open `cooldown_ms`.
fn breaker_config(cooldown_ms: u64) -> String {
    format!(
        "[isolation.breaker]\nwindow_ms = 30000\nmin_attempts = 4\nfailure_ratio = 0.5\n\
         cooldown_ms = {cooldown_ms}\nmax_cooldown_ms = {cooldown_ms}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_endpoint_is_fenced_off_by_its_breaker_while_others_flow() {
    let mut s = Scenario::new().await;
    let hanging = Receiver::start().await;
    hanging.script("hang", vec![Answer::Hang(Duration::from_secs(30))]);
    s.destination("healthy", "healthy", "");
    s.destination_on(&hanging, "hanging", "hang", "timeout_ms = 1000");
    s.deployment.config(&breaker_config(6_000));
    let uuids = s.produce_events(12).await;
    let process = s.deployment.start();

    eventually(
        Duration::from_secs(60),
        "every healthy delivery",
        || async { (s.receiver.received_on("healthy").len() >= 12).then_some(()) },
    )
    .await;
    assert_eq!(s.receiver.received_on("healthy").len(), 12, "exactly once");
    assert_eq!(s.receiver.distinct_deliveries_on("healthy"), 12);

    process
        .wait_for_metric(OPENED, 1.0, Duration::from_secs(30))
        .await;
    let opened_at = Instant::now();
    let requests_when_opened = hanging.received_on("hang").len();
    assert!(
        (4..=12).contains(&requests_when_opened),
        "at most the bulkhead's 10 at once plus ones deferred by it: {requests_when_opened}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        opened_at.elapsed() < Duration::from_secs(6),
        "still within the cooldown"
    );
    assert_eq!(
        hanging.received_on("hang").len(),
        requests_when_opened,
        "no request reaches the endpoint while its breaker is open"
    );
    assert!(process.metric(DEFERRED_OPEN).await >= 1.0);

    hanging.script("hang", vec![Answer::Status(200, None)]);
    for uuid in &uuids {
        let result = temporal::result(&s.temporal, &format!("hanging:{uuid}")).await;
        assert_eq!(result.outcome, DeliveryOutcome::Delivered, "hanging:{uuid}");
    }
    assert_eq!(hanging.distinct_deliveries_on("hang"), 12);
    assert!(
        process
            .metric(r#"hookflow_breaker_transitions_total{from="half_open",to="closed"}"#)
            .await
            >= 1.0,
        "a probe closed it"
    );
}

/// A delivery refused by an open breaker waits for it to close, not for each probe: one
/// refused delivery comes back at the probe time, and when its request succeeds its worker
/// signals the others, which deliver at once rather than after their own long timers.
#[tokio::test(flavor = "multi_thread")]
async fn deliveries_refused_by_an_open_breaker_are_woken_when_a_probe_closes_it() {
    use temporalio_common::protos::temporal::api::enums::v1::EventType;

    let mut s = Scenario::new().await;
    // Four failures trip the breaker; every request after them succeeds, the probe first.
    let mut answers = vec![Answer::Status(503, None); 4];
    answers.push(Answer::Status(200, None));
    s.receiver.script("flaky", answers);
    s.destination("flaky", "flaky", "");
    // The longest cooldown is far past the test: a waiter the probe's success did not wake
    // would wait two thirds of its 120 s maximum age.
    s.deployment.config(
        "[isolation.breaker]\nwindow_ms = 30000\nmin_attempts = 4\nfailure_ratio = 0.5\n\
         cooldown_ms = 4000\nmax_cooldown_ms = 600000\n",
    );
    let mut uuids = s.produce_events(4).await;
    let process = s.deployment.start();
    process
        .wait_for_metric(OPENED, 1.0, Duration::from_secs(60))
        .await;
    uuids.extend(s.produce_events(4).await);

    // Four failed requests and one successful request per delivery. (Counting distinct
    // webhook-ids instead would count a failed delivery before its successful request.)
    eventually(Duration::from_secs(40), "every delivery", || async {
        (s.receiver.received_on("flaky").len() >= 4 + 8).then_some(())
    })
    .await;
    assert_eq!(s.receiver.distinct_deliveries_on("flaky"), 8);
    assert_eq!(
        s.receiver.received_on("flaky").len(),
        4 + 8,
        "four failures, then one request per delivery: the probe's and the woken ones'"
    );
    let mut woken = 0;
    for uuid in &uuids {
        let id = format!("flaky:{uuid}");
        let result = temporal::result(&s.temporal, &id).await;
        assert_eq!(result.outcome, DeliveryOutcome::Delivered, "{id}");
        let types: Vec<EventType> = temporal::history(&s.temporal, &id)
            .await
            .iter()
            .map(|e| e.event_type())
            .collect();
        let signalled = types.contains(&EventType::WorkflowExecutionSignaled);
        assert_eq!(
            signalled,
            types.contains(&EventType::TimerCanceled),
            "{id}: a signal ends the wait early, cancelling its timer"
        );
        woken += usize::from(signalled);
    }
    assert_eq!(woken, 7, "every refused delivery but the probe was woken");
    assert_eq!(
        process
            .metric(r#"hookflow_breaker_wakeups_total{result="signalled"}"#)
            .await,
        7.0
    );
}

/// The consumer runs apart from the workers: a process that runs both starts its
/// deliveries eagerly on its own worker, and these tests need deliveries to reach a worker
/// that did not see the endpoint fail.
#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_one_breaker() {
    let mut s = Scenario::new().await;
    s.receiver
        .script("hang", vec![Answer::Hang(Duration::from_secs(30))]);
    s.destination("hanging", "hang", "timeout_ms = 1000");
    s.deployment.config(&breaker_config(20_000));
    s.produce_events(6).await;
    let _consumer = s.deployment.start_as("consumer");
    let mut first = s.deployment.start_as("worker");
    first
        .wait_for_metric(OPENED, 1.0, Duration::from_secs(60))
        .await;
    let opened_at = Instant::now();
    let requests_when_opened = s.receiver.received_on("hang").len();

    // Only the second worker is left to take the next deliveries (and the first ones'
    // next rounds): it learns of the open breaker from Redis alone.
    assert!(first.terminate(), "the first worker stops cleanly");
    let second = s.deployment.start_as("worker");
    s.produce_events(6).await;
    second
        .wait_for_metric(DEFERRED_OPEN, 1.0, Duration::from_secs(15))
        .await;
    // Read at once (an open breaker is named only within its cooldown): it names the
    // endpoint in the alert's series, open since the first worker's trip, which travels
    // with the shared state.
    let page = second.metrics_page().await;
    let since_trip = opened_at.elapsed().as_secs_f64();
    assert!(
        opened_at.elapsed() < Duration::from_secs(19),
        "still within the cooldown"
    );
    let open: Vec<&str> = page
        .lines()
        .filter(|line| line.starts_with("hookflow_breaker_open_seconds{"))
        .collect();
    let endpoint = format!("{} team={}", s.receiver.origin(), s.team);
    assert_eq!(open.len(), 1, "one open breaker named: {open:?}");
    let (series, seconds) = open[0].rsplit_once(' ').expect("a value");
    assert_eq!(
        series,
        format!(r#"hookflow_breaker_open_seconds{{endpoint_key="{endpoint}"}}"#)
    );
    let seconds: f64 = seconds.parse().expect("seconds");
    assert!(
        seconds >= since_trip - 1.0 && seconds <= since_trip + 5.0,
        "open {seconds} s, tripped {since_trip} s ago by the other worker"
    );
    assert_eq!(
        s.receiver.received_on("hang").len(),
        requests_when_opened,
        "neither worker sends a request while the shared breaker is open"
    );
    assert_eq!(
        second
            .metric(r#"hookflow_delivery_attempts_total{class="timeout"}"#)
            .await,
        0.0,
        "the second worker never attempted the endpoint the first one fenced off"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_holds_in_total_across_two_workers() {
    const EVENTS: usize = 40;
    let mut s = Scenario::new().await;
    s.destination("limited", "limited", "rate_per_second = 4.0\nburst = 8");
    // Apart from the workers, as above: its starts go through the task queue to either.
    let _consumer = s.deployment.start_as("consumer");
    let first = s.deployment.start_as("worker");
    let second = s.deployment.start_as("worker");
    for process in [&first, &second] {
        process
            .wait_for_metric("hookflow_workers_live", 2.0, Duration::from_secs(30))
            .await;
    }
    s.produce_events(EVENTS).await;
    eventually(Duration::from_secs(90), "every delivery", || async {
        (s.receiver.received_on("limited").len() >= EVENTS).then_some(())
    })
    .await;
    let arrivals: Vec<Instant> = s
        .receiver
        .received_on("limited")
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(arrivals.len(), EVENTS, "exactly once");
    // Each worker allows 2/s with a burst of 4, so any 3 s window holds at most
    // 2 × (4 + 2 × 3) = 20 requests: 4/s and the burst of 8, in total.
    let window = Duration::from_secs(3);
    let busiest = arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|t| **t >= *start && **t - *start < window)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest <= 20,
        "{busiest} requests within 3 s at 4/s, burst 8"
    );
    let span = arrivals[EVENTS - 1] - arrivals[0];
    assert!(
        span >= Duration::from_secs(7),
        "{EVENTS} at 4/s after a burst of 8 take at least 8 s: {span:?}"
    );
    for process in [&first, &second] {
        let delivered = process
            .metric(r#"hookflow_delivery_attempts_total{class="2xx"}"#)
            .await;
        assert!(
            delivered > 0.0,
            "both workers delivered, so both shares were used"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_continue_while_redis_is_down_and_sharing_resumes_after() {
    let redis = RedisServer::start();
    let mut s = Scenario::new().await;
    s.destination("steady", "steady", "");
    s.deployment.redis_url(&redis.url());
    let process = s.deployment.start();
    s.produce_events(3).await;
    let arrived = |n: usize| {
        let receiver = s.receiver.clone();
        async move {
            eventually(
                Duration::from_secs(60),
                &format!("{n} deliveries"),
                || async { (receiver.received_on("steady").len() >= n).then_some(()) },
            )
            .await;
        }
    };
    arrived(3).await;

    redis.stop();
    s.produce_events(3).await;
    arrived(6).await;
    eventually(
        Duration::from_secs(20),
        "the degradation to show",
        || async { (process.series("hookflow_redis_available").await == Some(0.0)).then_some(()) },
    )
    .await;

    redis.restart();
    eventually(
        Duration::from_secs(20),
        "redis to be used again",
        || async { (process.series("hookflow_redis_available").await == Some(1.0)).then_some(()) },
    )
    .await;
    s.produce_events(3).await;
    arrived(9).await;
    assert_eq!(s.receiver.distinct_deliveries_on("steady"), 9);
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let prefix = &s.deployment.redis_prefix;
    let workers: i64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}:workers:{}", s.deployment.task_queue))
        .query_async(&mut connection)
        .await
        .expect("zcard");
    assert_eq!(
        workers, 1,
        "the worker registered again in the restarted Redis"
    );
    let endpoint = format!("http://{} team={}", s.receiver.addr, s.team);
    let breaker: Option<String> =
        eventually(Duration::from_secs(10), "shared breaker state", || {
            let mut connection = connection.clone();
            let key = format!("{prefix}:breaker:{endpoint}");
            async move {
                let state: Option<String> = redis::cmd("HGET")
                    .arg(key)
                    .arg("s")
                    .query_async(&mut connection)
                    .await
                    .ok()?;
                state.map(Some)
            }
        })
        .await;
    assert!(
        breaker
            .as_deref()
            .is_some_and(|s| s.contains(r#""phase":"closed""#)),
        "{breaker:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_disables_the_destination_until_an_operator_enables_it() {
    let mut s = Scenario::new().await;
    s.receiver.script("gone", vec![Answer::Status(410, None)]);
    s.destination("gone", "gone", "");
    let _process = s.deployment.start();
    let first = s.produce_events(1).await;
    let result = temporal::result(&s.temporal, &format!("gone:{}", first[0])).await;
    assert_eq!(
        (result.outcome, result.last_status),
        (DeliveryOutcome::FailedPermanently, Some(410))
    );

    let second = s.produce_events(1).await;
    let result = temporal::result(&s.temporal, &format!("gone:{}", second[0])).await;
    assert_eq!(result.outcome, DeliveryOutcome::DestinationDisabled);
    assert_eq!(result.attempts, 0);
    assert!(
        result
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("410 Gone")),
        "{result:?}"
    );
    assert_eq!(
        s.receiver.received_on("gone").len(),
        1,
        "never attempted again"
    );
    let (ok, listed) = s.deployment.command(&["destinations", "disabled"]);
    assert!(
        ok && listed.starts_with(&format!("{}\tgone\t-\t", s.team)) && listed.contains("410 Gone"),
        "{listed}"
    );

    s.receiver.script("gone", vec![Answer::Status(200, None)]);
    let team = s.team.to_string();
    let (ok, said) = s
        .deployment
        .command(&["destinations", "enable", "--team", &team, "gone"]);
    assert!(ok, "{said}");
    assert_eq!(
        said.trim(),
        format!("team {team}'s gone enabled: its deliveries are attempted again")
    );
    // Workers re-read the registry every 2 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let third = s.produce_events(1).await;
    let result = temporal::result(&s.temporal, &format!("gone:{}", third[0])).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(s.receiver.received_on("gone").len(), 2);
}

/// The 410 block names the destination by team, id and uid: the same team's destination
/// deleted and created again under its id (a new uid) is delivered to.
#[tokio::test(flavor = "multi_thread")]
async fn a_410_disables_that_destination_only_not_a_recreated_one() {
    let mut s = Scenario::new().await;
    let (base, token) = s.deployment.admin_api();
    let _process = s.deployment.start();
    let api = hookflow_e2e::admin::AdminApi::new(base, token);
    let collection = format!("/v1/teams/{}/destinations", s.team);
    api.wait_until_serving(&collection).await;
    s.receiver.script("d-1", vec![Answer::Status(410, None)]);
    let spec = serde_json::json!({"id": "d-1", "url": s.receiver.url("d-1")});
    let (status, body) = api.call("POST", &collection, Some(spec.clone())).await;
    assert_eq!(status, 201, "{body}");
    // Let the consumer see it before the events arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivery = |uuid: uuid::Uuid| format!("d-1:{uuid}");
    let gone = temporal::result(&s.temporal, &delivery(s.produce_events(1).await[0])).await;
    assert_eq!(gone.last_status, Some(410));
    let blocked = temporal::result(&s.temporal, &delivery(s.produce_events(1).await[0])).await;
    assert_eq!(blocked.outcome, DeliveryOutcome::DestinationDisabled);

    let (status, _) = api.call("DELETE", &format!("{collection}/d-1"), None).await;
    assert_eq!(status, 204);
    s.receiver.script("d-1", vec![Answer::Status(200, None)]);
    let (status, body) = api.call("POST", &collection, Some(spec)).await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recreated = temporal::result(&s.temporal, &delivery(s.produce_events(1).await[0])).await;
    assert_eq!(
        recreated.outcome,
        DeliveryOutcome::Delivered,
        "{recreated:?}"
    );
    assert_eq!(
        s.receiver.received_on("d-1").len(),
        2,
        "the 410 and the new one"
    );
}

/// An attempt holds a place in two bulkheads (its endpoint's and its host's) and counts
/// once in flight.
#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_counts_once_in_flight() {
    let mut s = Scenario::new().await;
    s.receiver
        .script("hang", vec![Answer::Hang(Duration::from_secs(10))]);
    s.destination("hang", "hang", "timeout_ms = 8000");
    let process = s.deployment.start();
    s.produce_events(1).await;
    eventually(Duration::from_secs(60), "the attempt out", || async {
        (s.receiver.received_on("hang").len() == 1).then_some(())
    })
    .await;
    assert_eq!(process.metric("hookflow_attempts_in_flight").await, 1.0);
}
