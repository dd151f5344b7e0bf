//! What every end-to-end test starts from: the shared stack, a Temporal client, a receiver,
//! a team id of its own and a deployment with fresh topics.

use crate::{
    hookflow::Deployment,
    kafka,
    receiver::Receiver,
    stack::{Stack, stack},
    temporal, unique_team,
};

/// One test's world.
pub struct Scenario {
    /// The broker, Temporal server and Redis it runs on (the shared ones unless the test
    /// brought its own).
    pub stack: Stack,
    /// A client of the Temporal server.
    pub temporal: hookflow_temporal::Client,
    /// The test's receiver.
    pub receiver: Receiver,
    /// A team id no other test uses.
    pub team: i64,
    /// The test's hookflow configuration.
    pub deployment: Deployment,
}

impl Scenario {
    /// Sets everything up, with a 4-partition events topic; the stack starts on the first
    /// call in a test binary.
    pub async fn new() -> Scenario {
        Self::with_partitions(4).await
    }

    /// Like [`Scenario::new`], with an events topic of `partitions` partitions.
    pub async fn with_partitions(partitions: u32) -> Scenario {
        Self::on(stack().clone(), partitions).await
    }

    /// A scenario on `stack` (for example one with a broker or Temporal server of the
    /// test's own, from [`Stack::with_own_broker`] or [`Stack::with_own_temporal`]).
    pub async fn on(stack: Stack, partitions: u32) -> Scenario {
        Scenario {
            temporal: temporal::client(&stack.temporal).await,
            receiver: Receiver::start().await,
            team: unique_team(),
            deployment: Deployment::new(&stack, partitions),
            stack,
        }
    }

    /// Adds a destination of the scenario's team that posts to the receiver's `path`.
    pub fn destination(&mut self, id: &str, path: &str, extra: &str) -> &mut Self {
        let url = self.receiver.url(path);
        self.deployment.destination(id, self.team, &url, extra);
        self
    }

    /// Adds a destination of the scenario's team that posts to `path` on another
    /// `receiver` (another endpoint).
    pub fn destination_on(
        &mut self,
        receiver: &Receiver,
        id: &str,
        path: &str,
        extra: &str,
    ) -> &mut Self {
        let url = receiver.url(path);
        self.deployment.destination(id, self.team, &url, extra);
        self
    }

    /// Produces `n` events of the scenario's team matching action 1; their uuids.
    pub async fn produce_events(&self, n: usize) -> Vec<uuid::Uuid> {
        let events: Vec<(uuid::Uuid, serde_json::Value)> = (0..n)
            .map(|_| crate::events::event(self.team, &[(1, "Any")]))
            .collect();
        let refs: Vec<&serde_json::Value> = events.iter().map(|(_, e)| e).collect();
        self.produce(&refs).await;
        events.into_iter().map(|(uuid, _)| uuid).collect()
    }

    /// Produces JSON events to the deployment's topic in batches (several per produce
    /// request, keyed by their uuid so they spread over the partitions).
    pub async fn produce_batched(&self, events: &[(uuid::Uuid, serde_json::Value)]) {
        let messages: Vec<(String, Vec<u8>)> = events
            .iter()
            .map(|(uuid, e)| (uuid.to_string(), e.to_string().into_bytes()))
            .collect();
        kafka::produce_batched(&self.stack.kafka, &self.deployment.topic, &messages).await;
    }

    /// Produces JSON events to the deployment's topic.
    pub async fn produce(&self, events: &[&serde_json::Value]) {
        let payloads: Vec<Vec<u8>> = events.iter().map(|e| e.to_string().into_bytes()).collect();
        kafka::produce(&self.stack.kafka, &self.deployment.topic, &payloads).await;
    }
}
