//! Sets of destinations: indexed by id and by team, parsed whole from a destinations file,
//! and swapped whole when a store reloads, so a reader always sees one consistent set.

use std::{collections::HashMap, sync::Arc};

use serde::Deserialize;

use super::{Destination, DestinationError, DestinationSpec, LimitOverrides, ValidationRules};
use crate::sync::RwLockUnpoisoned;
use crate::{endpoint::EndpointKey, redaction::toml_error};

/// Looks destinations up; implemented by the destination stores.
pub trait DestinationCatalog: Send + Sync + 'static {
    /// Every destination of a team.
    fn for_team(&self, team_id: i64) -> Vec<Arc<Destination>>;
    /// One destination by id.
    fn get(&self, id: &str) -> Option<Arc<Destination>>;
    /// How many destinations are loaded.
    fn len(&self) -> usize;
    /// Whether no destination is loaded.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An immutable set of destinations indexed by id and by team.
#[derive(Debug, Default, Clone)]
pub struct DestinationSet {
    by_id: HashMap<String, Arc<Destination>>,
    by_team: HashMap<i64, Vec<Arc<Destination>>>,
}

impl DestinationSet {
    /// Indexes `destinations`; ids must be unique.
    pub fn new(destinations: Vec<Destination>) -> Result<Self, DestinationError> {
        let mut set = DestinationSet::default();
        let mut endpoint_limits: HashMap<EndpointKey, (String, LimitOverrides)> = HashMap::new();
        for destination in destinations {
            let (first, limits) = endpoint_limits
                .entry(destination.endpoint.clone())
                .or_insert_with(|| (destination.id.clone(), destination.limits));
            if *limits != destination.limits {
                return Err(DestinationError::ConflictingLimits {
                    endpoint: destination.endpoint.to_string(),
                    first: first.clone(),
                    second: destination.id.clone(),
                });
            }
            let destination = Arc::new(destination);
            if set
                .by_id
                .insert(destination.id.clone(), destination.clone())
                .is_some()
            {
                return Err(DestinationError::DuplicateId(destination.id.clone()));
            }
            set.by_team
                .entry(destination.team_id)
                .or_default()
                .push(destination);
        }
        Ok(set)
    }

    /// Parses and validates a destinations file's text.
    pub fn from_toml(text: &str, rules: &ValidationRules) -> Result<Self, DestinationError> {
        let file: DestinationFile =
            toml::from_str(text).map_err(|e| DestinationError::Syntax(toml_error(text, &e)))?;
        let destinations = file
            .destination
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.validate(index, rules))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(destinations)
    }
}

impl DestinationCatalog for DestinationSet {
    fn for_team(&self, team_id: i64) -> Vec<Arc<Destination>> {
        self.by_team.get(&team_id).cloned().unwrap_or_default()
    }

    fn get(&self, id: &str) -> Option<Arc<Destination>> {
        self.by_id.get(id).cloned()
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// The destinations in use now: a store swaps in a whole new validated set when it
/// reloads, and readers (the consumer, the attempt activity) always see one consistent set.
#[derive(Debug, Default)]
pub struct LiveDestinations(std::sync::RwLock<Arc<DestinationSet>>);

impl LiveDestinations {
    /// Starts with `set`.
    pub fn new(set: DestinationSet) -> Self {
        LiveDestinations(std::sync::RwLock::new(Arc::new(set)))
    }

    /// Replaces the set.
    pub fn replace(&self, set: DestinationSet) {
        *self.0.write_unpoisoned() = Arc::new(set);
    }

    /// The current set.
    pub fn snapshot(&self) -> Arc<DestinationSet> {
        self.0.read_unpoisoned().clone()
    }
}

impl DestinationCatalog for LiveDestinations {
    fn for_team(&self, team_id: i64) -> Vec<Arc<Destination>> {
        self.snapshot().for_team(team_id)
    }

    fn get(&self, id: &str) -> Option<Arc<Destination>> {
        self.snapshot().get(id)
    }

    fn len(&self) -> usize {
        self.snapshot().len()
    }
}

/// A destinations file: `[[destination]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationFile {
    #[serde(default)]
    destination: Vec<DestinationSpec>,
}
