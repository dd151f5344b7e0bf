//! The SSRF guard on a real delivery: a destination whose name resolves to loopback, without
//! an allow-list entry for that name, is refused permanently and never contacted.

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{events, scenario::Scenario, temporal};

#[tokio::test(flavor = "multi_thread")]
async fn a_private_destination_without_allow_list_entry_is_refused_and_never_contacted() {
    let mut s = Scenario::new().await;
    // 127.0.0.1 is allow-listed, "localhost" is not: the guard must check what the name
    // resolves to, not the name. (https, since plain http is refused at load for hosts
    // that are not allow-listed; the guard stops the request before any TLS.)
    let url = format!("https://localhost:{}/private", s.receiver.addr.port());
    let team = s.team;
    s.deployment
        .allowed_hosts(&["127.0.0.1"])
        .destination("private", team, &url, "");
    let (uuid, event) = events::event(team, &[(1, "Any")]);
    s.produce(&[&event]).await;
    let _process = s.deployment.start();

    let result = temporal::result(&s.temporal, &format!("private:{uuid}")).await;
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
        s.receiver.received().is_empty(),
        "the endpoint must never be contacted"
    );
}
