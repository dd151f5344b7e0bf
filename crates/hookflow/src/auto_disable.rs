//! Auto-disable, the worker's side: every `auto_disable.flush_interval_ms` the attempts this
//! worker counted are added to the failure streaks every worker shares, and each streak
//! that crossed a line in that flush is acted on, by this worker alone:
//!
//! - failing for `warn_after_ms`: a `destination.failing` notice;
//! - failing for `after_ms` (or the destination's `auto_disable_after_ms`) with at least
//!   `min_attempts`: the destination is disabled (reason `auto_disabled`, in the registry
//!   every worker reads) and a `destination.disabled` notice goes out. Its pending
//!   deliveries end `destination_disabled` at their next attempt, and are redelivered in
//!   bulk once it is enabled again (which sends `destination.enabled`).
//!
//! Notices go to the outcomes topic (docs/outcomes.md), sent apart from the flush so a
//! broker that is down never holds the next one up.

use std::sync::Arc;

use hookflow_core::{
    notice::{AUTO_DISABLED, DestinationNotice, NoticeKind},
    streak::StreakCall,
};
use hookflow_http::isolation::{DisabledDestinations, FailureStreaks};
use hookflow_kafka::notices::NoticePublisher;
use tokio_util::sync::CancellationToken;

/// Flushes `streaks` on their interval until `shutdown`, acting on what crosses a line.
pub async fn run(
    streaks: Arc<FailureStreaks>,
    disabled: Arc<DisabledDestinations>,
    notices: Option<NoticePublisher>,
    shutdown: CancellationToken,
) {
    hookflow_runtime::every(streaks.flush_interval(), &shutdown, || {
        flush(&streaks, &disabled, notices.as_ref())
    })
    .await;
}

async fn flush(
    streaks: &FailureStreaks,
    disabled: &DisabledDestinations,
    notices: Option<&NoticePublisher>,
) {
    for crossing in streaks.flush().await {
        let destination = &crossing.destination;
        let kind = match crossing.call {
            StreakCall::Warn => {
                tracing::warn!(team_id = destination.team_id, destination = %destination.id, attempts = crossing.streak.attempts, "destination failing: every attempt has failed for auto_disable.warn_after_ms");
                NoticeKind::Failing
            }
            StreakCall::Disable => {
                disabled
                    .disable(destination, AUTO_DISABLED.to_owned())
                    .await;
                NoticeKind::Disabled
            }
        };
        let notice =
            DestinationNotice::of_streak(kind, destination, &crossing.streak, chrono::Utc::now());
        if let Some(notices) = notices.cloned() {
            tokio::spawn(async move { notices.publish(&notice).await });
        }
    }
}

/// Enables team `team_id`'s destination `id` again (disabled by its endpoint: 410 Gone or a
/// failure streak), so its endpoint is attempted again and its streak starts afresh; the
/// `destination.enabled` notices to send, none when it was not disabled.
pub async fn enable(
    disabled: &DisabledDestinations,
    team_id: i64,
    id: &str,
) -> Result<Vec<DestinationNotice>, hookflow_runtime::LinkError> {
    let removed = disabled.enable(team_id, id).await?;
    let now = chrono::Utc::now();
    Ok(removed
        .iter()
        .map(|name| {
            tracing::info!(team_id, destination = id, "destination enabled again");
            // `<team>:<id>:<uid>`, `-` for no uid.
            let uid = name
                .rsplit_once(':')
                .and_then(|(_, uid)| uuid::Uuid::parse_str(uid).ok());
            DestinationNotice::enabled(team_id, id, uid, now)
        })
        .collect())
}
