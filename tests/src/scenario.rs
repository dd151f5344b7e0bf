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
    /// The shared broker and Temporal server.
    pub stack: &'static Stack,
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
        let stack = stack();
        Scenario {
            stack,
            temporal: temporal::client(&stack.temporal).await,
            receiver: Receiver::start().await,
            team: unique_team(),
            deployment: Deployment::new(stack, partitions),
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

    /// Produces JSON events to the deployment's topic.
    pub async fn produce(&self, events: &[&serde_json::Value]) {
        let payloads: Vec<Vec<u8>> = events.iter().map(|e| e.to_string().into_bytes()).collect();
        kafka::produce(&self.stack.kafka, &self.deployment.topic, &payloads).await;
    }
}
