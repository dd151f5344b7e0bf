//! Property tests of the two parsers that take untrusted input: the event decoder (every
//! Kafka message) and the destinations parser (the destinations file, and the admin API's
//! JSON). On arbitrary bytes, arbitrary JSON and TOML values, and valid documents with
//! fields replaced by arbitrary values: never a panic, always a typed error or a value, and
//! whatever is accepted is usable (an accepted event keeps the contract; an accepted
//! destination renders and signs a request for it). 1,024 cases each keep `make test`
//! quick (well under a second); `PROPTEST_CASES=100000` runs more.

use hookflow_core::{
    ActionMatchedEvent, DeliveryDefaults, DestinationCatalog, DestinationSet, DestinationSpec,
    EndpointLimits, ValidationRules, breaker::BreakerPolicy, plan_deliveries, request::prepare,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        // Strings the parsers treat specially.
        prop_oneof![
            Just("0190f3a4-0000-7000-8000-000000000001"),
            Just("2026-11-21T10:00:00Z"),
            Just("[action.name] [person.properties.a.b] \\[ [event"),
            Just("https://hooks.example.com/x"),
            Just("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_event() -> Value {
    json!({
        "uuid": "0190f3a4-0000-7000-8000-000000000001",
        "team_id": 2,
        "event": "signed_up",
        "distinct_id": "user-1",
        "timestamp": "2026-11-21T10:00:00Z",
        "properties": {"plan": "pro", "a": {"b": "c"}},
        "person": {"uuid": "p", "properties": {"email": "a@example.com"}, "created_at": "2026-01-01T00:00:00Z"},
        "matched_actions": [{"id": 17, "name": "Signed up"}],
    })
}

const EVENT_FIELDS: [&str; 8] = [
    "uuid",
    "team_id",
    "event",
    "distinct_id",
    "timestamp",
    "properties",
    "person",
    "matched_actions",
];

/// A valid event with some fields replaced by arbitrary values or removed.
fn event_like() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (0..EVENT_FIELDS.len(), prop::option::of(json_value())),
        0..5,
    )
    .prop_map(|changes| {
        let mut event = valid_event();
        for (field, value) in changes {
            let object = event.as_object_mut().expect("object");
            match value {
                Some(value) => object.insert(EVENT_FIELDS[field].to_owned(), value),
                None => object.remove(EVENT_FIELDS[field]),
            };
        }
        event
    })
}

/// An accepted event keeps the contract.
fn check_event(bytes: &[u8]) -> Result<(), TestCaseError> {
    match ActionMatchedEvent::from_json(bytes) {
        Ok(event) => {
            prop_assert!(!event.event.is_empty());
            prop_assert!(!event.matched_actions.is_empty());
        }
        Err(error) => prop_assert!(["not_json", "contract"].contains(&error.kind())),
    }
    Ok(())
}

/// A TOML value: what a destinations file may hold in any place.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<i64>().prop_map(toml::Value::Integer),
        prop_oneof![Just(-1i64), Just(0), Just(1), Just(i64::MAX)].prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        ".{0,40}".prop_map(toml::Value::String),
        prop_oneof![
            Just("https://hooks.example.com/x"),
            Just("http://127.0.0.1:8080/"),
            Just("paused"),
            Just("slack"),
            Just("[action.name] by [person]"),
            Just("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ]
        .prop_map(|s| toml::Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..5)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

const SPEC_FIELDS: [&str; 22] = [
    "id",
    "team_id",
    "url",
    "actions",
    "name",
    "state",
    "disabled_reason",
    "format",
    "template",
    "headers",
    "secret",
    "previous_secret",
    "timeout_ms",
    "endpoint_key",
    "rate_per_second",
    "burst",
    "max_in_flight",
    "breaker_min_attempts",
    "breaker_failure_ratio",
    "breaker_cooldown_ms",
    "retry_schedule_ms",
    "max_age_ms",
];

fn valid_spec() -> toml::Table {
    let text = r#"
        id = "d-1"
        team_id = 2
        url = "https://hooks.example.com/x"
        actions = [17]
        format = "slack"
        template = "[action.name] was triggered by [person]"
        headers = { Authorization = "Bearer x" }
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        timeout_ms = 5000
        retry_schedule_ms = [1000, 60000]
    "#;
    text.parse().expect("a valid spec")
}

fn ints() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(1),
        Just(60_001),
        Just(i64::from(u32::MAX) + 1),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>(),
    ]
    .prop_map(toml::Value::Integer)
}

fn floats() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        Just(0.0f64),
        Just(-1.0),
        Just(0.5),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(1e308),
        Just(1e-308),
        any::<f64>(),
    ]
    .prop_map(toml::Value::Float)
}

fn strings(interesting: &'static [&'static str]) -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        prop::sample::select(interesting).prop_map(str::to_owned),
        ".{0,80}",
    ]
    .prop_map(toml::Value::String)
}

