//! Reclaiming deleted keys: removing the metadata and tombstone of a key deleted long ago,
//! which KV v2 can only do with an unconditional metadata delete, without ever deleting a
//! write that lands at the same moment. The protocol and why it is safe are in the crate docs
//! ("Reclaiming deleted keys"); in short:
//!
//! 1. read the key: our tombstone at version `t`, written at `c_t` (server clock), old enough;
//! 2. read its metadata (still `t`? had the key a `cas_required` of its own?) and set the
//!    key's `cas_required`, so no write can land without naming the version it replaces;
//! 3. write a *marker* with `cas = t`: `{"tombstone": true, "reclaim": true, ...}`. It fails if
//!    anything was written since the read (then nothing happens); from now on every writer
//!    that reads the key sees the marker and waits instead of writing over it;
//! 4. check with the server's own times that the tombstone was at least the age asked for
//!    (`created_time` of the marker minus that of the tombstone); if not, turn the marker back
//!    into a plain tombstone and stop;
//! 5. delete the key's metadata, if no more than [`SEND_DELETE_WITHIN`] has passed since step
//!    3 was sent. Writers waiting on the marker then create the key afresh (`cas` 0).
//!
//! A marker older than [`RECLAIM_LEASE`] was abandoned (its reclaimer died or gave up):
//! writers then write over it with `cas`, as over a tombstone.

use std::time::{Duration, Instant, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use token_store_core::{Error, KeyKind, ListFilter, Result, StorageKey};

use super::VaultStore;
use super::record::{Current, Tomb, created_time, new_generation};
use crate::client::{BACKEND, status_error};

/// How long a reclamation's marker keeps writers waiting. Older, it counts as abandoned and
/// writers write over it. Three times the 10 s within which a reclamation sends its metadata
/// delete, so that delete has 20 s to reach Vault before anyone may write again.
pub const RECLAIM_LEASE: Duration = Duration::from_secs(30);

/// A reclamation sends its metadata delete no later than this after it sent its marker, and
/// gives it no longer than the rest of this to be answered.
const SEND_DELETE_WITHIN: Duration = Duration::from_secs(10);

/// The most old tombstones one listing reclaims, so a listing's cost stays bounded.
pub(super) const RECLAIM_PER_LISTING: usize = 16;

/// Whether a marker of this age was abandoned (`None`: the server gave no times to judge by,
/// so nothing would ever end the wait).
pub(super) fn abandoned(age: Option<Duration>) -> bool {
    age.is_none_or(|a| a >= RECLAIM_LEASE)
}

/// The pauses of a writer waiting for a reclamation to finish: 2 ms doubling to 50 ms.
pub(super) struct Backoff(Duration);

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff(Duration::from_millis(2))
    }

    pub(super) async fn pause(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_millis(50));
    }
}

/// What [`VaultStore::reclaim`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReclaimReport {
    /// Keys listed (and read) under the prefix, every kind.
    pub examined: usize,
    /// Deleted keys whose metadata and tombstone are now gone from Vault.
    pub reclaimed: usize,
    /// Tombstones left in place: younger than the age asked for.
    pub too_young: usize,
    /// Keys a write or another reclamation reached first: left to them.
    pub raced: usize,
}

/// A key whose latest version is our tombstone at `version`, written at `written` (server
/// clock), old enough to reclaim; or an abandoned marker.
pub(super) struct Candidate {
    key: StorageKey,
    version: u64,
    written: SystemTime,
    /// The key's `cas_required` was set by an abandoned reclamation, not by its owner.
    restore_cas_required: bool,
}

impl Candidate {
    /// A candidate when the latest version is a tombstone at least `age` old by the server's
    /// clock, or a marker abandoned and at least `age` old.
    pub(super) fn of(key: &StorageKey, version: u64, tomb: Tomb, age: Duration) -> Option<Self> {
        let (seen_age, written, restore) = match tomb {
            Tomb::Tombstone {
                age: Some(a),
                written: Some(w),
            } => (a, w, false),
            Tomb::Reclaiming {
                age: Some(a),
                written: Some(w),
                restore_cas_required,
            } if abandoned(Some(a)) => (a, w, restore_cas_required),
            _ => return None,
        };
        (seen_age >= age && version > 0).then(|| Candidate {
            key: key.clone(),
            version,
            written,
            restore_cas_required: restore,
        })
    }
}

/// How one key's reclamation ended.
enum Outcome {
    Reclaimed,
    TooYoung,
    Raced,
}

