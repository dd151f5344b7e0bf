//! Mutual TLS against a real HTTPS receiver that requires a client certificate from its
//! own authority, with certificates made in the test: each destination presents its own
//! certificate (two teams' destinations of one id each their own), trusts only the
//! authority it names (another's server certificate is a retried connection failure), a
//! certificate the receiver refuses ends the delivery at once
//! (final, not retried), a rotated certificate is used from the next delivery on, no key
//! reaches the logs, and `check-config` refuses an expired certificate.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    events, eventually,
    scenario::Scenario,
    temporal,
    tls::{Authority, Issued, TlsReceiver, der_of},
    unique_team,
};

/// The TOML of a destination's TLS fields.
fn tls_fields(client: &Issued, server_authority: &Authority) -> String {
    format!(
        "client_certificate = '''\n{}'''\nclient_key = '''\n{}'''\nca_certificates = '''\n{}'''\n",
        client.certificate,
        client.key,
        server_authority.pem()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_destination_presents_its_own_certificate_and_a_refused_one_is_final() {
    let server_authority = Authority::new("hookflow test servers");
    let client_authority = Authority::new("hookflow test clients");
    let rogue_authority = Authority::new("someone else");
    let receiver =
        TlsReceiver::start(&server_authority.issue(&["127.0.0.1"]), &client_authority).await;
    let team_a_client = client_authority.issue(&["team-a.client.test"]);
    let team_b_client = client_authority.issue(&["team-b.client.test"]);
    let rogue_client = rogue_authority.issue(&["rogue.client.test"]);

    let mut s = Scenario::new().await;
    let team_b = unique_team();
    let with = |client: &Issued| tls_fields(client, &server_authority);
    s.deployment
        .destination("mtls", s.team, &receiver.url("a"), &with(&team_a_client))
        .destination("mtls", team_b, &receiver.url("b"), &with(&team_b_client))
        .destination(
            "rogue",
            s.team,
            &receiver.url("rogue"),
            &format!("{}retry_schedule_ms = [200]", with(&rogue_client)),
        )
        // Trusts another authority than the one the receiver's certificate is from.
        .destination(
            "untrusting",
            s.team,
            &receiver.url("untrusting"),
            &format!(
                "{}retry_schedule_ms = [200]\nmax_age_ms = 1500",
                tls_fields(&team_a_client, &rogue_authority)
            ),
        );
    let process = s.deployment.start();

    let (first_a, event_a) = events::event(s.team, &[(1, "Any")]);
    let (first_b, event_b) = events::event(team_b, &[(1, "Any")]);
    s.produce(&[&event_a, &event_b]).await;
    for uuid in [first_a, first_b] {
        let result = temporal::result(&s.temporal, &format!("mtls:{uuid}")).await;
        assert_eq!(
            (result.outcome, result.attempts),
            (DeliveryOutcome::Delivered, 1)
        );
    }
    for (path, client, uuid) in [
        ("a", &team_a_client, first_a),
        ("b", &team_b_client, first_b),
    ] {
        let received = receiver.received_on(path);
        assert_eq!(received.len(), 1, "{path}");
        assert_eq!(received[0].client_certificate, der_of(&client.certificate));
        assert_eq!(received[0].webhook_id, format!("mtls:{uuid}"));
    }

    // The receiver refuses the rogue certificate: final at the first attempt, never retried.
    let rogue = temporal::result(&s.temporal, &format!("rogue:{first_a}")).await;
    assert_eq!(
        (rogue.outcome, rogue.attempts),
        (DeliveryOutcome::FailedPermanently, 1),
        "{rogue:?}"
    );
    let error = rogue.last_error.unwrap_or_default();
    assert!(
        error.starts_with("tls: the endpoint refused the TLS client certificate"),
        "{error}"
    );
    assert!(receiver.received_on("rogue").is_empty());
    // The server's certificate is checked against the destination's authorities only: a
    // connection failure, retried (it may be the server's misconfiguration of the moment).
    let untrusting = temporal::result(&s.temporal, &format!("untrusting:{first_a}")).await;
    assert_eq!(
        untrusting.outcome,
        DeliveryOutcome::GaveUp,
        "{untrusting:?}"
    );
    assert!(untrusting.attempts >= 2, "{untrusting:?}");
    let error = untrusting.last_error.unwrap_or_default();
    assert!(
        error.starts_with("connect: ") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(receiver.received_on("untrusting").is_empty());
    assert!(receiver.refused_handshakes() >= 1);
    assert_eq!(
        process
            .metric(r#"hookflow_delivery_attempts_total{class="tls"}"#)
            .await,
        1.0
    );

    // Team A rotates its certificate: the next delivery presents the new one; team B's
    // destination of the same id keeps its own.
    let rotated = client_authority.issue(&["team-a.rotated.client.test"]);
    s.deployment.clear_destinations();
    s.deployment
        .destination("mtls", s.team, &receiver.url("a"), &with(&rotated))
        .destination("mtls", team_b, &receiver.url("b"), &with(&team_b_client));
    s.deployment.write_destinations();
    let rotated_der = der_of(&rotated.certificate);
    eventually(
        Duration::from_secs(30),
        "a delivery with the rotated certificate",
        || async {
            let (_, event_a) = events::event(s.team, &[(1, "Any")]);
            let (_, event_b) = events::event(team_b, &[(1, "Any")]);
            s.produce(&[&event_a, &event_b]).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            receiver
                .received_on("a")
                .iter()
                .any(|r| r.client_certificate == rotated_der)
                .then_some(())
        },
    )
    .await;
    // Team B's deliveries went on, each with its own certificate (the rotation's events
    // went to B too: more than its first).
    let b_der = der_of(&team_b_client.certificate);
    let to_b = receiver.received_on("b");
    assert!(to_b.len() >= 2, "{}", to_b.len());
    assert!(to_b.iter().all(|r| r.client_certificate == b_der));

    let logs = s.deployment.logs();
    for key in [&team_a_client.key, &team_b_client.key, &rotated.key] {
        let body = key.lines().nth(1).expect("a key line");
        assert!(!logs.contains(body), "a client key in the logs");
    }

    // `check-config` is where a file's certificates are written: an expired one is refused
    // there, naming the field (a running process still reads it, and fails its attempts).
    let expired = client_authority.issue_expired(&["team-a.client.test"]);
    s.deployment.clear_destinations();
    s.deployment
        .destination("mtls", s.team, &receiver.url("a"), &with(&expired));
    let (ok, said) = s.deployment.command(&["check-config"]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("destination mtls: field `client_certificate` expired at"),
        "{said}"
    );
    assert!(!said.contains(expired.key.lines().nth(1).expect("a key line")));
}
