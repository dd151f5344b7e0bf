//! The destination model, its validation and its catalogue, through the public API.

use super::*;
use crate::{REDACTED, SigningSecret};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn parse(text: &str) -> Result<DestinationSet, DestinationError> {
    let rules = ValidationRules {
        allowed_hosts: crate::AllowList::new(&["127.0.0.1"]).expect("allow-list"),
        proxies: vec!["eu".into()],
    };
    DestinationSet::from_toml(text, &rules)
}

fn event(team_id: i64, actions: &[i64]) -> ActionMatchedEvent {
    ActionMatchedEvent {
        uuid: uuid::Uuid::nil(),
        team_id,
        event: "e".into(),
        distinct_id: None,
        timestamp: "2026-11-21T10:00:00Z".into(),
        properties: Default::default(),
        person: None,
        matched_actions: actions
            .iter()
            .map(|&id| ActionRef {
                id,
                name: format!("a{id}"),
            })
            .collect(),
    }
}

#[test]
fn placeholders_sent_back_keep_the_stored_secrets_and_are_refused_on_create() {
    let stored: DestinationSpec = serde_json::from_value(serde_json::json!({
        "id": "d", "team_id": 2, "url": "https://u:pw@hooks.example.com/x",
        "secret": SECRET, "headers": {"Authorization": "Bearer t"},
    }))
    .expect("spec");
    let mut shown = stored.redacted();
    assert_eq!(shown.url, "https://<redacted>@hooks.example.com/x");
    assert_eq!(shown.secret.as_deref(), Some(REDACTED));
    shown.restore_redacted(Some(&stored)).expect("restored");
    assert!(
        shown == stored,
        "every placeholder got its stored value back"
    );

    let mut created = stored.redacted();
    let error = created.restore_redacted(None).expect_err("nothing stored");
    assert!(
        matches!(
            error,
            DestinationError::Invalid {
                field: "secret",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn secrets_never_follow_a_url_to_another_host() {
    let stored: DestinationSpec = serde_json::from_value(serde_json::json!({
        "id": "d", "team_id": 2, "url": "https://u:pw@hooks.example.com/x",
        "secret": SECRET, "headers": {"Authorization": "Bearer t"},
    }))
    .expect("spec");
    let field_of = |error: DestinationError| match error {
        DestinationError::Invalid { field, problem, .. } => {
            assert!(problem.contains("another host"), "{problem}");
            field
        }
        other => panic!("{other}"),
    };
    // The URL moves, the secret is echoed back: refused, naming the secret.
    let mut moved = stored.redacted();
    moved.url = "https://attacker.example/x".into();
    assert_eq!(
        field_of(moved.restore_redacted(Some(&stored)).unwrap_err()),
        "secret"
    );
    // The header value echoed back: refused too.
    let mut moved = stored.redacted();
    moved.url = "https://attacker.example/x".into();
    moved.secret = Some(SECRET.into());
    assert_eq!(
        field_of(moved.restore_redacted(Some(&stored)).unwrap_err()),
        "headers"
    );
    // The URL's credentials echoed back on another host.
    let mut moved = stored.redacted();
    moved.url = "https://<redacted>@attacker.example/x".into();
    moved.secret = Some(SECRET.into());
    moved.headers.clear();
    assert_eq!(
        field_of(moved.restore_redacted(Some(&stored)).unwrap_err()),
        "url"
    );
    // Everything given again: taken as given.
    let mut moved = stored.clone();
    moved.url = "https://attacker.example/x".into();
    moved.restore_redacted(Some(&stored)).expect("new values");
    // Another path on the same origin keeps them.
    let mut same_origin = stored.redacted();
    same_origin.url = "https://<redacted>@hooks.example.com:443/y".into();
    same_origin.restore_redacted(Some(&stored)).expect("kept");
    assert_eq!(same_origin.url, "https://u:pw@hooks.example.com:443/y");
    assert_eq!(same_origin.secret.as_deref(), Some(SECRET));
}

#[test]
fn a_chat_webhook_url_is_shown_redacted_and_kept_when_sent_back() {
    let stored: DestinationSpec = serde_json::from_value(serde_json::json!({
        "id": "d", "team_id": 2, "format": "slack",
        "url": "https://hooks.slack.com/services/T0/B0/XXXXSECRET",
    }))
    .expect("spec");
    let mut shown = stored.redacted();
    assert_eq!(shown.url, "https://hooks.slack.com/<redacted>");
    shown.restore_redacted(Some(&stored)).expect("kept");
    assert_eq!(shown.url, stored.url);
}

#[test]
fn only_the_planned_destination_of_the_events_team_may_receive_a_delivery() {
    let mut planned = destination(vec![]);
    planned.uid = Some(uid("0190f3a4-0000-7000-8000-0000000000aa"));
    let event = event(2, &[1]);
    let delivery = crate::DeliveryInput {
        destination_uid: planned.uid.map(|uid| uid.to_string()),
        ..crate::DeliveryInput::new("d", event.clone(), event.matched_actions.clone())
    };
    assert!(delivery.was_planned_for(&planned));
    let recorded_in_capitals = crate::DeliveryInput {
        destination_uid: Some("0190F3A4-0000-7000-8000-0000000000AA".into()),
        ..delivery.clone()
    };
    assert!(
        recorded_in_capitals.was_planned_for(&planned),
        "uids compare as UUIDs, not as text"
    );
    let other_team = Destination {
        team_id: 3,
        ..planned.clone()
    };
    assert!(
        !delivery.was_planned_for(&other_team),
        "another team took the id"
    );
    let recreated = Destination {
        uid: Some(uid("0190f3a4-0000-7000-8000-0000000000bb")),
        ..planned.clone()
    };
    assert!(
        !delivery.was_planned_for(&recreated),
        "deleted and created again"
    );
    let unrecorded = crate::DeliveryInput {
        destination_uid: None,
        ..delivery.clone()
    };
    assert!(
        unrecorded.was_planned_for(&recreated),
        "without a recorded uid (file store), the team decides"
    );
    assert!(!unrecorded.was_planned_for(&other_team));
}

#[test]
fn a_replanned_delivery_takes_todays_retry_policy_and_keeps_its_event() {
    let mut planned = destination(vec![]);
    planned.uid = Some(uid("0190f3a4-0000-7000-8000-0000000000aa"));
    let event = event(2, &[1]);
    let recorded = crate::DeliveryInput {
        destination_uid: planned.uid.map(|uid| uid.to_string()),
        revision: crate::WorkflowRevision::ActivityAttempts,
        ..crate::DeliveryInput::new("d", event.clone(), event.matched_actions.clone())
    };
    let now = Destination {
        max_age_ms: Some(86_400_000),
        ..planned.clone()
    };
    let defaults = crate::DeliveryDefaults {
        history: crate::HistoryBound {
            max_rounds: 7,
            max_input_bytes: 1024,
        },
        ..Default::default()
    };
    let replanned = recorded
        .clone()
        .replanned(&now, &defaults)
        .expect("the same destination");
    assert_eq!(replanned.retry.max_age_ms, 86_400_000);
    assert_eq!(replanned.history, defaults.history);
    assert_eq!(replanned.revision, crate::WorkflowRevision::CURRENT);
    assert_eq!(
        (&replanned.event, &replanned.actions, &replanned.delivery_id),
        (&recorded.event, &recorded.actions, &recorded.delivery_id)
    );
    let recreated = Destination {
        uid: Some(uid("0190f3a4-0000-7000-8000-0000000000bb")),
        ..now
    };
    assert_eq!(recorded.replanned(&recreated, &defaults), None);
}

fn uid(text: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(text).expect("uuid")
}

fn destination(actions: Vec<i64>) -> Destination {
    Destination {
        id: "d".into(),
        uid: None,
        team_id: 2,
        url: Url::parse("https://example.com").expect("url"),
        actions,
        state: DestinationState::Enabled,
        format: Format::Json,
        template: None,
        headers: SecretHeaders::default(),
        secrets: vec![],
        timeout_ms: 1000,
        endpoint: EndpointKey::custom(1, "e").expect("key"),
        limits: LimitOverrides::default(),
        retry_schedule_ms: None,
        max_age_ms: None,
        auto_disable_after_ms: None,
        notices: false,
        proxy: None,
        tls: None,
        oauth2: None,
    }
}

#[test]
fn empty_action_filter_takes_every_action_of_the_team() {
    let d = destination(vec![]);
    assert_eq!(
        d.matching_actions(&event(2, &[1, 2])).map(|a| a.len()),
        Some(2)
    );
    assert_eq!(d.matching_actions(&event(3, &[1])), None);
}

#[test]
fn action_filter_keeps_only_the_shared_actions() {
    let d = destination(vec![2, 9]);
    let ids: Vec<i64> = d
        .matching_actions(&event(2, &[1, 2, 9]))
        .expect("match")
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, vec![2, 9]);
    assert_eq!(d.matching_actions(&event(2, &[1, 3])), None);
}

#[test]
fn parses_a_file_and_indexes_by_team_and_id() {
    let set = parse(&format!(
        r#"
        [[destination]]
        id = "d-1"
        team_id = 2
        url = "https://hooks.example.com/x"
        actions = [17]
        secret = "{SECRET}"
        timeout_ms = 2500

        [[destination]]
        id = "d-2"
        team_id = 2
        url = "http://127.0.0.1:9000/"
        "#
    ))
    .expect("valid file");
    assert_eq!(set.len(), 2);
    assert_eq!(set.for_team(2).len(), 2);
    assert!(set.for_team(3).is_empty());
    let d1 = set.get(2, "d-1").expect("d-1");
    assert_eq!(d1.timeout_ms, 2500);
    assert_eq!(
        d1.secrets,
        [SigningSecret::parse(SECRET).expect("the file's secret")]
    );
    assert_eq!(
        set.get(2, "d-2").expect("d-2").timeout_ms,
        DEFAULT_TIMEOUT_MS
    );
}

#[test]
fn errors_name_the_destination_and_field() {
    let cases = [
        (r#"id = "bad id""#, "destination #1: field `id`"),
        (
            r#"id = "x"
            secret = "nope""#,
            "destination x: field `secret` must start with `whsec_`",
        ),
        (
            r#"id = "x"
            timeout_ms = 0"#,
            "destination x: field `timeout_ms`",
        ),
    ];
    for (fields, expected) in cases {
        let text = format!("[[destination]]\nteam_id = 1\nurl = \"https://a.example\"\n{fields}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err}");
    }
    let err = parse("[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"ftp://a\"\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "destination x: field `url` must be an http(s) URL with a host"
    );
}

#[test]
fn ids_are_unique_within_a_team_and_free_across_teams() {
    let one = "[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"https://a.example\"\n";
    let err = parse(&format!("{one}{one}")).unwrap_err();
    assert_eq!(err, DestinationError::DuplicateId("x".into()));
    let other_team = one.replace("team_id = 1", "team_id = 2");
    let set = parse(&format!("{one}{other_team}")).expect("one id in two teams");
    assert_eq!(set.len(), 2);
    assert_eq!(set.get(1, "x").expect("team 1's").team_id, 1);
    assert_eq!(set.get(2, "x").expect("team 2's").team_id, 2);
    assert!(set.get(3, "x").is_none());
}

#[test]
fn a_set_changes_one_destination_at_a_time() {
    let one = "[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"https://a.example\"\n";
    let mut set = parse(one).expect("valid");
    let mut changed = (*set.get(1, "x").expect("x")).clone();
    changed.timeout_ms = 1_234;
    set.upsert(changed);
    assert_eq!(set.len(), 1);
    assert_eq!(set.get(1, "x").expect("x").timeout_ms, 1_234);
    assert!(!set.remove(2, "x"), "another team's id is not this one");
    assert!(set.remove(1, "x"));
    assert_eq!(set.len(), 0);
    assert!(set.for_team(1).is_empty());
}

#[test]
fn one_teams_destinations_of_one_endpoint_must_agree_on_its_limits() {
    let text = |second_team: i64, second_extra: &str| {
        format!(
            "[[destination]]\nid = \"a\"\nteam_id = 1\nurl = \"https://h.example/1\"\n\
             rate_per_second = 5.0\n\n[[destination]]\nid = \"b\"\nteam_id = {second_team}\n\
             url = \"https://h.example:443/2\"\n{second_extra}\n"
        )
    };
    let err = parse(&text(1, "")).unwrap_err();
    assert_eq!(
        err,
        DestinationError::ConflictingLimits {
            endpoint: "https://h.example:443 team=1".into(),
            first: "a".into(),
            second: "b".into(),
        }
    );
    let set = parse(&text(1, "rate_per_second = 5.0")).expect("agree");
    assert_eq!(
        set.get(1, "a").map(|d| d.endpoint.clone()),
        set.get(1, "b").map(|d| d.endpoint.clone())
    );
    // Another team on the same host has an endpoint of its own: nothing to agree on.
    let set = parse(&text(2, "")).expect("another team");
    assert_ne!(
        set.get(1, "a").map(|d| d.endpoint.clone()),
        set.get(2, "b").map(|d| d.endpoint.clone())
    );
    assert_eq!(
        set.get(1, "a").map(|d| d.host()),
        set.get(2, "b").map(|d| d.host()),
        "one host"
    );
    let own_key = text(1, "endpoint_key = \"h-2\"");
    let set = parse(&own_key).expect("own endpoint");
    assert_eq!(set.get(1, "b").expect("b").endpoint.as_str(), "team=1 h-2");
    assert_eq!(
        set.get(1, "a")
            .expect("a")
            .limits
            .over(EndpointLimits::default())
            .rate_per_second,
        5.0
    );
}

#[test]
fn limit_overrides_are_range_checked() {
    let err = parse(
        "[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"https://a.example\"\nmax_in_flight = 0\n",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "destination x: field `max_in_flight` must be at least 1"
    );
}

#[test]
fn the_full_model_parses() {
    let set = parse(&format!(
        r#"
        [[destination]]
        id = "slack-1"
        name = "Sales channel"
        team_id = 2
        url = "https://hooks.slack.example/T1"
        state = "paused"
        format = "slack"
        template = "[action.name] by [person] \\[!]"
        headers = {{ Authorization = "Bearer t0ken" }}
        secret = "{SECRET}"
        previous_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

        [[destination]]
        id = "off"
        team_id = 2
        url = "https://x.example/"
        state = "disabled"
        disabled_reason = "customer asked"
        "#
    ))
    .expect("valid");
    let d = set.get(2, "slack-1").expect("slack-1");
    assert_eq!(d.state, DestinationState::Paused);
    assert_eq!(d.format, Format::Slack);
    assert_eq!(d.secrets.len(), 2);
    assert_eq!(
        d.headers.expose(),
        [("Authorization".into(), "Bearer t0ken".into())]
    );
    assert!(
        !format!("{d:?}").contains("t0ken"),
        "header values are redacted"
    );
    assert!(!format!("{d:?}").contains(SECRET), "secrets are redacted");
    assert_eq!(
        set.get(2, "off").expect("off").state,
        DestinationState::Disabled("customer asked".into())
    );
}

#[test]
fn model_errors_name_the_field() {
    let cases = [
        ("url = \"http://a.example/\"", "field `url` must be https"),
        (
            "url = \"https://a.example/\"\nformat = \"json\"\ntemplate = \"[event]\"",
            "field `template` only applies",
        ),
        (
            "url = \"https://a.example/\"\nformat = \"slack\"\ntemplate = \"[user]\"",
            "field `template` is invalid: unknown placeholder `[user]`",
        ),
        (
            "url = \"https://a.example/\"\nformat = \"fax\"",
            "unknown variant `fax`",
        ),
        (
            "url = \"https://a.example/\"\nstate = \"sleeping\"",
            "field `state` must be",
        ),
        (
            "url = \"https://a.example/\"\nheaders = { webhook-id = \"x\" }",
            "field `headers` `webhook-id`",
        ),
        (
            "url = \"https://a.example/\"\nprevious_secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"",
            "field `previous_secret` needs",
        ),
        (
            "url = \"https://a.example/\"\nretry_schedule_ms = [0]",
            "field `retry_schedule_ms` must have at most 30 waits",
        ),
        (
            "url = \"https://a.example/\"\nmax_age_ms = 999999999999",
            "field `max_age_ms` must be 1 ms to 7 days",
        ),
        (
            "url = \"https://a.example/\"\nclient_key = \"k\"",
            "field `client_certificate` is needed with a client_key",
        ),
        (
            "url = \"https://a.example/\"\nca_certificates = \"junk\"",
            "field `ca_certificates` holds no `-----BEGIN CERTIFICATE-----` block",
        ),
        (
            "url = \"https://a.example/\"\noauth2 = { token_url = \"http://auth.example/t\", client_id = \"c\", client_secret = \"s\" }",
            "field `oauth2.token_url` must be https",
        ),
        (
            "url = \"https://a.example/\"\noauth2 = { token_url = \"https://u:p@auth.example/t\", client_id = \"c\", client_secret = \"s\" }",
            "field `oauth2.token_url` must not hold credentials",
        ),
        (
            "url = \"https://a.example/\"\noauth2 = { token_url = \"https://auth.example/t\", client_id = \"\", client_secret = \"s\" }",
            "field `oauth2.client_id` must be a non-empty text",
        ),
        (
            "url = \"https://a.example/\"\noauth2 = { token_url = \"https://auth.example/t\", client_id = \"c\", client_secret = \"s\", scopes = [\"a b\"] }",
            "field `oauth2.scopes` `a b` is not a scope",
        ),
        (
            "url = \"https://a.example/\"\nheaders = { authorization = \"x\" }\noauth2 = { token_url = \"https://auth.example/t\", client_id = \"c\", client_secret = \"s\" }",
            "field `headers` must not set `Authorization`: oauth2 sets it",
        ),
        (
            "url = \"https://a.example/\"\noauth2 = { token_url = \"https://auth.example/t\", client_id = \"c\", client_secret = \"s\", grant = \"x\" }",
            "unknown field `grant`",
        ),
    ];
    for (fields, expected) in cases {
        let text = format!("[[destination]]\nid = \"x\"\nteam_id = 1\n{fields}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(expected), "{fields}: {err}");
    }
}

#[test]
fn retry_overrides_replace_the_deployments_schedule_and_age() {
    let set = parse(
        "[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"https://a.example/\"\n\
         retry_schedule_ms = [100, 200]\nmax_age_ms = 60000\n",
    )
    .expect("valid");
    let policy = set
        .get(1, "x")
        .expect("x")
        .retry_policy(&RetryPolicy::default());
    assert_eq!(policy.schedule_ms, [100, 200]);
    assert_eq!(policy.max_age_ms, 60_000);
    assert_eq!(
        policy.jitter,
        RetryPolicy::default().jitter,
        "the rest is the deployment's"
    );
}

#[test]
fn breaker_overrides_apply_to_the_endpoint_and_must_agree() {
    let one = "[[destination]]\nid = \"a\"\nteam_id = 1\nurl = \"https://h.example/a\"\n\
               breaker_min_attempts = 3\nbreaker_cooldown_ms = 900000\n";
    let set = parse(one).expect("valid");
    let policy = set
        .get(1, "a")
        .expect("a")
        .limits
        .breaker_over(&BreakerPolicy::default());
    assert_eq!((policy.min_attempts, policy.cooldown_ms), (3, 900_000));
    assert_eq!(
        policy.max_cooldown_ms, 900_000,
        "the cap is at least the first cooldown"
    );
    assert_eq!(policy.failure_ratio, BreakerPolicy::default().failure_ratio);
    let two =
        format!("{one}[[destination]]\nid = \"b\"\nteam_id = 1\nurl = \"https://h.example/b\"\n");
    assert!(matches!(
        parse(&two),
        Err(DestinationError::ConflictingLimits { .. })
    ));
    let err = parse("[[destination]]\nid = \"x\"\nteam_id = 1\nurl = \"https://a.example/\"\nbreaker_failure_ratio = 0.0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("field `breaker_failure_ratio`"), "{err}");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let secret = SigningSecret::parse(SECRET).expect("secret");
    assert_eq!(format!("{secret:?}"), "SigningSecret(<redacted>)");
}

#[test]
fn a_uid_is_taken_only_in_the_form_the_catalog_writes() {
    let with_uid = |uid: &str| {
        let spec: DestinationSpec = serde_json::from_value(serde_json::json!({
            "id": "d", "team_id": 2, "url": "https://hooks.example.com/x", "uid": uid,
        }))
        .expect("spec");
        spec.validate_one(&ValidationRules::default())
    };
    let canonical = "0190f3a4-0000-7000-8000-0000000000aa";
    assert_eq!(
        with_uid(canonical).expect("valid").uid,
        Some(uid(canonical))
    );
    for other_form in [
        "0190F3A4-0000-7000-8000-0000000000AA",
        "0190f3a4000070008000 0000000000aa",
        "0190f3a4000070008000000000000000aa",
        "{0190f3a4-0000-7000-8000-0000000000aa}",
    ] {
        let error = with_uid(other_form).expect_err(other_form);
        assert!(
            matches!(error, DestinationError::Invalid { field: "uid", .. }),
            "{other_form}: {error}"
        );
    }
}

#[test]
fn limit_overrides_hold_nothing_when_none_is_set() {
    assert_eq!(
        LimitOverrides::new(LimitValues::default()),
        LimitOverrides::default()
    );
    let set = LimitOverrides::new(LimitValues {
        burst: Some(3),
        ..LimitValues::default()
    });
    assert_ne!(set, LimitOverrides::default());
    assert_eq!(set.values().burst, Some(3));
    assert_eq!(set.over(EndpointLimits::default()).burst, 3);
}

#[test]
fn a_destination_names_only_a_proxy_of_the_deployment() {
    let text = |proxy: &str| {
        format!(
            "[[destination]]\nid = \"d-1\"\nteam_id = 2\nurl = \"https://a.example/\"\nproxy = \"{proxy}\"\n"
        )
    };
    let set = parse(&text("eu")).expect("a proxy of the deployment");
    let via_eu = set.get(2, "d-1").expect("d-1");
    assert_eq!(via_eu.proxy.as_deref(), Some("eu"));
    // An endpoint of its own: the same host reached directly has another breaker.
    let direct =
        parse("[[destination]]\nid = \"d-2\"\nteam_id = 2\nurl = \"https://a.example/\"\n")
            .expect("direct");
    let direct = direct.get(2, "d-2").expect("d-2");
    assert_ne!(via_eu.endpoint, direct.endpoint);
    assert_eq!(
        via_eu.endpoint.as_str(),
        format!("{} via=eu", direct.endpoint)
    );
    let error = parse(&text("socks5://attacker:1080")).expect_err("a URL is no name");
    assert!(
        error
            .to_string()
            .contains("field `proxy` names no proxy of the deployment's http.proxies (it has: eu)"),
        "{error}"
    );
}

/// A self-signed certificate for `name` and its key, valid from a minute ago for `days`.
fn certificate(name: &str, days: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.into()]).expect("params");
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(60)).into();
    params.not_after = if days >= 0 {
        now + std::time::Duration::from_secs(days as u64 * 86_400)
    } else {
        now - std::time::Duration::from_secs(30)
    }
    .into();
    let cert = params.self_signed(&key).expect("cert");
    (cert.pem(), key.serialize_pem())
}

#[test]
fn tls_options_are_read_need_https_and_an_expired_certificate_is_not_current() {
    let (cert, key) = certificate("client.test", 30);
    let spec = |url: &str, cert: &str, key: &str| -> DestinationSpec {
        serde_json::from_value(serde_json::json!({
            "id": "d", "team_id": 2, "url": url,
            "client_certificate": cert, "client_key": key, "ca_certificates": cert,
        }))
        .expect("spec")
    };
    let rules = ValidationRules {
        allowed_hosts: crate::AllowList::new(&["127.0.0.1"]).expect("allow-list"),
        proxies: vec![],
    };
    let destination = spec("https://hooks.example.com/", &cert, &key)
        .validate_one(&rules)
        .expect("valid");
    let tls = destination.tls.as_deref().expect("tls");
    assert!(tls.identity_pem().is_some() && tls.authorities_pem().is_some());
    assert!(
        destination
            .check_certificate_current(chrono::Utc::now().timestamp())
            .is_ok()
    );
    assert!(!format!("{destination:?}").contains("PRIVATE KEY"));

    let plain = spec("http://127.0.0.1:1/", &cert, &key).validate_one(&rules);
    assert!(
        plain
            .unwrap_err()
            .to_string()
            .contains("field `ca_certificates` needs an https url")
    );

    // An expired certificate is read (a stored one must not remove its destination) but
    // is not current: a write refuses it, naming the field.
    let (expired, expired_key) = certificate("client.test", -1);
    let destination = spec("https://hooks.example.com/", &expired, &expired_key)
        .validate_one(&rules)
        .expect("read");
    let error = destination
        .check_certificate_current(chrono::Utc::now().timestamp())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("field `client_certificate` expired at"),
        "{error}"
    );
}

#[test]
fn tls_and_oauth2_secrets_are_shown_redacted_and_do_not_follow_their_hosts() {
    let (cert, key) = certificate("client.test", 30);
    let stored: DestinationSpec = serde_json::from_value(serde_json::json!({
        "id": "d", "team_id": 2, "url": "https://hooks.example.com/x",
        "client_certificate": cert, "client_key": key, "ca_certificates": cert,
        "oauth2": {"token_url": "https://auth.example.com/token", "client_id": "c",
                   "client_secret": "oauthsecret9"},
    }))
    .expect("spec");
    let shown = stored.redacted();
    let text = serde_json::to_string(&shown).expect("json");
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("oauthsecret9"),
        "{text}"
    );
    assert_eq!(shown.client_certificate.as_deref(), Some(REDACTED));
    assert_eq!(
        shown.ca_certificates, stored.ca_certificates,
        "not a secret"
    );

    // Sent back as shown: every secret kept.
    let mut kept = shown.clone();
    kept.restore_redacted(Some(&stored)).expect("kept");
    assert!(kept == stored);

    // The token endpoint moves: its client secret is not sent there.
    let mut moved = shown.clone();
    if let Some(oauth2) = &mut moved.oauth2 {
        oauth2.token_url = "https://attacker.example/token".into();
    }
    match moved.restore_redacted(Some(&stored)).unwrap_err() {
        DestinationError::Invalid { field, .. } => assert_eq!(field, "oauth2.client_secret"),
        other => panic!("{other}"),
    }
    // The endpoint moves: its client key stays behind.
    let mut moved = shown;
    moved.url = "https://attacker.example/x".into();
    match moved.restore_redacted(Some(&stored)).unwrap_err() {
        DestinationError::Invalid { field, .. } => assert_eq!(field, "client_certificate"),
        other => panic!("{other}"),
    }
}
