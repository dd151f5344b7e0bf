//! Auto-disable, the worker's side: every `auto_disable.flush_interval_ms` the attempts this
//! worker counted are added to the failure streaks every worker shares, and each streak
//! that crossed a line in that flush is acted on, by this worker alone:
//!
//! - failing for `warn_after_ms`: a `destination.failing` notice;
//! - failing for `after_ms` (or the destination's `auto_disable_after_ms`) with at least
//!   `min_attempts`: the destination is disabled (reason `auto_disabled`, in the registry
//!   every worker reads) and a `destination.disabled` notice goes out. Its pending
//!   deliveries end `destination_disabled` at their next attempt, to be redelivered
//!   (`POST …/redeliver`) once it is enabled again (which sends `destination.enabled`).
//!
//! A streak that says disabled while attempts still come is checked against the registry
//! and disabled again if the registry lacks it: the worker that crossed the line stopped
//! (a crash, a shutdown, a lost answer) before it acted.
//!
//! Notices go to the outcomes topic (docs/outcomes.md) and the team's notices destinations
//! ([`NoticeSender`]), sent apart from the flush so a broker or Temporal that is down never
//! holds the next one up.

use std::sync::Arc;

use hookflow_core::{
    Destination,
    notice::{AUTO_DISABLED, DestinationNotice, NoticeKind},
    streak::StreakCall,
};
use hookflow_http::isolation::{DisabledDestinations, FailureStreaks};
use tokio_util::sync::CancellationToken;

use crate::notices::NoticeSender;

/// Flushes `streaks` on their interval until `shutdown`, acting on what crosses a line.
pub async fn run(
    streaks: Arc<FailureStreaks>,
    disabled: Arc<DisabledDestinations>,
    notices: NoticeSender,
    shutdown: CancellationToken,
) {
    hookflow_runtime::every(streaks.flush_interval(), &shutdown, || {
        flush(&streaks, &disabled, &notices)
    })
    .await;
}

async fn flush(streaks: &FailureStreaks, disabled: &DisabledDestinations, notices: &NoticeSender) {
    for flushed in streaks.flush().await {
        let destination = &flushed.destination;
        let kind = match flushed.call {
            Some(StreakCall::Warn) => {
                tracing::warn!(team_id = destination.team_id, destination = %destination.id, attempts = flushed.streak.attempts, "destination failing: every attempt has failed for auto_disable.warn_after_ms");
                NoticeKind::Failing
            }
            // This flush crossed the line; or the streak said disabled already and still
            // attempts come, because the worker that crossed it stopped (a crash, a lost
            // answer) before the registry took it. Either way the registry is written only
            // if the streak still says so (an enable in between wins) and only once, and
            // the notice goes with the write.
            Some(StreakCall::Disable) | None => {
                if !disabled
                    .disable_for_streak(destination, AUTO_DISABLED.to_owned())
                    .await
                {
                    continue;
                }
                NoticeKind::Disabled
            }
        };
        let notice =
            DestinationNotice::of_streak(kind, destination, &flushed.streak, chrono::Utc::now());
        let notices = notices.clone();
        tokio::spawn(async move { notices.send(&notice).await });
    }
}

/// Enables `destination` again (disabled by its endpoint: 410 Gone or a failure streak),
/// so its endpoint is attempted again and its streak starts afresh; the
/// `destination.enabled` notice to send, none when it was not disabled.
pub async fn enable_destination(
    disabled: &DisabledDestinations,
    destination: &Destination,
) -> Result<Option<DestinationNotice>, hookflow_runtime::LinkError> {
    if !disabled.enable_destination(destination).await? {
        return Ok(None);
    }
    tracing::info!(team_id = destination.team_id, destination = %destination.id, "destination enabled again");
    Ok(Some(DestinationNotice::enabled(
        destination.team_id,
        &destination.id,
        destination.uid,
        chrono::Utc::now(),
    )))
}

/// Enables team `team_id`'s destinations `id` again, of whatever uid (an operator's
/// command); the `destination.enabled` notices to send, none when none was disabled.
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
