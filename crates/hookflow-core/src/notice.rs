//! Operational notices about a team's destinations, for the team and its operators: a
//! destination whose endpoint has failed every attempt for the warning time
//! (`destination.failing`), one disabled for it (`destination.disabled`), and one enabled
//! again (`destination.enabled`). They are published on the outcomes topic, keyed by team.
//!
//! A notice's `id` is derived from what it is about (its type, the destination's team, id
//! and uid, and the streak's start), so the same notice sent twice (a retried send, two
//! processes) carries the same id and a reader keeps one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Destination, streak::FailureStreak};

/// The schema version of a notice; fields are only added within a version.
pub const NOTICE_VERSION: u32 = 1;

/// The namespace of notice ids (a UUID v5 namespace of hookflow's own).
const NOTICE_NAMESPACE: Uuid = Uuid::from_u128(0x6f0c_2a3e_8d41_4b7a_9e5c_1d2f_3a4b_5c6d);

/// What a notice says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeKind {
    /// The endpoint has failed every attempt for the warning time.
    #[serde(rename = "destination.failing")]
    Failing,
    /// The destination was disabled because its endpoint kept failing.
    #[serde(rename = "destination.disabled")]
    Disabled,
    /// The destination was enabled again.
    #[serde(rename = "destination.enabled")]
    Enabled,
}

impl NoticeKind {
    /// Its `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failing => "destination.failing",
            Self::Disabled => "destination.disabled",
            Self::Enabled => "destination.enabled",
        }
    }
}

/// One notice, as published (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationNotice {
    /// [`NOTICE_VERSION`].
    pub version: u32,
    /// What it says.
    #[serde(rename = "type")]
    pub kind: NoticeKind,
    /// The same for the same notice however often it is sent.
    pub id: Uuid,
    /// Whose destination.
    pub team_id: i64,
    /// The destination's id.
    pub destination_id: String,
    /// The destination's uid, where its store gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_uid: Option<Uuid>,
    /// When it was noticed, RFC 3339.
    pub at: String,
    /// Since when the endpoint has failed every attempt (failing and disabled), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// Failed attempts since then (failing and disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    /// Why it was disabled: `auto_disabled` (disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The reason an automatic disable records.
pub const AUTO_DISABLED: &str = "auto_disabled";

impl DestinationNotice {
    /// The notice that `destination`'s `streak` calls for (failing or disabled), at `at`.
    pub fn of_streak(
        kind: NoticeKind,
        destination: &Destination,
        streak: &FailureStreak,
        at: DateTime<Utc>,
    ) -> Self {
        let since = streak.failing_since_ms.unwrap_or_default();
        DestinationNotice {
            failing_since: i64::try_from(since)
                .ok()
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .map(|t| t.to_rfc3339()),
            attempts: Some(streak.attempts),
            reason: (kind == NoticeKind::Disabled).then(|| AUTO_DISABLED.to_owned()),
            ..Self::new(
                kind,
                destination.team_id,
                &destination.id,
                destination.uid,
                &since.to_string(),
                at,
            )
        }
    }

    /// The notice that team `team_id`'s destination `id` (of `uid`) was enabled at `at`.
    pub fn enabled(team_id: i64, id: &str, uid: Option<Uuid>, at: DateTime<Utc>) -> Self {
        let instant = at.timestamp_millis().to_string();
        Self::new(NoticeKind::Enabled, team_id, id, uid, &instant, at)
    }

    fn new(
        kind: NoticeKind,
        team_id: i64,
        id: &str,
        uid: Option<Uuid>,
        occasion: &str,
        at: DateTime<Utc>,
    ) -> Self {
        let uid_text = uid.map(|u| u.to_string()).unwrap_or_default();
        let name = format!("{}:{team_id}:{id}:{uid_text}:{occasion}", kind.as_str());
        DestinationNotice {
            version: NOTICE_VERSION,
            kind,
            id: Uuid::new_v5(&NOTICE_NAMESPACE, name.as_bytes()),
            team_id,
            destination_id: id.to_owned(),
            destination_uid: uid,
            at: at.to_rfc3339(),
            failing_since: None,
            attempts: None,
            reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_streak_gives_the_same_notice_id_and_another_team_another() {
        let streak = FailureStreak {
            failing_since_ms: Some(1_700_000_000_000),
            attempts: 12,
            disabled: true,
            ..FailureStreak::default()
        };
        let spec = |team: i64| -> Destination {
            let spec: crate::DestinationSpec = serde_json::from_value(serde_json::json!({
                "id": "d-1", "team_id": team, "url": "https://hooks.example.com/d-1",
            }))
            .expect("spec");
            spec.validate_one(&crate::ValidationRules::default())
                .expect("valid")
        };
        let now = Utc::now();
        let a = DestinationNotice::of_streak(NoticeKind::Disabled, &spec(1), &streak, now);
        let again = DestinationNotice::of_streak(
            NoticeKind::Disabled,
            &spec(1),
            &streak,
            now + chrono::Duration::seconds(5),
        );
        let other_team = DestinationNotice::of_streak(NoticeKind::Disabled, &spec(2), &streak, now);
        let warning = DestinationNotice::of_streak(NoticeKind::Failing, &spec(1), &streak, now);
        assert_eq!(a.id, again.id);
        assert_ne!(a.id, other_team.id);
        assert_ne!(a.id, warning.id);
        let json = serde_json::to_value(&a).expect("json");
        assert_eq!(json["type"], "destination.disabled");
        assert_eq!(json["reason"], "auto_disabled");
        assert_eq!(json["attempts"], 12);
        assert_eq!(json["failing_since"], "2023-11-14T22:13:20+00:00");
        assert_eq!(warning.reason, None);
    }
}
