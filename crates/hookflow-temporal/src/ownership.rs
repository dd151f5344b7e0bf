//! Which workflow carries a team's delivery. A delivery id names the destination by its id,
//! unique only within a team, and the event by its uuid, which whoever sent the event
//! chose; so another team's delivery may already hold the id. Its team is read from the
//! workflow that holds it (the `HookflowTeamId` search attribute, or else the recorded
//! input), and a delivery of any other team goes under [`DeliveryId::for_team`]: neither
//! team's delivery is deduplicated away as the other's, nor seen, re-run or stopped through
//! the other's.

use hookflow_core::DeliveryId;
use temporalio_client::{Client, errors::WorkflowInteractionError};
use temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo;

use crate::{connection::TemporalError, deliveries, search_attributes};

/// The workflow id of team `team_id`'s delivery `delivery`: `delivery` itself when no
/// workflow holds it or one of this team does, [`DeliveryId::for_team`] when another
/// team's does.
pub async fn workflow_of(
    client: &Client,
    team_id: i64,
    delivery: &DeliveryId,
) -> Result<DeliveryId, TemporalError> {
    let holder = holder_team(client, delivery).await?;
    Ok(match holder {
        Some(holder) if holder != team_id => delivery.for_team(team_id),
        _ => delivery.clone(),
    })
}

/// The team of the delivery that holds workflow id `delivery` (of its latest run); `None`
/// when none does.
pub async fn holder_team(
    client: &Client,
    delivery: &DeliveryId,
) -> Result<Option<i64>, TemporalError> {
    let handle = deliveries::run_handle(client, delivery.as_str(), "");
    let description = match handle.describe(Default::default()).await {
        Ok(description) => description,
        Err(WorkflowInteractionError::NotFound(_)) => return Ok(None),
        Err(error) => return Err(TemporalError::Rpc(error.to_string())),
    };
    if let Some(team) = description
        .raw_description
        .workflow_execution_info
        .as_ref()
        .and_then(team_of)
    {
        return Ok(Some(team));
    }
    // Every start sets the attribute; an execution without it still has its input. Its
    // error would quote another team's input: say only what failed.
    let recorded = deliveries::recorded_input(client, delivery.as_str(), None)
        .await
        .map_err(|_| {
            TemporalError::Rpc(format!(
                "{delivery}: cannot read which team's delivery holds this id"
            ))
        })?;
    Ok(recorded.map(|input| input.event.team_id))
}

/// The team a listed or described run carries in its `HookflowTeamId` search attribute.
pub(crate) fn team_of(info: &WorkflowExecutionInfo) -> Option<i64> {
    search_attributes::value_of(info, search_attributes::TEAM_ID.name())
}

#[cfg(test)]
mod tests {
    use temporalio_common::protos::temporal::api::common::v1::{Payload, SearchAttributes};

    use super::*;

    #[test]
    fn the_team_is_read_from_the_int_attribute() {
        let info = |data: &[u8]| WorkflowExecutionInfo {
            search_attributes: Some(SearchAttributes {
                indexed_fields: [(
                    search_attributes::TEAM_ID.name().to_owned(),
                    Payload {
                        data: data.to_vec(),
                        ..Default::default()
                    },
                )]
                .into(),
            }),
            ..Default::default()
        };
        assert_eq!(team_of(&info(b"42")), Some(42));
        assert_eq!(team_of(&info(b"\"42\"")), None);
        assert_eq!(team_of(&WorkflowExecutionInfo::default()), None);
    }
}
