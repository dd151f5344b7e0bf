//! hookflow's domain: what an action-matched event is, which destinations want it, what
//! one delivery of it is called and carries, how its body is rendered and signed, and how a
//! failed attempt is retried. Everything here is pure and deterministic, so the Temporal
//! workflow, the Kafka consumer and the HTTP activity can all share it, and it is tested
//! without any I/O.

pub mod allow_list;
pub mod attempt;
pub mod body;
pub mod breaker;
pub mod credentials;
pub mod delivery;
pub mod destination;
pub mod doubling;
pub mod endpoint;
pub mod event;
pub mod field_error;
pub mod format;
pub mod millis;
pub mod notice;
pub mod outcomes;
pub mod person;
pub mod progress;
pub mod redaction;
pub mod request;
pub mod retry;
pub mod scheduler;
pub mod signing;
pub mod standing;
pub mod streak;
pub mod sync;
pub mod template;
pub mod tls;

pub use allow_list::AllowList;
pub use attempt::{AttemptError, AttemptErrorKind, AttemptReport, AttemptStep, AttemptVerdict};
pub use credentials::{SecretHeaders, SigningSecret};
pub use delivery::{
    DeliveryDefaults, DeliveryId, DeliveryInput, WorkflowRevision, plan_deliveries,
};
pub use destination::{
    Destination, DestinationCatalog, DestinationError, DestinationSet, DestinationSpec,
    DestinationState, LimitOverrides, LiveDestinations, OAuth2Spec, ValidationRules,
};
pub use endpoint::{Deferral, DeferralBackoff, DeferralReason, EndpointKey, EndpointLimits};
pub use event::{ActionMatchedEvent, ActionRef, ContractError};
pub use field_error::FieldError;
pub use format::Format;
pub use outcomes::{DeliveryOutcome, DeliveryResult};
pub use progress::{DeliveryProgress, HistoryBound, Next, RunBudget};
pub use redaction::{REDACTED, Secret};
pub use retry::{RetryDecision, RetryPolicy};
pub use scheduler::{DeliveryScheduler, ScheduleError, ScheduleErrorKind, Scheduled};
pub use standing::{EndpointStanding, Standing};
