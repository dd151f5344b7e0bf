//! What happens to one Kafka message: parse it against the contract, find the destinations
//! that want it, and start one delivery per destination, retrying starts while the workflow
//! service is unavailable. The result tells the consumer whether the message is done (and
//! may be committed), must be dead-lettered, or was interrupted by shutdown.

use std::sync::Arc;

use futures::future::join_all;
use hookflow_core::{
    ActionMatchedEvent, DeliveryDefaults, DeliveryScheduler, DestinationCatalog, ScheduleOutcome,
    plan_deliveries,
};
use hookflow_telemetry::names;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, StartBackoff};

/// How a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Every delivery it needs is started or already existed.
    Started {
        /// Deliveries newly started.
        started: usize,
        /// Deliveries that already existed.
        existing: usize,
    },
    /// No destination wants it.
    Skipped {
        /// `no_destinations` (the team has none) or `no_matching_destination`.
        reason: &'static str,
    },
    /// It must go to the dead-letter topic.
    DeadLetter {
        /// A stable label: `empty`, `not_json`, `contract`, `unstartable`.
        kind: &'static str,
        /// The human-readable reason, for the dead letter's header.
        reason: String,
    },
    /// Shutdown came while a start was still being retried: the message is not done and
    /// must not be committed.
    Interrupted,
}

impl MessageOutcome {
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

/// Turns messages into delivery starts.
pub struct Pipeline<S> {
    scheduler: Arc<S>,
    destinations: Arc<dyn DestinationCatalog>,
    defaults: DeliveryDefaults,
    starts: Arc<Semaphore>,
    backoff: StartBackoff,
    shutdown: CancellationToken,
}

impl<S: DeliveryScheduler> Pipeline<S> {
    /// A pipeline with at most `max_starts_in_flight` concurrent starts.
    pub fn new(
        scheduler: Arc<S>,
        destinations: Arc<dyn DestinationCatalog>,
        defaults: DeliveryDefaults,
        max_starts_in_flight: usize,
        backoff: StartBackoff,
        shutdown: CancellationToken,
    ) -> Self {
        Pipeline {
            scheduler,
            destinations,
            defaults,
            starts: Arc::new(Semaphore::new(max_starts_in_flight.max(1))),
            backoff,
            shutdown,
        }
    }

    /// Processes one message payload, produced at `produced_at_ms` (the Kafka timestamp).
    pub async fn process(
        &self,
        payload: Option<&[u8]>,
        produced_at_ms: Option<i64>,
    ) -> MessageOutcome {
        let Some(payload) = payload.filter(|p| !p.is_empty()) else {
            return MessageOutcome::DeadLetter {
                kind: "empty",
                reason: "the message has no payload".into(),
            };
        };
        let event = match ActionMatchedEvent::from_json(payload) {
            Ok(event) => event,
            Err(error) => {
                return MessageOutcome::DeadLetter {
                    kind: error.kind(),
                    reason: error.to_string(),
                };
            }
        };
        let team_destinations = self.destinations.for_team(event.team_id);
        if team_destinations.is_empty() {
            return MessageOutcome::Skipped {
                reason: "no_destinations",
            };
        }
        let deliveries = plan_deliveries(
            &event,
            team_destinations.iter().map(Arc::as_ref),
            &self.defaults,
            produced_at_ms,
        );
        if deliveries.is_empty() {
            return MessageOutcome::Skipped {
                reason: "no_matching_destination",
            };
        }
        let results = join_all(deliveries.iter().map(|d| self.start(d))).await;
        let (mut started, mut existing) = (0, 0);
        for result in results {
            match result {
                Ok(ScheduleOutcome::Started) => started += 1,
                Ok(ScheduleOutcome::AlreadyExists) => existing += 1,
                Err(Some(reason)) => {
                    return MessageOutcome::DeadLetter {
                        kind: "unstartable",
                        reason,
                    };
                }
                Err(None) => return MessageOutcome::Interrupted,
            }
        }
        MessageOutcome::Started { started, existing }
    }

