//! The input contract: one action-matched analytics event per Kafka message.
//!
//! The JSON Schema in `config/event.schema.json` documents the same contract for producers.
//! Unknown fields are accepted and ignored, so the upstream pipeline can add fields without
//! breaking hookflow; missing or malformed required fields are a [`ContractError`], which the
//! consumer turns into a dead letter.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// One action that the upstream pipeline matched the event against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRef {
    /// The action's id, unique within the team.
    pub id: i64,
    /// The action's display name.
    pub name: String,
}

/// The person the event belongs to, when the pipeline knows one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// The person's uuid.
    pub uuid: String,
    /// The person's properties (email, name, …).
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// When the person was first seen (RFC 3339), if known.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// An analytics event that matched at least one action of its team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionMatchedEvent {
    /// The event's uuid: the idempotency key of every delivery made from it.
    pub uuid: Uuid,
    /// The team (project) the event belongs to.
    pub team_id: i64,
    /// The event's name, for example `$pageview` or `signed_up`.
    pub event: String,
    /// The id the product knows the user by.
    #[serde(default)]
    pub distinct_id: Option<String>,
    /// When the event happened, RFC 3339.
    pub timestamp: String,
    /// The event's properties.
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// The person, if known.
    #[serde(default)]
    pub person: Option<Person>,
    /// The actions the event matched; never empty.
    pub matched_actions: Vec<ActionRef>,
}

/// Why a Kafka message is not a valid [`ActionMatchedEvent`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    /// The bytes are not a JSON document.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// The JSON does not have the contract's shape (a field missing or of the wrong type).
    #[error("breaks the event contract: {0}")]
    Shape(String),
    /// A field is present but its value is not acceptable.
    #[error("breaks the event contract: field `{field}` {problem}")]
    Field {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl ContractError {
    /// A short, stable label for metrics and dead-letter headers.
    pub fn kind(&self) -> &'static str {
        match self {
            ContractError::NotJson(_) => "not_json",
            ContractError::Shape(_) | ContractError::Field { .. } => "contract",
        }
    }
}

impl ActionMatchedEvent {
    /// Parses and validates one Kafka message payload.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ContractError> {
        let event: ActionMatchedEvent = serde_json::from_slice(bytes).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => ContractError::Shape(e.to_string()),
                Category::Syntax | Category::Eof | Category::Io => {
                    ContractError::NotJson(e.to_string())
                }
            }
        })?;
        event.validate()?;
        Ok(event)
    }

    fn validate(&self) -> Result<(), ContractError> {
        if self.event.trim().is_empty() {
            return Err(ContractError::Field {
                field: "event",
                problem: "is empty",
            });
        }
        if chrono::DateTime::parse_from_rfc3339(&self.timestamp).is_err() {
            return Err(ContractError::Field {
                field: "timestamp",
                problem: "is not an RFC 3339 date-time",
            });
        }
        if self.matched_actions.is_empty() {
            return Err(ContractError::Field {
                field: "matched_actions",
                problem: "is empty",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Value {
        serde_json::json!({
            "uuid": "0190f3a4-0000-7000-8000-000000000001",
            "team_id": 2,
            "event": "signed_up",
            "distinct_id": "user-1",
            "timestamp": "2026-11-21T10:00:00Z",
            "properties": {"plan": "pro"},
            "person": {"uuid": "p-1", "properties": {"email": "a@example.com"}, "created_at": "2026-01-01T00:00:00Z"},
            "matched_actions": [{"id": 17, "name": "Signed up"}],
            "some_future_field": true
        })
    }

    fn parse(v: &Value) -> Result<ActionMatchedEvent, ContractError> {
        ActionMatchedEvent::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn accepts_the_documented_shape_and_ignores_unknown_fields() {
        let event = parse(&valid()).expect("valid event");
        assert_eq!(event.team_id, 2);
        assert_eq!(
            event.matched_actions,
            vec![ActionRef {
                id: 17,
                name: "Signed up".into()
            }]
        );
        assert_eq!(event.person.expect("person").uuid, "p-1");
    }

    #[test]
    fn person_and_properties_are_optional() {
        let mut v = valid();
        let obj = v.as_object_mut().expect("object");
        obj.remove("person");
        obj.remove("properties");
        obj.remove("distinct_id");
        let event = parse(&v).expect("valid event");
        assert!(event.person.is_none());
        assert!(event.properties.is_empty());
    }

    #[test]
    fn garbage_is_not_json() {
        let err = ActionMatchedEvent::from_json(b"{not json").unwrap_err();
        assert_eq!(err.kind(), "not_json");
    }

    #[test]
    fn missing_uuid_is_a_contract_error_naming_the_field() {
        let mut v = valid();
        v.as_object_mut().expect("object").remove("uuid");
        let err = parse(&v).unwrap_err();
        assert_eq!(err.kind(), "contract");
        assert!(err.to_string().contains("missing field `uuid`"), "{err}");
    }

    /// The JSON Schema shipped for producers says the same as the parser: removing a field
    /// it requires breaks the contract, removing any other leaves the event valid.
    #[test]
    fn the_shipped_json_schema_matches_the_parser() {
        let schema: Value = serde_json::from_str(include_str!("../../../config/event.schema.json"))
            .expect("schema");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let properties = schema["properties"].as_object().expect("properties");
        assert_eq!(properties.len(), 8);
        for field in properties.keys() {
            let mut v = valid();
            v.as_object_mut().expect("object").remove(field);
            assert_eq!(
                parse(&v).is_err(),
                required.contains(&field.as_str()),
                "field {field}"
            );
        }
    }

    #[test]
    fn rejects_bad_values() {
        let cases = [
            ("uuid", serde_json::json!("not-a-uuid"), "uuid"),
            ("timestamp", serde_json::json!("yesterday"), "timestamp"),
            ("matched_actions", serde_json::json!([]), "matched_actions"),
            ("event", serde_json::json!("  "), "event"),
            ("team_id", serde_json::json!("two"), "team_id"),
        ];
        for (field, value, expected) in cases {
            let mut v = valid();
            v[field] = value;
            let err = parse(&v).unwrap_err();
            assert_eq!(err.kind(), "contract", "{field}");
            let text = err.to_string();
            assert!(
                text.contains(expected) || text.contains("invalid"),
                "{field}: {text}"
            );
        }
    }
}
