//! The destination catalog on a real PostgreSQL, under faults. Nothing is consumed before
//! it has loaded (PostgreSQL down at start: the event waits). Killed mid-stream, the last
//! good catalog keeps delivering and writes answer 503; back again, changes arrive. A Redis
//! flush loses and forgets nothing. A change reaches the other processes by its
//! notification. Migrations run twice run once. Two racing writes of one
//! destination never both win (If-Match). A row that cannot be read is refused alone, its
//! last good version delivering, also after a restart. Ids are per team: two teams' `d-1`
//! are two destinations, and one's 410 or limits never touch the other. Destinations are
//! imported from a file and from an earlier version's Redis store once, keeping their uids;
//! the catalog's key rotates without losing one.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    admin::AdminApi,
    eventually, free_port,
    hookflow::Process,
    receiver::Answer,
    scenario::Scenario,
    stack::{PostgresServer, RedisServer},
    temporal, unique_team,
};
use serde_json::{Value, json};

const NO_DESTINATIONS: &str = r#"hookflow_consumer_skipped_total{reason="no_destinations"}"#;

/// The API of the scenario's deployment, serving.
async fn api(s: &mut Scenario) -> (AdminApi, Process) {
    let (base, token) = s.deployment.admin_api();
    let process = s.deployment.start();
    let api = AdminApi::new(base, token);
    api.wait_until_serving(&collection(s.team)).await;
    (api, process)
}

/// A second process of the deployment, serving the admin API (as `api` does, with its
/// token) on a port of its own.
async fn second_api(s: &mut Scenario, api: &AdminApi) -> (AdminApi, Process) {
    let port = free_port();
    s.deployment
        .config(&format!("[admin]\naddress = \"127.0.0.1:{port}\""));
    let process = s.deployment.start_as("admin");
    let other = AdminApi::new(format!("http://127.0.0.1:{port}"), api.token.clone());
    other.wait_until_serving(&collection(s.team)).await;
    (other, process)
}

fn collection(team: i64) -> String {
    format!("/v1/teams/{team}/destinations")
}

/// Creates destination `id` of `team` at the receiver's `path`: its answer.
async fn create(api: &AdminApi, s: &Scenario, team: i64, id: &str, path: &str) -> Value {
    let spec = json!({"id": id, "url": s.receiver.url(path)});
    let (status, body) = api.call("POST", &collection(team), Some(spec)).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// Produces one event of `team` (action 1): its delivery id to `destination`.
async fn event(s: &Scenario, team: i64, destination: &str) -> String {
    let (uuid, event) = hookflow_e2e::events::event(team, &[(1, "Any")]);
    s.produce(&[&event]).await;
    format!("{destination}:{uuid}")
}

/// A destinations file of `text` to import (apart from the deployment's own, which every
/// command writes anew): its directory (kept while it lives) and path.
fn destinations_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("import.toml");
    std::fs::write(&path, text).expect("write");
    (dir, path.to_str().expect("utf-8").to_owned())
}

