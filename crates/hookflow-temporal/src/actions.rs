//! What a delivery costs on Temporal Cloud, counted from its history by the Cloud's
//! published mapping of history events to billable actions: a run started (by a client or
//! a continue-as-new) is one; so is each search-attribute upsert, timer, signal received
//! and activity scheduled (and each of its retries); the local activities recorded in one
//! workflow task are one together, each retry of one (as the task's metering says) one
//! more, and so is each workflow task heartbeat (a task completed with nothing, to keep a
//! long local activity alive). Workflow tasks and completions cost none. Queries and
//! activity heartbeats are billed too but leave nothing in a history, so they are not
//! counted. The throughput benchmark reports these per delivery, and `tests/replay.rs` per
//! recorded kind of delivery (docs/operations.md, "Sizing").

use temporalio_common::protos::temporal::api::history::v1::{
    HistoryEvent, history_event::Attributes,
};

/// The marker the SDK records a local activity's result with.
const LOCAL_ACTIVITY_MARKER: &str = "core_local_activity";

/// The billable actions a history's events cost, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionCount {
    /// Runs started (the delivery's start, each continue-as-new).
    pub starts: u32,
    /// Workflow tasks that recorded local activities (one action each, however many),
    /// and the retries of local activities the tasks' metering reports.
    pub local_activity_tasks: u32,
    /// Workflow task heartbeats: tasks completed with nothing while a local activity ran
    /// past the task's timeout.
    pub task_heartbeats: u32,
    /// Search-attribute upserts.
    pub upserts: u32,
    /// Timers started.
    pub timers: u32,
    /// Signals received.
    pub signals: u32,
    /// Activities scheduled, with their retries.
    pub activities: u32,
}

impl ActionCount {
    /// The actions of `events`, one run's history.
    pub fn of(events: &[HistoryEvent]) -> ActionCount {
        let mut count = ActionCount::default();
        // The workflow task whose local activities were counted last.
        let mut counted_task = None;
        let mut task = None;
        for (index, event) in events.iter().enumerate() {
            match &event.attributes {
                Some(Attributes::WorkflowExecutionStartedEventAttributes(_)) => count.starts += 1,
                Some(Attributes::WorkflowTaskCompletedEventAttributes(completed)) => {
                    task = Some(event.event_id);
                    count.local_activity_tasks += completed
                        .metering_metadata
                        .as_ref()
                        .map_or(0, |m| m.nonfirst_local_activity_execution_attempts);
                    // Completed with no command and at once scheduled again: a heartbeat.
                    let next = events.get(index + 1).and_then(|e| e.attributes.as_ref());
                    if matches!(
                        next,
                        Some(Attributes::WorkflowTaskScheduledEventAttributes(_))
                    ) {
                        count.task_heartbeats += 1;
                    }
                }
                Some(Attributes::MarkerRecordedEventAttributes(marker))
                    if marker.marker_name == LOCAL_ACTIVITY_MARKER && counted_task != task =>
                {
                    count.local_activity_tasks += 1;
                    counted_task = task;
                }
                Some(Attributes::UpsertWorkflowSearchAttributesEventAttributes(_)) => {
                    count.upserts += 1;
                }
                Some(Attributes::TimerStartedEventAttributes(_)) => count.timers += 1,
                Some(Attributes::WorkflowExecutionSignaledEventAttributes(_)) => {
                    count.signals += 1;
                }
                Some(Attributes::ActivityTaskScheduledEventAttributes(_)) => {
                    count.activities += 1;
                }
                Some(Attributes::ActivityTaskStartedEventAttributes(started)) => {
                    // Retries run under one scheduled event; each is an action.
                    count.activities += u32::try_from(started.attempt.max(1) - 1).unwrap_or(0);
                }
                _ => {}
            }
        }
        count
    }

    /// All of them.
    pub fn total(&self) -> u32 {
        self.starts
            + self.local_activity_tasks
            + self.task_heartbeats
            + self.upserts
            + self.timers
            + self.signals
            + self.activities
    }
}

impl std::ops::Add for ActionCount {
    type Output = ActionCount;

    fn add(self, other: ActionCount) -> ActionCount {
        ActionCount {
            starts: self.starts + other.starts,
            local_activity_tasks: self.local_activity_tasks + other.local_activity_tasks,
            task_heartbeats: self.task_heartbeats + other.task_heartbeats,
            upserts: self.upserts + other.upserts,
            timers: self.timers + other.timers,
            signals: self.signals + other.signals,
            activities: self.activities + other.activities,
        }
    }
}

#[cfg(test)]
mod tests {
    use temporalio_common::protos::temporal::api::{
        common::v1::MeteringMetadata,
        history::v1::{
            ActivityTaskScheduledEventAttributes, ActivityTaskStartedEventAttributes,
            MarkerRecordedEventAttributes, WorkflowTaskCompletedEventAttributes,
            WorkflowTaskScheduledEventAttributes,
        },
    };

    use super::*;

    fn event(id: i64, attributes: Attributes) -> HistoryEvent {
        HistoryEvent {
            event_id: id,
            attributes: Some(attributes),
            ..Default::default()
        }
    }

    fn completed(retried: u32) -> Attributes {
        Attributes::WorkflowTaskCompletedEventAttributes(WorkflowTaskCompletedEventAttributes {
            metering_metadata: Some(MeteringMetadata {
                nonfirst_local_activity_execution_attempts: retried,
            }),
            ..Default::default()
        })
    }

    fn marker() -> Attributes {
        Attributes::MarkerRecordedEventAttributes(MarkerRecordedEventAttributes {
            marker_name: LOCAL_ACTIVITY_MARKER.into(),
            ..Default::default()
        })
    }

    #[test]
    fn heartbeats_local_activity_retries_and_activity_retries_are_counted() {
        let scheduled = || {
            Attributes::WorkflowTaskScheduledEventAttributes(
                WorkflowTaskScheduledEventAttributes::default(),
            )
        };
        let events = [
            // Two heartbeats while a slow attempt runs, then its task records it after
            // one retry of the local activity.
            event(1, completed(0)),
            event(2, scheduled()),
            event(3, completed(0)),
            event(4, scheduled()),
            event(5, completed(1)),
            event(6, marker()),
            event(7, marker()),
            // An activity that ran three times.
            event(
                8,
                Attributes::ActivityTaskScheduledEventAttributes(
                    ActivityTaskScheduledEventAttributes::default(),
                ),
            ),
            event(
                9,
                Attributes::ActivityTaskStartedEventAttributes(
                    ActivityTaskStartedEventAttributes {
                        attempt: 3,
                        ..Default::default()
                    },
                ),
            ),
        ];
        let count = ActionCount::of(&events);
        assert_eq!(
            (
                count.task_heartbeats,
                count.local_activity_tasks,
                count.activities
            ),
            (2, 2, 3)
        );
        assert_eq!(count.total(), 7);
    }
}
