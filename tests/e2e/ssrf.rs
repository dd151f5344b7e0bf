//! The SSRF guard on a real delivery: a destination whose name resolves to loopback, without
//! an allow-list entry for that name, is refused permanently and never contacted.

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    events, hookflow::Deployment, kafka, receiver::Receiver, stack::stack, temporal, unique_team,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_private_destination_without_allow_list_entry_is_refused_and_never_contacted() {
    let stack = stack();
    let temporal = temporal::client(&stack.temporal).await;
    let receiver = Receiver::start().await;
    let team = unique_team();
    let mut deployment = Deployment::new(stack);
    // 127.0.0.1 is allow-listed, "localhost" is not: the guard must check what the name
    // resolves to, not the name.
    deployment.allowed_hosts(&["127.0.0.1"]).destination(
        "private",
        team,
        &format!("http://localhost:{}/private", receiver.addr.port()),
        "",
    );
    let (uuid, event) = events::event(team, &[(1, "Any")]);
    kafka::produce(
        &stack.kafka,
        &deployment.topic,
        &[event.to_string().into_bytes()],
    )
    .await;
    let _process = deployment.start();

    let result = temporal::result(&temporal, &format!("private:{uuid}")).await;
    assert_eq!(
        (result.outcome, result.attempts, result.last_status),
        (DeliveryOutcome::FailedPermanently, 1, None)
    );
    let error = result.last_error.expect("a reason");
    assert!(
        error.starts_with(
            "blocked: localhost resolves only to addresses hookflow does not connect to"
        ),
        "{error}"
    );
    assert!(
        receiver.received().is_empty(),
        "the endpoint must never be contacted"
    );
}
