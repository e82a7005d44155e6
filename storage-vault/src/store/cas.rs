//! Writes: the compare-and-swap protocol on top of KV v2's `cas` option (see the crate docs,
//! "Versions and compare-and-swap").

use std::sync::atomic::Ordering;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use token_store_core::{Error, Precondition, Result, StorageKey, Version};

use super::reclaim::{Backoff, abandoned};
use super::record::{Current, Tomb, corrupt, make_version, new_generation};
use super::{MAX_ATTEMPTS, VaultStore};
use crate::client::{BACKEND, status_error};

impl VaultStore {
    /// Writes `data`, with KV v2's check-and-set when `cas` is given. `Ok(None)`: Vault
    /// refused it for check-and-set, i.e. `cas` did not match, or (without `cas`) the mount
    /// or key has `cas_required`.
    pub(super) async fn post_data(
        &self,
        key: &StorageKey,
        cas: Option<u64>,
        data: Value,
    ) -> Result<Option<u64>> {
        let path = self.data_path(key);
        let body = match cas {
            Some(cas) => json!({ "options": { "cas": cas }, "data": data }),
            None => json!({ "data": data }),
        };
        let reply = self
            .inner
            .http
            .call(Method::POST, &path, Some(&body))
            .await?;
        if reply.status.is_success() {
            let n = reply
                .body
                .pointer("/data/version")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    Error::backend(
                        BACKEND,
                        format!("write {path}: no version in the answer"),
                        None,
                    )
                })?;
            return Ok(Some(n));
        }
        if reply.status == StatusCode::BAD_REQUEST && reply.errors().contains("check-and-set") {
            return Ok(None);
        }
        Err(status_error("write", &path, &reply))
    }

    pub(super) fn conflict(key: &StorageKey, current: &Current) -> Error {
        Error::Conflict {
            backend: BACKEND,
            key: key.to_string(),
            current: current.version(),
        }
    }

    pub(super) async fn write_inner(
        &self,
        key: &StorageKey,
        value: &[u8],
        pre: &Precondition,
    ) -> Result<Version> {
        let encoded = B64.encode(value);
        let mut refused_plain = match self.write_one_shot(key, &encoded, pre).await? {
            OneShot::Written(version) => return Ok(version),
            OneShot::RefusedPlain => true,
            OneShot::Undecided => false,
        };
        let mut attempts = 0;
        let mut backoff = Backoff::new();
        while attempts < MAX_ATTEMPTS {
            let read_at = Instant::now();
            let current = self.current(key).await?;
            let reclaiming = match &current {
                Current::Absent {
                    tomb:
                        Tomb::Reclaiming {
                            age,
                            restore_cas_required,
                            ..
                        },
                    ..
                } => Some((*age, *restore_cas_required)),
                _ => None,
            };
            if std::mem::take(&mut refused_plain) {
                // Vault wants `cas` on every write here: the mount or the key says so, and the
                // store reads first from now on; unless this is a deleted key a reclamation
                // has just made require it (reclaim.rs), for the moment only.
                let reclaim_set_it = matches!(
                    current,
                    Current::Absent {
                        tomb: Tomb::Tombstone { .. } | Tomb::Reclaiming { .. },
                        ..
                    }
                );
                if !reclaim_set_it {
                    self.inner.cas_required.store(true, Ordering::Relaxed);
                }
            }
            if let Some((age, _)) = reclaiming
                && matches!(pre, Precondition::Any | Precondition::IfAbsent)
                && !abandoned(age)
            {
                // A reclamation is between its marker and its metadata delete: anything
                // written now would be deleted with the key. Its delete follows within
                // milliseconds; a marker older than the lease was abandoned and is taken over.
                backoff.pause().await;
                continue;
            }
            attempts += 1;
            let (cas, generation) = match (&current, pre) {
                // Only with `cas_required`: a new generation, as the plain write.
                (Current::Present { n, .. }, Precondition::Any) => (*n, new_generation()?),
                (Current::Absent { cas, .. }, Precondition::Any | Precondition::IfAbsent) => {
                    (*cas, new_generation()?)
                }
                // Replaced like an absent record: nothing of it can be a version anyone holds.
                (Current::Undecodable { n, .. }, Precondition::Any) => (*n, new_generation()?),
                (Current::Undecodable { why, .. }, _) => return Err(corrupt(key, why)),
                (Current::Present { n, generation, .. }, Precondition::IfVersion(want))
                    if current.matches(want) =>
                {
                    (*n, generation.clone())
                }
                _ => return Err(Self::conflict(key, &current)),
            };
            if !self.fresh_enough(read_at) {
                // Too long since the read for its version to be trusted across a possible
                // reclamation (crate docs, "Reclaiming deleted keys"): read again.
                continue;
            }
            let data = json!({ "value": encoded, "generation": generation });
            if let Some(n) = self.post_data(key, Some(cas), data).await? {
                if let Some((_, true)) = reclaiming {
                    // We took over an abandoned reclamation: the key needs no `cas` any more.
                    self.restore_cas_required(key).await;
                }
                return Ok(make_version(n, &generation));
            }
            // Someone wrote between our read and our write: judge the precondition again.
        }
        Err(Self::conflict(key, &self.current(key).await?))
    }

    /// One request where Vault alone can judge the precondition; `None` when it could not
    /// (the read-and-`cas` loop then decides).
    ///
    /// Unconditional: a plain write, whatever the key holds (record, tombstone, foreign
    /// data), under a new generation. Create: `cas` 0 succeeds only when the key has no
    /// version at all; a tombstone or a record makes it fail. `IfVersion` always reads first:
    /// `cas` compares only the KV version, and after a metadata delete by someone else a
    /// re-created record repeats the numbers, so only the read can tell its generation from
    /// the caller's.
    async fn write_one_shot(
        &self,
        key: &StorageKey,
        encoded: &str,
        pre: &Precondition,
    ) -> Result<OneShot> {
        let cas = match pre {
            Precondition::Any if !self.inner.cas_required.load(Ordering::Relaxed) => None,
            Precondition::IfAbsent => Some(0),
            _ => return Ok(OneShot::Undecided),
        };
        let generation = new_generation()?;
        let data = json!({ "value": encoded, "generation": generation });
        if let Some(n) = self.post_data(key, cas, data).await? {
            return Ok(OneShot::Written(make_version(n, &generation)));
        }
        Ok(if cas.is_none() {
            OneShot::RefusedPlain
        } else {
            OneShot::Undecided
        })
    }
}

/// What the one-request attempt of a write did.
enum OneShot {
    Written(Version),
    /// Not tried, or a create refused (the key has a version): read and judge.
    Undecided,
    /// A plain write refused: Vault wants `cas` here (`cas_required`).
    RefusedPlain,
}