impl VaultStore {
    /// Removes, for good, the metadata and tombstone of every key under the prefix that was
    /// deleted at least `older_than` ago (never less than the configured
    /// [`reclaim_after`](crate::VaultConfig::reclaim_after)), so LIST stops naming them and
    /// listings (`purge_expired_states` among them) stop reading them. Safe while other
    /// clients write the same keys: see the crate docs, "Reclaiming deleted keys". Listings
    /// already reclaim up to 16 old tombstones each (unless
    /// [`reclaim_in_listings`](crate::VaultConfig::reclaim_in_listings) is off); this is the
    /// whole sweep, for a maintenance job or a server's periodic task.
    ///
    /// Needs `update` and `delete` on `<mount>/metadata/<prefix>/*` besides the store's usual
    /// policy. Costs one LIST per folder and one read per key, then four requests per
    /// reclaimed key (metadata read and update, marker, metadata delete).
    pub async fn reclaim(&self, older_than: Duration) -> Result<ReclaimReport> {
        let mut report = ReclaimReport::default();
        for kind in KeyKind::ALL {
            self.reclaim_into(kind, older_than, &mut report).await?;
        }
        Ok(report)
    }

    /// [`VaultStore::reclaim`] for the keys of one kind only (e.g. [`KeyKind::State`], the
    /// PKCE states every login leaves behind).
    pub async fn reclaim_kind(&self, kind: KeyKind, older_than: Duration) -> Result<ReclaimReport> {
        let mut report = ReclaimReport::default();
        self.reclaim_into(kind, older_than, &mut report).await?;
        Ok(report)
    }

    async fn reclaim_into(
        &self,
        kind: KeyKind,
        older_than: Duration,
        report: &mut ReclaimReport,
    ) -> Result<()> {
        let age = older_than.max(self.inner.config.reclaim_after);
        {
            let (keys, _) = self.listed_keys(kind, &ListFilter::all()).await?;
            for key in keys {
                report.examined += 1;
                let Current::Absent { cas, tomb } = self.current(&key).await? else {
                    continue;
                };
                let Some(candidate) = Candidate::of(&key, cas, tomb, age) else {
                    if matches!(tomb, Tomb::Tombstone { .. }) {
                        report.too_young += 1;
                    }
                    continue;
                };
                match self.reclaim_detached(candidate, age).await? {
                    Outcome::Reclaimed => report.reclaimed += 1,
                    Outcome::TooYoung => report.too_young += 1,
                    Outcome::Raced => report.raced += 1,
                }
            }
        }
        Ok(())
    }

    /// Reclaims what a listing found, best effort: a failure is logged and the listing goes on;
    /// a refusal by the policy turns listing reclamation off for this store.
    pub(super) async fn reclaim_listed(&self, candidates: Vec<Candidate>, age: Duration) {
        for candidate in candidates {
            match self.reclaim_detached(candidate, age).await {
                Ok(_) => {}
                Err(Error::PermissionDenied { .. }) => {
                    tracing::debug!(
                        store = %self.inner.config,
                        "the policy allows no reclaiming (metadata update or delete): listings stop trying"
                    );
                    self.inner
                        .reclaim_denied
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::debug!(store = %self.inner.config, error = %e, "reclaiming a tombstone failed");
                }
            }
        }
    }

    /// One key's reclamation in a task of its own: a caller's time limit dropping its future
    /// must not stop it between the marker and the metadata delete (writers would wait for
    /// the lease to run out).
    async fn reclaim_detached(&self, candidate: Candidate, age: Duration) -> Result<Outcome> {
        let store = self.clone();
        tokio::spawn(async move { store.reclaim_key(candidate, age).await })
            .await
            .map_err(|e| Error::backend(BACKEND, "a reclamation task failed", Some(Box::new(e))))?
    }

