//! Idempotent start of delivery workflows: the workflow id is the delivery id, started with
//! id-reuse policy `RejectDuplicate` and conflict policy `Fail`, so a second start of the
//! same pair, running or closed, is answered "already started": the pair is delivered or
//! delivering. (`UseExisting` would answer the same for a running one, but the server
//! refuses eager start with it.)
//!
//! Starts ask for eager execution: when this process also runs a worker for the task
//! queue, the server hands the first workflow task back in the start's answer instead of
//! through a poll, so a first-try delivery costs no task-queue round trip; without a local
//! worker the client quietly makes a normal start.
//!
//! A failed start says whose problem it is ([`ScheduleErrorKind`]): only what the event
//! itself causes (an input over the payload limit, one that cannot be encoded) is the
//! event's, and is checked before the request where it can be; every refusal of a
//! well-formed start is the deployment's (namespace, search attributes, permissions), so it
//! stops consumption instead of dead-lettering all traffic. Values derived from the event
//! are kept within Temporal's limits, so an odd event cannot cause a refusal.

use hookflow_core::{
    DeliveryInput, DeliveryScheduler, ScheduleError, ScheduleErrorKind, Scheduled,
    person::PersonKey,
};
use sha2::{Digest, Sha256};
use temporalio_client::{
    Client, Priority, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
    errors::WorkflowStartError,
    tonic::{Code, Status},
};

use crate::{TemporalSettings, ownership, search_attributes, workflow::DeliveryWorkflow};

/// Temporal refuses a workflow summary over 400 bytes by default; this leaves room for the
/// JSON quotes and escapes of the payload.
pub const MAX_SUMMARY_BYTES: usize = 200;

/// The server's refusal of a payload over its blob size limit (2 MB by default).
const BLOB_TOO_LARGE: &str = "Blob data size exceeds limit";

/// Starts delivery workflows on one task queue.
#[derive(Clone)]
pub struct TemporalScheduler {
    client: Client,
    task_queue: String,
    max_input_bytes: usize,
    /// Whether the summary may show the event's name: not when payloads are encrypted, as
    /// Temporal stores the summary unencrypted.
    event_in_summary: bool,
    /// Whether these starts recover past traffic (a replay) rather than carry live traffic.
    recovery: bool,
    /// The key of the person hash deliveries carry, if the deployment keeps them.
    person_key: Option<PersonKey>,
}

impl TemporalScheduler {
    /// A scheduler that starts workflows with `client` as `settings` say: on its task
    /// queue, refusing inputs over its `max_input_bytes` (the event does not fit Temporal's
    /// payload limit).
    pub fn new(client: Client, settings: &TemporalSettings) -> Self {
        TemporalScheduler {
            client,
            task_queue: settings.task_queue.clone(),
            max_input_bytes: settings.max_input_bytes,
            event_in_summary: !settings.codec.enabled,
            recovery: false,
            person_key: settings.person_key(),
        }
    }

    /// The same scheduler for recovery traffic (a replay): its starts go through the task
    /// queue with the recovery priority, below live traffic's, never eagerly.
    pub fn for_recovery(mut self) -> Self {
        self.recovery = true;
        self
    }

    /// The client it starts with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The task queue it starts on.
    pub fn task_queue(&self) -> &str {
        &self.task_queue
    }
}

