//! The file destination store, the embedded default: a TOML file (see
//! `config/destinations.example.toml`) read at start and re-read when it changes, without a
//! restart. A bad edit keeps the last good destinations running and reports the error (log
//! line and `hookflow_destination_reloads_total{result="error"}`).
//!
//! Changes are found by polling the file's content every `destinations.reload_interval_ms`:
//! one small read a second, and it works the same on every filesystem and with editors that
//! replace the file instead of writing it.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context;
use hookflow_core::{Destination, DestinationCatalog, DestinationSet, ValidationRules};
use hookflow_telemetry::names;
use tokio_util::sync::CancellationToken;

/// Destinations from a file, reloaded on change.
pub struct FileDestinations {
    path: PathBuf,
    rules: ValidationRules,
    current: RwLock<(String, Arc<DestinationSet>)>,
}

impl FileDestinations {
    /// Loads `path`; an invalid file is an error here (nothing good to keep yet).
    pub fn load(path: &Path, rules: ValidationRules) -> anyhow::Result<FileDestinations> {
        let (text, set) = read(path, &rules)?;
        metrics::gauge!(names::DESTINATIONS_LOADED).set(set.len() as f64);
        Ok(FileDestinations {
            path: path.to_owned(),
            rules,
            current: RwLock::new((text, Arc::new(set))),
        })
    }

    /// Re-reads the file every `interval` until `shutdown`, swapping in every valid change.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => self.reload(),
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Reloads the file if its content changed; keeps the old set when the new one is bad.
    pub fn reload(&self) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) => {
                self.failed(&format!("cannot read {}: {error}", self.path.display()));
                return;
            }
        };
        if text == self.lock_read().0 {
            return;
        }
        match DestinationSet::from_toml(&text, &self.rules) {
            Ok(set) => {
                let count = set.len();
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = (text, Arc::new(set));
                metrics::gauge!(names::DESTINATIONS_LOADED).set(count as f64);
                metrics::counter!(names::DESTINATION_RELOADS, "result" => "ok").increment(1);
                tracing::info!(destinations = count, path = %self.path.display(), "destinations reloaded");
            }
            Err(error) => {
                self.failed(&format!("{error}"));
                // Remember the bad text so the error is reported once, not every second.
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                current.0 = text;
            }
        }
    }

    fn failed(&self, error: &str) {
        metrics::counter!(names::DESTINATION_RELOADS, "result" => "error").increment(1);
        tracing::error!(path = %self.path.display(), %error, "destinations file not reloaded; the last good destinations stay in use");
    }

    fn set(&self) -> Arc<DestinationSet> {
        self.lock_read().1.clone()
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, (String, Arc<DestinationSet>)> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl DestinationCatalog for FileDestinations {
    fn for_team(&self, team_id: i64) -> Vec<Arc<Destination>> {
        self.set().for_team(team_id)
    }

    fn get(&self, id: &str) -> Option<Arc<Destination>> {
        self.set().get(id)
    }

    fn len(&self) -> usize {
        self.set().len()
    }
}

fn read(path: &Path, rules: &ValidationRules) -> anyhow::Result<(String, DestinationSet)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the destinations file {}", path.display()))?;
    let set = DestinationSet::from_toml(&text, rules)
        .with_context(|| format!("in {}", path.display()))?;
    Ok((text, set))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "[[destination]]\nid = \"a\"\nteam_id = 1\nurl = \"https://a.example/\"\n";
    const TWO: &str = "[[destination]]\nid = \"b\"\nteam_id = 1\nurl = \"https://b.example/\"\n";

    #[test]
    fn a_valid_edit_is_picked_up_and_a_bad_one_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("destinations.toml");
        std::fs::write(&path, ONE).expect("write");
        let store = FileDestinations::load(&path, ValidationRules::default()).expect("load");
        assert_eq!(store.len(), 1);

        std::fs::write(&path, format!("{ONE}{TWO}")).expect("write");
        store.reload();
        assert_eq!(store.len(), 2);
        assert!(store.get("b").is_some());

        std::fs::write(
            &path,
            format!("{ONE}{TWO}[[destination]]\nid = \"bad id\"\n"),
        )
        .expect("write");
        store.reload();
        assert_eq!(store.len(), 2, "the last good set stays");

        std::fs::remove_file(&path).expect("remove");
        store.reload();
        assert_eq!(store.len(), 2, "a missing file keeps the last good set too");
    }
}
