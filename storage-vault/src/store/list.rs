//! Listing: LIST of the kind's folder (per user for tokens and clients), then one read per
//! listed key, since LIST names deleted keys (tombstones) too. Old tombstones met on the way
//! are reclaimed (a few per listing, see `reclaim.rs`).

use std::sync::atomic::Ordering;

use futures::{StreamExt as _, TryStreamExt as _, stream};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use token_store_core::backend::percent_encode;
use token_store_core::{Error, KeyKind, ListEntry, ListFilter, Result, StorageKey};

use super::VaultStore;
use super::layout::{key_at, segment, two_level, wire};
use super::reclaim::{Candidate, RECLAIM_PER_LISTING};
use super::record::Current;
use crate::client::{BACKEND, LIST_ANSWER_LIMIT, status_error};

/// How many listed keys `scan` reads at once to leave out tombstones.
const LIST_READS_IN_FLIGHT: usize = 8;

impl VaultStore {
    pub(super) async fn scan_inner(
        &self,
        kind: KeyKind,
        filter: &ListFilter,
    ) -> Result<Vec<ListEntry>> {
        let (keys, mut out) = self.listed_keys(kind, filter).await?;
        // LIST names every key with metadata, deleted ones (tombstones) included: one read
        // per key tells them apart, a few at a time.
        let reclaim_age = self.inner.config.reclaim_after;
        let classified: Vec<(StorageKey, bool, Option<Candidate>)> = stream::iter(keys)
            .map(|key| async move {
                let (listed, candidate) = self.classify(&key, reclaim_age).await?;
                Ok::<_, Error>((key, listed, candidate))
            })
            .buffered(LIST_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut candidates = Vec::new();
        for (key, listed, candidate) in classified {
            if listed {
                out.push(ListEntry::Key(key));
            } else if let Some(c) = candidate {
                candidates.push(c);
            }
        }
        if self.inner.config.reclaim_in_listings
            && !self.inner.reclaim_denied.load(Ordering::Relaxed)
        {
            candidates.truncate(RECLAIM_PER_LISTING);
            self.reclaim_listed(candidates, reclaim_age).await;
        }
        Ok(out)
    }

    /// The keys LIST names for `kind` (within `filter`'s user, if any), tombstones included,
    /// and entries at our paths that are no key of ours.
    pub(super) async fn listed_keys(
        &self,
        kind: KeyKind,
        filter: &ListFilter,
    ) -> Result<(Vec<StorageKey>, Vec<ListEntry>)> {
        let kind_dir = kind.as_str();
        let mut odd = Vec::new();
        let mut keys = Vec::new();
        let mut add = |dir: Option<&str>, leaf: &str| match key_at(kind, dir, leaf) {
            Some(key) => keys.push(key),
            None => odd.push(ListEntry::Unreadable {
                location: match dir {
                    Some(d) => format!("{kind_dir}/{d}/{leaf}"),
                    None => format!("{kind_dir}/{leaf}"),
                },
                reason: "not a token-store key path".into(),
            }),
        };
        if two_level(kind) {
            for dir in self.user_folders(kind, filter).await? {
                for name in self.list_folder(&format!("{kind_dir}/{dir}")).await? {
                    add(Some(&dir), &name);
                }
            }
        } else {
            for name in self.list_folder(kind_dir).await? {
                add(None, &name);
            }
        }
        Ok((keys, odd))
    }

    /// The folders (one per first key part) a listing of a two-level kind visits: the
    /// filter's user only, or every one there is.
    async fn user_folders(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<String>> {
        Ok(match &filter.user_key {
            Some(user) => vec![segment(&percent_encode(user))],
            None => self
                .list_folder(kind.as_str())
                .await?
                .into_iter()
                .filter_map(|d| d.strip_suffix('/').map(str::to_owned))
                .collect(),
        })
    }

    /// Whether a listed key holds something: a record, or data we cannot decode (listed, so
    /// it can be found and replaced); not a tombstone or a deleted or destroyed version.
    /// A tombstone at least `reclaim_age` old (or an abandoned reclamation) comes back as a
    /// candidate for reclaiming.
    pub(super) async fn classify(
        &self,
        key: &StorageKey,
        reclaim_age: std::time::Duration,
    ) -> Result<(bool, Option<Candidate>)> {
        match self.current(key).await {
            Ok(Current::Absent { cas, tomb }) => {
                Ok((false, Candidate::of(key, cas, tomb, reclaim_age)))
            }
            Ok(Current::Present { .. } | Current::Undecodable { .. }) => Ok((true, None)),
            Err(Error::Corrupt { .. }) => Ok((true, None)),
            Err(e) => Err(e),
        }
    }

    /// LIST of a folder; a missing folder (404) is empty.
    async fn list_folder(&self, folder: &str) -> Result<Vec<String>> {
        let path = wire(&format!("{}/{folder}/", self.inner.meta_base));
        let method = Method::from_bytes(b"LIST")
            .map_err(|e| Error::backend(BACKEND, "LIST method", Some(Box::new(e))))?;
        let reply = self
            .inner
            .http
            .call_limited(method, &path, None, LIST_ANSWER_LIMIT)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !reply.status.is_success() {
            return Err(status_error("list", &path, &reply));
        }
        Ok(reply
            .body
            .pointer("/data/keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }
}
