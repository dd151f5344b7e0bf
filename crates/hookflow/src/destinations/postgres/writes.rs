//! The admin API's side of the catalog: reads of one team's rows, and writes, each one
//! transaction.
//!
//! A write takes the next change sequence first (`UPDATE … RETURNING` on the one sequence
//! row, whose lock it holds until it commits: writes are serialised, and sequence order is
//! commit order), locks the destination's row, checks what it must against the row as it is
//! (it exists, it is the version the client read: `If-Match`), validates the destination
//! alone and with its own team's others (limits of one endpoint agree; nothing of another
//! team is read), writes the row with its secrets sealed and its version + 1, notifies the
//! readers, and commits. Two racing writes of one row never both win: the second sees the
//! first's version.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hookflow_core::{Destination, DestinationError, DestinationSet, DestinationSpec};
use sqlx::{Postgres, Transaction};

use super::{CHANNEL, Catalog, rows::Row};
use crate::destinations::sealing::RowBinding;

/// One destination as stored, secrets and all (show it with
/// [`DestinationSpec::redacted`]).
#[derive(Clone)]
pub struct StoredDestination {
    /// The spec, with the team, id and uid of its row.
    pub spec: DestinationSpec,
    /// The row's version: its `ETag`.
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

/// Why a read or a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The destination is invalid; names the field.
    #[error(transparent)]
    Invalid(#[from] DestinationError),
    /// The team has no destination of this id.
    #[error("no destination {0}")]
    NotFound(String),
    /// The team has a destination of this id already.
    #[error("destination {0} exists already")]
    Conflict(String),
    /// An imported destination's uid is another destination's.
    #[error("destination {id}'s uid {uid} is another destination's")]
    UidTaken {
        /// The destination.
        id: String,
        /// Its uid.
        uid: String,
    },
    /// An imported destination was deleted from the catalog since: it stays deleted.
    #[error("destination {0} was deleted from the catalog")]
    Deleted(String),
    /// `If-Match` named another version than the row's.
    #[error(
        "destination {id} is at version {current}, not the one given in If-Match: read it \
         again and retry"
    )]
    Stale {
        /// The destination.
        id: String,
        /// Its version now.
        current: i64,
    },
    /// The stored destination cannot be read (a key missing from the key ring, say).
    #[error("destination {id} cannot be read: {problem}")]
    Unreadable {
        /// The destination.
        id: String,
        /// Why.
        problem: String,
    },
    /// PostgreSQL did not answer.
    #[error("the destination catalog (PostgreSQL) is unreachable: {0}")]
    Unavailable(#[from] sqlx::Error),
}

/// A write to one destination.
enum Write {
    /// A new destination: its id must be free in its team. It gets a new uid.
    Create(DestinationSpec),
    /// A destination moved from another store: as `Create`, keeping the uid it had there
    /// (its pending deliveries recorded it).
    Import(DestinationSpec),
    /// A destination's new spec; the id must exist.
    Update(DestinationSpec),
    /// A change of the stored spec (pause, resume).
    Change(Box<dyn FnOnce(&mut DestinationSpec) + Send>),
    /// The destination goes.
    Delete,
}

