//! Operator recovery on the real stack: `hookflow replay` of a time range of the events
//! topic into a destination added later (exactly the events its filter wants, once, and
//! nothing again on a second replay), re-running deliveries that gave up with
//! `--include-failed` (each once, the same webhook-id), and the admin API's bulk
//! redelivery, delivery history and replay jobs.

use std::{collections::BTreeSet, time::Duration};

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    admin::AdminApi, events, eventually, receiver::Answer, scenario::Scenario, temporal,
};
use serde_json::{Value, json};

/// Runs `hookflow replay ARGS --json` with the scenario's configuration: its counts.
fn replay(s: &Scenario, args: &[&str]) -> Value {
    let mut all = vec!["replay", "--json"];
    all.extend(args);
    let (ok, output) = s.deployment.command(&all);
    assert!(ok, "replay failed: {output}");
    let last = output.lines().rev().find(|l| l.starts_with('{'));
    let summary: Value = serde_json::from_str(last.unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON summary ({e}) in: {output}"));
    assert_eq!(summary["end"], "completed", "{summary}");
    summary["counts"].clone()
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

    let expected: BTreeSet<String> = wanted.iter().map(|u| format!("new:{u}")).collect();
    eventually(
        Duration::from_secs(60),
        "the replayed deliveries",
        || async { (s.receiver.distinct_deliveries_on("new") == 30).then_some(()) },
    )
    .await;
    let received: BTreeSet<String> = s
        .receiver
        .received_on("new")
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(received, expected);

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
    let ids: BTreeSet<String> = s.receiver.received_on("down")[failed_requests..]
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    let expected: BTreeSet<String> = uuids.iter().map(|u| format!("down:{u}")).collect();
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
    // pending (or once they delivered), starts nothing.
    let failed_requests = s.receiver.received_on("bulk").len();
    s.receiver.script("bulk", vec![Answer::Status(200, None)]);
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
    let (status, started) = api.call("POST", &replays, Some(job)).await;
    assert_eq!(
        (status, &started["state"]),
        (202, &json!("running")),
        "{started}"
    );
    let done = eventually(Duration::from_secs(30), "the job to complete", || async {
        let (_, job) = api
            .call("GET", &format!("{replays}/after-bulk"), None)
            .await;
        (job["state"] == "completed").then_some(job)
    })
    .await;
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
