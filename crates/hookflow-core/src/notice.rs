//! Operational notices about a team's destinations, for the team and its operators: a
//! destination whose endpoint has failed every attempt for the warning time
//! (`destination.failing`), one disabled for it (`destination.disabled`), and one enabled
//! again (`destination.enabled`). They are published on the outcomes topic, keyed by team.
//!
//! A notice's `id` is derived from what it is about (its type, the destination's team, id
//! and uid, and the streak's start), so the same notice sent twice (a retried send, two
//! processes) carries the same id and a reader keeps one.
//!
//! A team may also name a destination of its own as its operational webhook (`notices =
//! true`): each notice is delivered there like an event ([`DestinationNotice::delivery_to`]),
//! its body the notice's JSON, under the delivery id `<destination>:<notice id>`, so a
//! notice sent twice is delivered once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    ActionMatchedEvent, ActionRef, DeliveryDefaults, DeliveryInput, Destination,
    streak::FailureStreak,
};

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

/// The one "action" a notice's delivery lists: no action of the analytics product has a
/// negative id.
const NOTICE_ACTION_ID: i64 = -1;

/// Whether `delivery` carries a notice (its body is the notice's JSON, not an event's).
pub fn is_notice(delivery: &DeliveryInput) -> bool {
    matches!(delivery.actions.as_slice(), [action] if action.id == NOTICE_ACTION_ID)
        && delivery.event.event.starts_with("destination.")
}

/// The body of a notice's delivery: the notice, as published.
pub fn notice_body(delivery: &DeliveryInput) -> Vec<u8> {
    serde_json::to_vec(&delivery.event.properties).unwrap_or_default()
}

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

    /// Its delivery to `destination` (a notices destination of its team), with the
    /// deployment's `defaults` and the destination's overrides.
    pub fn delivery_to(
        &self,
        destination: &Destination,
        defaults: &DeliveryDefaults,
    ) -> DeliveryInput {
        let properties = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        let event = ActionMatchedEvent {
            uuid: self.id,
            team_id: self.team_id,
            event: self.kind.as_str().to_owned(),
            distinct_id: None,
            timestamp: self.at.clone(),
            properties,
            person: None,
            matched_actions: Vec::new(),
        };
        let action = ActionRef {
            id: NOTICE_ACTION_ID,
            name: self.kind.as_str().to_owned(),
        };
        DeliveryInput {
            destination_uid: destination.uid.map(|uid| uid.to_string()),
            retry: destination.retry_policy(&defaults.retry),
            history: defaults.history,
            ..DeliveryInput::new(&destination.id, event, vec![action])
        }
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

    #[test]
    fn a_notice_is_delivered_with_its_own_json_as_the_body_once_per_notice() {
        let spec: crate::DestinationSpec = serde_json::from_value(serde_json::json!({
            "id": "ops", "team_id": 1, "url": "https://hooks.example.com/ops", "notices": true,
        }))
        .expect("spec");
        let ops = spec
            .validate_one(&crate::ValidationRules::default())
            .expect("valid");
        let notice = DestinationNotice::enabled(1, "d-1", None, Utc::now());
        let delivery = notice.delivery_to(&ops, &DeliveryDefaults::default());
        assert!(is_notice(&delivery));
        assert_eq!(delivery.delivery_id.as_str(), format!("ops:{}", notice.id));
        let body: DestinationNotice =
            serde_json::from_slice(&notice_body(&delivery)).expect("the notice");
        assert_eq!(body, notice);
        // An event's delivery is not a notice, and a notices destination wants no events.
        let event = ActionMatchedEvent::from_json(
            br#"{"uuid":"0190f3a4-0000-7000-8000-000000000001","team_id":1,"event":"e",
                "timestamp":"2026-11-21T10:00:00Z","matched_actions":[{"id":1,"name":"a"}]}"#,
        )
        .expect("event");
        assert_eq!(ops.matching_actions(&event), None);
        let actions = event.matched_actions.clone();
        assert!(!is_notice(&DeliveryInput::new("ops", event, actions)));
    }
}