    async fn reclaim_key(&self, c: Candidate, age: Duration) -> Result<Outcome> {
        let key = &c.key;
        let meta_path = self.meta_path(key);
        // 2. Still the version we read? Had the key a cas_required of its own?
        let reply = self.inner.http.call(Method::GET, &meta_path, None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(Outcome::Raced);
        }
        if !reply.status.is_success() {
            return Err(status_error("read metadata", &meta_path, &reply));
        }
        if reply
            .body
            .pointer("/data/current_version")
            .and_then(Value::as_u64)
            != Some(c.version)
        {
            return Ok(Outcome::Raced);
        }
        let key_cas_required = reply
            .body
            .pointer("/data/cas_required")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let restore = c.restore_cas_required || !key_cas_required;
        if !key_cas_required {
            self.set_cas_required(key, true).await?;
        }
        // 3. The marker, with cas: nothing was written since the read, or nothing happens.
        let sent = Instant::now();
        let marker = json!({
            "tombstone": true,
            "reclaim": true,
            "restore_cas_required": restore,
            "generation": new_generation()?,
        });
        let data_path = self.data_path(key);
        let body = json!({ "options": { "cas": c.version }, "data": marker });
        let reply = self
            .inner
            .http
            .call(Method::POST, &data_path, Some(&body))
            .await?;
        if reply.status == StatusCode::BAD_REQUEST && reply.errors().contains("check-and-set") {
            // A write came first. It may have to do without `cas` again, unless it is being
            // reclaimed by someone else (whose marker it then is).
            if restore
                && matches!(
                    self.current(key).await?,
                    Current::Present { .. } | Current::Undecodable { .. }
                )
            {
                self.restore_cas_required(key).await;
            }
            return Ok(Outcome::Raced);
        }
        if !reply.status.is_success() {
            return Err(status_error("write reclaim marker", &data_path, &reply));
        }
        let marker_version = reply.body.pointer("/data/version").and_then(Value::as_u64);
        // 4. Old enough by the server's own clock (the listing judged by its Date header).
        let old_enough = created_time(&reply)
            .and_then(|m| m.duration_since(c.written).ok())
            .is_some_and(|d| d >= age);
        let Some(m) = marker_version.filter(|_| old_enough) else {
            if let Some(m) = marker_version {
                self.unmark(key, m, restore).await?;
            }
            return Ok(Outcome::TooYoung);
        };
        // 5. The metadata delete, sent in time or not at all.
        let Some(left) = SEND_DELETE_WITHIN.checked_sub(sent.elapsed()) else {
            self.unmark(key, m, restore).await?;
            return Err(Error::unavailable(
                BACKEND,
                format!("reclaim {data_path}: too slow to delete the key in time; left as it was"),
                None,
            ));
        };
        let deleted =
            tokio::time::timeout(left, self.inner.http.call(Method::DELETE, &meta_path, None))
                .await;
        match deleted {
            Ok(Ok(reply)) if reply.status.is_success() => Ok(Outcome::Reclaimed),
            // Refused for sure (a status, not a lost answer): nothing was deleted, so the
            // marker goes back to a plain tombstone at once rather than after the lease.
            Ok(Ok(reply)) => {
                self.unmark(key, m, restore).await?;
                Err(status_error(
                    "reclaim (delete metadata)",
                    &meta_path,
                    &reply,
                ))
            }
            // The delete may or may not have been applied: leave everything as it is; writers
            // take over the marker once the lease has run out.
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::unavailable(
                BACKEND,
                format!("reclaim {meta_path}: no answer to the metadata delete in time"),
                None,
            )),
        }
    }

    /// Turns our marker at version `m` back into a plain tombstone (nobody writes over a fresh
    /// marker, so the `cas` holds) and gives the key back its `cas_required`.
    async fn unmark(&self, key: &StorageKey, m: u64, restore: bool) -> Result<()> {
        let tombstone = json!({ "tombstone": true, "generation": new_generation()? });
        if self.post_data(key, Some(m), tombstone).await?.is_some() && restore {
            self.restore_cas_required(key).await;
        }
        Ok(())
    }

    async fn set_cas_required(&self, key: &StorageKey, on: bool) -> Result<()> {
        let path = self.meta_path(key);
        let reply = self
            .inner
            .http
            .call(Method::POST, &path, Some(&json!({ "cas_required": on })))
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(status_error("set cas_required", &path, &reply))
        }
    }

    /// Takes the `cas_required` a reclamation set off a key that holds a record again: best
    /// effort (if it stays, unconditional writes of that key just read first).
    pub(super) async fn restore_cas_required(&self, key: &StorageKey) {
        if let Err(e) = self.set_cas_required(key, false).await {
            tracing::debug!(store = %self.inner.config, error = %e, "clearing cas_required after a reclamation failed");
        }
    }

    /// Whether a `cas` write based on a read sent at `read_at` may still go out: not later
    /// than half of `reclaim_after` after it. Past that, the key may have been deleted,
    /// reclaimed and created again up to the same KV version (crate docs).
    pub(super) fn fresh_enough(&self, read_at: Instant) -> bool {
        read_at.elapsed() < self.inner.config.reclaim_after / 2
    }
}
