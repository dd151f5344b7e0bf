//! What happens to one Kafka message: parse it against the contract, find the destinations
//! that want it, and start one delivery per destination through the [`StartGate`], retrying
//! while Temporal is unavailable or refuses starts for a reason of the deployment. Only a
//! start the event itself makes impossible dead-letters it. The result tells the consumer
//! whether the message is done (and may be committed), must be dead-lettered, or was
//! interrupted by shutdown.

use std::sync::Arc;

use futures::future::join_all;
use hookflow_core::{
    ActionMatchedEvent, ContractError, DeliveryDefaults, DeliveryInput, DeliveryScheduler,
    DestinationCatalog, EndpointKey, ScheduleError, ScheduleErrorKind, Scheduled, plan_deliveries,
};
use hookflow_runtime::{Backoff, BackoffPolicy};
use hookflow_telemetry::{health::HealthHandle, names};
use tokio_util::sync::CancellationToken;

use crate::{
    start_gate::{Entry, StartGate},
    start_queue::StartQueue,
};

/// How a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageDisposition {
    /// Every delivery it needs is started or already existed.
    Started {
        /// Deliveries newly started.
        started: usize,
        /// Deliveries that already existed.
        existing: usize,
    },
    /// No destination wants it.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// It must go to the dead-letter topic.
    DeadLetter {
        /// What kind of problem (the dead letter's `hookflow-error-kind` header).
        kind: DeadLetterKind,
        /// The human-readable reason, for the dead letter's header.
        reason: String,
    },
    /// Shutdown came while a start was still being retried: the message is not done and
    /// must not be committed.
    Interrupted,
}

impl MessageDisposition {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Skipped { .. } => "skipped",
            Self::DeadLetter { .. } => "dead_lettered",
            Self::Interrupted => "interrupted",
        }
    }
}

/// Why no destination wants a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The event's team has no destination.
    NoDestinations,
    /// The team's destinations want none of the event's actions.
    NoMatchingDestination,
}

impl SkipReason {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoDestinations => "no_destinations",
            Self::NoMatchingDestination => "no_matching_destination",
        }
    }
}

/// What is wrong with a dead-lettered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterKind {
    /// The message has no payload.
    Empty,
    /// The payload is not JSON.
    NotJson,
    /// The payload is JSON but breaks the event contract.
    Contract,
    /// A delivery of it can never start (too large for Temporal, for example).
    Unstartable,
}

impl DeadLetterKind {
    /// A stable label for the header and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NotJson => "not_json",
            Self::Contract => "contract",
            Self::Unstartable => "unstartable",
        }
    }
}

impl From<&ContractError> for DeadLetterKind {
    fn from(error: &ContractError) -> Self {
        match error {
            ContractError::NotJson(_) => Self::NotJson,
            ContractError::Shape(_) | ContractError::Field { .. } => Self::Contract,
        }
    }
}

/// Turns messages into delivery starts.
pub struct Pipeline<S> {
    scheduler: Arc<S>,
    destinations: Arc<dyn DestinationCatalog>,
    defaults: DeliveryDefaults,
    starts: Arc<StartQueue>,
    gate: StartGate,
    backoff: BackoffPolicy,
    shutdown: CancellationToken,
}

impl<S: DeliveryScheduler> Pipeline<S> {
    /// A pipeline whose starts wait for a place in flight in `starts` (in the order of
    /// their endpoint's standing), reporting to `starts_health` whether Temporal accepts
    /// them.
    pub fn new(
        scheduler: Arc<S>,
        destinations: Arc<dyn DestinationCatalog>,
        defaults: DeliveryDefaults,
        starts: Arc<StartQueue>,
        backoff: BackoffPolicy,
        starts_health: HealthHandle,
        shutdown: CancellationToken,
    ) -> Self {
        Pipeline {
            scheduler,
            destinations,
            defaults,
            starts,
            gate: StartGate::new(starts_health),
            backoff,
            shutdown,
        }
    }

