//! Sets of destinations: indexed by (team, id) and by team, parsed whole from a
//! destinations file, and kept current by a store (swapped whole by the file store,
//! changed one destination at a time by the PostgreSQL catalog's change feed), so a reader
//! always sees one consistent destination.
//!
//! A destination is its team's: ids are unique within a team, and two teams may use the
//! same id. Nothing of one team's (a duplicate, a conflict, a lookup) involves another's.

use std::{collections::HashMap, sync::Arc};

use serde::Deserialize;

use super::{Destination, DestinationError, DestinationSpec, LimitOverrides, ValidationRules};
use crate::sync::RwLockUnpoisoned;
use crate::{endpoint::EndpointKey, redaction::toml_error};

/// Looks destinations up; implemented by the destination stores.
pub trait DestinationCatalog: Send + Sync + 'static {
    /// Every destination of a team.
    fn for_team(&self, team_id: i64) -> Vec<Arc<Destination>>;
    /// One team's destination by id.
    fn get(&self, team_id: i64, id: &str) -> Option<Arc<Destination>>;
    /// How many destinations are loaded.
    fn len(&self) -> usize;
    /// Whether no destination is loaded.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A set of destinations indexed by (team, id) and by team.
#[derive(Debug, Default, Clone)]
pub struct DestinationSet {
    by_team: HashMap<i64, Vec<Arc<Destination>>>,
    len: usize,
}

impl DestinationSet {
    /// Indexes `destinations`: ids must be unique within a team, and one team's
    /// destinations on one endpoint must agree on its limits.
    pub fn new(destinations: Vec<Destination>) -> Result<Self, DestinationError> {
        let mut set = DestinationSet::default();
        let mut endpoint_limits: HashMap<EndpointKey, (String, LimitOverrides)> = HashMap::new();
        for destination in destinations {
            // Endpoints are per team (see `EndpointKey`): a conflict is within one team.
            let (first, limits) = endpoint_limits
                .entry(destination.endpoint.clone())
                .or_insert_with(|| (destination.id.clone(), destination.limits.clone()));
            if *limits != destination.limits {
                return Err(DestinationError::ConflictingLimits {
                    endpoint: destination.endpoint.to_string(),
                    first: first.clone(),
                    second: destination.id.clone(),
                });
            }
            if set.get(destination.team_id, &destination.id).is_some() {
                return Err(DestinationError::DuplicateId(destination.id.clone()));
            }
            set.upsert(destination);
        }
        Ok(set)
    }

    /// Parses and validates a destinations file's text.
    pub fn from_toml(text: &str, rules: &ValidationRules) -> Result<Self, DestinationError> {
        let destinations = specs_from_toml(text)?
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.validate(index, rules))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(destinations)
    }

    /// Every destination, of every team, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Destination>> {
        self.by_team.values().flatten()
    }

    /// Puts `destination` in, in place of its team's destination of the same id.
    pub fn upsert(&mut self, destination: Destination) {
        let team = self.by_team.entry(destination.team_id).or_default();
        let destination = Arc::new(destination);
        match team.iter_mut().find(|d| d.id == destination.id) {
            Some(old) => *old = destination,
            None => {
                team.push(destination);
                self.len += 1;
            }
        }
    }

    /// Takes team `team_id`'s destination `id` out; whether it was in.
    pub fn remove(&mut self, team_id: i64, id: &str) -> bool {
        let Some(team) = self.by_team.get_mut(&team_id) else {
            return false;
        };
        let before = team.len();
        team.retain(|d| d.id != id);
        let removed = team.len() < before;
        if team.is_empty() {
            self.by_team.remove(&team_id);
        }
        self.len -= usize::from(removed);
        removed
    }
}

impl DestinationCatalog for DestinationSet {
    fn for_team(&self, team_id: i64) -> Vec<Arc<Destination>> {
        self.by_team.get(&team_id).cloned().unwrap_or_default()
    }

    fn get(&self, team_id: i64, id: &str) -> Option<Arc<Destination>> {
        // A team has few destinations: a scan of its own beats a second index in memory.
        self.by_team
            .get(&team_id)?
            .iter()
            .find(|d| d.id == id)
            .cloned()
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// The destinations in use now: a store replaces the whole set or changes one destination
/// at a time, and readers (the consumer, the attempt activity) see each change whole.
#[derive(Debug, Default)]
pub struct LiveDestinations(std::sync::RwLock<DestinationSet>);

impl LiveDestinations {
    /// Starts with `set`.
    pub fn new(set: DestinationSet) -> Self {
        LiveDestinations(std::sync::RwLock::new(set))
    }

    /// Replaces the whole set.
    pub fn replace(&self, set: DestinationSet) {
        *self.0.write_unpoisoned() = set;
    }

    /// Every destination now, of every team.
    pub fn all(&self) -> Vec<Arc<Destination>> {
        self.0.read_unpoisoned().iter().cloned().collect()
    }

    /// Applies `change` to the set, under the write lock.
    pub fn change<R>(&self, change: impl FnOnce(&mut DestinationSet) -> R) -> R {
        change(&mut self.0.write_unpoisoned())
    }
}

impl DestinationCatalog for LiveDestinations {
    fn for_team(&self, team_id: i64) -> Vec<Arc<Destination>> {
        self.0.read_unpoisoned().for_team(team_id)
    }

    fn get(&self, team_id: i64, id: &str) -> Option<Arc<Destination>> {
        self.0.read_unpoisoned().get(team_id, id)
    }

    fn len(&self) -> usize {
        self.0.read_unpoisoned().len()
    }
}

/// The destinations of a destinations file's text, not validated yet.
pub fn specs_from_toml(text: &str) -> Result<Vec<DestinationSpec>, DestinationError> {
    let file: DestinationFile =
        toml::from_str(text).map_err(|e| DestinationError::Syntax(toml_error(text, &e)))?;
    Ok(file.destination)
}

/// A destinations file: `[[destination]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationFile {
    #[serde(default)]
    destination: Vec<DestinationSpec>,
}
