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
pub const ALL: [(&str, &str); 4] = [
    ("HookflowTeamId", "Int"),
    ("HookflowDestinationId", "Keyword"),
    ("HookflowEventUuid", "Keyword"),
    ("HookflowOutcome", "Keyword"),
];

/// The attributes a delivery starts with.
pub fn for_delivery(input: &DeliveryInput) -> SearchAttributes {
    SearchAttributes::new([
        TEAM_ID.value_set(input.event.team_id),
        DESTINATION_ID.value_set(input.destination_id.clone()),
        EVENT_UUID.value_set(input.event.uuid.to_string()),
    ])
}

/// Registers the attributes that `namespace` lacks; returns the names it added.
pub async fn register(client: &Client, namespace: &str) -> Result<Vec<String>, TemporalError> {
    let mut operator = client.connection().operator_service();
    let existing = operator
        .list_search_attributes(tonic::Request::new(ListSearchAttributesRequest {
            namespace: namespace.to_owned(),
        }))
        .await
        .map_err(|s| TemporalError::Rpc(format!("listing search attributes: {}", s.message())))?
        .into_inner()
        .custom_attributes;
    let missing: HashMap<String, i32> = ALL
        .iter()
        .filter(|(name, _)| !existing.contains_key(*name))
        .map(|(name, kind)| {
            let kind = if *kind == "Int" {
                IndexedValueType::Int
            } else {
                IndexedValueType::Keyword
            };
            ((*name).to_owned(), kind as i32)
        })
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let mut added: Vec<String> = missing.keys().cloned().collect();
    added.sort();
    operator
        .add_search_attributes(tonic::Request::new(AddSearchAttributesRequest {
            search_attributes: missing,
            namespace: namespace.to_owned(),
        }))
        .await
        .map_err(|s| TemporalError::Rpc(format!("adding search attributes: {}", s.message())))?;
    Ok(added)
}
