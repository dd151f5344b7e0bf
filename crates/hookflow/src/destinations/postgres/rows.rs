//! A catalog row made a destination, and what is in use when a row cannot be read.
//!
//! A row that cannot be read or validated (a spec written by a newer version, secrets
//! sealed with a key this process lacks, a URL the deployment's rules no longer allow) is
//! refused on its own: no other row, and no other team, is affected. What stays in use for
//! it is the last good version of that destination: the one this process had in memory, or,
//! after a restart, the version the row kept from before its last update. Only a
//! destination that has no readable version at all is out of use; every refusal is logged,
//! counted (`hookflow_destination_rows_refused{in_use}`) and alerted on.

use std::collections::HashMap;

use hookflow_core::{
    Destination, DestinationCatalog, DestinationSet, DestinationSpec, ValidationRules,
};
use hookflow_telemetry::names;

use crate::destinations::sealing::{RowBinding, Sealer};

/// Every row in use (the load).
pub(super) const SELECT_LIVE: &str = "SELECT team_id, id, uid, version, change_seq, deleted, \
     spec, sealed, previous_spec, previous_sealed \
     FROM hookflow_destinations WHERE NOT deleted";

/// The rows changed past a sequence, in order, a page at a time (the feed).
pub(super) const SELECT_CHANGED: &str = "SELECT team_id, id, uid, version, change_seq, \
     deleted, spec, sealed, previous_spec, previous_sealed \
     FROM hookflow_destinations WHERE change_seq > $1 ORDER BY change_seq LIMIT $2";

/// One stored destination.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Row {
    pub team_id: i64,
    pub id: String,
    pub uid: uuid::Uuid,
    pub version: i64,
    pub change_seq: i64,
    pub deleted: bool,
    pub spec: serde_json::Value,
    pub sealed: Vec<u8>,
    pub previous_spec: Option<serde_json::Value>,
    pub previous_sealed: Option<Vec<u8>>,
}

impl Row {
    /// The stored spec, opened (secrets in it), with the row's team, id and uid.
    pub fn spec(&self, sealer: &Sealer) -> Result<DestinationSpec, String> {
        self.opened(sealer, self.spec.clone(), &self.sealed)
    }

    /// The destination this row's current version is.
    pub fn destination(
        &self,
        sealer: &Sealer,
        rules: &ValidationRules,
    ) -> Result<Destination, String> {
        self.spec(sealer)?
            .validate_one(rules)
            .map_err(|e| e.to_string())
    }

    /// The destination the version before this row's last update was, if it kept one.
    fn previous(&self, sealer: &Sealer, rules: &ValidationRules) -> Option<Destination> {
        let (spec, sealed) = (self.previous_spec.clone()?, self.previous_sealed.as_ref()?);
        self.opened(sealer, spec, sealed)
            .ok()?
            .validate_one(rules)
            .ok()
    }

    /// What this row's sealed secrets are bound to: its own team and uid columns.
    pub fn binding(&self) -> RowBinding {
        RowBinding {
            team_id: self.team_id,
            uid: self.uid,
        }
    }

    fn opened(
        &self,
        sealer: &Sealer,
        public: serde_json::Value,
        sealed: &[u8],
    ) -> Result<DestinationSpec, String> {
        let mut spec = sealer
            .open(public, sealed, self.binding())
            .map_err(|e| e.to_string())?;
        // The row's columns are the destination's identity, whatever its JSON says.
        spec.team_id = self.team_id;
        spec.id.clone_from(&self.id);
        spec.uid = Some(self.uid.to_string());
        Ok(spec)
    }
}

/// What is in use for a refused row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InUse {
    /// An earlier version of the destination.
    LastGood,
    /// Nothing: the destination has no readable version.
    Nothing,
}

impl InUse {
    fn as_str(self) -> &'static str {
        match self {
            InUse::LastGood => "last_good",
            InUse::Nothing => "none",
        }
    }
}

/// How far this process has applied the catalog, and the rows it refused.
#[derive(Debug, Default)]
pub(super) struct Feed {
    /// The change sequence the destinations in memory are current at.
    pub applied_seq: i64,
    /// Refused rows by (team, id): the version refused and what is in use instead.
    refused: HashMap<(i64, String), (i64, InUse)>,
}

impl Feed {
    /// Applies `row` to `set`.
    pub fn apply(
        &mut self,
        row: &Row,
        sealer: &Sealer,
        rules: &ValidationRules,
        set: &mut DestinationSet,
    ) {
        let key = (row.team_id, row.id.clone());
        if row.deleted {
            set.remove(row.team_id, &row.id);
            self.refused.remove(&key);
            return;
        }
        let problem = match row.destination(sealer, rules) {
            Ok(destination) => {
                set.upsert(destination);
                self.refused.remove(&key);
                metrics::counter!(names::DESTINATION_CHANGES, "result" => "applied").increment(1);
                return;
            }
            Err(problem) => problem,
        };
        metrics::counter!(names::DESTINATION_CHANGES, "result" => "refused").increment(1);
        let in_memory = set
            .get(row.team_id, &row.id)
            .is_some_and(|d| d.uid == Some(row.uid));
        let in_use = if in_memory {
            InUse::LastGood
        } else if let Some(previous) = row.previous(sealer, rules) {
            set.upsert(previous);
            InUse::LastGood
        } else {
            // Another destination of this id (deleted and created again) must not go on
            // receiving this one's deliveries.
            set.remove(row.team_id, &row.id);
            InUse::Nothing
        };
        if self.refused.insert(key, (row.version, in_use)) != Some((row.version, in_use)) {
            tracing::error!(
                team_id = row.team_id,
                destination = %row.id,
                version = row.version,
                in_use = in_use.as_str(),
                %problem,
                "destination refused: this version cannot be used; {}",
                match in_use {
                    InUse::LastGood => "its last good version stays in use",
                    InUse::Nothing => "it has no usable version and receives nothing",
                }
            );
        }
    }

    /// Exports how many rows are refused, by what is in use instead.
    pub fn report(&self) {
        for in_use in [InUse::LastGood, InUse::Nothing] {
            let count = self.refused.values().filter(|(_, u)| *u == in_use).count();
            metrics::gauge!(names::DESTINATION_ROWS_REFUSED, "in_use" => in_use.as_str())
                .set(count as f64);
        }
    }
}