impl Catalog {
    /// Team `team_id`'s destinations, shown without secrets (their stored spec needs no
    /// key), by id.
    pub async fn list(&self, team_id: i64) -> Result<Vec<StoredDestination>, StoreError> {
        let rows: Vec<(serde_json::Value, i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT spec, version, created_at, updated_at FROM hookflow_destinations \
             WHERE team_id = $1 AND NOT deleted ORDER BY id",
        )
        .bind(team_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(spec, version, created_at, updated_at)| {
                Some(StoredDestination {
                    spec: serde_json::from_value(spec).ok()?,
                    version,
                    created_at,
                    updated_at,
                })
            })
            .collect())
    }

    /// The uid of team `team_id`'s destination `id`, if it exists: no secret opened.
    pub async fn uid_of(&self, team_id: i64, id: &str) -> Result<Option<uuid::Uuid>, StoreError> {
        let uid = sqlx::query_scalar(
            "SELECT uid FROM hookflow_destinations WHERE team_id = $1 AND id = $2 AND NOT deleted",
        )
        .bind(team_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(uid)
    }

    /// Team `team_id`'s destination `id` as stored now.
    pub async fn read(&self, team_id: i64, id: &str) -> Result<StoredDestination, StoreError> {
        let (row, created_at, updated_at) = self
            .row(self.pool(), team_id, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let spec = row
            .spec(&self.sealer)
            .map_err(|problem| StoreError::Unreadable {
                id: id.to_owned(),
                problem,
            })?;
        Ok(StoredDestination {
            spec,
            version: row.version,
            created_at,
            updated_at,
        })
    }

    /// Team `team_id`'s destination `id` as delivery would see it, read from the catalog now
    /// (not from this process's copy, which may be a moment behind a delete and re-create).
    pub async fn destination(
        &self,
        team_id: i64,
        id: &str,
    ) -> Result<Arc<Destination>, StoreError> {
        let stored = self.read(team_id, id).await?;
        Ok(Arc::new(stored.spec.validate_one(&self.rules)?))
    }

    /// Creates `spec` in team `team_id` with a new uid.
    pub async fn create(
        &self,
        team_id: i64,
        spec: DestinationSpec,
    ) -> Result<StoredDestination, StoreError> {
        let id = spec.id.clone();
        self.write_stored(team_id, &id, None, Write::Create(spec))
            .await
    }

    /// Creates `spec` in team `team_id` keeping its uid (a new one when it has none): a
    /// destination moved from another store.
    pub async fn import(
        &self,
        team_id: i64,
        spec: DestinationSpec,
    ) -> Result<StoredDestination, StoreError> {
        let id = spec.id.clone();
        self.write_stored(team_id, &id, None, Write::Import(spec))
            .await
    }

    /// Replaces team `team_id`'s destination `spec.id` with `spec` (placeholders keep the
    /// stored secrets; see [`DestinationSpec::restore_redacted`]), if it is at
    /// `if_match` when given.
    pub async fn update(
        &self,
        team_id: i64,
        spec: DestinationSpec,
        if_match: Option<i64>,
    ) -> Result<StoredDestination, StoreError> {
        let id = spec.id.clone();
        self.write_stored(team_id, &id, if_match, Write::Update(spec))
            .await
    }

    /// Changes team `team_id`'s destination `id` by `change`, if it is at `if_match`.
    pub async fn change(
        &self,
        team_id: i64,
        id: &str,
        if_match: Option<i64>,
        change: impl FnOnce(&mut DestinationSpec) + Send + 'static,
    ) -> Result<StoredDestination, StoreError> {
        self.write_stored(team_id, id, if_match, Write::Change(Box::new(change)))
            .await
    }

    /// Deletes team `team_id`'s destination `id`, if it is at `if_match` when given.
    pub async fn delete(
        &self,
        team_id: i64,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<(), StoreError> {
        self.write(team_id, id, if_match, Write::Delete).await?;
        Ok(())
    }

    /// [`Catalog::write`] of what leaves a destination behind: the destination as
    /// committed.
    async fn write_stored(
        &self,
        team_id: i64,
        id: &str,
        if_match: Option<i64>,
        write: Write,
    ) -> Result<StoredDestination, StoreError> {
        self.write(team_id, id, if_match, write)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    async fn write(
        &self,
        team_id: i64,
        id: &str,
        if_match: Option<i64>,
        write: Write,
    ) -> Result<Option<StoredDestination>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let seq: i64 =
            sqlx::query_scalar("UPDATE hookflow_catalog_sequence SET seq = seq + 1 RETURNING seq")
                .fetch_one(&mut *tx)
                .await?;
        let current = self.locked_row(&mut tx, team_id, id).await?;
        let live = current.as_ref().filter(|(row, _)| !row.deleted);
        match (&write, live) {
            (Write::Create(_) | Write::Import(_), Some(_)) => {
                return Err(StoreError::Conflict(id.to_owned()));
            }
            // An import never brings back what was deleted here (with its old uid): the
            // catalog's delete is the later word.
            (Write::Import(_), None) if current.is_some() => {
                return Err(StoreError::Deleted(id.to_owned()));
            }
            (Write::Create(_) | Write::Import(_), None) => {}
            (_, None) => return Err(StoreError::NotFound(id.to_owned())),
            (_, Some((row, _))) => {
                if if_match.is_some_and(|version| version != row.version) {
                    return Err(StoreError::Stale {
                        id: id.to_owned(),
                        current: row.version,
                    });
                }
            }
        }
        // A tombstone's id is created again as another destination, with a new uid.
        let stored = live.map(|(row, _)| row.spec(&self.sealer));
        let version = current.as_ref().map_or(0, |(row, _)| row.version) + 1;
        // An imported uid that is not one would orphan the deliveries that recorded it.
        let imported_uid = match &write {
            Write::Import(spec) => spec
                .uid
                .as_deref()
                .map(|uid| {
                    uuid::Uuid::parse_str(uid).map_err(|e| StoreError::Unreadable {
                        id: id.to_owned(),
                        problem: format!("its uid {uid:?} is not a UUID: {e}"),
                    })
                })
                .transpose()?,
            _ => None,
        };
        let mut spec = match write {
            Write::Delete => {
                // A tombstone keeps no secret: nothing reads it again, and a key rotated
                // away (say, compromised) must not keep opening a deleted destination's.
                sqlx::query(
                    "UPDATE hookflow_destinations SET deleted = true, version = $3, \
                     change_seq = $4, sealed = ''::bytea, previous_version = NULL, \
                     previous_spec = NULL, previous_sealed = NULL, updated_at = now() \
                     WHERE team_id = $1 AND id = $2",
                )
                .bind(team_id)
                .bind(id)
                .bind(version)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                notify(&mut tx, seq).await?;
                tx.commit().await?;
                self.applied().await;
                return Ok(None);
            }
            Write::Create(spec) | Write::Import(spec) | Write::Update(spec) => spec,
            Write::Change(change) => {
                let mut spec = self.readable(id, stored.as_ref())?.clone();
                change(&mut spec);
                spec
            }
        };
        spec.team_id = team_id;
        // Placeholders keep the stored secrets; a stored version this process cannot read
        // has none to give (every placeholder is refused then).
        let readable = stored.and_then(Result::ok);
        spec.restore_redacted(readable.as_ref())?;
        let uid = match live {
            Some((row, _)) => row.uid,
            None => imported_uid.unwrap_or_else(uuid::Uuid::new_v4),
        };
        spec.uid = Some(uid.to_string());
        let destination = spec.clone().validate_one(&self.rules)?;
        // A certificate given now must be valid now; one kept from before is not checked
        // (pausing a destination whose certificate expired must still work).
        if readable.as_ref().map(|s| &s.client_certificate) != Some(&spec.client_certificate) {
            destination.check_certificate_current(Utc::now().timestamp())?;
        }
        self.check_with_team(&mut tx, destination).await?;
        let (public, sealed) = self.sealer.seal(&spec, RowBinding { team_id, uid });
        // An update keeps the version it replaces, for readers that cannot read this one.
        let keep_previous = live.is_some();
        let times: (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO hookflow_destinations \
               (team_id, id, uid, version, change_seq, deleted, spec, sealed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, false, $6, $7, now(), now()) \
             ON CONFLICT (team_id, id) DO UPDATE SET \
               uid = EXCLUDED.uid, version = EXCLUDED.version, \
               change_seq = EXCLUDED.change_seq, deleted = false, \
               previous_version = CASE WHEN $8 THEN hookflow_destinations.version END, \
               previous_spec = CASE WHEN $8 THEN hookflow_destinations.spec END, \
               previous_sealed = CASE WHEN $8 THEN hookflow_destinations.sealed END, \
               spec = EXCLUDED.spec, sealed = EXCLUDED.sealed, \
               created_at = CASE WHEN $8 THEN hookflow_destinations.created_at ELSE now() END, \
               updated_at = now() \
             RETURNING created_at, updated_at",
        )
        .bind(team_id)
        .bind(id)
        .bind(uid)
        .bind(version)
        .bind(seq)
        .bind(public)
        .bind(sealed)
        .bind(keep_previous)
        .fetch_one(&mut *tx)
        .await
        .map_err(|error| match error.as_database_error() {
            // The uid is unique across teams: an import that names another row's.
            Some(db) if db.is_unique_violation() => StoreError::UidTaken {
                id: id.to_owned(),
                uid: uid.to_string(),
            },
            _ => StoreError::Unavailable(error),
        })?;
        notify(&mut tx, seq).await?;
        tx.commit().await?;
        self.applied().await;
        // What was committed, not a read after it: a write racing in after the commit
        // must not answer for this one.
        let (created_at, updated_at) = times;
        Ok(Some(StoredDestination {
            spec,
            version,
            created_at,
            updated_at,
        }))
    }

    /// After a commit: this process applies it at once (the others on its notification;
    /// should PostgreSQL not answer now, this one with the next change or catch-up).
    async fn applied(&self) {
        // Before its load (or in a command) a process has nothing in memory to bring up to
        // date: the load reads this change with the rest.
        if !*self.loaded.borrow() {
            return;
        }
        self.catch_up_and_report().await;
    }

    fn readable<'a>(
        &self,
        id: &str,
        stored: Option<&'a Result<DestinationSpec, String>>,
    ) -> Result<&'a DestinationSpec, StoreError> {
        match stored {
            Some(Ok(spec)) => Ok(spec),
            Some(Err(problem)) => Err(StoreError::Unreadable {
                id: id.to_owned(),
                problem: problem.clone(),
            }),
            None => Err(StoreError::NotFound(id.to_owned())),
        }
    }

    /// Refuses `destination` if it disagrees with its own team's others on an endpoint's
    /// limits (endpoints are per team: no other team's row is read).
    async fn check_with_team(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        destination: Destination,
    ) -> Result<(), StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT team_id, id, uid, version, change_seq, deleted, spec, sealed, \
             previous_spec, previous_sealed FROM hookflow_destinations \
             WHERE team_id = $1 AND id <> $2 AND NOT deleted",
        )
        .bind(destination.team_id)
        .bind(&destination.id)
        .fetch_all(&mut **tx)
        .await?;
        let mut team: Vec<Destination> = rows
            .iter()
            .filter_map(|row| row.destination(&self.sealer, &self.rules).ok())
            .collect();
        team.push(destination);
        DestinationSet::new(team)?;
        Ok(())
    }

    async fn row<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        executor: E,
        team_id: i64,
        id: &str,
    ) -> Result<Option<(Row, DateTime<Utc>, DateTime<Utc>)>, StoreError> {
        let found: Option<RowWithTimes> = sqlx::query_as(
            "SELECT team_id, id, uid, version, change_seq, deleted, spec, sealed, \
             previous_spec, previous_sealed, created_at, updated_at \
             FROM hookflow_destinations WHERE team_id = $1 AND id = $2 AND NOT deleted",
        )
        .bind(team_id)
        .bind(id)
        .fetch_optional(executor)
        .await?;
        Ok(found.map(|r| (r.row, r.created_at, r.updated_at)))
    }

    async fn locked_row(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        team_id: i64,
        id: &str,
    ) -> Result<Option<(Row, DateTime<Utc>)>, StoreError> {
        let found: Option<RowWithTimes> = sqlx::query_as(
            "SELECT team_id, id, uid, version, change_seq, deleted, spec, sealed, \
             previous_spec, previous_sealed, created_at, updated_at \
             FROM hookflow_destinations WHERE team_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(team_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(found.map(|r| (r.row, r.created_at)))
    }
}