impl DeliveryScheduler for TemporalScheduler {
    async fn schedule(&self, input: &DeliveryInput) -> Result<Scheduled, ScheduleError> {
        let size = serde_json::to_vec(input).map_or(0, |bytes| bytes.len());
        if size > self.max_input_bytes {
            return Err(ScheduleError {
                message: format!(
                    "the delivery input is {size} bytes, over temporal.max_input_bytes ({}): \
                     the event does not fit Temporal's payload limit",
                    self.max_input_bytes
                ),
                kind: ScheduleErrorKind::Event,
            });
        }
        match self.start(input).await? {
            Scheduled::Started => Ok(Scheduled::Started),
            Scheduled::AlreadyExists => {
                // Another team's delivery may hold the id: this team's goes under its own.
                let team_id = input.event.team_id;
                let unavailable = |message: String| ScheduleError {
                    message,
                    kind: ScheduleErrorKind::Unavailable,
                };
                let holder = ownership::holder_team(&self.client, &input.delivery_id)
                    .await
                    .map_err(|e| {
                        unavailable(format!("finding whose {} is: {e}", input.delivery_id))
                    })?;
                match holder {
                    Some(holder) if holder == team_id => Ok(Scheduled::AlreadyExists),
                    Some(_) => {
                        let owned = input.delivery_id.for_team(team_id);
                        self.start(&input.clone().with_delivery_id(owned)).await
                    }
                    // Gone since (retention): the start is tried again, not counted done.
                    None => Err(unavailable(format!(
                        "{} was already started but is not found now",
                        input.delivery_id
                    ))),
                }
            }
        }
    }
}

impl TemporalScheduler {
    /// The person hash of `input`'s event, when the deployment keeps them and the event
    /// names a person.
    fn person_hash(&self, input: &DeliveryInput) -> Option<String> {
        let distinct_id = input.event.distinct_id.as_deref()?;
        Some(
            self.person_key
                .as_ref()?
                .hash(input.event.team_id, distinct_id),
        )
    }

    /// Starts `input` under its delivery id, or finds that id taken.
    async fn start(&self, input: &DeliveryInput) -> Result<Scheduled, ScheduleError> {
        let options =
            WorkflowStartOptions::new(self.task_queue.clone(), input.delivery_id.to_string())
                .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
                .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
                .search_attributes(search_attributes::for_delivery(
                    input,
                    self.person_hash(input),
                ))
                .enable_eager_workflow_start(!self.recovery)
                .priority(priority(input, self.recovery))
                .static_summary(if self.event_in_summary {
                    summary(input)
                } else {
                    format!("delivery to {}", input.destination_id)
                })
                .build();
        match self
            .client
            .start_workflow(DeliveryWorkflow::run, input.clone(), options)
            .await
        {
            Ok(_) => Ok(Scheduled::Started),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(Scheduled::AlreadyExists),
            Err(WorkflowStartError::PayloadConversion(e)) => Err(ScheduleError {
                message: format!("cannot encode the workflow input: {e}"),
                kind: ScheduleErrorKind::Event,
            }),
            Err(WorkflowStartError::Rpc(status)) => Err(ScheduleError {
                message: format!(
                    "starting workflow {}: {} ({:?})",
                    input.delivery_id,
                    status.message(),
                    status.code()
                ),
                kind: kind_of(&status),
            }),
            Err(other) => Err(ScheduleError {
                message: other.to_string(),
                kind: ScheduleErrorKind::Unavailable,
            }),
        }
    }
}

/// Temporal's limit on a fairness key, in bytes.
const MAX_FAIRNESS_KEY: usize = 64;

/// Each destination is its own fairness key, so where the server dispatches by fairness a
/// backlog to one destination (a dead endpoint's retries, a replay) gets one share of the
/// task queue, not all of it. Recovery starts have the recovery priority.
pub(crate) fn priority(input: &DeliveryInput, recovery: bool) -> Priority {
    let mut priority = if recovery {
        crate::recovery::recovery_priority()
    } else {
        Priority::default()
    };
    priority.fairness_key = Some(fairness_key(input));
    priority
}

/// The destination's key: its uid where its store gave it one, else its team and id
/// (`<team>:<id>`, the id hashed when that is over Temporal's limit), so two teams'
/// destinations of one id are two keys. It says nothing the search attributes do not.
fn fairness_key(input: &DeliveryInput) -> String {
    if let Some(uid) = &input.destination_uid {
        return uid.clone();
    }
    let team = input.event.team_id;
    let key = format!("{team}:{}", input.destination_id);
    if key.len() <= MAX_FAIRNESS_KEY {
        return key;
    }
    let digest = format!("{:x}", Sha256::digest(input.destination_id.as_bytes()));
    format!("{team}:{}", &digest[..32])
}