    /// Processes one message payload, produced at `produced_at_ms` (the Kafka timestamp).
    pub async fn process(
        &self,
        payload: Option<&[u8]>,
        produced_at_ms: Option<i64>,
    ) -> MessageDisposition {
        let Some(payload) = payload.filter(|p| !p.is_empty()) else {
            return MessageDisposition::DeadLetter {
                kind: DeadLetterKind::Empty,
                reason: "the message has no payload".into(),
            };
        };
        let event = match ActionMatchedEvent::from_json(payload) {
            Ok(event) => event,
            Err(error) => {
                return MessageDisposition::DeadLetter {
                    kind: DeadLetterKind::from(&error),
                    reason: error.to_string(),
                };
            }
        };
        let team_destinations = self.destinations.for_team(event.team_id);
        if team_destinations.is_empty() {
            return MessageDisposition::Skipped {
                reason: SkipReason::NoDestinations,
            };
        }
        let deliveries = plan_deliveries(
            &event,
            team_destinations.iter().map(Arc::as_ref),
            &self.defaults,
            produced_at_ms,
        );
        if deliveries.is_empty() {
            return MessageDisposition::Skipped {
                reason: SkipReason::NoMatchingDestination,
            };
        }
        let endpoint = |delivery: &DeliveryInput| {
            team_destinations
                .iter()
                .find(|d| d.id == delivery.destination_id)
                .map(|d| &d.endpoint)
        };
        let results = join_all(deliveries.iter().map(|d| self.start(d, endpoint(d)))).await;
        let (mut started, mut existing) = (0, 0);
        for result in results {
            match result {
                Ok(Scheduled::Started) => started += 1,
                Ok(Scheduled::AlreadyExists) => existing += 1,
                Err(Some(reason)) => {
                    return MessageDisposition::DeadLetter {
                        kind: DeadLetterKind::Unstartable,
                        reason,
                    };
                }
                Err(None) => return MessageDisposition::Interrupted,
            }
        }
        MessageDisposition::Started { started, existing }
    }

    /// Starts one delivery through the gate, retrying until it starts unless the event
    /// itself cannot be started. `Err(Some)` is the event's failure (dead-letter it),
    /// `Err(None)` an interruption by shutdown.
    async fn start(
        &self,
        delivery: &DeliveryInput,
        endpoint: Option<&EndpointKey>,
    ) -> Result<Scheduled, Option<String>> {
        let mut backoff = Backoff::new(self.backoff);
        let mut probe = None;
        loop {
            if probe.is_none() {
                match self.gate.enter(&self.shutdown).await.ok_or(None)? {
                    Entry::Open => {}
                    Entry::Probe(permit) => probe = Some(permit),
                }
            }
            match self.schedule_once(delivery, endpoint).await {
                Ok(scheduled) => {
                    self.gate.succeeded();
                    return Ok(scheduled);
                }
                Err(error) if error.kind == ScheduleErrorKind::Event => {
                    tracing::error!(delivery_id = %delivery.delivery_id, %error, "delivery cannot be started");
                    return Err(Some(error.message));
                }
                Err(error) => {
                    self.gate.failed(&error);
                    // Every refused start waits its own back-off before it tries again, the
                    // probe and the rest alike: under partial throttling other starts keep
                    // opening the gate, and a start that went straight back through it
                    // would keep every place busy against an overloaded Temporal. A start
                    // that is not the probe then also waits at the gate.
                    tracing::debug!(delivery_id = %delivery.delivery_id, %error, retry_in_ms = backoff.next_wait().as_millis() as u64, "delivery start failed; retrying");
                    if !backoff.wait(&self.shutdown).await {
                        return Err(None);
                    }
                }
            }
        }
    }