/// A value for `field` of the type it has, biased to the edges that break range checks
/// and arithmetic, and now and then one of any type.
fn field_value(field: &str) -> BoxedStrategy<toml::Value> {
    let typed: BoxedStrategy<toml::Value> = match field {
        "team_id"
        | "timeout_ms"
        | "burst"
        | "max_in_flight"
        | "breaker_min_attempts"
        | "breaker_cooldown_ms"
        | "max_age_ms" => ints().boxed(),
        "rate_per_second" | "breaker_failure_ratio" => floats().boxed(),
        "actions" | "retry_schedule_ms" => prop::collection::vec(ints(), 0..4)
            .prop_map(toml::Value::Array)
            .boxed(),
        "headers" => prop::collection::btree_map(".{0,20}", ".{0,40}", 0..3)
            .prop_map(|m| {
                let table = m.into_iter().map(|(k, v)| (k, toml::Value::String(v)));
                toml::Value::Table(table.collect())
            })
            .boxed(),
        "url" => strings(&[
            "https://hooks.example.com/x",
            "http://127.0.0.1:8080/",
            "https://user:pw@[::1]:0/",
            "ftp://example.com/",
            "https://",
        ])
        .boxed(),
        "state" => strings(&["enabled", "paused", "disabled"]).boxed(),
        "format" => strings(&["json", "slack", "discord", "teams", "zapier"]).boxed(),
        "template" => strings(&[
            "[action.name] by [person]",
            "[person.properties.a.b.c.d] [event.properties]",
            "\\[ [ ] [[action.link]]",
            "[unknown.thing]",
        ])
        .boxed(),
        "secret" | "previous_secret" => {
            strings(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", ""]).boxed()
        }
        _ => strings(&["d-1", "", "a b", "x:y"]).boxed(),
    };
    prop_oneof![9 => typed, 1 => toml_value()].boxed()
}

/// A destinations file whose destinations are valid ones with a few fields replaced by
/// values of their type (mostly edges) or of any type, or removed.
fn destinations_like() -> impl Strategy<Value = String> {
    let change = (0..SPEC_FIELDS.len()).prop_flat_map(|field| {
        let value = prop::option::weighted(0.9, field_value(SPEC_FIELDS[field]));
        (Just(field), value)
    });
    let spec = prop::collection::vec(change, 1..5).prop_map(|changes| {
        let mut spec = valid_spec();
        for (field, value) in changes {
            match value {
                Some(value) => spec.insert(SPEC_FIELDS[field].to_owned(), value),
                None => spec.remove(SPEC_FIELDS[field]),
            };
        }
        toml::Value::Table(spec)
    });
    prop::collection::vec(spec, 0..3).prop_map(|specs| {
        let mut file = toml::Table::new();
        file.insert("destination".into(), toml::Value::Array(specs));
        file.to_string()
    })
}

/// An accepted set is usable: every destination plans, limits and signs a delivery.
fn check_destinations(result: Result<DestinationSet, hookflow_core::DestinationError>) {
    let Ok(set) = result else {
        return;
    };
    let event = ActionMatchedEvent::from_json(valid_event().to_string().as_bytes())
        .expect("the valid event");
    let destinations = set.for_team(event.team_id);
    for delivery in plan_deliveries(
        &event,
        destinations.iter().map(AsRef::as_ref),
        &DeliveryDefaults::default(),
        None,
    ) {
        let destination = set
            .get(delivery.event.team_id, &delivery.destination_id)
            .expect("planned from the set");
        let _ = destination
            .limits
            .over(EndpointLimits::default())
            .validate();
        let _ = destination.limits.breaker_over(&BreakerPolicy::default());
        let _ = prepare(
            &destination,
            &delivery,
            "https://app.example.com",
            1_795_000_000,
        );
    }
}

fn rules() -> ValidationRules {
    ValidationRules {
        allowed_hosts: hookflow_core::AllowList::new(&["127.0.0.1"]).expect("allow-list"),
        proxies: Vec::new(),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_event_decoder_takes_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_event(&bytes)?;
    }

    #[test]
    fn the_event_decoder_takes_arbitrary_json(value in json_value()) {
        check_event(value.to_string().as_bytes())?;
    }

    #[test]
    fn the_event_decoder_takes_valid_events_with_arbitrary_fields(value in event_like()) {
        check_event(value.to_string().as_bytes())?;
    }

    #[test]
    fn the_destinations_parser_takes_arbitrary_text(text in "(?s).{0,400}") {
        check_destinations(DestinationSet::from_toml(&text, &rules()));
    }

    #[test]
    fn the_destinations_parser_takes_arbitrary_toml(value in toml_value()) {
        let text = match &value {
            toml::Value::Table(table) => table.to_string(),
            other => format!("destination = {other}"),
        };
        check_destinations(DestinationSet::from_toml(&text, &rules()));
    }

    #[test]
    fn the_destinations_parser_takes_valid_files_with_arbitrary_fields(text in destinations_like()) {
        check_destinations(DestinationSet::from_toml(&text, &rules()));
    }

    #[test]
    fn the_admin_apis_destination_json_takes_arbitrary_values(value in json_value()) {
        if let Ok(spec) = serde_json::from_value::<DestinationSpec>(value) {
            let result = spec.validate_one(&rules()).and_then(|d| DestinationSet::new(vec![d]));
            check_destinations(result);
        }
    }
}
