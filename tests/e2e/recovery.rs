//! Operator recovery on the real stack: `hookflow replay` of a time range of the events
//! topic into a destination added later (exactly the events its filter wants, once, and
//! nothing again on a second replay), re-running deliveries that gave up with
//! `--include-failed` (each once, the same webhook-id), and the admin API's bulk
//! redelivery, delivery history and replay jobs. A replay of 1,000 events leaves live
//! deliveries flowing, and one killed mid-range resumes where it stopped, through a frozen
//! broker, delivering each event once. A replay job outlives its admin process, and
//! recovery starts wait behind live ones in the task queue.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    admin::AdminApi,
    events, eventually,
    hookflow::Process,
    receiver::{Answer, Received},
    scenario::Scenario,
    stack::stack,
    temporal,
};
use serde_json::{Value, json};

/// Runs `hookflow replay ARGS --json` with the scenario's configuration (of its team unless
/// ARGS name one): its counts.
fn replay(s: &Scenario, args: &[&str]) -> Value {
    let team = s.team.to_string();
    let mut all = vec!["replay", "--json"];
    if !args.contains(&"--team") {
        all.extend(["--team", &team]);
    }
    all.extend(args);
    let (ok, output) = s.deployment.command(&all);
    assert!(ok, "replay failed: {output}");
    completed_counts(&output)
}

