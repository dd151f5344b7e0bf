//! kill -9 in the middle of a stream, then a restart: every delivery arrives, none is lost,
//! and no (event, destination) pair has two workflows.

use std::{collections::BTreeSet, time::Duration};

use hookflow_e2e::{events, eventually, scenario::Scenario, temporal};

const EVENTS: usize = 30;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_process_loses_nothing_and_duplicates_nothing() {
    let mut s = Scenario::new().await;
    // Paced by the endpoint's rate limit, so the stream takes seconds and the kill lands in
    // it: unpaced, the fast path delivers all 30 before the first receipt is noticed.
    s.destination("crash", "crash", "rate_per_second = 5.0\nburst = 5");
    let events: Vec<_> = (0..EVENTS)
        .map(|_| events::event(s.team, &[(1, "Any")]))
        .collect();
    s.produce(&events.iter().map(|(_, e)| e).collect::<Vec<_>>())
        .await;
    let receiver = &s.receiver;

    let mut first = s.deployment.start();
    eventually(Duration::from_secs(60), "the first delivery", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    first.kill_9();
    let delivered_before = receiver.received().len();
    assert!(
        delivered_before < EVENTS,
        "the kill must land mid-stream ({delivered_before} delivered)"
    );

    let _second = s.deployment.start();
    let expected: BTreeSet<String> = events
        .iter()
        .map(|(uuid, _)| format!("crash:{uuid}"))
        .collect();
    receiver
        .wait_for_ids(&expected, Duration::from_secs(120))
        .await;
    let query = format!("HookflowTeamId = {}", s.team);
    assert_eq!(
        temporal::count(&s.temporal, &query).await,
        EVENTS,
        "one workflow per pair, none twice"
    );
}
