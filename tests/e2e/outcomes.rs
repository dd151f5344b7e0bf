//! Per-team delivery outcomes on Kafka: one-second windows of successes, successes on
//! retry and failures by kind, summed across the summaries of one team.

use std::time::Duration;

use hookflow_e2e::{kafka, receiver::Answer, scenario::Scenario, temporal};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn outcomes_are_published_per_team_and_destination() {
    let mut s = Scenario::new().await;
    s.receiver.script("bad", vec![Answer::Status(400, None)]);
    s.receiver.script(
        "flaky",
        vec![Answer::Status(503, None), Answer::Status(200, None)],
    );
    s.destination("ok", "ok", "")
        .destination("bad", "bad", "")
        .destination("flaky", "flaky", "");
    let _process = s.deployment.start();

    // Per destination: [successes, successes_on_retry, failures], summed over windows.
    let expected = [("bad", [0, 0, 3]), ("flaky", [3, 1, 0]), ("ok", [3, 0, 0])];
    let (temporal, team) = (&s.temporal, s.team);
    let uuids = s.produce_events(3).await;
    for uuid in &uuids {
        for destination in ["ok", "bad", "flaky"] {
            temporal::result(temporal, &format!("{destination}:{uuid}")).await;
        }
    }
    // The last window closes within a second; a reader needs a few to join.
    let summaries: Vec<Value> = kafka::read_all(
        &s.stack.kafka,
        &s.deployment.outcomes_topic,
        Duration::from_secs(10),
    )
    .await
    .iter()
    .map(|m| serde_json::from_slice(&m.payload).expect("a JSON summary"))
    .collect();
    for (destination, counts) in expected {
        assert_eq!(
            totals(&summaries, destination),
            counts,
            "{destination}: {summaries:?}"
        );
    }
    for summary in &summaries {
        assert_eq!(summary["team_id"], team);
        assert_eq!(summary["version"], 1);
        assert!(summary["window_start"].as_str() < summary["window_end"].as_str());
    }
    let bad: Vec<&Value> = summaries
        .iter()
        .filter(|s| s["destination_id"] == "bad")
        .collect();
    let failures_4xx: u64 = bad
        .iter()
        .filter_map(|s| s["failures_by_kind"]["4xx"].as_u64())
        .sum();
    assert_eq!(failures_4xx, 3);
    assert!(bad.iter().all(|s| s["last_error"] == "HTTP 400"), "{bad:?}");
}

pub(crate) fn totals(summaries: &[Value], destination: &str) -> [u64; 3] {
    let mut totals = [0; 3];
    for s in summaries
        .iter()
        .filter(|s| s["destination_id"] == destination)
    {
        for (i, field) in ["successes", "successes_on_retry", "failures"]
            .iter()
            .enumerate()
        {
            totals[i] += s[*field].as_u64().unwrap_or(0);
        }
    }
    totals
}
