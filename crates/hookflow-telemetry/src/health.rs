//! Liveness and readiness. Each long-running component registers with a deadline and
//! reports in ([`HealthHandle::beat`]) at least that often; one that stops reporting is
//! presumed stalled, and `/_liveness` fails so the orchestrator restarts the process.
//! Readiness holds only while every component says its dependency is reachable
//! ([`HealthHandle::set_ready`]), so traffic and rollouts wait for a working process.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use hookflow_core::sync::LockUnpoisoned;
use serde::Serialize;

use crate::names;
use tokio::time::Instant;

#[derive(Debug)]
struct Component {
    deadline: Duration,
    /// `None` until the component's first beat: a component that has not started yet (it
    /// waits for a dependency) is not ready, but not stalled either.
    last_beat: Option<Instant>,
    ready: bool,
    reason: String,
}

/// The registry of components.
#[derive(Debug, Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<&'static str, Component>>>,
}

/// One component's way to report.
#[derive(Debug, Clone)]
pub struct HealthHandle {
    name: &'static str,
    health: Health,
}

/// One component's state in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    /// Whether it reported within its deadline.
    pub alive: bool,
    /// Whether its dependency is reachable.
    pub ready: bool,
    /// Why it is not ready, if it is not.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Milliseconds since it last reported (absent before its first report): how close a
    /// component is to its deadline, before it is late.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_beat_ms: Option<u64>,
}

/// A health report: overall verdict and per-component detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The verdict.
    pub healthy: bool,
    /// Per component.
    pub components: BTreeMap<&'static str, ComponentStatus>,
}

impl Health {
    fn components(&self) -> MutexGuard<'_, BTreeMap<&'static str, Component>> {
        self.components.lock_unpoisoned()
    }

    /// Registers a component that must report at least every `deadline`. It starts alive
    /// and not ready.
    pub fn register(&self, name: &'static str, deadline: Duration) -> HealthHandle {
        let handle = self.register_starting(name, deadline);
        handle.beat();
        handle
    }

    /// Registers a component that has not started yet: not ready ("starting"), and held to
    /// `deadline` only from its first beat on. Registering every component up front keeps
    /// readiness from passing before all of them are up.
    pub fn register_starting(&self, name: &'static str, deadline: Duration) -> HealthHandle {
        let component = Component {
            deadline,
            last_beat: None,
            ready: false,
            reason: "starting".into(),
        };
        self.components().insert(name, component);
        metrics::gauge!(names::COMPONENT_READY, "component" => name).set(0.0);
        HealthHandle {
            name,
            health: self.clone(),
        }
    }

    /// Registers a component that only reports readiness (it has no loop that could stall,
    /// so it never fails liveness). It starts not ready.
    pub fn register_readiness(&self, name: &'static str) -> HealthHandle {
        self.register(name, Duration::MAX)
    }

    fn report(&self, verdict: impl Fn(&ComponentStatus) -> bool) -> HealthReport {
        let now = Instant::now();
        let components: BTreeMap<&'static str, ComponentStatus> = self
            .components()
            .iter()
            .map(|(name, c)| {
                let since_beat = c.last_beat.map(|beat| now.duration_since(beat));
                let alive = since_beat.is_none_or(|since| since <= c.deadline);
                (
                    *name,
                    ComponentStatus {
                        alive,
                        ready: c.ready,
                        reason: c.reason.clone(),
                        since_beat_ms: since_beat.map(|since| since.as_millis() as u64),
                    },
                )
            })
            .collect();
        HealthReport {
            healthy: components.values().all(verdict),
            components,
        }
    }

    /// Alive when every component reported within its deadline.
    pub fn liveness(&self) -> HealthReport {
        self.report(|c| c.alive)
    }

    /// Ready when every component is alive and ready.
    pub fn readiness(&self) -> HealthReport {
        self.report(|c| c.alive && c.ready)
    }
}

impl HealthHandle {
    /// Reports that the component is making progress.
    pub fn beat(&self) {
        if let Some(c) = self.health.components().get_mut(self.name) {
            c.last_beat = Some(Instant::now());
        }
    }

    /// Reports whether the component's dependency is reachable, and why not. It does not
    /// count as progress: a probe may run beside a loop that is stuck.
    pub fn set_ready(&self, ready: bool, reason: impl Into<String>) {
        if let Some(c) = self.health.components().get_mut(self.name) {
            c.ready = ready;
            c.reason = if ready { String::new() } else { reason.into() };
        }
        metrics::gauge!(names::COMPONENT_READY, "component" => self.name).set(if ready {
            1.0
        } else {
            0.0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_component_that_stops_reporting_fails_liveness() {
        let health = Health::default();
        let consumer = health.register("consumer", Duration::from_secs(30));
        let temporal = health.register("temporal", Duration::from_secs(60));
        assert!(health.liveness().healthy);
        assert!(!health.readiness().healthy, "components start not ready");

        consumer.set_ready(true, "");
        temporal.set_ready(true, "");
        assert!(health.readiness().healthy);

        tokio::time::advance(Duration::from_secs(31)).await;
        temporal.beat();
        consumer.set_ready(true, "");
        let live = health.liveness();
        assert!(!live.healthy);
        assert!(!live.components["consumer"].alive);
        assert!(live.components["temporal"].alive);
        assert!(
            !health.readiness().healthy,
            "a stalled component is not ready either"
        );

        consumer.beat();
        assert!(health.liveness().healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_component_that_has_not_started_is_not_ready_but_not_stalled() {
        let health = Health::default();
        let worker = health.register_starting("worker", Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(health.liveness().healthy, "waiting to start is not a stall");
        assert!(!health.readiness().healthy);
        assert_eq!(health.readiness().components["worker"].reason, "starting");
        worker.beat();
        worker.set_ready(true, "");
        assert!(health.readiness().healthy);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(
            !health.liveness().healthy,
            "once started, the deadline holds"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_reports_why_not() {
        let health = Health::default();
        let kafka = health.register("kafka", Duration::from_secs(30));
        kafka.set_ready(false, "broker unreachable");
        let report = health.readiness();
        assert!(!report.healthy);
        assert_eq!(report.components["kafka"].reason, "broker unreachable");
        kafka.set_ready(true, "ignored when ready");
        assert_eq!(health.readiness().components["kafka"].reason, "");
    }
}