/// The counts of a replay that completed, from its `--json` output.
fn completed_counts(output: &str) -> Value {
    let last = output.lines().rev().find(|l| l.starts_with('{'));
    let summary: Value = serde_json::from_str(last.unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON summary ({e}) in: {output}"));
    assert_eq!(summary["end"], "completed", "{summary}");
    summary["counts"].clone()
}

/// Runs `hookflow replay ARGS --json` in the background, for the scenario's team.
fn start_replay(s: &Scenario, args: &[&str]) -> Process {
    let team = s.team.to_string();
    let mut all = vec!["replay", "--json", "--team", &team];
    all.extend(args);
    s.deployment.start_command(&all)
}

/// Waits for a background replay to exit successfully: its counts.
async fn finished(replay: &mut Process) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match replay.exited() {
            Some(true) => return completed_counts(&replay.output()),
            Some(false) => panic!("replay failed: {}", replay.output()),
            None if Instant::now() > deadline => panic!("replay still running after 180 s"),
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Starts (or resumes) a replay job through the admin API's `replays` collection, and
/// asserts that it runs.
async fn start_job(api: &AdminApi, replays: &str, body: Value) {
    let (status, view) = api.call("POST", replays, Some(body)).await;
    assert_eq!((status, &view["state"]), (202, &json!("running")), "{view}");
}

/// Waits up to `seconds` for the replay job at `path` to be in `state`: its view.
async fn job_in_state(api: &AdminApi, path: &str, state: &str, seconds: u64) -> Value {
    let what = format!("the replay job {state}");
    eventually(Duration::from_secs(seconds), &what, || async {
        let (status, view) = api.call("GET", path, None).await;
        assert_eq!(status, 200, "{view}");
        (view["state"] == state).then_some(view)
    })
    .await
}

/// Produces `n` events of action 2 ("Past") that no destination wants yet, then starts
/// hookflow and waits until its consumer is past them: one event of action 1 after them
/// is delivered to `live` (one partition, read in order). Their uuids.
async fn past_events(s: &Scenario, n: usize) -> (Vec<uuid::Uuid>, Process) {
    let past: Vec<(uuid::Uuid, Value)> = (0..n)
        .map(|_| events::event(s.team, &[(2, "Past")]))
        .collect();
    s.produce(&past.iter().map(|(_, e)| e).collect::<Vec<_>>())
        .await;
    let process = s.deployment.start();
    s.produce_events(1).await;
    eventually(
        Duration::from_secs(60),
        "the consumer past them",
        || async { (s.receiver.distinct_deliveries_on("live") == 1).then_some(()) },
    )
    .await;
    (past.into_iter().map(|(uuid, _)| uuid).collect(), process)
}

/// Adds destination `backfill` (action 2) and lets the running worker load it before
/// deliveries to it start.
async fn add_backfill(s: &mut Scenario) {
    s.destination("backfill", "backfill", "actions = [2]");
    s.deployment.write_destinations();
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Asserts that `backfill` received each of `uuids` exactly once.
async fn each_backfilled_once(s: &Scenario, uuids: &[uuid::Uuid]) {
    eventually(
        Duration::from_secs(120),
        "every replayed delivery",
        || async { (s.receiver.distinct_deliveries_on("backfill") == uuids.len()).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = s.receiver.received_on("backfill");
    assert_eq!(received.len(), uuids.len(), "nothing delivered twice");
    assert_eq!(webhook_ids(&received), delivery_ids("backfill", uuids));
}

/// The distinct `webhook-id`s of `received`.
fn webhook_ids(received: &[Received]) -> BTreeSet<String> {
    received
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

/// The delivery ids of `uuids` to `destination`.
fn delivery_ids(destination: &str, uuids: &[uuid::Uuid]) -> BTreeSet<String> {
    uuids.iter().map(|u| format!("{destination}:{u}")).collect()
}

/// The counts that matter here, in order: read, skipped, started, already started,
/// failed, re-run.
fn counts(c: &Value) -> [u64; 6] {
    [
        "read",
        "skipped",
        "started",
        "already_started",
        "failed",
        "rerun",
    ]
    .map(|k| c[k].as_u64().unwrap_or(u64::MAX))
}

fn since(start: chrono::DateTime<chrono::Utc>) -> String {
    (start - chrono::Duration::seconds(1)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_added_later_gets_exactly_its_events_replayed_once() {
    let mut s = Scenario::new().await;
    s.destination("old", "old", "");
    let start = chrono::Utc::now();
    let wanted = s.produce_events(30).await;
    let others: Vec<(uuid::Uuid, Value)> = (0..10)
        .map(|_| events::event(s.team, &[(2, "Other")]))
        .collect();
    s.produce(&others.iter().map(|(_, e)| e).collect::<Vec<_>>())
        .await;
    let process = s.deployment.start();
    eventually(Duration::from_secs(60), "live deliveries", || async {
        (s.receiver.distinct_deliveries_on("old") == 40).then_some(())
    })
    .await;

    // Added after the events: only action 1, which 30 of the 40 matched.
    s.destination("new", "new", "actions = [1]");
    s.deployment.write_destinations();
    let since = since(start);
    let dry = replay(
        &s,
        &["--destination", "new", "--since", &since, "--dry-run"],
    );
    assert_eq!(counts(&dry), [40, 10, 30, 0, 0, 0], "{dry}");
    let first = replay(&s, &["--destination", "new", "--since", &since]);
    assert_eq!(counts(&first), [40, 10, 30, 0, 0, 0], "{first}");

    let expected = delivery_ids("new", &wanted);
    eventually(
        Duration::from_secs(60),
        "the replayed deliveries",
        || async { (s.receiver.distinct_deliveries_on("new") == 30).then_some(()) },
    )
    .await;
    assert_eq!(webhook_ids(&s.receiver.received_on("new")), expected);

    let again = replay(&s, &["--destination", "new", "--since", &since]);
    assert_eq!(counts(&again), [40, 10, 0, 30, 0, 0], "{again}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.receiver.received_on("new").len(),
        30,
        "nothing delivered twice"
    );
    assert_eq!(
        s.receiver.received_on("old").len(),
        40,
        "live deliveries untouched"
    );
    drop(process);
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_that_gave_up_are_rerun_with_include_failed_each_once() {
    let mut s = Scenario::new().await;
    s.receiver.script("down", vec![Answer::Status(503, None)]);
    // Gives up within seconds; the breaker stays out of the way (an open breaker would make
    // the re-runs wait for its cooldown, past this maximum age).
    s.destination(
        "down",
        "down",
        "max_age_ms = 3000\nbreaker_min_attempts = 1000",
    );
    let start = chrono::Utc::now();
    let uuids = s.produce_events(5).await;
    let process = s.deployment.start();
    for uuid in &uuids {
        let result = temporal::result(&s.temporal, &format!("down:{uuid}")).await;
        assert_eq!(result.outcome, DeliveryOutcome::GaveUp);
    }
    let failed_requests = s.receiver.received_on("down").len();

    s.receiver.script("down", vec![Answer::Status(200, None)]);
    let since = since(start);
    let left = replay(&s, &["--destination", "down", "--since", &since]);
    let include_failed = [
        "--destination",
        "down",
        "--since",
        &since,
        "--include-failed",
    ];
    assert_eq!(counts(&left), [5, 0, 0, 0, 5, 0], "{left}");
    let rerun = replay(&s, &include_failed);
    assert_eq!(counts(&rerun), [5, 0, 0, 0, 0, 5], "{rerun}");

    for uuid in &uuids {
        let id = format!("down:{uuid}");
        let delivered = eventually(Duration::from_secs(60), "the re-run", || async {
            let runs = temporal::closed_runs(&s.temporal, &id).await;
            (runs.len() == 2).then_some(runs)
        })
        .await;
        assert_eq!(delivered.len(), 2, "{id}: the failed run and one re-run");
        assert_eq!(
            temporal::result(&s.temporal, &id).await.outcome,
            DeliveryOutcome::Delivered,
            "{id}"
        );
    }
    let successes = s.receiver.received_on("down").len() - failed_requests;
    assert_eq!(successes, 5, "each re-run delivered once");
    let ids = webhook_ids(&s.receiver.received_on("down")[failed_requests..]);
    let expected = delivery_ids("down", &uuids);
    assert_eq!(
        ids, expected,
        "the same webhook-ids as the failed deliveries"
    );

    let again = replay(&s, &include_failed);
    assert_eq!(counts(&again), [5, 0, 0, 5, 0, 0], "{again}");
    drop(process);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_deliveries_are_listed_by_outcome_and_redelivered_in_bulk_once() {
    let mut s = Scenario::new().await;
    let start = chrono::Utc::now();
    let (base, token) = s.deployment.admin_api();
    let process = s.deployment.start();
    let api = AdminApi::new(base, token);
    let collection = format!("/v1/teams/{}/destinations", s.team);
    api.wait_until_serving(&collection).await;
    s.receiver.script("bulk", vec![Answer::Status(503, None)]);
    let spec = json!({
        "id": "bulk", "url": s.receiver.url("bulk"), "max_age_ms": 3000,
        "breaker_min_attempts": 1000,
    });
    assert_eq!(api.call("POST", &collection, Some(spec)).await.0, 201);
    // Let the consumer see the new destination before its events arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let uuids = s.produce_events(4).await;
    for uuid in &uuids {
        let result = temporal::result(&s.temporal, &format!("bulk:{uuid}")).await;
        assert_eq!(result.outcome, DeliveryOutcome::GaveUp);
    }

    // The delivery history, filtered by outcome, two to a page.
    let deliveries = format!("{collection}/bulk/deliveries");
    let (pages, listed) = eventually(Duration::from_secs(20), "four listed", || async {
        let (mut pages, mut listed, mut token) = (0, Vec::new(), None::<String>);
        loop {
            let mut path = format!("{deliveries}?outcome=gave_up&limit=2");
            if let Some(t) = &token {
                path.push_str(&format!("&page_token={t}"));
            }
            let (status, page) = api.call("GET", &path, None).await;
            assert_eq!(status, 200, "{page}");
            pages += 1;
            listed.extend(page["deliveries"].as_array().cloned().unwrap_or_default());
            token = page["next_page_token"].as_str().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        (listed.len() == 4).then_some((pages, listed))
    })
    .await;
    assert!(pages >= 2, "two to a page: {pages} pages");
    for delivery in &listed {
        assert_eq!(delivery["outcome"], "gave_up", "{delivery}");
        assert_eq!(delivery["last_status"], 503, "{delivery}");
        assert!(delivery["attempts"].as_u64() >= Some(1), "{delivery}");
    }
    let (status, none) = api
        .call("GET", &format!("{deliveries}?outcome=delivered"), None)
        .await;
    assert_eq!(
        (status, none["deliveries"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, bad) = api
        .call("GET", &format!("{deliveries}?outcome=lost"), None)
        .await;
    assert_eq!((status, &bad["field"]), (400, &json!("outcome")), "{bad}");

    // Redelivered in bulk: a second identical request, while the first's re-runs are
    // pending (or once they delivered), starts nothing. The operator raised the maximum
    // age first: the re-runs retry under it, not under the one they gave up under.
    let failed_requests = s.receiver.received_on("bulk").len();
    s.receiver.script("bulk", vec![Answer::Status(200, None)]);
    let raised = json!({
        "id": "bulk", "url": s.receiver.url("bulk"), "max_age_ms": 600_000,
        "breaker_min_attempts": 1000,
    });
    let (status, updated) = api
        .call("PUT", &format!("{collection}/bulk"), Some(raised))
        .await;
    assert_eq!(status, 200, "{updated}");
    let redeliver = format!("{collection}/bulk/redeliver");
    let body = json!({"status": ["gave_up"]});
    let (status, first) = api.call("POST", &redeliver, Some(body.clone())).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (&first["matched"], &first["started"]),
        (&json!(4), &json!(4)),
        "{first}"
    );
    let (_, second) = api.call("POST", &redeliver, Some(body.clone())).await;
    assert_eq!(
        (&second["matched"], &second["started"]),
        (&json!(4), &json!(0)),
        "{second}"
    );
    assert_eq!(
        second["pending"].as_u64().unwrap_or(0) + second["not_failed"].as_u64().unwrap_or(0),
        4,
        "{second}"
    );
    for uuid in &uuids {
        let id = format!("bulk:{uuid}");
        eventually(Duration::from_secs(60), "the re-run", || async {
            (temporal::closed_runs(&s.temporal, &id).await.len() == 2).then_some(())
        })
        .await;
        let rerun = temporal::input(&s.temporal, &id).await;
        assert_eq!(rerun.retry.max_age_ms, 600_000, "{id}: planned again");
    }
    let (_, after) = api.call("POST", &redeliver, Some(body)).await;
    assert_eq!(
        (&after["started"], &after["not_failed"]),
        (&json!(0), &json!(4)),
        "{after}"
    );
    let successes = &s.receiver.received_on("bulk")[failed_requests..];
    assert_eq!(successes.len(), 4, "each delivered once");
    let ids: BTreeSet<&str> = successes.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 4);
    let (status, refused) = api
        .call("POST", &redeliver, Some(json!({"status": ["delivered"]})))
        .await;
    assert_eq!(
        (status, &refused["field"]),
        (400, &json!("status")),
        "{refused}"
    );

    // The same range replayed as a job: everything is delivered already.
    let replays = format!("/v1/teams/{}/replays", s.team);
    let job = json!({"id": "after-bulk", "destination_id": "bulk", "since": since(start)});
    start_job(&api, &replays, job).await;
    let done = job_in_state(&api, &format!("{replays}/after-bulk"), "completed", 30).await;
    assert_eq!(counts(&done["counts"]), [4, 0, 0, 4, 0, 0], "{done}");
    let (status, _) = api.call("GET", &format!("{replays}/nope"), None).await;
    assert_eq!(status, 404);
    let unknown = json!({"destination_id": "nope", "since": since(start)});
    let (status, bad) = api.call("POST", &replays, Some(unknown)).await;
    assert_eq!(
        (status, &bad["field"]),
        (400, &json!("destination_id")),
        "{bad}"
    );
    drop(process);
}

/// Whatever mix of single and bulk redeliveries an operator sends, one delivery has at most
/// one attempt chain: a redelivery of a running one is refused, a bulk one after a single
/// one re-runs it once; a run that timed out without an outcome is found by a bulk
/// redelivery; a disabled destination's deliveries are not redelivered until it is enabled.
#[tokio::test(flavor = "multi_thread")]
async fn one_delivery_has_one_attempt_chain_whatever_the_redeliveries() {
    use hookflow_core::{ActionMatchedEvent, DeliveryInput};
    use hookflow_temporal::workflow::DeliveryWorkflow;
    use temporalio_client::WorkflowStartOptions;

    let mut s = Scenario::new().await;
    let (base, token) = s.deployment.admin_api();
    let process = s.deployment.start();
    let api = AdminApi::new(base, token);
    let collection = format!("/v1/teams/{}/destinations", s.team);
    api.wait_until_serving(&collection).await;
    s.receiver.script("chain", vec![Answer::Status(503, None)]);
    let spec = json!({
        "id": "chain", "url": s.receiver.url("chain"), "max_age_ms": 3000,
        "breaker_min_attempts": 1000,
    });
    assert_eq!(
        api.call("POST", &collection, Some(spec.clone())).await.0,
        201
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let uuid = s.produce_events(1).await[0];
    let id = format!("chain:{uuid}");
    assert_eq!(
        temporal::result(&s.temporal, &id).await.outcome,
        DeliveryOutcome::GaveUp
    );

    // A single redelivery, and a second one while it runs: refused.
    let single = format!("{collection}/chain/deliveries/{uuid}/redeliver");
    let (status, body) = api.call("POST", &single, None).await;
    assert_eq!((status, &body["workflow_id"]), (202, &json!(id)), "{body}");
    let (status, body) = api.call("POST", &single, None).await;
    assert_eq!(status, 409, "{body}");
    let runs = eventually(Duration::from_secs(30), "the re-run to give up", || async {
        let runs = temporal::closed_runs(&s.temporal, &id).await;
        (runs.len() == 2).then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 2);

    // A run that timed out before it had an outcome (an execution timeout, say).
    let (timed_out_uuid, event) = events::event(s.team, &[(1, "Any")]);
    let event = ActionMatchedEvent::from_json(event.to_string().as_bytes()).expect("event");
    let input = DeliveryInput::new("chain", event.clone(), event.matched_actions.clone());
    let timed_out = input.delivery_id.to_string();
    let options = WorkflowStartOptions::new(s.deployment.task_queue.clone(), timed_out.clone())
        .execution_timeout(Duration::from_secs(1))
        .search_attributes(hookflow_temporal::search_attributes::for_delivery(
            &input, None,
        ))
        .build();
    s.temporal
        .start_workflow(DeliveryWorkflow::run, input, options)
        .await
        .expect("start");
    eventually(Duration::from_secs(30), "the run to time out", || async {
        let runs = temporal::runs(&s.temporal, &timed_out).await;
        runs.iter()
            .any(|r| r.status == temporalio_client::WorkflowExecutionStatus::TimedOut)
            .then_some(())
    })
    .await;

    // Bulk, after the single: each delivery re-run once.
    let bulk = format!("{collection}/chain/redeliver");
    let counted = eventually(Duration::from_secs(20), "both found", || async {
        let (status, counts) = api.call("POST", &bulk, Some(json!({}))).await;
        assert_eq!(status, 200, "{counts}");
        (counts["matched"] == 2).then_some(counts)
    })
    .await;
    assert_eq!(counted["started"], 2, "{counted}");
    for (delivery, runs) in [(&id, 3), (&timed_out, 2)] {
        eventually(Duration::from_secs(30), "the bulk re-runs", || async {
            (temporal::closed_runs(&s.temporal, delivery).await.len() == runs).then_some(())
        })
        .await;
    }
    let webhook_ids = webhook_ids(&s.receiver.received_on("chain"));
    assert_eq!(
        webhook_ids,
        BTreeSet::from([id.clone(), format!("chain:{timed_out_uuid}")])
    );

    // Disabled: neither redelivery goes out until it is enabled.
    let mut disabled = spec;
    disabled["state"] = json!("disabled");
    disabled["disabled_reason"] = json!("the team asked");
    let (status, body) = api
        .call("PUT", &format!("{collection}/chain"), Some(disabled))
        .await;
    assert_eq!(status, 200, "{body}");
    for (path, body) in [(&bulk, Some(json!({}))), (&single, None)] {
        let (status, answer) = api.call("POST", path, body).await;
        assert_eq!(status, 409, "{path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("disabled")),
            "{answer}"
        );
    }
    drop(process);
}

#[tokio::test(flavor = "multi_thread")]
async fn live_deliveries_keep_flowing_during_a_replay_of_1000_events() {
    let mut s = Scenario::with_partitions(1).await;
    s.destination("live", "live", "actions = [1]");
    let start = chrono::Utc::now();
    let (past, process) = past_events(&s, 1000).await;
    add_backfill(&mut s).await;
    let mut replay = start_replay(&s, &["--destination", "backfill", "--since", &since(start)]);
    eventually(Duration::from_secs(60), "the replay under way", || async {
        (s.receiver.distinct_deliveries_on("backfill") >= 50).then_some(())
    })
    .await;

    // Live events while it runs, one every 200 ms: each is delivered while the replay's
    // deliveries are still going, not after them.
    let mut live = Vec::new();
    for _ in 0..10 {
        live.extend(s.produce_events(1).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually(Duration::from_secs(60), "the live deliveries", || async {
        (s.receiver.distinct_deliveries_on("live") == 11).then_some(())
    })
    .await;
    let replayed_meanwhile = s.receiver.distinct_deliveries_on("backfill");
    assert!(
        replayed_meanwhile < 1000,
        "the live deliveries waited for the whole replay"
    );
    let live_ids = webhook_ids(&s.receiver.received_on("live"));
    for uuid in &live {
        assert!(live_ids.contains(&format!("live:{uuid}")), "live:{uuid}");
    }

    let counts = finished(&mut replay).await;
    assert_eq!(
        self::counts(&counts),
        [1001, 1, 1000, 0, 0, 0],
        "the 1,000 and the first live event (not the ones produced after the replay began \
         reading to the topic's end): {counts}"
    );
    each_backfilled_once(&s, &past).await;
    assert_eq!(s.receiver.received_on("live").len(), 11);
    drop(process);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_killed_mid_range_resumes_where_it_stopped_through_a_frozen_broker() {
    let (own, broker) = stack().with_own_broker();
    let mut s = Scenario::on(own, 1).await;
    s.destination("live", "live", "actions = [1]");
    let start = chrono::Utc::now();
    let (past, process) = past_events(&s, 200).await;
    add_backfill(&mut s).await;
    let since = since(start);
    let args = [
        "--destination",
        "backfill",
        "--since",
        &since,
        "--until",
        &chrono::Utc::now().to_rfc3339(),
        "--job",
        "resumed",
        "--max-starts-per-second",
        "20",
    ];

    // Killed after its first batch (64 messages) was committed.
    let mut first = start_replay(&s, &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.receiver.distinct_deliveries_on("backfill") < 80 {
        assert!(
            first.exited().is_none() && Instant::now() < deadline,
            "the first replay did not get past its first batch: {}",
            s.deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill_9();
    let before = s.receiver.distinct_deliveries_on("backfill");
    assert!(before < 200, "killed mid-range ({before} delivered)");

    // Run again under the same job: it reads on from its committed progress, and rides
    // out the broker frozen for 5 s.
    let mut second = start_replay(&s, &args);
    eventually(Duration::from_secs(60), "the resumed replay", || async {
        (s.receiver.distinct_deliveries_on("backfill") >= before + 10).then_some(())
    })
    .await;
    broker.freeze();
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.thaw();
    let counts = finished(&mut second).await;
    let [read, skipped, started, already_started, failed, rerun] = self::counts(&counts);
    assert!(
        read <= 201 - 64,
        "it resumed past the first committed batch: {counts}"
    );
    assert_eq!(
        (skipped, failed, rerun, started + already_started),
        (1, 0, 0, read - 1),
        "the live event at the end is skipped: {counts}"
    );
    each_backfilled_once(&s, &past).await;
    drop(process);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_reads_exactly_its_time_range_by_message_timestamp() {
    let mut s = Scenario::with_partitions(2).await;
    s.destination("live", "live", "");
    let mut marks = vec![chrono::Utc::now()];
    for n in [5, 4, 3] {
        s.produce_events(n).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        marks.push(chrono::Utc::now());
    }
    let rfc = |i: usize| marks[i].to_rfc3339();
    let dry_run = |since: String, until: Option<String>| {
        let mut args = vec!["--dry-run", "--destination", "live", "--since", &since];
        if let Some(until) = &until {
            args.extend(["--until", until]);
        }
        counts(&replay(&s, &args))[2]
    };
    // No hookflow runs: a dry run counts every pair of the range as one to start.
    assert_eq!(dry_run(rfc(1), Some(rfc(2))), 4, "the middle second");
    assert_eq!(dry_run(rfc(1), None), 7, "from the middle to the end");
    assert_eq!(dry_run(rfc(0), Some(rfc(1))), 5, "the first second");
    assert_eq!(dry_run(rfc(3), None), 0, "after the last event");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_up_to_now_reads_every_event_produced_in_batches() {
    // The embedded broker reports each partition's high watermark as its last batch's
    // first offset + 1: a replay that stopped there missed the rest of the batch.
    let mut s = Scenario::with_partitions(3).await;
    s.destination("live", "live", "actions = [1]");
    let start = chrono::Utc::now();
    let past: Vec<(uuid::Uuid, Value)> = (0..30)
        .map(|_| events::event(s.team, &[(2, "Past")]))
        .collect();
    s.produce_batched(&past).await;
    let process = s.deployment.start();
    let skipped = r#"hookflow_consumer_skipped_total{reason="no_matching_destination"}"#;
    process
        .wait_for_metric(skipped, 30.0, Duration::from_secs(60))
        .await;
    add_backfill(&mut s).await;

    let args = ["--destination", "backfill", "--since", &since(start)];
    let dry = replay(&s, &[&args[..], &["--dry-run"]].concat());
    assert_eq!(counts(&dry), [30, 0, 30, 0, 0, 0], "{dry}");
    let real = replay(&s, &args);
    assert_eq!(counts(&real), [30, 0, 30, 0, 0, 0], "{real}");
    let uuids: Vec<uuid::Uuid> = past.into_iter().map(|(uuid, _)| uuid).collect();
    each_backfilled_once(&s, &uuids).await;
    drop(process);
}

/// A job's progress is its team's: two teams' jobs of one id each read the whole range.
#[tokio::test(flavor = "multi_thread")]
async fn two_teams_jobs_of_one_id_keep_their_own_progress() {
    let mut s = Scenario::with_partitions(2).await;
    let other_team = hookflow_e2e::unique_team();
    let start = chrono::Utc::now();
    let mut expected = BTreeSet::new();
    for (team, destination) in [(s.team, "backfill-a"), (other_team, "backfill-b")] {
        let past: Vec<(uuid::Uuid, Value)> = (0..5)
            .map(|_| events::event(team, &[(2, "Past")]))
            .collect();
        s.produce(&past.iter().map(|(_, e)| e).collect::<Vec<_>>())
            .await;
        expected.extend(past.iter().map(|(uuid, _)| format!("{destination}:{uuid}")));
    }
    let url = s.receiver.url("backfill");
    s.deployment
        .destination("backfill-a", s.team, &url, "actions = [2]")
        .destination("backfill-b", other_team, &url, "actions = [2]");
    let process = s.deployment.start();
    let since = since(start);
    for team in [s.team, other_team] {
        let team = team.to_string();
        let args = ["--team", &team, "--since", &since, "--job", "backfill"];
        let counts = counts(&replay(&s, &args));
        assert_eq!(counts, [10, 5, 5, 0, 0, 0], "team {team}'s job");
    }
    eventually(
        Duration::from_secs(60),
        "both teams' deliveries",
        || async { (s.receiver.distinct_deliveries_on("backfill") == 10).then_some(()) },
    )
    .await;
    assert_eq!(webhook_ids(&s.receiver.received_on("backfill")), expected);
    drop(process);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_job_outlives_its_admin_process_and_resumes_once_started_again() {
    let mut s = Scenario::with_partitions(1).await;
    let start = chrono::Utc::now();
    let past: Vec<(uuid::Uuid, Value)> = (0..150)
        .map(|_| events::event(s.team, &[(2, "Past")]))
        .collect();
    s.produce(&past.iter().map(|(_, e)| e).collect::<Vec<_>>())
        .await;
    let (base, token) = s.deployment.admin_api();
    let mut process = s.deployment.start();
    let api = AdminApi::new(base, token);
    let collection = format!("/v1/teams/{}/destinations", s.team);
    api.wait_until_serving(&collection).await;
    // The consumer starts once the store has a destination; none wants the 150 yet.
    let live = json!({"id": "live", "url": s.receiver.url("live"), "actions": [1]});
    assert_eq!(api.call("POST", &collection, Some(live)).await.0, 201);
    let skipped = r#"hookflow_consumer_skipped_total{reason="no_matching_destination"}"#;
    process
        .wait_for_metric(skipped, 150.0, Duration::from_secs(60))
        .await;
    let spec = json!({"id": "backfill", "url": s.receiver.url("backfill"), "actions": [2]});
    assert_eq!(api.call("POST", &collection, Some(spec)).await.0, 201);

    let job = format!("/v1/teams/{}/replays/outlives", s.team);
    let body = json!({
        "id": "outlives", "destination_id": "backfill", "since": since(start),
        "max_starts_per_second": 10,
    });
    let replays = format!("/v1/teams/{}/replays", s.team);
    start_job(&api, &replays, body.clone()).await;
    eventually(Duration::from_secs(60), "the job under way", || async {
        (s.receiver.distinct_deliveries_on("backfill") >= 20).then_some(())
    })
    .await;

    // Its process dies: another one shows the job, interrupted once its record goes stale.
    process.kill_9();
    let process = s.deployment.start();
    api.wait_until_serving(&collection).await;
    let interrupted = job_in_state(&api, &job, "interrupted", 40).await;
    // Its record is refreshed every second: at 10 starts a second it lags by about 10.
    assert!(
        interrupted["counts"]["started"].as_u64() >= Some(10),
        "the progress recorded before its process died: {interrupted}"
    );

    // Started again under its id, it resumes; cancelled, it stops; started once more, it
    // completes, each event delivered once.
    start_job(&api, &replays, body.clone()).await;
    let (status, conflict) = api
        .call(
            "POST",
            &replays,
            Some(json!({"id": "outlives", "since": since(start)})),
        )
        .await;
    assert_eq!(
        (status, &conflict["field"]),
        (409, &json!("id")),
        "{conflict}"
    );
    let (status, _) = api.call("POST", &format!("{job}/cancel"), None).await;
    assert_eq!(status, 200);
    job_in_state(&api, &job, "cancelled", 20).await;
    let cancelled_at = s.receiver.distinct_deliveries_on("backfill");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        s.receiver.distinct_deliveries_on("backfill") <= cancelled_at + 16,
        "at most the starts in flight go on after a cancel"
    );
    start_job(&api, &replays, body).await;
    let done = job_in_state(&api, &job, "completed", 60).await;
    let past: Vec<uuid::Uuid> = past.into_iter().map(|(uuid, _)| uuid).collect();
    each_backfilled_once(&s, &past).await;

    // The completed job is still shown by a process started after it.
    drop(process);
    let process = s.deployment.start();
    api.wait_until_serving(&collection).await;
    let (status, shown) = api.call("GET", &job, None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        (&shown["state"], &shown["counts"]),
        (&json!("completed"), &done["counts"])
    );
    drop(process);
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_starts_wait_behind_live_starts_in_the_task_queue() {
    use hookflow_core::{ActionMatchedEvent, DeliveryInput, DeliveryScheduler};
    use hookflow_temporal::TemporalScheduler;

    let mut s = Scenario::new().await;
    s.destination("queued", "queued", "");
    let settings = temporal::settings(&s.stack.temporal, "default", &s.deployment.task_queue);
    let live = TemporalScheduler::new(s.temporal.clone(), &settings);
    let recovery = live.clone().for_recovery();
    let delivery = || {
        let (_, event) = events::event(s.team, &[(1, "Any")]);
        let event = ActionMatchedEvent::from_json(event.to_string().as_bytes()).expect("event");
        DeliveryInput::new("queued", event.clone(), event.matched_actions.clone())
    };
    // No worker polls yet: 20 recovery starts, then 20 live ones, wait in the queue.
    let mut recovered = BTreeSet::new();
    for _ in 0..20 {
        let input = delivery();
        recovery.schedule(&input).await.expect("recovery start");
        recovered.insert(input.delivery_id.to_string());
    }
    for _ in 0..20 {
        live.schedule(&delivery()).await.expect("live start");
    }

    let process = s.deployment.start();
    eventually(Duration::from_secs(60), "all 40 delivered", || async {
        (s.receiver.distinct_deliveries_on("queued") == 40).then_some(())
    })
    .await;
    // Where the live deliveries came in the order of receipt: first-in-first-out would put
    // them at 20 to 39 (on average 29.5), strict priority at 0 to 19 (9.5). The server
    // dispatches in close-to-priority order, and the worker runs tasks side by side: seen
    // here 9.8 to 12.5; the bound is halfway between the two orders.
    let order: String = s
        .receiver
        .received_on("queued")
        .iter()
        .map(|r| match recovered.contains(r.header("webhook-id")) {
            true => 'r',
            false => 'L',
        })
        .collect();
    let live_ranks: Vec<usize> = order.match_indices('L').map(|(i, _)| i).collect();
    let average = live_ranks.iter().sum::<usize>() as f64 / live_ranks.len() as f64;
    assert!(
        average < 19.5,
        "live deliveries came on average at {average:.1} (L: live, r: recovery): {order}"
    );
    drop(process);
}