/// Whose problem a refused start is.
fn kind_of(status: &Status) -> ScheduleErrorKind {
    match status.code() {
        Code::InvalidArgument if status.message().contains(BLOB_TOO_LARGE) => {
            ScheduleErrorKind::Event
        }
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::Internal
        | Code::Unknown => ScheduleErrorKind::Unavailable,
        _ => ScheduleErrorKind::Deployment,
    }
}

/// `<event> → <destination>` for the Temporal UI, cut to [`MAX_SUMMARY_BYTES`] on a
/// character boundary: the event name comes from upstream and has no length limit.
pub fn summary(input: &DeliveryInput) -> String {
    let full = format!("{} → {}", input.event.event, input.destination_id);
    if full.len() <= MAX_SUMMARY_BYTES {
        return full;
    }
    let (event, suffix) = (&input.event.event, format!("… → {}", input.destination_id));
    let mut cut = MAX_SUMMARY_BYTES
        .saturating_sub(suffix.len())
        .min(event.len());
    while !event.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &event[..cut])
}

#[cfg(test)]
mod tests {
    use hookflow_core::ActionMatchedEvent;

    use super::*;

    fn input(event_name: &str) -> DeliveryInput {
        let mut event = ActionMatchedEvent::from_json(
            br#"{"uuid":"0190f3a4-0000-7000-8000-000000000001","team_id":2,"event":"e",
                "timestamp":"2026-11-21T10:00:00Z","matched_actions":[{"id":1,"name":"a"}]}"#,
        )
        .expect("event");
        event.event = event_name.to_owned();
        let actions = event.matched_actions.clone();
        DeliveryInput::new("d-1", event, actions)
    }

    #[test]
    fn summaries_stay_within_the_limit_on_a_character_boundary() {
        assert_eq!(summary(&input("signed_up")), "signed_up → d-1");
        let long = summary(&input(&"é".repeat(10_000)));
        assert!(long.len() <= MAX_SUMMARY_BYTES, "{}", long.len());
        assert!(
            long.starts_with("éé") && long.ends_with("… → d-1"),
            "{long}"
        );
    }

    #[test]
    fn only_a_payload_over_the_limit_is_the_events_fault() {
        let blob = Status::invalid_argument("Blob data size exceeds limit.");
        assert_eq!(kind_of(&blob), ScheduleErrorKind::Event);
        let unregistered = Status::invalid_argument(
            "Namespace x has no mapping defined for search attribute HookflowTeamId",
        );
        assert_eq!(kind_of(&unregistered), ScheduleErrorKind::Deployment);
        let failover = Status::failed_precondition("namespace is not active");
        assert_eq!(kind_of(&failover), ScheduleErrorKind::Deployment);
        let unknown_namespace = Status::not_found("Namespace x is not found.");
        assert_eq!(kind_of(&unknown_namespace), ScheduleErrorKind::Deployment);
        let down = Status::unavailable("connection refused");
        assert_eq!(kind_of(&down), ScheduleErrorKind::Unavailable);
    }

    #[test]
    fn fairness_keys_are_per_team_and_within_the_limit() {
        let mut other_team = input("e");
        other_team.event.team_id = 3;
        assert_eq!(fairness_key(&input("e")), "2:d-1");
        assert_eq!(fairness_key(&other_team), "3:d-1");
        let mut long = input("e");
        long.destination_id = "x".repeat(64);
        long.event.team_id = i64::MIN;
        let key = fairness_key(&long);
        assert!(key.len() <= MAX_FAIRNESS_KEY, "{key}");
        assert!(key.starts_with("-9223372036854775808:"), "{key}");
        long.destination_id = format!("{}y", "x".repeat(63));
        assert_ne!(fairness_key(&long), key);
        let mut with_uid = input("e");
        with_uid.destination_uid = Some("0190f3a4-0000-7000-8000-0000000000aa".into());
        assert_eq!(
            fairness_key(&with_uid),
            "0190f3a4-0000-7000-8000-0000000000aa"
        );
    }
}
