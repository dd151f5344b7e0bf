//! The seam between the Kafka consumer and Temporal: something that durably starts one
//! delivery, exactly once per delivery id. The consumer depends on this trait; the Temporal
//! starter implements it; only the binary wires the two together.

use std::future::Future;

use crate::delivery::DeliveryInput;

/// What starting a delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduled {
    /// A new delivery workflow was started.
    Started,
    /// A workflow with this delivery id already exists (running or finished): the pair is
    /// already delivered or delivering, so there is nothing to do.
    AlreadyExists,
}

impl Scheduled {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::AlreadyExists => "already_exists",
        }
    }
}

/// Whose problem a failed start is, which decides what the consumer does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleErrorKind {
    /// The workflow service is unreachable or overloaded: the same start may succeed soon.
    Unavailable,
    /// The service refused the start for a reason of the deployment (an unknown namespace,
    /// unregistered search attributes, missing permissions, a namespace failing over): no
    /// event can start until an operator fixes it, so consumption stops meanwhile.
    Deployment,
    /// This event can never be started (its input is over the payload limit or cannot be
    /// encoded): it goes to the dead-letter topic.
    Event,
}

/// Why a delivery could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    /// What went wrong.
    pub message: String,
    /// Whose problem it is.
    pub kind: ScheduleErrorKind,
}

/// Starts delivery workflows.
pub trait DeliveryScheduler: Send + Sync + 'static {
    /// Starts the delivery of `input`, or finds it already started.
    fn schedule(
        &self,
        input: &DeliveryInput,
    ) -> impl Future<Output = Result<Scheduled, ScheduleError>> + Send;
}
