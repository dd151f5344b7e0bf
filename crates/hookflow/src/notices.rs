//! Where a destination notice goes: the outcomes topic, and each notices destination of its
//! team (the team's operational webhook), as a delivery like any other: one workflow per
//! (notice, destination), signed and retried, whose id the notice's id fixes, so a notice
//! sent twice is delivered once.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use hookflow_core::{
    DeliveryDefaults, DeliveryScheduler, DestinationCatalog, DestinationState,
    notice::DestinationNotice,
};
use hookflow_kafka::notices::NoticePublisher;
use hookflow_runtime::{Backoff, BackoffPolicy};
use hookflow_temporal::TemporalScheduler;
use tokio_util::sync::CancellationToken;

use crate::{settings::Settings, wiring::delivery_defaults};

/// Starts of one notice's delivery tried before it is given up (logged).
const START_TRIES: u32 = 5;

/// The team's notices destinations, and how to start their deliveries.
#[derive(Clone)]
pub struct NoticeWebhooks {
    /// Starts the deliveries.
    pub scheduler: TemporalScheduler,
    /// Where the team's notices destinations are found.
    pub destinations: Arc<dyn DestinationCatalog>,
    /// What deliveries start with.
    pub defaults: DeliveryDefaults,
}

/// Sends notices to the outcomes topic and to the teams' notices destinations.
#[derive(Clone)]
pub struct NoticeSender {
    /// The outcomes topic, when outcomes are published.
    pub topic: Option<NoticePublisher>,
    /// The teams' webhooks, where this process can start deliveries.
    pub webhooks: Option<NoticeWebhooks>,
}

impl NoticeWebhooks {
    /// The teams' notices destinations among `destinations`, started on `client` as
    /// `settings` say.
    pub fn new(
        settings: &Settings,
        client: hookflow_temporal::Client,
        destinations: Arc<dyn DestinationCatalog>,
    ) -> Self {
        NoticeWebhooks {
            scheduler: TemporalScheduler::new(client, &settings.temporal),
            destinations,
            defaults: delivery_defaults(settings),
        }
    }
}

impl NoticeSender {
    /// Notices to the outcomes topic of `settings` (when set) and to `webhooks`; fails
    /// at once on a bad Kafka client setting.
    pub fn new(settings: &Settings, webhooks: Option<NoticeWebhooks>) -> anyhow::Result<Self> {
        let topic = NoticePublisher::new(&settings.kafka.client_config(), &settings.outcomes)
            .context("notices producer")?;
        Ok(NoticeSender { topic, webhooks })
    }

    /// Sends `notice` everywhere it goes; a send that keeps failing is logged and counted,
    /// never returned (a notice reports state kept elsewhere).
    pub async fn send(&self, notice: &DestinationNotice) {
        if let Some(topic) = &self.topic {
            topic.publish(notice).await;
        }
        let Some(webhooks) = &self.webhooks else {
            return;
        };
        let targets = webhooks
            .destinations
            .for_team(notice.team_id)
            .into_iter()
            // A paused one gets it when resumed; a disabled one never would.
            .filter(|d| d.notices && !matches!(d.state, DestinationState::Disabled(_)));
        for destination in targets {
            let delivery = notice.delivery_to(&destination, &webhooks.defaults);
            let mut backoff = Backoff::new(BackoffPolicy {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(5),
            });
            for attempt in 1..=START_TRIES {
                match webhooks.scheduler.schedule(&delivery).await {
                    Ok(_) => break,
                    Err(error) if attempt < START_TRIES => {
                        tracing::debug!(%error, delivery_id = %delivery.delivery_id, "notice delivery not started; retrying");
                        backoff.wait(&CancellationToken::new()).await;
                    }
                    Err(error) => {
                        tracing::error!(%error, delivery_id = %delivery.delivery_id, notice = %notice.id, "notice delivery not started");
                    }
                }
            }
        }
    }
}
