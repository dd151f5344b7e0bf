//! The search attributes every delivery workflow carries, so an operator can find the
//! deliveries of a team, a destination or an event in the Temporal UI (for example
//! `HookflowDestinationId = "d-1" AND HookflowOutcome = "gave_up"`), and their registration.

use std::collections::HashMap;

use hookflow_core::DeliveryInput;
use temporalio_client::{Client, tonic};
use temporalio_common::{
    protos::temporal::api::{
        enums::v1::IndexedValueType,
        operatorservice::v1::{AddSearchAttributesRequest, ListSearchAttributesRequest},
    },
    search_attributes::{SearchAttributeKey, SearchAttributes},
};

use crate::connection::TemporalError;

/// The team id (Int).
pub const TEAM_ID: SearchAttributeKey<i64> = SearchAttributeKey::int("HookflowTeamId");
/// The destination id (Keyword).
pub const DESTINATION_ID: SearchAttributeKey<String> =
    SearchAttributeKey::keyword("HookflowDestinationId");
/// The event uuid (Keyword).
pub const EVENT_UUID: SearchAttributeKey<String> = SearchAttributeKey::keyword("HookflowEventUuid");
/// How the delivery ended, set when it ends (Keyword): `delivered`, `failed_permanently`,
/// `gave_up` or `cancelled`.
pub const OUTCOME: SearchAttributeKey<String> = SearchAttributeKey::keyword("HookflowOutcome");
/// The keyed hash of the event's team and distinct id (Keyword), set when
/// `temporal.person_hash_key` is: what an erasure finds a person's deliveries by
/// ([`hookflow_core::person`]); never the distinct id itself.
pub const PERSON_HASH: SearchAttributeKey<String> =
    SearchAttributeKey::keyword("HookflowPersonHash");

/// The value of attribute `key` a listed or described run carries; `None` when it carries
/// none, or one of another type.
pub(crate) fn value_of<T: serde::de::DeserializeOwned>(
    info: &temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo,
    key: &str,
) -> Option<T> {
    let payload = info.search_attributes.as_ref()?.indexed_fields.get(key)?;
    serde_json::from_slice(&payload.data).ok()
}

/// Every attribute with its type, as the dev server's `--search-attribute` flags spell it.
pub const ALL: [(&str, &str); 5] = [
    ("HookflowTeamId", "Int"),
    ("HookflowDestinationId", "Keyword"),
    ("HookflowEventUuid", "Keyword"),
    ("HookflowOutcome", "Keyword"),
    ("HookflowPersonHash", "Keyword"),
];

/// The attributes a delivery starts with; `person_hash` is its event's person hash, when
/// the deployment keeps them.
pub fn for_delivery(input: &DeliveryInput, person_hash: Option<String>) -> SearchAttributes {
    let mut attributes = vec![
        TEAM_ID.value_set(input.event.team_id),
        DESTINATION_ID.value_set(input.destination_id.clone()),
        EVENT_UUID.value_set(input.event.uuid.to_string()),
    ];
    if let Some(hash) = person_hash {
        attributes.push(PERSON_HASH.value_set(hash));
    }
    SearchAttributes::new(attributes)
}

/// The attributes `namespace` lacks, with their types.
pub async fn missing(
    client: &Client,
    namespace: &str,
) -> Result<Vec<(&'static str, &'static str)>, TemporalError> {
    let existing = client
        .connection()
        .operator_service()
        .list_search_attributes(tonic::Request::new(ListSearchAttributesRequest {
            namespace: namespace.to_owned(),
        }))
        .await
        .map_err(|s| TemporalError::Rpc(format!("listing search attributes: {}", s.message())))?
        .into_inner()
        .custom_attributes;
    Ok(ALL
        .into_iter()
        .filter(|(name, _)| !existing.contains_key(*name))
        .collect())
}

/// Whether the deliveries `settings` starts can carry their person hash: without
/// `person_hash_key` they carry none; with it, `namespace` must have the attribute, or
/// every start would be refused. Credentials that may not list attributes (an operator's
/// right) cannot tell: that is logged, and the starts themselves will say.
pub async fn check_person_hash(
    client: &Client,
    settings: &crate::TemporalSettings,
) -> Result<(), TemporalError> {
    if settings.person_hash_key.is_none() {
        return Ok(());
    }
    let absent = match missing(client, &settings.namespace).await {
        Ok(absent) => absent,
        Err(error) => {
            tracing::warn!(%error, "cannot check that HookflowPersonHash is registered");
            return Ok(());
        }
    };
    if absent.iter().any(|(name, _)| *name == PERSON_HASH.name()) {
        return Err(TemporalError::Settings(format!(
            "temporal.person_hash_key is set but namespace `{}` has no search attribute {}: \
             run `hookflow register-search-attributes` first",
            settings.namespace,
            PERSON_HASH.name()
        )));
    }
    Ok(())
}

/// Registers the attributes that `namespace` lacks; returns the names it added.
pub async fn register(client: &Client, namespace: &str) -> Result<Vec<String>, TemporalError> {
    let missing: HashMap<String, i32> = missing(client, namespace)
        .await?
        .into_iter()
        .map(|(name, kind)| {
            let kind = if kind == "Int" {
                IndexedValueType::Int
            } else {
                IndexedValueType::Keyword
            };
            (name.to_owned(), kind as i32)
        })
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let mut added: Vec<String> = missing.keys().cloned().collect();
    added.sort();
    client
        .connection()
        .operator_service()
        .add_search_attributes(tonic::Request::new(AddSearchAttributesRequest {
            search_attributes: missing,
            namespace: namespace.to_owned(),
        }))
        .await
        .map_err(|s| TemporalError::Rpc(format!("adding search attributes: {}", s.message())))?;
    Ok(added)
}
