//! The payload formats a destination can choose; what each renders is in [`crate::body`].

use serde::{Deserialize, Serialize};

/// A destination's payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// hookflow's JSON envelope.
    #[default]
    Json,
    /// A Slack incoming webhook.
    Slack,
    /// A Discord webhook.
    Discord,
    /// A Microsoft Teams Workflows webhook (an Adaptive Card).
    Teams,
    /// A Microsoft Teams Office 365 connector webhook (being retired).
    TeamsConnector,
    /// A Zapier REST hook.
    Zapier,
}

impl Format {
    /// Whether the format renders a message template.
    pub fn uses_template(self) -> bool {
        matches!(
            self,
            Format::Slack | Format::Discord | Format::Teams | Format::TeamsConnector
        )
    }
}