/// The catalog database's name, for SQL of the test's own.
fn database(s: &mut Scenario) -> String {
    let url = s.deployment.catalog_url();
    url.rsplit('/').next().expect("database").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_consumed_before_the_catalog_loads() {
    let mut s = Scenario::new().await;
    let postgres = PostgresServer::start();
    s.deployment.postgres(&postgres);
    s.deployment.catalog_url();
    let (_dir, file) = destinations_file(&format!(
        "[[destination]]\nid = \"kept\"\nteam_id = {}\nurl = \"{}\"\n",
        s.team,
        s.receiver.url("kept")
    ));
    let (ok, said) = s
        .deployment
        .command(&["destinations", "import", "--file", &file]);
    assert!(ok && said.contains("imported 1 destinations"), "{said}");

    postgres.kill_9();
    let process = s.deployment.start();
    let delivery = event(&s, s.team, "kept").await;
    let reason = eventually(
        Duration::from_secs(60),
        "readiness to name the catalog",
        || async {
            let (status, body) = process.probe("/_readiness").await?;
            let reason = body["components"]["destinations"]["reason"]
                .as_str()?
                .to_owned();
            (status == 503 && reason.contains("catalog is not loaded yet")).then_some(reason)
        },
    )
    .await;
    assert!(!reason.contains("hookflow@"), "no credentials in: {reason}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        process.metric(NO_DESTINATIONS).await,
        0.0,
        "nothing skipped"
    );
    assert!(s.receiver.received().is_empty(), "nothing consumed");

    postgres.restart();
    let result = temporal::result(&s.temporal, &delivery).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(s.receiver.received_on("kept").len(), 1);
    assert_eq!(process.metric(NO_DESTINATIONS).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_good_catalog_delivers_while_postgres_is_down_and_changes_arrive_after() {
    let mut s = Scenario::new().await;
    let postgres = PostgresServer::start();
    s.deployment.postgres(&postgres);
    let (api, process) = api(&mut s).await;
    create(&api, &s, s.team, "d-1", "d-1").await;
    let (other_api, other) = second_api(&mut s, &api).await;

    postgres.kill_9();
    let killed = std::time::Instant::now();
    eventually(Duration::from_secs(30), "the catalog seen down", || async {
        (process.series("hookflow_destination_catalog_up").await == Some(0.0)).then_some(())
    })
    .await;
    let delivered = temporal::result(&s.temporal, &event(&s, s.team, "d-1").await).await;
    assert_eq!(
        delivered.outcome,
        DeliveryOutcome::Delivered,
        "the catalog in memory delivers"
    );
    let spec = json!({"id": "d-2", "url": s.receiver.url("d-2")});
    let (status, refused) = api.call("POST", &collection(s.team), Some(spec)).await;
    assert_eq!(status, 503, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("PostgreSQL")),
        "{refused}"
    );
    let (status, _) = process.probe("/_readiness").await.expect("readiness");
    assert_eq!(
        status, 200,
        "still ready: delivering with the catalog it has"
    );
    // Its change feed goes on trying, and says so to liveness: a restart would not bring
    // PostgreSQL back, and would lose the catalog in memory that delivers meanwhile.
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(killed.elapsed())).await;
    let (status, liveness) = process.probe("/_liveness").await.expect("liveness");
    let since_beat = liveness["components"]["destinations"]["since_beat_ms"]
        .as_u64()
        .expect("the catalog reports to liveness");
    assert!(
        status == 200 && since_beat < 10_000,
        "the catalog's loop reported {since_beat} ms ago, 15 s into the outage: {liveness}"
    );

    postgres.restart();
    // The other process writes; this one's listener reconnects and the change arrives.
    eventually(
        Duration::from_secs(30),
        "the other process to write",
        || async {
            let spec = json!({"id": "d-2", "url": s.receiver.url("d-2")});
            let (status, _) = other_api
                .call("POST", &collection(s.team), Some(spec))
                .await;
            (status == 201).then_some(())
        },
    )
    .await;
    process
        .wait_for_metric("hookflow_destinations_loaded", 2.0, Duration::from_secs(10))
        .await;
    let arrived = event(&s, s.team, "d-2").await;
    assert_eq!(
        temporal::result(&s.temporal, &arrived).await.outcome,
        DeliveryOutcome::Delivered
    );
    assert_eq!(
        process.series("hookflow_destination_catalog_up").await,
        Some(1.0)
    );
    drop(other);
}

/// A change reaches the other processes by its notification, not by the catch-up
/// interval (ten minutes here).
#[tokio::test(flavor = "multi_thread")]
async fn a_change_reaches_another_process_by_its_notification() {
    let mut s = Scenario::new().await;
    s.deployment
        .config("[destinations.postgres]\ncatch_up_interval_ms = 600000");
    let (api, process) = api(&mut s).await;
    let (other_api, _other) = second_api(&mut s, &api).await;
    let database = database(&mut s);
    eventually(
        Duration::from_secs(30),
        "both processes listening",
        || async {
            let listening = s.stack.postgres.sql(
                &database,
                "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN %'",
            );
            (listening == "2").then_some(())
        },
    )
    .await;

    create(&other_api, &s, s.team, "notified", "notified").await;
    process
        .wait_for_metric(
            r#"hookflow_destination_changes_total{result="applied"}"#,
            1.0,
            Duration::from_secs(5),
        )
        .await;
    let result = temporal::result(&s.temporal, &event(&s, s.team, "notified").await).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(s.receiver.received_on("notified").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_flush_mid_stream_loses_and_forgets_nothing() {
    let mut s = Scenario::new().await;
    let redis = RedisServer::start();
    s.deployment.redis_url(&redis.url());
    s.receiver
        .script("steady", vec![Answer::Hang(Duration::from_millis(300))]);
    let (api, process) = api(&mut s).await;
    create(&api, &s, s.team, "steady", "steady").await;
    let mut deliveries = Vec::new();
    for _ in 0..5 {
        deliveries.push(event(&s, s.team, "steady").await);
    }
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "FLUSHALL"])
        .output()
        .expect("redis-cli");
    assert!(out.status.success());
    for _ in 0..5 {
        deliveries.push(event(&s, s.team, "steady").await);
    }
    for delivery in &deliveries {
        let result = temporal::result(&s.temporal, delivery).await;
        assert_eq!(result.outcome, DeliveryOutcome::Delivered, "{delivery}");
    }
    assert_eq!(s.receiver.distinct_deliveries_on("steady"), 10);
    let (status, listed) = api.call("GET", &collection(s.team), None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["destinations"][0]["id"], "steady", "{listed}");
    assert_eq!(process.metric(NO_DESTINATIONS).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_run_twice_or_by_racing_processes_run_once() {
    let mut s = Scenario::new().await;
    let database = database(&mut s);
    let migrated = |s: &Scenario| {
        s.stack.postgres.sql(
            &database,
            "SELECT count(*) FROM pg_tables WHERE tablename = '_sqlx_migrations'",
        )
    };
    assert_eq!(migrated(&s), "0", "a fresh database");
    // Two processes start together on it: each runs the migrations at start-up.
    let (_, token) = s.deployment.admin_api();
    let (port_a, port_b) = (free_port(), free_port());
    s.deployment
        .config(&format!("[admin]\naddress = \"127.0.0.1:{port_a}\""));
    let first = s.deployment.start_as("admin");
    s.deployment
        .config(&format!("[admin]\naddress = \"127.0.0.1:{port_b}\""));
    let second = s.deployment.start_as("admin");
    for port in [port_a, port_b] {
        let api = AdminApi::new(format!("http://127.0.0.1:{port}"), token.clone());
        api.wait_until_serving(&collection(s.team)).await;
    }
    let applied = || {
        s.stack.postgres.sql(
            &database,
            "SELECT count(*) FROM _sqlx_migrations WHERE success",
        )
    };
    let migrations = std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/hookflow/migrations"),
    )
    .expect("migrations")
    .filter(|entry| {
        entry
            .as_ref()
            .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
    })
    .count()
    .to_string();
    assert_eq!(applied(), migrations);
    // Neither lost a race and retried: PostgreSQL's advisory lock made the second wait.
    assert!(
        !s.deployment
            .logs()
            .contains("destination catalog unreachable"),
        "{}",
        s.deployment.logs()
    );
    for _ in 0..2 {
        let (ok, said) = s.deployment.command(&["migrate"]);
        assert!(ok && said.contains("up to date"), "{said}");
    }
    assert_eq!(applied(), migrations);
    drop((first, second));

    // A later version migrated the database (a rollback, or a rollout half done): this
    // version still starts on it.
    s.stack.postgres.sql(
        &database,
        "INSERT INTO _sqlx_migrations \
           (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'a later version', true, '\\x00', 1)",
    );
    let (ok, said) = s.deployment.command(&["migrate"]);
    assert!(ok, "a later version's migration is no error: {said}");
    let (base, token) = s.deployment.admin_api();
    s.deployment.reset_config();
    let _process = s.deployment.start();
    AdminApi::new(base, token)
        .wait_until_serving(&collection(s.team))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_racing_writes_of_one_destination_never_both_win() {
    let mut s = Scenario::new().await;
    let (api, _process) = api(&mut s).await;
    let created = create(&api, &s, s.team, "raced", "raced").await;
    assert_eq!(created["version"], 1);
    let one = format!("{}/raced", collection(s.team));
    let etag = etag_of(&api, &one).await;
    assert_eq!(etag, "\"1\"");

    let put = |name: &'static str| {
        let (api, one, etag) = (&api, &one, etag.clone());
        let mut spec = created.clone();
        spec["name"] = json!(name);
        async move { put_if_match(api, one, &etag, spec).await }
    };
    let (a, b) = tokio::join!(put("first"), put("second"));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "{a:?} {b:?}");
    let winner = if a.0 == 200 { &a.1 } else { &b.1 };
    let (_, now) = api.call("GET", &one, None).await;
    assert_eq!(
        (&now["name"], &now["version"]),
        (&winner["name"], &json!(2))
    );
    assert_eq!(etag_of(&api, &one).await, "\"2\"");

    // A stale delete is refused too; a fresh one goes.
    let stale = delete_if_match(&api, &one, "\"1\"").await;
    assert_eq!(stale, 412);
    assert_eq!(delete_if_match(&api, &one, "\"2\"").await, 204);
    assert_eq!(api.call("GET", &one, None).await.0, 404);
}

async fn etag_of(api: &AdminApi, path: &str) -> String {
    let response = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("answer");
    response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("an ETag")
        .to_owned()
}

async fn put_if_match(api: &AdminApi, path: &str, etag: &str, body: Value) -> (u16, Value) {
    let response = api
        .http
        .put(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .header("if-match", etag)
        .json(&body)
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn delete_if_match(api: &AdminApi, path: &str, etag: &str) -> u16 {
    api.http
        .delete(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .header("if-match", etag)
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

/// Writes a new version of team `team`'s row `id` as a newer hookflow would (a field this
/// one does not know), through the catalog's own sequence and notification.
fn write_unreadable_version(s: &Scenario, database: &str, team: i64, id: &str) {
    s.stack.postgres.sql(
        database,
        &format!(
            "WITH seq AS (UPDATE hookflow_catalog_sequence SET seq = seq + 1 RETURNING seq) \
             UPDATE hookflow_destinations SET previous_spec = spec, \
               previous_sealed = sealed, previous_version = version, \
               spec = spec || '{{\"delivery_window\": \"9-17\"}}', version = version + 1, \
               change_seq = (SELECT seq FROM seq), updated_at = now() \
             WHERE team_id = {team} AND id = '{id}'; \
             SELECT pg_notify('hookflow_destinations', 'x')"
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_row_is_refused_alone_and_its_last_good_version_delivers() {
    const REFUSED: &str = r#"hookflow_destination_rows_refused{in_use="last_good"}"#;
    let mut s = Scenario::new().await;
    let other_team = unique_team();
    let database = database(&mut s);
    let (api, mut process) = api(&mut s).await;
    create(&api, &s, s.team, "d-1", "a-1").await;
    create(&api, &s, s.team, "d-2", "a-2").await;
    create(&api, &s, other_team, "d-1", "b-1").await;

    write_unreadable_version(&s, &database, s.team, "d-1");
    process
        .wait_for_metric(REFUSED, 1.0, Duration::from_secs(10))
        .await;
    // One event of each team: ours goes to both of its destinations.
    let ours = event(&s, s.team, "d-1").await;
    let theirs = event(&s, other_team, "d-1").await;
    for delivery in [&ours, &ours.replace("d-1:", "d-2:"), &theirs] {
        let result = temporal::result(&s.temporal, delivery).await;
        assert_eq!(result.outcome, DeliveryOutcome::Delivered, "{delivery}");
    }
    for path in ["a-1", "a-2", "b-1"] {
        assert_eq!(s.receiver.received_on(path).len(), 1, "{path}");
    }
    assert!(
        s.deployment
            .logs()
            .contains("its last good version stays in use"),
        "logged"
    );

    // After a restart, the version the row kept from before delivers.
    process.kill_9();
    let process = s.deployment.start();
    api.wait_until_serving(&collection(s.team)).await;
    process
        .wait_for_metric(REFUSED, 1.0, Duration::from_secs(30))
        .await;
    let result = temporal::result(&s.temporal, &event(&s, s.team, "d-1").await).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(s.receiver.received_on("a-1").len(), 2);

    // A row with no readable version at all receives nothing; its team's others deliver.
    s.stack.postgres.sql(
        &database,
        &format!(
            "WITH seq AS (UPDATE hookflow_catalog_sequence SET seq = seq + 1 RETURNING seq) \
             INSERT INTO hookflow_destinations (team_id, id, uid, version, change_seq, spec, sealed) \
             SELECT {}, 'd-3', gen_random_uuid(), 1, seq, '{{\"id\": \"d-3\"}}', '\\x00' FROM seq; \
             SELECT pg_notify('hookflow_destinations', 'x')",
            s.team
        ),
    );
    process
        .wait_for_metric(
            r#"hookflow_destination_rows_refused{in_use="none"}"#,
            1.0,
            Duration::from_secs(10),
        )
        .await;
    let result = temporal::result(&s.temporal, &event(&s, s.team, "d-2").await).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_copied_onto_another_teams_row_do_not_open_there() {
    const REFUSED: &str = r#"hookflow_destination_rows_refused{in_use="last_good"}"#;
    let mut s = Scenario::new().await;
    let other_team = unique_team();
    let database = database(&mut s);
    s.deployment
        .config("[destinations.postgres.encryption]\nbind_rows = true");
    let (api, process) = api(&mut s).await;
    create(&api, &s, s.team, "d-1", "ours").await;
    create(&api, &s, other_team, "d-1", "theirs").await;
    // Someone who can write to the database, not holding the key, copies our sealed URL
    // (and secrets) onto the other team's row of the same id.
    s.stack.postgres.sql(
        &database,
        &format!(
            "WITH seq AS (UPDATE hookflow_catalog_sequence SET seq = seq + 1 RETURNING seq) \
             UPDATE hookflow_destinations SET sealed = (SELECT sealed FROM \
               hookflow_destinations WHERE team_id = {ours} AND id = 'd-1'), \
               version = version + 1, change_seq = (SELECT seq FROM seq), updated_at = now() \
             WHERE team_id = {other_team} AND id = 'd-1'; \
             SELECT pg_notify('hookflow_destinations', 'x')",
            ours = s.team
        ),
    );
    // The copy does not open there: refused, the version it replaced stays in use.
    process
        .wait_for_metric(REFUSED, 1.0, Duration::from_secs(10))
        .await;
    let theirs = event(&s, other_team, "d-1").await;
    let result = temporal::result(&s.temporal, &theirs).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(s.receiver.received_on("theirs").len(), 1);
    assert_eq!(
        s.receiver.received_on("ours").len(),
        0,
        "the other team's event never reached our endpoint"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_are_per_team_and_one_teams_410_or_limits_never_touch_another() {
    let mut s = Scenario::new().await;
    let other_team = unique_team();
    s.receiver.script("a", vec![Answer::Status(410, None)]);
    let (api, _process) = api(&mut s).await;
    let ours = create(&api, &s, s.team, "d-1", "a").await;
    // The other team's endpoint is another host (the receiver's port), until below.
    let elsewhere = hookflow_e2e::receiver::Receiver::start().await;
    let spec = json!({"id": "d-1", "url": elsewhere.url("b")});
    let (status, theirs) = api.call("POST", &collection(other_team), Some(spec)).await;
    assert_eq!(status, 201, "{theirs}");
    assert_ne!(ours["uid"], theirs["uid"], "two destinations");

    let gone = temporal::result(&s.temporal, &event(&s, s.team, "d-1").await).await;
    assert_eq!(gone.last_status, Some(410));
    let blocked = temporal::result(&s.temporal, &event(&s, s.team, "d-1").await).await;
    assert_eq!(blocked.outcome, DeliveryOutcome::DestinationDisabled);
    let other = temporal::result(&s.temporal, &event(&s, other_team, "d-1").await).await;
    assert_eq!(other.outcome, DeliveryOutcome::Delivered, "{other:?}");
    assert_eq!(elsewhere.received_on("b").len(), 1);

    // Limits on one endpoint agree within a team; another team's own endpoint on the same
    // host is free to differ, and an answer never names the other team's destination.
    let limited = json!({"id": "d-2", "url": s.receiver.url("a"), "rate_per_second": 5.0});
    let (status, refused) = api
        .call("POST", &collection(s.team), Some(limited.clone()))
        .await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("d-1") && message.contains("d-2"),
        "{message}"
    );
    assert!(!message.contains(&other_team.to_string()), "{message}");
    let (status, body) = api
        .call("POST", &collection(other_team), Some(limited))
        .await;
    assert_eq!(status, 201, "another team's endpoint: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn destinations_are_imported_once_from_a_file_and_an_earlier_redis_store() {
    let mut s = Scenario::new().await;
    let (_, _token) = s.deployment.admin_api();
    let uid = "0190f3a4-0000-7000-8000-00000000abcd";
    let legacy = json!({
        "id": "legacy", "team_id": s.team, "uid": uid, "url": s.receiver.url("legacy"),
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    });
    let prefix = &s.deployment.redis_prefix;
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &s.stack.redis.port.to_string(), "HSET"])
        .arg(format!("{prefix}:destinations"))
        .args(["legacy", &legacy.to_string(), "#version", "7"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{out:?}");
    let redis_url = s.stack.redis.url();
    let (_dir, file) = destinations_file(&format!(
        "[[destination]]\nid = \"filed\"\nteam_id = {}\nurl = \"{}\"\n",
        s.team,
        s.receiver.url("filed")
    ));
    let import = |args: Vec<String>| {
        let mut all = vec!["destinations".to_owned(), "import".to_owned()];
        all.extend(args);
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        s.deployment.command(&args)
    };
    let from_redis = || {
        vec![
            "--redis-url".to_owned(),
            redis_url.clone(),
            "--redis-prefix".to_owned(),
            prefix.clone(),
        ]
    };
    let (ok, said) = import(from_redis());
    assert!(
        ok && said.contains("imported 1 destinations; 0 existed"),
        "{said}"
    );
    let (ok, said) = import(vec!["--file".into(), file.clone()]);
    assert!(
        ok && said.contains("imported 1 destinations; 0 existed"),
        "{said}"
    );
    let (ok, said) = import(from_redis());
    assert!(
        ok && said.contains("imported 0 destinations; 1 existed"),
        "{said}"
    );

    let (api, _process) = api(&mut s).await;
    let (status, shown) = api
        .call("GET", &format!("{}/legacy", collection(s.team)), None)
        .await;
    assert_eq!(
        (status, &shown["uid"]),
        (200, &json!(uid)),
        "the uid is kept"
    );
    assert_eq!(shown["secret"], "<redacted>");
    for id in ["legacy", "filed"] {
        let result = temporal::result(&s.temporal, &event(&s, s.team, id).await).await;
        assert_eq!(result.outcome, DeliveryOutcome::Delivered, "{id}");
    }

    // Deleted from the catalog since, it is not imported again (with its old uid).
    let legacy_path = format!("{}/legacy", collection(s.team));
    assert_eq!(api.call("DELETE", &legacy_path, None).await.0, 204);
    let prefix = s.deployment.redis_prefix.clone();
    let import_redis = |prefix: &str| {
        s.deployment.command(&[
            "destinations",
            "import",
            "--redis-url",
            &redis_url,
            "--redis-prefix",
            prefix,
        ])
    };
    let (ok, said) = import_redis(&prefix);
    assert!(
        ok && said.contains(
            "imported 0 destinations; 0 existed already and were left as they were; 1 were deleted"
        ),
        "{said}"
    );
    assert_eq!(api.call("GET", &legacy_path, None).await.0, 404);

    // A uid that is another destination's, or no uid at all, is refused with its reason.
    let (_, filed) = api
        .call("GET", &format!("{}/filed", collection(s.team)), None)
        .await;
    let filed_uid = filed["uid"].as_str().expect("uid").to_owned();
    for (suffix, uid, reason) in [
        ("taken", filed_uid.as_str(), "is another destination's"),
        ("garbled", "not-a-uuid", "is not a UUID"),
    ] {
        let spec = json!({
            "id": "moved", "team_id": unique_team(), "uid": uid, "url": s.receiver.url("moved"),
        });
        let hash = format!("{prefix}-{suffix}");
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &s.stack.redis.port.to_string(), "HSET"])
            .arg(format!("{hash}:destinations"))
            .args(["moved", &spec.to_string()])
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "{out:?}");
        let (ok, said) = import_redis(&hash);
        assert!(!ok && said.contains(reason), "{suffix}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_key_rotates_without_losing_a_destination() {
    let mut s = Scenario::new().await;
    let (api, mut process) = api(&mut s).await;
    create(&api, &s, s.team, "rotated", "rotated").await;
    process.kill_9();

    // A new key, made current; the old one still there to read what it sealed.
    let new_key = "bmV3LWtleS1vZi10aGlydHktdHdvLWJ5dGVzLS0tLS0=";
    s.deployment.config(&format!(
        "[destinations.postgres.encryption]\ncurrent_key = \"k2\"\nkeys = {{ k2 = \"{new_key}\" }}"
    ));
    let (ok, said) = s.deployment.command(&["destinations", "reseal"]);
    assert!(
        ok && said.starts_with("1 destinations sealed again"),
        "{said}"
    );
    let (ok, said) = s.deployment.command(&["destinations", "reseal"]);
    assert!(
        ok && said.starts_with("0 destinations sealed again"),
        "{said}"
    );

    // The old key gone (another key under its id): everything still opens.
    s.deployment.config(
        "[destinations.postgres.encryption]\n\
         keys = { test = \"b3RoZXIta2V5LW9mLXRoaXJ0eS10d28tYnl0ZXMtLS0=\" }",
    );
    let process = s.deployment.start();
    api.wait_until_serving(&collection(s.team)).await;
    let result = temporal::result(&s.temporal, &event(&s, s.team, "rotated").await).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    assert_eq!(
        process
            .metric(r#"hookflow_destination_rows_refused{in_use="none"}"#)
            .await,
        0.0
    );
    drop(process);

    // A process whose ring lacks the key the rows are sealed with (a rollout that forgot
    // it) stays unready and consumes nothing, rather than skip their events for good.
    s.deployment.reset_config();
    let lacking = s.deployment.start();
    eventually(
        Duration::from_secs(30),
        "unready for want of k2",
        || async {
            let (status, body) = lacking.probe("/_readiness").await?;
            let reason = body["components"]["destinations"]["reason"].as_str()?;
            (status == 503 && reason.contains("keys this process lacks (k2)")).then_some(())
        },
    )
    .await;
    // Past the session timeout of the process killed before, whose partitions would
    // otherwise still be its own.
    let waiting = event(&s, s.team, "rotated").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        lacking.metric(NO_DESTINATIONS).await,
        0.0,
        "nothing skipped"
    );
    assert_eq!(
        s.receiver.received_on("rotated").len(),
        1,
        "{waiting} waits"
    );
    assert!(
        s.deployment
            .logs()
            .contains("destination catalog not loaded"),
        "said why"
    );
    drop(lacking);

    // Nor does one that holds other material under the key's id (a mistyped Secret): not
    // one row sealed with that key opens with it.
    s.deployment.config(&format!(
        "[destinations.postgres.encryption]\ncurrent_key = \"k2\"\n\
         keys = {{ k2 = \"{}\" }}",
        "b3RoZXIta2V5LW9mLXRoaXJ0eS10d28tYnl0ZXMtLS0="
    ));
    let mistyped = s.deployment.start();
    eventually(Duration::from_secs(30), "unready for its k2", || async {
        let (status, body) = mistyped.probe("/_readiness").await?;
        let reason = body["components"]["destinations"]["reason"].as_str()?;
        (status == 503
            && reason.contains("keys open none of the destinations sealed with them (k2)"))
        .then_some(())
    })
    .await;
}
