//! The admin API with the real binary and the Redis store: bearer-token auth; create, read,
//! list, pause, resume and delete; field errors, 404 and 409; a destination created through
//! the API receives deliveries; its deliveries are listed and looked up through Temporal
//! visibility; a test send; pausing holds deliveries and cancel-pending ends them; erasure
//! refused while it is off.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{admin::AdminApi, eventually, scenario::Scenario, temporal};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn destinations_are_managed_through_the_api() {
    let mut s = Scenario::new().await;
    let (base, token) = s.deployment.admin_api();
    let process = s.deployment.start();
    let api = AdminApi::new(base, token);
    let team = s.team;
    let collection = format!("/v1/teams/{team}/destinations");
    api.wait_until_serving(&collection).await;

    assert_eq!(api.call_with("GET", &collection, None, None).await.0, 401);
    assert_eq!(
        api.call_with("GET", &collection, None, Some("wrong-token-xxxxxxxx"))
            .await
            .0,
        401
    );

    let spec = json!({
        "id": "api-1",
        "url": s.receiver.url("api"),
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    });
    let (status, created) = api.call("POST", &collection, Some(spec.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["secret"], "<redacted>");
    assert_eq!(created["team_id"], team);
    let (status, conflict) = api.call("POST", &collection, Some(spec)).await;
    assert_eq!(
        (status, &conflict["field"]),
        (409, &json!("id")),
        "{conflict}"
    );
    let (status, invalid) = api
        .call(
            "POST",
            &collection,
            Some(json!({"id": "x", "url": "ftp://a.example"})),
        )
        .await;
    assert_eq!(
        (status, &invalid["field"]),
        (400, &json!("url")),
        "{invalid}"
    );
    let (status, _) = api
        .call("POST", &collection, Some(json!("not an object")))
        .await;
    assert_eq!(status, 400);
    // Erasure is off without a person-hash key: refused, saying what to set.
    let erasures = format!("/v1/teams/{team}/erasures");
    let (status, off) = api
        .call("POST", &erasures, Some(json!({"distinct_id": "alice"})))
        .await;
    assert_eq!(status, 403, "{off}");
    assert!(
        off["error"]
            .as_str()
            .is_some_and(|e| e.contains("temporal.person_hash_key")),
        "{off}"
    );
    let (status, _) = api.call("GET", &format!("{collection}/nope"), None).await;
    assert_eq!(status, 404);
    let (status, listed) = api.call("GET", &collection, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["destinations"].as_array().map(Vec::len), Some(1));

    let first = s.produce_events(1).await[0];
    let result = temporal::result(&s.temporal, &format!("api-1:{first}")).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);

    // Deliveries through visibility: the list, and one by event uuid with its result.
    let listed = eventually(
        Duration::from_secs(20),
        "the delivery in visibility",
        || async {
            let (_, body) = api
                .call("GET", &format!("{collection}/api-1/deliveries"), None)
                .await;
            let first_listed = body["deliveries"].get(0)?.clone();
            (first_listed["outcome"] == "delivered").then_some(first_listed)
        },
    )
    .await;
    assert_eq!(listed["delivery_id"], format!("api-1:{first}"));
    assert_eq!(listed["status"], "completed");
    let (status, one) = api
        .call(
            "GET",
            &format!("{collection}/api-1/deliveries/{first}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&one["result"]["outcome"], &one["result"]["attempts"]),
        (&json!("delivered"), &json!(1))
    );
    let (status, _) = api
        .call(
            "GET",
            &format!("{collection}/api-1/deliveries/not-a-uuid"),
            None,
        )
        .await;
    assert_eq!(status, 400);

    // A redelivery is a new attempt chain with the same webhook-id.
    let (status, redelivery) = api
        .call(
            "POST",
            &format!("{collection}/api-1/deliveries/{first}/redeliver"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{redelivery}");
    let workflow_id = format!("api-1:{first}");
    assert_eq!(
        redelivery["workflow_id"],
        workflow_id.as_str(),
        "the same id"
    );
    // Visibility shows the new run a little after it starts.
    eventually(
        Duration::from_secs(30),
        "a new run of the same delivery",
        || async {
            (temporal::closed_runs(&s.temporal, &workflow_id).await.len() == 2).then_some(())
        },
    )
    .await;
    let again = temporal::result(&s.temporal, &workflow_id).await;
    assert_eq!(again.outcome, DeliveryOutcome::Delivered);
    let requests = s.receiver.received_on("api");
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = api
        .call(
            "POST",
            &format!("{collection}/api-1/deliveries/{unknown}/redeliver"),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // A test send goes out at once, signed, and says what happened.
    let (status, tested) = api
        .call("POST", &format!("{collection}/api-1/test"), None)
        .await;
    assert_eq!(
        (status, &tested["delivered"], &tested["status"]),
        (200, &json!(true), &json!(200)),
        "{tested}"
    );
    let test_request = s
        .receiver
        .received_on("api")
        .pop()
        .expect("the test request");
    assert_eq!(
        test_request.header("webhook-id"),
        tested["webhook_id"].as_str().unwrap_or_default()
    );
    assert!(test_request.header("webhook-signature").starts_with("v1,"));

    // Paused: deliveries wait; cancelling the pending ones ends them as cancelled.
    let (status, paused) = api
        .call("POST", &format!("{collection}/api-1/pause"), None)
        .await;
    assert_eq!((status, &paused["state"]), (200, &json!("paused")));
    let second = s.produce_events(1).await[0];
    process
        .wait_for_metric(
            r#"hookflow_deferrals_total{reason="paused"}"#,
            1.0,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        s.receiver.received_on("api").len(),
        3,
        "nothing while paused"
    );
    let stopped = eventually(
        Duration::from_secs(20),
        "the pending delivery to be cancelled",
        || async {
            let (_, body) = api
                .call("POST", &format!("{collection}/api-1/cancel-pending"), None)
                .await;
            body["stopped"].as_u64().filter(|n| *n > 0)
        },
    )
    .await;
    assert_eq!(stopped, 1);
    let cancelled = temporal::result(&s.temporal, &format!("api-1:{second}")).await;
    assert_eq!(
        (cancelled.outcome, cancelled.attempts),
        (DeliveryOutcome::Cancelled, 0)
    );

    // Terminating the pending ones stops them at once.
    let paused_so_far = process
        .metric(r#"hookflow_deferrals_total{reason="paused"}"#)
        .await;
    let terminated_uuid = s.produce_events(1).await[0];
    process
        .wait_for_metric(
            r#"hookflow_deferrals_total{reason="paused"}"#,
            paused_so_far + 1.0,
            Duration::from_secs(30),
        )
        .await;
    // Visibility indexes a new workflow within moments: ask until it sees it.
    let stopped = eventually(
        Duration::from_secs(20),
        "the pending delivery to be terminated",
        || async {
            let (_, body) = api
                .call(
                    "POST",
                    &format!("{collection}/api-1/terminate-pending"),
                    None,
                )
                .await;
            body["stopped"].as_u64().filter(|n| *n > 0)
        },
    )
    .await;
    assert_eq!(stopped, 1);
    let terminated = eventually(
        Duration::from_secs(20),
        "the terminated delivery",
        || async {
            let (_, view) = api
                .call(
                    "GET",
                    &format!("{collection}/api-1/deliveries/{terminated_uuid}"),
                    None,
                )
                .await;
            (view["status"] == "terminated").then_some(view)
        },
    )
    .await;
    assert_eq!(
        terminated["delivery_id"],
        format!("api-1:{terminated_uuid}")
    );

    // Resumed: new deliveries go out.
    let (status, _) = api
        .call("POST", &format!("{collection}/api-1/resume"), None)
        .await;
    assert_eq!(status, 200);
    let third = s.produce_events(1).await[0];
    let result = temporal::result(&s.temporal, &format!("api-1:{third}")).await;
    assert_eq!(
        (result.outcome, result.attempts),
        (DeliveryOutcome::Delivered, 1)
    );

    let (status, _) = api
        .call("DELETE", &format!("{collection}/api-1"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api.call("GET", &format!("{collection}/api-1"), None).await;
    assert_eq!(status, 404);
}
