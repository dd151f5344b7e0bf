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
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use hookflow_core::{
    DestinationCatalog, DestinationSet, LiveDestinations, ValidationRules, sync::LockUnpoisoned,
};

use super::reload::{keep_last_good, swap_in};
use hookflow_telemetry::{health::HealthHandle, names};
use tokio_util::sync::CancellationToken;

/// Destinations from a file, reloaded on change into [`FileDestinations::live`].
pub struct FileDestinations {
    path: PathBuf,
    rules: ValidationRules,
    live: Arc<LiveDestinations>,
    /// The text last read, good or bad, so each change is handled (and reported) once.
    last_text: Mutex<String>,
}

impl FileDestinations {
    /// Loads `path`; an invalid file is an error here (nothing good to keep yet).
    pub fn load(path: &Path, rules: ValidationRules) -> anyhow::Result<FileDestinations> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the destinations file {}", path.display()))?;
        let set = DestinationSet::from_toml(&text, &rules)
            .with_context(|| format!("in {}", path.display()))?;
        metrics::gauge!(names::DESTINATIONS_LOADED).set(set.len() as f64);
        Ok(FileDestinations {
            path: path.to_owned(),
            rules,
            live: Arc::new(LiveDestinations::new(set)),
            last_text: Mutex::new(text),
        })
    }

    /// The destinations in use, kept current by [`FileDestinations::watch`].
    pub fn live(&self) -> Arc<LiveDestinations> {
        self.live.clone()
    }

    /// Re-reads the file every `interval` until `shutdown`, swapping in every valid change;
    /// each look at the file is a beat of `health`.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        health: HealthHandle,
        shutdown: CancellationToken,
    ) {
        hookflow_runtime::every(interval, &shutdown, || async {
            self.reload();
            health.beat();
        })
        .await;
    }

    /// Reloads the file if its content changed; keeps the old set when the new one is bad.
    pub fn reload(&self) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) => {
                keep_last_good(&self.path.display(), &error);
                return;
            }
        };
        {
            let mut last = self.last_text.lock_unpoisoned();
            if *last == text {
                return;
            }
            last.clone_from(&text);
        }
        if text.trim().is_empty() && !self.live.is_empty() {
            // Config managers and editors that truncate before writing leave this behind;
            // removing every destination is written as a file without entries.
            let error = "the file is empty: taken for a failed write (to remove every \
                         destination, leave a comment in it)";
            keep_last_good(&self.path.display(), &error);
            return;
        }
        match DestinationSet::from_toml(&text, &self.rules) {
            Ok(set) => swap_in(&self.live, set, &self.path.display()),
            Err(error) => keep_last_good(&self.path.display(), &error),
        }
    }
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
        let live = store.live();
        assert_eq!(live.len(), 1);

        std::fs::write(&path, format!("{ONE}{TWO}")).expect("write");
        store.reload();
        assert_eq!(live.len(), 2);
        assert!(live.get(1, "b").is_some());

        std::fs::write(
            &path,
            format!("{ONE}{TWO}[[destination]]\nid = \"bad id\"\n"),
        )
        .expect("write");
        store.reload();
        assert_eq!(live.len(), 2, "the last good set stays");

        std::fs::remove_file(&path).expect("remove");
        store.reload();
        assert_eq!(live.len(), 2, "a missing file keeps the last good set too");

        std::fs::write(&path, "\n").expect("write");
        store.reload();
        assert_eq!(
            live.len(),
            2,
            "an empty file is a failed write, not a deletion"
        );

        std::fs::write(&path, "# no destinations for now\n").expect("write");
        store.reload();
        assert_eq!(live.len(), 0, "a file without entries removes them all");
    }
}
