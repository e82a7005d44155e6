//! Deletes: a tombstone written with `cas` (the delete itself, atomic), then `destroy` of
//! every older version so a deleted token's bytes leave Vault's history.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use token_store_core::{Precondition, Result, StorageKey};

use super::record::{Current, Tomb, corrupt, new_generation};
use super::{MAX_ATTEMPTS, VaultStore};
use crate::client::status_error;

/// The longest history a delete destroys without reading the key's metadata first: the
/// request then names versions `1..t`, a few hundred bytes. Keys overwritten more often
/// (a token refreshed for months) take one metadata read to name only the live ones.
const BLIND_DESTROY_MAX: u64 = 128;

impl VaultStore {
    pub(super) async fn remove_inner(&self, key: &StorageKey, pre: &Precondition) -> Result<bool> {
        for _ in 0..MAX_ATTEMPTS {
            let read_at = std::time::Instant::now();
            let current = self.current(key).await?;
            let (n, generation) = match (&current, pre) {
                (Current::Absent { cas, tomb }, Precondition::Any | Precondition::IfAbsent) => {
                    // A key being reclaimed loses every version with its metadata anyway.
                    if *cas > 0 && !matches!(tomb, Tomb::Reclaiming { .. }) {
                        // A delete interrupted before its destroy, or a soft delete by hand:
                        // finish the job on what is older than the latest version.
                        self.destroy_older(key, *cas).await?;
                    }
                    return Ok(false);
                }
                (Current::Present { n, generation, .. }, Precondition::Any) => {
                    (*n, generation.clone())
                }
                (Current::Undecodable { n, .. }, Precondition::Any) => (*n, new_generation()?),
                (Current::Undecodable { why, .. }, _) => return Err(corrupt(key, why)),
                (Current::Present { n, generation, .. }, Precondition::IfVersion(want))
                    if current.matches(want) =>
                {
                    (*n, generation.clone())
                }
                _ => return Err(Self::conflict(key, &current)),
            };
            // The tombstone *is* the delete, and its final state: one atomic cas, so of
            // racing deleters (PKCE `take`) exactly one wins, a stale writer's cas fails from
            // here on, and a create after it cas-writes over it (a newer version). Nothing
            // later removes the key's metadata, which KV v2 can only do unconditionally and
            // would take a concurrent create with it.
            if !self.fresh_enough(read_at) {
                continue;
            }
            let tombstone = json!({ "tombstone": true, "generation": generation });
            let Some(t) = self.post_data(key, Some(n), tombstone).await? else {
                continue;
            };
            self.destroy_older(key, t).await?;
            return Ok(true);
        }
        Err(Self::conflict(key, &self.current(key).await?))
    }

    /// Destroys (KV v2 `destroy`: the data is gone, only the version's metadata stays) every
    /// version older than `t`, the tombstone or soft-deleted version that is now the latest,
    /// so a deleted token's bytes do not linger in the key's history. Safe against a
    /// concurrent create: that makes a version newer than `t`, which is never named here.
    ///
    /// Up to [`BLIND_DESTROY_MAX`] older versions are named without looking: Vault skips
    /// versions that are already destroyed or were never kept, so that is one request. A key
    /// with a longer history has its metadata read first, so the list stays short.
    async fn destroy_older(&self, key: &StorageKey, t: u64) -> Result<()> {
        let versions: Vec<u64> = if t <= BLIND_DESTROY_MAX + 1 {
            (1..t).collect()
        } else {
            let path = self.meta_path(key);
            let reply = self.inner.http.call(Method::GET, &path, None).await?;
            if reply.status == StatusCode::NOT_FOUND {
                return Ok(());
            }
            if !reply.status.is_success() {
                return Err(status_error("read metadata", &path, &reply));
            }
            older_live_versions(&reply.body, t)
        };
        if versions.is_empty() {
            return Ok(());
        }
        let path = self.destroy_path(key);
        let reply = self
            .inner
            .http
            .call(Method::POST, &path, Some(&json!({ "versions": versions })))
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(status_error("destroy old versions", &path, &reply))
        }
    }
}

/// From a KV v2 metadata answer, the versions before `t` whose data still exists.
fn older_live_versions(metadata: &Value, t: u64) -> Vec<u64> {
    let Some(versions) = metadata
        .pointer("/data/versions")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let mut out: Vec<u64> = versions
        .iter()
        .filter(|(_, v)| v.get("destroyed").and_then(Value::as_bool) != Some(true))
        .filter_map(|(n, _)| n.parse::<u64>().ok())
        .filter(|n| *n < t)
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_older_live_versions_are_destroyed() {
        let meta = json!({"data": {"versions": {
            "1": {"destroyed": true}, "2": {"destroyed": false}, "3": {"destroyed": false},
            "10": {"destroyed": false}, "11": {"destroyed": false}, "x": {}
        }}});
        // 11 is the tombstone and anything newer is a concurrent create: never named.
        assert_eq!(older_live_versions(&meta, 11), vec![2, 3, 10]);
        assert_eq!(older_live_versions(&json!({}), 11), Vec::<u64>::new());
    }
}