#[derive(sqlx::FromRow)]
struct RowWithTimes {
    #[sqlx(flatten)]
    row: Row,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Tells every process a change was committed (sent when the transaction commits).
async fn notify(tx: &mut Transaction<'_, Postgres>, seq: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(seq.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A row's sealed secrets, as [`Catalog::reseal`] reads them.
#[derive(sqlx::FromRow)]
struct SealedRow {
    uid: uuid::Uuid,
    sealed: Vec<u8>,
    previous_sealed: Option<Vec<u8>>,
}

/// What [`Catalog::reseal`] did.
#[derive(Debug, Default)]
pub struct Resealed {
    /// Rows now sealed under the current key that were not.
    pub moved: usize,
    /// Rows no configured key opens (team, id, why): left as they are.
    pub unreadable: Vec<(i64, String, String)>,
}

impl Catalog {
    /// Seals every destination's secrets (and the version it kept before) again under the
    /// current key, without changing the destinations. Each row is one transaction holding
    /// its row lock, so a write racing in waits for it (or it for the write, and then reads
    /// what the write sealed): the spec and its secrets always stay of one version. A row no
    /// key opens is reported and left alone, not a reason to stop the rotation. Deleted
    /// destinations are never read again and are left alone.
    pub async fn reseal(&self) -> Result<Resealed, StoreError> {
        let ids: Vec<(i64, String)> = sqlx::query_as(
            "SELECT team_id, id FROM hookflow_destinations WHERE NOT deleted \
             ORDER BY team_id, id",
        )
        .fetch_all(self.pool())
        .await?;
        let mut done = Resealed::default();
        for (team_id, id) in ids {
            let mut tx = self.pool().begin().await?;
            let row: Option<SealedRow> = sqlx::query_as(
                "SELECT uid, sealed, previous_sealed FROM hookflow_destinations \
                 WHERE team_id = $1 AND id = $2 AND NOT deleted FOR UPDATE",
            )
            .bind(team_id)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(SealedRow {
                uid,
                sealed,
                previous_sealed: previous,
            }) = row
            else {
                continue; // deleted meanwhile
            };
            let binding = RowBinding { team_id, uid };
            let sealed = match self.sealer.reseal(&sealed, binding) {
                Ok(sealed) => sealed,
                Err(error) => {
                    done.unreadable.push((team_id, id, error.to_string()));
                    continue;
                }
            };
            // A previous version no key opens any more is dropped, not kept unreadable.
            let previous = previous.map(|p| self.sealer.reseal(&p, binding));
            let keep_previous = !matches!(previous, Some(Err(_)));
            let previous = previous.and_then(Result::ok).flatten();
            if sealed.is_none() && previous.is_none() && keep_previous {
                continue;
            }
            sqlx::query(
                "UPDATE hookflow_destinations SET sealed = COALESCE($3, sealed), \
                 previous_sealed = CASE WHEN $5 THEN COALESCE($4, previous_sealed) END, \
                 previous_spec = CASE WHEN $5 THEN previous_spec END, \
                 previous_version = CASE WHEN $5 THEN previous_version END \
                 WHERE team_id = $1 AND id = $2",
            )
            .bind(team_id)
            .bind(&id)
            .bind(sealed)
            .bind(previous)
            .bind(keep_previous)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            done.moved += 1;
        }
        Ok(done)
    }
}
