//! One delivery: an (event, destination) pair, its stable id, and the input of the workflow
//! that carries it out.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    destination::Destination,
    event::{ActionMatchedEvent, ActionRef},
    progress::{DeliveryProgress, HistoryBound},
    retry::RetryPolicy,
};

/// The delivery id: `<destination id>:<event uuid>`, the uuid in lowercase hyphenated form.
///
/// It is the Temporal workflow id (so a replayed Kafka message cannot start a second
/// workflow for the same pair) and the `webhook-id` header of every attempt (so a receiver
/// can dedupe). Destination ids cannot contain `:`, so the id splits back unambiguously.
///
/// Destination ids are unique per team only, and an event's uuid is chosen by whoever sent
/// the event, so two teams' deliveries can share this id. The first to start keeps it; the
/// other team's delivery takes [`Self::for_team`] instead, so neither is deduplicated away
/// as the other's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryId(String);

impl DeliveryId {
    /// The id of the delivery of `event_uuid` to `destination_id`.
    pub fn new(destination_id: &str, event_uuid: Uuid) -> Self {
        DeliveryId(format!("{destination_id}:{}", event_uuid.as_hyphenated()))
    }

    /// The id a delivery of team `team_id` takes when another team's delivery holds this
    /// one: `<destination id>:<event uuid>:t<team id>`.
    pub fn for_team(&self, team_id: i64) -> Self {
        DeliveryId(format!("{}:t{team_id}", self.0))
    }

    /// The destination id it starts with.
    pub fn destination_id(&self) -> &str {
        self.0.split(':').next().unwrap_or_default()
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the delivery workflow is started with. It carries ids and the event, never a URL,
/// header or secret: the activity resolves those from the destination store at attempt time,
/// so credentials stay out of the workflow history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryInput {
    /// The delivery id (also the workflow id).
    pub delivery_id: DeliveryId,
    /// The destination to deliver to.
    pub destination_id: String,
    /// The destination's uid when it was planned, if its store assigns them: only the
    /// destination with this uid (and the event's team) may receive the delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_uid: Option<String>,
    /// The event to deliver.
    pub event: ActionMatchedEvent,
    /// The event's actions that this destination wants (at least one).
    pub actions: Vec<ActionRef>,
    /// The retry schedule, fixed when the delivery starts so the workflow stays deterministic.
    pub retry: RetryPolicy,
    /// The Kafka message's timestamp (milliseconds since the epoch), for end-to-end latency.
    #[serde(default)]
    pub produced_at_ms: Option<i64>,
    /// How much history one workflow run may write before it continues as new.
    #[serde(default)]
    pub history: HistoryBound,
    /// Where the previous run left off; `None` in a delivery's first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<DeliveryProgress>,
    /// Which revision of the workflow code this delivery runs. Inputs recorded before the
    /// field existed read as [`WorkflowRevision::ActivityAttempts`], the code they ran, and
    /// such an input is written without it: that revision sizes its runs by the bytes of
    /// its recorded attempt inputs, computed again on replay, so its inputs must serialise
    /// today exactly as they were recorded (`tests/replay.rs` checks it).
    #[serde(
        default,
        skip_serializing_if = "WorkflowRevision::is_activity_attempts"
    )]
    pub revision: WorkflowRevision,
}

/// A revision of the delivery workflow's code. It is chosen when a delivery starts and
/// recorded in its input, so in its history: a replay takes the branch the delivery started
/// with, and continued runs keep it. A patch marker would do the same at the cost of two
/// history events (the marker and a search-attribute upsert) in every delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowRevision {
    /// Each attempt is an activity task: scheduled, polled by a worker and completed
    /// through the server (eleven history events a round with its wait).
    #[default]
    ActivityAttempts,
    /// Each attempt is a local activity, run by the worker inside the workflow task and
    /// recorded as one marker (six history events a round with its wait; a first-try
    /// delivery is one workflow task).
    LocalAttempts,
}

impl WorkflowRevision {
    /// The revision new deliveries start with. A release that adds a revision keeps this
    /// at the one before, and the next release moves it (docs/workflow-changes.md): every worker of a rolling deploy, and of a rollback by one release, then
    /// knows every revision a delivery in flight may have started on.
    pub const CURRENT: WorkflowRevision = WorkflowRevision::LocalAttempts;

    fn is_activity_attempts(&self) -> bool {
        *self == WorkflowRevision::ActivityAttempts
    }
}

impl DeliveryInput {
    /// The delivery of `event`'s `actions` to `destination_id`, with the default retry
    /// policy and history bound (a test send, say; [`plan_deliveries`] applies the
    /// deployment's and the destination's).
    pub fn new(destination_id: &str, event: ActionMatchedEvent, actions: Vec<ActionRef>) -> Self {
        DeliveryInput {
            delivery_id: DeliveryId::new(destination_id, event.uuid),
            destination_id: destination_id.to_owned(),
            destination_uid: None,
            event,
            actions,
            retry: RetryPolicy::default(),
            produced_at_ms: None,
            history: HistoryBound::default(),
            progress: None,
            revision: WorkflowRevision::CURRENT,
        }
    }