    /// One start request, within the starts-in-flight bound, measured.
    async fn schedule_once(
        &self,
        delivery: &DeliveryInput,
        endpoint: Option<&EndpointKey>,
    ) -> Result<Scheduled, ScheduleError> {
        let _place = self.starts.enter_for(endpoint).await;
        let started = std::time::Instant::now();
        metrics::gauge!(names::WORKFLOW_STARTS_IN_FLIGHT).increment(1);
        let scheduled = self.scheduler.schedule(delivery).await;
        metrics::gauge!(names::WORKFLOW_STARTS_IN_FLIGHT).decrement(1);
        metrics::histogram!(names::WORKFLOW_START_DURATION).record(started.elapsed().as_secs_f64());
        let result = match &scheduled {
            Ok(scheduled) => scheduled.as_str(),
            Err(_) => "failed",
        };
        metrics::counter!(names::WORKFLOW_STARTS, "result" => result).increment(1);
        scheduled
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Mutex,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use hookflow_core::destination::DestinationSet;
    use hookflow_telemetry::health::Health;

    use super::*;

    /// An in-process scheduler for testing the pipeline's pure logic; the end-to-end tests
    /// use the real Temporal starter. Each call takes 10 ms (of the paused clock).
    #[derive(Default)]
    struct RecordingScheduler {
        started: Mutex<Vec<String>>,
        failures_before_success: Mutex<u32>,
        failure: Option<ScheduleErrorKind>,
        event_failure: bool,
        calls: AtomicUsize,
        /// Refuses each delivery's first this many starts (partial throttling: the others'
        /// succeed meanwhile).
        refusals_per_delivery: u32,
        /// Every call: its delivery and when it was made.
        calls_at: Mutex<Vec<(String, tokio::time::Instant)>>,
    }

    impl DeliveryScheduler for RecordingScheduler {
        async fn schedule(&self, input: &DeliveryInput) -> Result<Scheduled, ScheduleError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let id = input.delivery_id.to_string();
            let earlier = {
                let mut calls = self.calls_at.lock().expect("lock");
                let earlier = calls.iter().filter(|(d, _)| *d == id).count();
                calls.push((id.clone(), tokio::time::Instant::now()));
                earlier
            };
            tokio::time::sleep(Duration::from_millis(10)).await;
            if (earlier as u32) < self.refusals_per_delivery {
                return Err(ScheduleError {
                    message: "throttled".into(),
                    kind: ScheduleErrorKind::Unavailable,
                });
            }
            if self.event_failure {
                return Err(ScheduleError {
                    message: "bad input".into(),
                    kind: ScheduleErrorKind::Event,
                });
            }
            {
                let mut failures = self.failures_before_success.lock().expect("lock");
                if *failures > 0 {
                    *failures -= 1;
                    return Err(ScheduleError {
                        message: "refused".into(),
                        kind: self.failure.unwrap_or(ScheduleErrorKind::Unavailable),
                    });
                }
            }
            let mut started = self.started.lock().expect("lock");
            if started.contains(&id) {
                return Ok(Scheduled::AlreadyExists);
            }
            started.push(id);
            Ok(Scheduled::Started)
        }
    }

    fn destinations() -> Arc<dyn DestinationCatalog> {
        Arc::new(
            DestinationSet::from_toml(
                r#"
                [[destination]]
                id = "all"
                team_id = 2
                url = "https://a.example/"
                [[destination]]
                id = "only-17"
                team_id = 2
                url = "https://b.example/"
                actions = [17]
                [[destination]]
                id = "only-99"
                team_id = 2
                url = "https://c.example/"
                actions = [99]
                "#,
                &Default::default(),
            )
            .expect("destinations"),
        )
    }

    fn pipeline(
        scheduler: Arc<RecordingScheduler>,
        shutdown: CancellationToken,
    ) -> Pipeline<RecordingScheduler> {
        pipeline_with_health(scheduler, shutdown, &Health::default())
    }

