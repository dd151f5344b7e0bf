//! Credentials never leave the places they are needed. A full run with marker secrets in
//! every place a user puts one (a signing secret and an ed25519 key, a header value, a URL's
//! credentials, a TLS client key, an OAuth2 client secret, the admin token, a librdkafka
//! password) and the failures that used to quote them (a
//! configuration and a destinations file that are not TOML, a request the API refuses);
//! then every log line, metrics page, admin answer, workflow history and the catalog's rows
//! in PostgreSQL are searched for them: none. Meanwhile the endpoint gets each secret it should, and a PUT of what a GET
//! showed keeps the stored values.

use std::time::Duration;

use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{
    admin::AdminApi, eventually, hookflow, hookflow::Deployment, scenario::Scenario, temporal,
    unique,
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn no_log_line_metric_answer_or_history_holds_a_secret() {
    let mut s = Scenario::new().await;
    let url_password = unique("markerurlpassword");
    let header_value = unique("markerheadervalue");
    let kafka_password = unique("markerkafkapassword");
    let secret = format!(
        "whsec_{}",
        base64_encode(unique("markersigningsecret").as_bytes())
    );
    // An ed25519 key too, as the previous secret: "markersigningkey-" and 10 hex digits,
    // padded to a 32-byte seed.
    let signing_key = format!(
        "whsk_{}",
        base64_encode(format!("{:_<32}", unique("markersigningkey")).as_bytes())
    );
    let (base, token) = s.deployment.admin_api();
    s.deployment.config(&format!(
        "[kafka.client]\n\"sasl.password\" = \"{kafka_password}\""
    ));
    let client = hookflow_e2e::tls::Authority::new("marker clients").issue(&["client.test"]);
    let client_key_line = client.key.lines().nth(1).expect("a key line").to_owned();
    let oauth2_secret = unique("markeroauth2secret");
    let markers = [
        url_password.clone(),
        header_value.clone(),
        kafka_password.clone(),
        secret.clone(),
        signing_key.clone(),
        token.clone(),
        client_key_line,
        oauth2_secret.clone(),
    ];
    let api = AdminApi::new(base, token.clone());
    let process = s.deployment.start();
    let mut answers: Vec<String> = Vec::new();
    let collection = format!("/v1/teams/{}/destinations", s.team);
    api.wait_until_serving(&collection).await;

    let port = s.receiver.addr.port();
    let spec = json!({
        "id": "guarded",
        "url": format!("http://hookuser:{url_password}@127.0.0.1:{port}/guarded"),
        "secret": secret,
        "previous_secret": signing_key,
        "headers": {"X-Api-Key": header_value},
    });
    let (status, created) = api.call("POST", &collection, Some(spec)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["previous_secret"], "<redacted>");
    let public_key = created["previous_public_key"].as_str().expect("public key");
    answers.push(created.to_string());

    // TLS and OAuth2 credentials, stored and shown redacted (no event goes there).
    let enterprise = json!({
        "id": "enterprise",
        "url": "https://hooks.example.com/x",
        "actions": [99],
        "client_certificate": client.certificate,
        "client_key": client.key,
        "oauth2": {"token_url": "https://auth.example.com/token", "client_id": "c",
                   "client_secret": oauth2_secret},
    });
    let (status, created) = api
        .call("POST", &collection, Some(enterprise.clone()))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (
            &created["client_certificate"],
            &created["client_key"],
            &created["oauth2"]["client_secret"]
        ),
        (
            &json!("<redacted>"),
            &json!("<redacted>"),
            &json!("<redacted>")
        )
    );
    answers.push(created.to_string());
    // A certificate that has expired is refused when written, naming the field.
    let expired = hookflow_e2e::tls::Authority::new("c").issue_expired(&["client.test"]);
    let mut refused = enterprise;
    refused["id"] = json!("expired");
    refused["client_certificate"] = json!(expired.certificate);
    refused["client_key"] = json!(expired.key);
    let (status, answer) = api.call("POST", &collection, Some(refused)).await;
    assert_eq!(status, 400, "{answer}");
    let says = answer.to_string();
    assert!(
        says.contains("field `client_certificate` expired at"),
        "{says}"
    );
    answers.push(says);

    // The endpoint gets every secret it should.
    let first = s.produce_events(1).await[0];
    let result = temporal::result(&s.temporal, &format!("guarded:{first}")).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    let check_request = |index: usize| {
        let request = s.receiver.received_on("guarded")[index].clone();
        assert_eq!(request.header("x-api-key"), header_value);
        let basic = format!("hookuser:{url_password}");
        assert_eq!(
            request.header("authorization"),
            format!("Basic {}", base64_encode(basic.as_bytes()))
        );
        let webhook = standardwebhooks::Webhook::new(&secret).expect("secret");
        webhook
            .verify(&request.body, &request.headers)
            .expect("signed with the secret");
        hookflow_core::signing::verify_v1a(
            public_key,
            request.header("webhook-id"),
            request.header("webhook-timestamp"),
            &request.body,
            request.header("webhook-signature"),
        )
        .expect("signed with the key");
    };
    check_request(0);

    // What a GET shows hides them; a PUT of it keeps them.
    let (status, shown) = api
        .call("GET", &format!("{collection}/guarded"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        shown["url"],
        format!("http://<redacted>@127.0.0.1:{port}/guarded")
    );
    answers.push(shown.to_string());
    let mut edited = shown.clone();
    edited["name"] = Value::from("renamed");
    let (status, updated) = api
        .call("PUT", &format!("{collection}/guarded"), Some(edited))
        .await;
    assert_eq!(status, 200, "{updated}");
    answers.push(updated.to_string());
    let second = s.produce_events(1).await[0];
    let result = temporal::result(&s.temporal, &format!("guarded:{second}")).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    check_request(1);

    // Every other answer, and a refused request.
    for (method, path, body) in [
        ("GET", collection.clone(), None),
        ("POST", format!("{collection}/guarded/test"), None),
        ("GET", format!("{collection}/guarded/deliveries"), None),
        (
            "GET",
            format!("{collection}/guarded/deliveries/{first}"),
            None,
        ),
        (
            "PUT",
            format!("{collection}/guarded"),
            Some(json!({"id": "guarded", "url": shown["url"], "timeout_ms": 0})),
        ),
        (
            "POST",
            collection.clone(),
            Some(json!({"id": "other", "url": "https://<redacted>@h.example/"})),
        ),
    ] {
        let (_, answer) = api.call(method, &path, body).await;
        answers.push(answer.to_string());
    }

    // A configuration that is not TOML, on the line of a secret.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, format!("[admin]\ntoken = \"{token}\n")).expect("write");
    let (ok, refused) =
        hookflow::run(&["--config", broken.to_str().expect("path"), "check-config"]);
    assert!(!ok && refused.contains("line 2, column"), "{refused}");

    // A Kafka property librdkafka refuses, valued with a secret: its refusal quotes the
    // value, hookflow's report must not.
    let refused_property = dir.path().join("refused-property.toml");
    std::fs::write(
        &refused_property,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[kafka.client]\n\"security.protocol\" = \"{kafka_password}\"\n"
        ),
    )
    .expect("write");
    let (ok, refused_kafka) = hookflow::run(&[
        "--config",
        refused_property.to_str().expect("path"),
        "send-sample",
    ]);
    assert!(
        !ok && refused_kafka.contains("security.protocol"),
        "{refused_kafka}"
    );

    // A destinations file that is not TOML, on the line of a secret, in a file-store process.
    let mut file_store = Deployment::new(&s.stack, 1);
    file_store.destination("filed", s.team, &s.receiver.url("filed"), "");
    let file_process = file_store.start();
    eventually(
        Duration::from_secs(30),
        "the file store's process",
        || async {
            file_process
                .series("hookflow_build_info{version=\"0.1.0\"}")
                .await
        },
    )
    .await;
    file_store.write_destinations_text(&format!(
        "[[destination]]\nid = \"filed\"\nsecret = \"{secret}\nteam_id = 1\n"
    ));
    file_process
        .wait_for_metric(
            r#"hookflow_destination_reloads_total{result="error"}"#,
            1.0,
            Duration::from_secs(30),
        )
        .await;

    // Nothing anywhere.
    let mut haystacks = vec![
        ("the logs".to_owned(), s.deployment.logs()),
        ("the file store's logs".to_owned(), file_store.logs()),
        ("metrics".to_owned(), process.metrics_page().await),
        (
            "file store metrics".to_owned(),
            file_process.metrics_page().await,
        ),
        ("a refused configuration".to_owned(), refused),
        ("a refused Kafka property".to_owned(), refused_kafka),
    ];
    for answer in answers {
        haystacks.push(("an admin answer".to_owned(), answer));
    }
    for uuid in [first, second] {
        let history = temporal::history_text(&s.temporal, &format!("guarded:{uuid}")).await;
        haystacks.push(("a workflow history".to_owned(), history));
    }
    // And the catalog, as a dump of its database would show it.
    let catalog = s.deployment.catalog_url();
    let database = catalog.rsplit('/').next().expect("database").to_owned();
    haystacks.push((
        "the catalog's rows".to_owned(),
        s.stack.postgres.sql(
            &database,
            "SELECT row_to_json(d) FROM hookflow_destinations d",
        ),
    ));
    // row_to_json shows bytea as hex, where no marker could be found: the sealed columns
    // as text, every printable byte as it is.
    haystacks.push((
        "the catalog's sealed columns".to_owned(),
        s.stack.postgres.sql(
            &database,
            "SELECT encode(sealed, 'escape') || coalesce(encode(previous_sealed, 'escape'), '') \
             FROM hookflow_destinations",
        ),
    ));
    assert!(
        haystacks
            .iter()
            .any(|(place, rows)| place == "the catalog's rows" && rows.contains("guarded")),
        "the catalog was read"
    );
    assert!(
        s.deployment.logs().contains("destination catalog loaded"),
        "logs were read"
    );
    for (place, text) in &haystacks {
        for marker in &markers {
            assert!(
                !text.contains(marker.as_str()),
                "{place} holds a secret: {marker}"
            );
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