    /// Starts one delivery, retrying while the failure is retryable. `Err(Some)` is a
    /// permanent failure, `Err(None)` an interruption by shutdown.
    async fn start(
        &self,
        delivery: &hookflow_core::DeliveryInput,
    ) -> Result<ScheduleOutcome, Option<String>> {
        let mut backoff = Backoff::new(self.backoff);
        loop {
            let outcome = {
                let _permit = self.starts.acquire().await.map_err(|_| None)?;
                let started = std::time::Instant::now();
                metrics::gauge!(names::WORKFLOW_STARTS_IN_FLIGHT).increment(1);
                let outcome = self.scheduler.schedule(delivery).await;
                metrics::gauge!(names::WORKFLOW_STARTS_IN_FLIGHT).decrement(1);
                metrics::histogram!(names::WORKFLOW_START_DURATION)
                    .record(started.elapsed().as_secs_f64());
                outcome
            };
            match outcome {
                Ok(outcome) => {
                    metrics::counter!(names::WORKFLOW_STARTS, "result" => outcome.as_str())
                        .increment(1);
                    return Ok(outcome);
                }
                Err(error) => {
                    metrics::counter!(names::WORKFLOW_STARTS, "result" => "failed").increment(1);
                    if !error.retryable {
                        tracing::error!(delivery_id = %delivery.delivery_id, %error, "delivery cannot be started");
                        return Err(Some(error.message));
                    }
                    tracing::warn!(delivery_id = %delivery.delivery_id, %error, retry_in_ms = backoff.next_wait().as_millis() as u64, "delivery start failed; retrying");
                }
            }
            if !backoff.wait(&self.shutdown).await {
                return Err(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex, time::Duration};

    use hookflow_core::{DeliveryInput, ScheduleError, destination::DestinationSet};

    use super::*;

    /// An in-process scheduler for testing the pipeline's pure logic; the end-to-end tests
    /// use the real Temporal starter.
    #[derive(Default)]
    struct RecordingScheduler {
        started: Mutex<Vec<String>>,
        failures_before_success: Mutex<u32>,
        permanent_failure: bool,
    }

    impl DeliveryScheduler for RecordingScheduler {
        async fn schedule(&self, input: &DeliveryInput) -> Result<ScheduleOutcome, ScheduleError> {
            if self.permanent_failure {
                return Err(ScheduleError {
                    message: "bad input".into(),
                    retryable: false,
                });
            }
            {
                let mut failures = self.failures_before_success.lock().expect("lock");
                if *failures > 0 {
                    *failures -= 1;
                    return Err(ScheduleError {
                        message: "unavailable".into(),
                        retryable: true,
                    });
                }
            }
            let mut started = self.started.lock().expect("lock");
            let id = input.delivery_id.to_string();
            if started.contains(&id) {
                return Ok(ScheduleOutcome::AlreadyExists);
            }
            started.push(id);
            Ok(ScheduleOutcome::Started)
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
        let backoff = StartBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        Pipeline::new(
            scheduler,
            destinations(),
            DeliveryDefaults::default(),
            4,
            backoff,
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
            MessageOutcome::Started {
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
            MessageOutcome::Started {
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
            MessageOutcome::DeadLetter { kind: "empty", .. }
        ));
        assert!(matches!(
            p.process(Some(b"{oops"), None).await,
            MessageOutcome::DeadLetter {
                kind: "not_json",
                ..
            }
        ));
        assert!(matches!(
            p.process(Some(b"{}"), None).await,
            MessageOutcome::DeadLetter {
                kind: "contract",
                ..
            }
        ));
        assert_eq!(
            p.process(Some(&event(3, &[(1, "a")])), None).await,
            MessageOutcome::Skipped {
                reason: "no_destinations"
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
            MessageOutcome::Started {
                started: 2,
                existing: 0
            }
        );
        assert_eq!(scheduler.started.lock().expect("lock").len(), 2);

        let broken = Arc::new(RecordingScheduler {
            permanent_failure: true,
            ..Default::default()
        });
        let p = pipeline(broken, CancellationToken::new());
        assert_eq!(
            p.process(Some(&msg), None).await,
            MessageOutcome::DeadLetter {
                kind: "unstartable",
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
        let (outcome, ()) = tokio::join!(p.process(Some(&msg), None), async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            shutdown.cancel();
        });
        assert_eq!(outcome, MessageOutcome::Interrupted);
    }
}
