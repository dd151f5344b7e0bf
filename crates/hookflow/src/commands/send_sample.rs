//! `hookflow send-sample`: produces sample action-matched events, to try a running hookflow.

use std::time::Duration;

use hookflow_kafka::KafkaSettings;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Produces `count` events of `team` matching action `action`, keyed by event uuid.
pub async fn send(kafka: &KafkaSettings, team: i64, action: i64, count: u32) -> anyhow::Result<()> {
    // A sample the broker cannot take within 10 s is reported as an error, not waited on
    // for librdkafka's default 5 minutes.
    let mut config = kafka.client_config();
    config.set("message.timeout.ms", "10000");
    let producer: FutureProducer = hookflow_kafka::client::create(&config)?;
    for n in 0..count {
        let uuid = uuid::Uuid::new_v4();
        let event = serde_json::json!({
            "uuid": uuid,
            "team_id": team,
            "event": "sample_event",
            "distinct_id": format!("sample-user-{n}"),
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "properties": {"$current_url": "https://example.com/pricing", "n": n},
            "person": {"uuid": uuid::Uuid::new_v4(), "properties": {"email": "sample@example.com"}, "created_at": null},
            "matched_actions": [{"id": action, "name": "Sample action"}],
        })
        .to_string();
        let key = uuid.to_string();
        producer
            .send(
                FutureRecord::to(&kafka.topic).key(&key).payload(&event),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        println!(
            "sent event {uuid} (team {team}, action {action}) to {}",
            kafka.topic
        );
    }
    Ok(())
}