    /// The same delivery under workflow id `delivery_id` ([`DeliveryId::for_team`]), which
    /// is also the `webhook-id` its attempts send.
    pub fn with_delivery_id(self, delivery_id: DeliveryId) -> Self {
        DeliveryInput {
            delivery_id,
            ..self
        }
    }

    /// The input of a fresh start of this delivery (a redelivery, say): no progress, and
    /// the current workflow revision whatever the recorded input ran.
    pub fn restarted(mut self) -> Self {
        self.progress = None;
        self.revision = WorkflowRevision::CURRENT;
        self
    }

    /// This delivery planned again for `destination` as it is now, for a fresh start (a
    /// redelivery after an outage, say): today's retry policy and history bound replace the
    /// recorded ones, so an operator who raised the maximum age gets it. The event and its
    /// matched actions stay as recorded. `None` when the delivery was planned for another
    /// destination that had this id ([`Self::was_planned_for`]).
    pub fn replanned(self, destination: &Destination, defaults: &DeliveryDefaults) -> Option<Self> {
        if !self.was_planned_for(destination) {
            return None;
        }
        Some(
            DeliveryInput {
                retry: destination.retry_policy(&defaults.retry),
                history: defaults.history,
                ..self
            }
            .restarted(),
        )
    }

    /// Whether this delivery was planned for `destination`: the same id and team and, when
    /// the delivery recorded one, the same uid. A destination that took over a deleted
    /// one's id is another destination and must not receive this delivery.
    pub fn was_planned_for(&self, destination: &Destination) -> bool {
        destination.id == self.destination_id
            && destination.team_id == self.event.team_id
            && self.destination_uid.as_deref().is_none_or(|recorded| {
                destination
                    .uid
                    .is_some_and(|uid| uuid::Uuid::parse_str(recorded) == Ok(uid))
            })
    }
}

/// The deployment's settings every delivery starts with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryDefaults {
    /// The retry policy (a destination may override its schedule and maximum age).
    pub retry: RetryPolicy,
    /// The history bound of each workflow run.
    pub history: HistoryBound,
}

/// The deliveries an event needs: one per matching destination, listing every matching
/// action, each with the deployment's defaults and the destination's overrides.
pub fn plan_deliveries<'a>(
    event: &ActionMatchedEvent,
    destinations: impl IntoIterator<Item = &'a Destination>,
    defaults: &DeliveryDefaults,
    produced_at_ms: Option<i64>,
) -> Vec<DeliveryInput> {
    destinations
        .into_iter()
        .filter_map(|destination| {
            let actions = destination.matching_actions(event)?;
            Some(DeliveryInput {
                destination_uid: destination.uid.map(|uid| uid.to_string()),
                retry: destination.retry_policy(&defaults.retry),
                produced_at_ms,
                history: defaults.history,
                ..DeliveryInput::new(&destination.id, event.clone(), actions)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_id_is_stable_and_case_insensitive_in_the_uuid() {
        let upper = Uuid::parse_str("0190F3A4-0000-7000-8000-00000000000A").expect("uuid");
        let lower = Uuid::parse_str("0190f3a4-0000-7000-8000-00000000000a").expect("uuid");
        assert_eq!(DeliveryId::new("d-1", upper), DeliveryId::new("d-1", lower));
        assert_eq!(
            DeliveryId::new("d-1", lower).as_str(),
            "d-1:0190f3a4-0000-7000-8000-00000000000a"
        );
        let taken = DeliveryId::new("d-1", lower).for_team(42);
        assert_eq!(
            taken.as_str(),
            "d-1:0190f3a4-0000-7000-8000-00000000000a:t42"
        );
        assert_eq!(taken.destination_id(), "d-1");
    }

    #[test]
    fn inputs_recorded_before_revisions_replay_the_code_they_ran() {
        let event = ActionMatchedEvent::from_json(
            br#"{"uuid":"0190f3a4-0000-7000-8000-000000000001","team_id":2,"event":"e",
                "timestamp":"2026-11-21T10:00:00Z","matched_actions":[{"id":1,"name":"a"}]}"#,
        )
        .expect("event");
        let current = DeliveryInput::new("d-1", event.clone(), event.matched_actions.clone());
        assert_eq!(current.revision, WorkflowRevision::LocalAttempts);
        let mut recorded = serde_json::to_value(&current).expect("json");
        recorded.as_object_mut().expect("object").remove("revision");
        let old: DeliveryInput = serde_json::from_value(recorded).expect("old input");
        assert_eq!(old.revision, WorkflowRevision::ActivityAttempts);
        assert_eq!(old.restarted().revision, WorkflowRevision::CURRENT);
    }
}