    fn pipeline_with_health(
        scheduler: Arc<RecordingScheduler>,
        shutdown: CancellationToken,
        health: &Health,
    ) -> Pipeline<RecordingScheduler> {
        let backoff = BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        Pipeline::new(
            scheduler,
            destinations(),
            DeliveryDefaults::default(),
            StartQueue::new(4, crate::start_queue::MAX_REORDER_WAIT, None),
            backoff,
            health.register_readiness("temporal_starts"),
            shutdown,
        )
    }

    fn event(team_id: i64, actions: &[(i64, &str)]) -> Vec<u8> {
        let actions: Vec<_> = actions
            .iter()
            .map(|(id, name)| serde_json::json!({"id": id, "name": name}))
            .collect();
        serde_json::json!({
            "uuid": "0190f3a4-0000-7000-8000-000000000001", "team_id": team_id, "event": "e",
            "timestamp": "2026-11-21T10:00:00Z", "matched_actions": actions
        })
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn starts_one_delivery_per_matching_destination_and_none_twice() {
        let scheduler = Arc::new(RecordingScheduler::default());
        let p = pipeline(scheduler.clone(), CancellationToken::new());
        let msg = event(2, &[(17, "a"), (18, "b")]);
        assert_eq!(
            p.process(Some(&msg), None).await,
            MessageDisposition::Started {
                started: 2,
                existing: 0
            }
        );
        let mut ids = scheduler.started.lock().expect("lock").clone();
        ids.sort();
        assert_eq!(
            ids,
            [
                "all:0190f3a4-0000-7000-8000-000000000001",
                "only-17:0190f3a4-0000-7000-8000-000000000001"
            ]
        );
        assert_eq!(
            p.process(Some(&msg), None).await,
            MessageDisposition::Started {
                started: 0,
                existing: 2
            }
        );
    }

    #[tokio::test]
    async fn bad_and_unwanted_messages() {
        let p = pipeline(
            Arc::new(RecordingScheduler::default()),
            CancellationToken::new(),
        );
        assert!(matches!(
            p.process(None, None).await,
            MessageDisposition::DeadLetter {
                kind: DeadLetterKind::Empty,
                ..
            }
        ));
        assert!(matches!(
            p.process(Some(b"{oops"), None).await,
            MessageDisposition::DeadLetter {
                kind: DeadLetterKind::NotJson,
                ..
            }
        ));
        assert!(matches!(
            p.process(Some(b"{}"), None).await,
            MessageDisposition::DeadLetter {
                kind: DeadLetterKind::Contract,
                ..
            }
        ));
        assert_eq!(
            p.process(Some(&event(3, &[(1, "a")])), None).await,
            MessageDisposition::Skipped {
                reason: SkipReason::NoDestinations
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_unavailable_starts_and_dead_letters_unstartable_ones() {
        let scheduler = Arc::new(RecordingScheduler {
            failures_before_success: Mutex::new(3),
            ..Default::default()
        });
        let p = pipeline(scheduler.clone(), CancellationToken::new());
        let msg = event(2, &[(99, "x")]);
        assert_eq!(
            p.process(Some(&msg), None).await,
            MessageDisposition::Started {
                started: 2,
                existing: 0
            }
        );
        assert_eq!(scheduler.started.lock().expect("lock").len(), 2);

        let broken = Arc::new(RecordingScheduler {
            event_failure: true,
            ..Default::default()
        });
        let p = pipeline(broken, CancellationToken::new());
        assert_eq!(
            p.process(Some(&msg), None).await,
            MessageDisposition::DeadLetter {
                kind: DeadLetterKind::Unstartable,
                reason: "bad input".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_a_start_that_keeps_failing() {
        let scheduler = Arc::new(RecordingScheduler {
            failures_before_success: Mutex::new(u32::MAX),
            ..Default::default()
        });
        let shutdown = CancellationToken::new();
        let p = pipeline(scheduler, shutdown.clone());
        let msg = event(2, &[(99, "x")]);
        let (disposition, ()) = tokio::join!(p.process(Some(&msg), None), async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            shutdown.cancel();
        });
        assert_eq!(disposition, MessageDisposition::Interrupted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deployment_refusal_closes_the_gate_one_probe_retries_and_nothing_is_dead_lettered() {
        // Six messages for one destination each; the first twelve starts are refused.
        let scheduler = Arc::new(RecordingScheduler {
            failures_before_success: Mutex::new(12),
            failure: Some(ScheduleErrorKind::Deployment),
            ..Default::default()
        });
        let health = Health::default();
        let p = pipeline_with_health(scheduler.clone(), CancellationToken::new(), &health);
        let messages: Vec<Vec<u8>> = (0..6)
            .map(|i| {
                let mut e: serde_json::Value =
                    serde_json::from_slice(&event(2, &[(5, "x")])).expect("json");
                e["uuid"] = format!("0190f3a4-0000-7000-8000-00000000001{i}").into();
                e.to_string().into_bytes()
            })
            .collect();
        // The six first tries fail together and each waits its back-off (100 ms); then one
        // of them is the probe and retries after 200 and 400 ms more while the others wait
        // at the gate. Six messages retrying each on its own would have used up the twelve
        // refusals within about 300 ms.
        let while_refused = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let report = health.readiness();
            let reason = report.components["temporal_starts"].reason.clone();
            (
                report.healthy,
                reason,
                scheduler.calls.load(Ordering::SeqCst),
            )
        };
        let (dispositions, (healthy, reason, calls)) = tokio::join!(
            futures::future::join_all(messages.iter().map(|m| p.process(Some(m), None))),
            while_refused
        );
        assert!(!healthy, "not ready while starts are refused");
        assert!(
            reason.contains("temporal refuses workflow starts"),
            "{reason}"
        );
        assert_eq!(
            calls,
            6 + 3,
            "after the first refusals only the probe tried"
        );
        for disposition in dispositions {
            let started = MessageDisposition::Started {
                started: 1,
                existing: 0,
            };
            assert_eq!(disposition, started, "nothing dead-lettered");
        }
        assert_eq!(scheduler.started.lock().expect("lock").len(), 6);
        assert!(
            health.readiness().healthy,
            "ready again after a start succeeded"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn under_partial_throttling_each_refused_start_waits_its_back_off() {
        // Eight deliveries, each refused twice while the others' starts succeed, so the
        // gate keeps opening.
        let scheduler = Arc::new(RecordingScheduler {
            refusals_per_delivery: 2,
            ..Default::default()
        });
        let p = pipeline(scheduler.clone(), CancellationToken::new());
        let messages: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                let mut e: serde_json::Value =
                    serde_json::from_slice(&event(2, &[(5, "x")])).expect("json");
                e["uuid"] = format!("0190f3a4-0000-7000-8000-00000000002{i}").into();
                e.to_string().into_bytes()
            })
            .collect();
        let dispositions =
            futures::future::join_all(messages.iter().map(|m| p.process(Some(m), None))).await;
        assert!(
            dispositions
                .iter()
                .all(|o| matches!(o, MessageDisposition::Started { .. }))
        );
        let calls = scheduler.calls_at.lock().expect("lock").clone();
        assert_eq!(calls.len(), 8 * 3, "two refusals and a start each");
        for (delivery, _) in &calls {
            let at: Vec<tokio::time::Instant> = calls
                .iter()
                .filter(|(d, _)| d == delivery)
                .map(|(_, at)| *at)
                .collect();
            // 10 ms for the refused call, then 100 ms, then 200 ms of back-off.
            assert!(
                at[1] - at[0] >= Duration::from_millis(110),
                "{delivery}: {at:?}"
            );
            assert!(
                at[2] - at[1] >= Duration::from_millis(210),
                "{delivery}: {at:?}"
            );
        }
    }
}
