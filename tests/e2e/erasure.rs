//! Erasing one person's deliveries of one team, through the admin API and the CLI: their
//! deliveries still going are cancelled and every run of theirs is deleted from Temporal,
//! found by a keyed hash that never is the distinct id (under the current key or a
//! previous one, after a rotation); another person's deliveries and another team's
//! deliveries of the same distinct id stay; a team token cannot erase.

use std::time::Duration;

use base64::Engine;
use hookflow_core::{DeliveryOutcome, person::PersonKey};
use hookflow_e2e::{
    admin::AdminApi, events, eventually, receiver::Answer, scenario::Scenario, temporal,
    unique_team,
};
use hookflow_temporal::recovery::Latest;
use serde_json::{Value, json};

/// An event of `team` matching action 1, of the person `distinct_id`.
fn event_of(team: i64, distinct_id: &str) -> (uuid::Uuid, Value) {
    let (uuid, mut event) = events::event(team, &[(1, "Any")]);
    event["distinct_id"] = json!(distinct_id);
    (uuid, event)
}

/// Whether Temporal still has delivery `id` (asked of the run itself, not of the
/// eventually consistent visibility).
async fn exists(s: &Scenario, id: &str) -> bool {
    let latest = hookflow_temporal::recovery::latest(&s.temporal, id).await;
    !matches!(latest.expect("a describe"), Latest::None)
}

/// Waits until Temporal has deleted delivery `id` (it deletes in the background).
async fn deleted(s: &Scenario, id: &str) {
    let what = format!("{id} deleted");
    eventually(Duration::from_secs(90), &what, || async {
        (!exists(s, id).await).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_persons_deliveries_of_one_team_are_cancelled_and_deleted() {
    let mut s = Scenario::new().await;
    let (base, operator) = s.deployment.admin_api();
    let person_key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let token_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    s.deployment.config(&format!(
        "[temporal]\nperson_hash_key = \"{person_key}\"\n\
         [admin.team_tokens]\ncurrent_key = \"t1\"\nkeys = {{ t1 = \"{token_key}\" }}"
    ));
    let _process = s.deployment.start();
    let api = AdminApi::new(base, operator);
    let (a, b) = (s.team, unique_team());
    api.wait_until_serving(&format!("/v1/teams/{a}/destinations"))
        .await;
    // `ok` answers; `down` answers 503 and retries in ten minutes: its deliveries stay
    // going for the whole test.
    s.receiver
        .script(&format!("{a}-down"), vec![Answer::Status(503, None)]);
    for (team, id, extra) in [
        (a, "ok", json!({})),
        (
            a,
            "down",
            json!({"retry_schedule_ms": [600000], "max_age_ms": 3600000}),
        ),
        (b, "ok", json!({})),
    ] {
        let mut spec = json!({"id": id, "url": s.receiver.url(&format!("{team}-{id}"))});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let (status, body) = api
            .call(
                "POST",
                &format!("/v1/teams/{team}/destinations"),
                Some(spec),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    let alice = "alice@example.com";
    let events = [
        event_of(a, alice),
        event_of(a, alice),
        event_of(a, "bob"),
        event_of(b, alice),
    ];
    s.produce(&events.iter().map(|(_, e)| e).collect::<Vec<_>>())
        .await;
    let [(alice_1, _), (alice_2, _), (bob, _), (alice_b, _)] = &events;
    for uuid in [alice_1, alice_2, bob, alice_b] {
        let result = temporal::result(&s.temporal, &format!("ok:{uuid}")).await;
        assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    }
    // Each of team A's `down` deliveries has made its first attempt and waits a minute.
    for uuid in [alice_1, alice_2, bob] {
        let id = format!("down:{uuid}");
        eventually(Duration::from_secs(30), "a first attempt", || async {
            (s.receiver
                .received_on(&format!("{a}-down"))
                .iter()
                .any(|r| r.header("webhook-id") == id))
            .then_some(())
        })
        .await;
    }

    // Alice's deliveries carry her hash (the one the test computes with the key); the
    // distinct id itself is no attribute's value.
    let hash = PersonKey::from_base64(&person_key)
        .expect("key")
        .hash(a, alice);
    let hers = format!("HookflowTeamId = {a} AND HookflowPersonHash = '{hash}'");
    eventually(Duration::from_secs(30), "her deliveries listed", || async {
        (temporal::count(&s.temporal, &hers).await == 4).then_some(())
    })
    .await;
    let by_id = format!("HookflowPersonHash = '{alice}'");
    assert_eq!(temporal::count(&s.temporal, &by_id).await, 0);

    // A team token may not erase, even its own team's person.
    let (status, minted) = api
        .call(
            "POST",
            &format!("/v1/teams/{a}/tokens"),
            Some(json!({"access": "read_write"})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let team_token = minted["token"].as_str().expect("token").to_owned();
    let erasures = format!("/v1/teams/{a}/erasures");
    let (status, refused) = api
        .call_with(
            "POST",
            &erasures,
            Some(json!({"distinct_id": alice})),
            Some(&team_token),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert!(exists(&s, &format!("ok:{alice_1}")).await);

    // The operator erases Alice of team A: her running deliveries are cancelled, her ended
    // ones deleted, and nothing else.
    let (status, report) = api
        .call("POST", &erasures, Some(json!({"distinct_id": alice})))
        .await;
    assert_eq!(status, 200, "{report}");
    let mut expected = vec![
        format!("down:{alice_1}"),
        format!("down:{alice_2}"),
        format!("ok:{alice_1}"),
        format!("ok:{alice_2}"),
    ];
    expected.sort();
    assert_eq!(
        report,
        json!({"team_id": a, "cancelled": 2, "deleted": 2, "runs": 4, "deliveries": expected,
               "failed": []})
    );
    assert!(!report.to_string().contains("alice"));
    for id in [format!("ok:{bob}"), format!("down:{bob}")] {
        assert!(exists(&s, &id).await, "{id} stays");
    }

    // The key is rotated (the old one kept as previous): the CLI, with the rotated
    // configuration, still finds Bob's deliveries, made under the old key, and erases them.
    let rotated = base64::engine::general_purpose::STANDARD.encode([10u8; 32]);
    s.deployment.config(&format!(
        "[temporal]\nperson_hash_key = \"{rotated}\"\nperson_hash_previous_keys = [\"{person_key}\"]"
    ));
    let (ok, said) =
        s.deployment
            .command(&["erase", "--team", &a.to_string(), "--distinct-id", "bob"]);
    assert!(ok, "{said}");
    let report = &said[said.find('{').expect("a JSON report")..];
    let printed: Value = serde_json::from_str(report).expect("a JSON report");
    assert_eq!(
        (&printed["cancelled"], &printed["deleted"]),
        (&json!(1), &json!(1)),
        "{said}"
    );

    // Temporal deletes in the background: a run still going at once, an ended one after
    // its next timer-queue pass (about 35 s on the dev server).
    for id in expected
        .iter()
        .cloned()
        .chain([format!("ok:{bob}"), format!("down:{bob}")])
    {
        deleted(&s, &id).await;
    }
    assert!(
        exists(&s, &format!("ok:{alice_b}")).await,
        "team B's Alice stays"
    );
    // Erasing again finds nothing more, once visibility has caught up.
    eventually(
        Duration::from_secs(30),
        "an empty second erasure",
        || async {
            let (status, again) = api
                .call("POST", &erasures, Some(json!({"distinct_id": alice})))
                .await;
            (status == 200 && again["runs"] == 0).then_some(())
        },
    )
    .await;
}
