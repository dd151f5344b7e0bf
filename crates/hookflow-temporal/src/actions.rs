//! What a delivery costs on Temporal Cloud, counted from its history by the Cloud's
//! published mapping of history events to billable actions: a run started (by a client or
//! a continue-as-new) is one; so is each search-attribute upsert, timer, signal received
//! and activity scheduled (and each of its retries); the local activities recorded in one
//! workflow task are one together. Workflow tasks, completions and queries of the history
//! cost none. The throughput benchmark reports these per delivery, and
//! `tests/replay.rs` per recorded kind of delivery (docs/operations.md, "Sizing").

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
    /// Workflow tasks that recorded local activities (one action each, however many).
    pub local_activity_tasks: u32,
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
        for event in events {
            match &event.attributes {
                Some(Attributes::WorkflowExecutionStartedEventAttributes(_)) => count.starts += 1,
                Some(Attributes::WorkflowTaskCompletedEventAttributes(_)) => {
                    task = Some(event.event_id);
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
            upserts: self.upserts + other.upserts,
            timers: self.timers + other.timers,
            signals: self.signals + other.signals,
            activities: self.activities + other.activities,
        }
    }
}
