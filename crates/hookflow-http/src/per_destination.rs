//! Things a process keeps per destination (its TLS clients, its OAuth2 token), keyed by
//! what identifies a destination across teams: the team, the id and the uid. Two teams'
//! destinations of one id never share an entry, nor does a deleted destination and the
//! one created again under its id. Each entry is also keyed by the settings it was made
//! from (a fingerprint): after a change (a new certificate, a new client secret) a new
//! entry is made, so nothing made for the old settings serves the new ones, and attempts
//! still holding the old settings (in flight during the change) keep theirs rather than
//! replacing each other's. Whenever an entry is made, those unused for [`IDLE`] are
//! dropped, which bounds the map by the destinations (and settings) in use.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hookflow_core::{Destination, sync::LockUnpoisoned};

/// How long an unused entry is kept.
pub const IDLE: Duration = Duration::from_secs(15 * 60);

/// What identifies a destination across teams, and the settings an entry was made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EntryKey<F> {
    team_id: i64,
    id: String,
    uid: Option<uuid::Uuid>,
    fingerprint: F,
}

struct Entry<T> {
    value: Arc<T>,
    used: Instant,
}

/// One `T` per destination and settings (whose fingerprint is `F`).
pub struct PerDestination<F, T> {
    entries: Mutex<HashMap<EntryKey<F>, Entry<T>>>,
}

impl<F, T> Default for PerDestination<F, T> {
    fn default() -> Self {
        PerDestination {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<F: Hash + Eq, T> PerDestination<F, T> {
    /// `destination`'s entry for settings `fingerprint`: the one kept, else one `make`
    /// makes now (outside the lock: making may take a while), kept unless making failed.
    pub fn get_or_make<E>(
        &self,
        destination: &Destination,
        fingerprint: F,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        let key = EntryKey {
            team_id: destination.team_id,
            id: destination.id.clone(),
            uid: destination.uid,
            fingerprint,
        };
        let now = Instant::now();
        if let Some(entry) = self.entries.lock_unpoisoned().get_mut(&key) {
            entry.used = now;
            return Ok(entry.value.clone());
        }
        let value = Arc::new(make()?);
        let mut entries = self.entries.lock_unpoisoned();
        entries.retain(|_, entry| now.duration_since(entry.used) < IDLE);
        // Another caller may have made one meanwhile: the first kept serves both, so
        // callers waiting on a value inside it (a token being fetched) share it.
        let entry = entries.entry(key).or_insert(Entry { value, used: now });
        entry.used = now;
        Ok(entry.value.clone())
    }

    /// How many entries are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock_unpoisoned().len()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use hookflow_core::{DestinationSpec, ValidationRules};

    use super::*;

    fn destination(team_id: i64, id: &str, uid: Option<&str>) -> Destination {
        let spec: DestinationSpec = serde_json::from_value(serde_json::json!({
            "id": id, "team_id": team_id, "url": "https://hooks.example.com/x", "uid": uid,
        }))
        .expect("spec");
        spec.validate_one(&ValidationRules::default())
            .expect("valid")
    }

    #[test]
    fn teams_ids_and_uids_each_have_their_own_entry_and_a_change_remakes_it() {
        let map: PerDestination<u8, String> = PerDestination::default();
        let made = std::cell::Cell::new(0);
        let get = |d: &Destination, fingerprint: u8, value: &str| {
            map.get_or_make(d, fingerprint, || {
                made.set(made.get() + 1);
                Ok::<_, Infallible>(value.to_owned())
            })
            .expect("infallible")
        };
        let a = destination(1, "d", None);
        let b = destination(2, "d", None);
        let recreated = destination(1, "d", Some("00000000-0000-4000-8000-000000000001"));
        assert_eq!(*get(&a, 1, "a"), "a");
        assert_eq!(
            *get(&b, 1, "b"),
            "b",
            "another team's destination of the same id"
        );
        assert_eq!(*get(&recreated, 1, "r"), "r", "recreated under the same id");
        assert_eq!(*get(&a, 1, "not made"), "a", "kept");
        assert_eq!(made.get(), 3);
        assert_eq!(*get(&a, 2, "a2"), "a2", "settings changed: made again");
        assert_eq!(
            *get(&a, 1, "not made"),
            "a",
            "an attempt of the old settings"
        );
        assert_eq!(*get(&b, 1, "not made"), "b");
        assert_eq!((made.get(), map.len()), (4, 4));
    }

    #[test]
    fn a_failed_make_keeps_nothing() {
        let map: PerDestination<u8, String> = PerDestination::default();
        let d = destination(1, "d", None);
        assert_eq!(map.get_or_make(&d, 1, || Err("bad")), Err("bad"));
        assert_eq!(map.len(), 0);
    }
}
