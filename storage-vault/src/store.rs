//! The KV v2 store: path layout, the record format inside the KV data map, and the CAS
//! protocol on top of KV v2's `cas` option.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, SecretBytes, StorageKey, Version, check_size, percent_encode,
};

use crate::client::{BACKEND, LIST_ANSWER_LIMIT, Reply, VaultHttp, status_error};
use crate::config::VaultConfig;

/// The largest value accepted: base64 makes it 342 KiB inside the JSON data map, which fits
/// every Vault storage backend's entry limit (Consul's 512 KiB is the smallest).
pub const MAX_VALUE_SIZE: usize = 256 * 1024;

/// How often a write or delete re-reads and retries when another writer moved the record
/// between its read and its `cas` write, before giving up with `Conflict`.
const MAX_ATTEMPTS: usize = 16;

/// A token store in a Vault / OpenBao KV v2 engine. Cheap to clone (shared client).
#[derive(Clone)]
pub struct VaultStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: VaultHttp,
    /// `<mount>/data/<prefix>`, `<mount>/metadata/<prefix>` and `<mount>/destroy/<prefix>`,
    /// ready to append to.
    data_base: String,
    meta_base: String,
    destroy_base: String,
    config: VaultConfig,
    /// Set once Vault refused a write without `cas` ("check-and-set parameter required":
    /// `cas_required` on the mount or a key): unconditional writes then read first.
    cas_required: AtomicBool,
}

impl fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultStore")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// What a key holds right now, from one read.
enum Current {
    /// No live record. `cas` is the version a create must name: 0 when the key has no
    /// metadata, else the version of the tombstone / soft-deleted / destroyed latest version.
    Absent { cas: u64 },
    /// A live record at KV version `n`, of generation `generation`.
    Present {
        n: u64,
        generation: String,
        value: SecretBytes,
    },
    /// KV data at version `n` that is neither ours nor a tombstone (no `value`, not base64:
    /// another writer, a KV v1 leftover). Unreadable, but an unconditional write or delete
    /// may replace it, as the file and keychain stores do.
    Undecodable { n: u64, why: &'static str },
}

impl Current {
    fn version(&self) -> Option<Version> {
        match self {
            Current::Absent { .. } | Current::Undecodable { .. } => None,
            Current::Present { n, generation, .. } => Some(make_version(*n, generation)),
        }
    }
}

fn corrupt(key: &StorageKey, message: &str) -> Error {
    Error::Corrupt {
        backend: BACKEND,
        key: key.to_string(),
        message: message.to_owned(),
        source: None,
    }
}

/// Our version string: the KV v2 version and the record's generation (random per creation),
/// so a record deleted and created again never repeats an old version (KV v2 restarts at 1
/// after a metadata delete, which would make a stale compare-and-swap succeed: ABA).
fn make_version(n: u64, generation: &str) -> Version {
    Version::new(format!("{n}@{generation}"))
}

fn parse_version(v: &Version) -> Option<(u64, &str)> {
    let (n, g) = v.as_str().split_once('@')?;
    Some((n.parse().ok()?, g))
}

fn new_generation() -> Result<String> {
    let mut b = [0u8; 8];
    token_store_core::crypto::fill_random(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// One path segment from an already percent-encoded string. The encoded form only holds
/// `A-Za-z0-9_.-~%` (and `:` between parts), but `""`, `.` and `..` are no usable segment,
/// so they get forms the encoder never produces (`!`, `%2E`, `%2E%2E`).
fn segment(encoded: &str) -> String {
    match encoded {
        "" => "!".to_owned(),
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        other => other.to_owned(),
    }
}

fn unsegment(segment: &str) -> &str {
    match segment {
        "!" => "",
        "%2E" => ".",
        "%2E%2E" => "..",
        other => other,
    }
}

/// Vault decodes the request path once, so the `%` of our encoding is itself escaped on the
/// wire; the stored KV key then holds exactly `segment()`'s text.
fn wire(path: &str) -> String {
    path.replace('%', "%25")
}

/// The path of a key below the prefix (unescaped): `<kind>/<first part>/<other parts>` for
/// tokens and clients, so one LIST finds one user's tokens; `<kind>/<part>` otherwise.
fn key_path(key: &StorageKey) -> String {
    let parts = key.parts();
    let kind = key.kind().as_str();
    match parts {
        [first, rest @ ..] if !rest.is_empty() => {
            let leaf: Vec<String> = rest.iter().map(|p| percent_encode(p)).collect();
            format!(
                "{kind}/{}/{}",
                segment(&percent_encode(first)),
                segment(&leaf.join(":"))
            )
        }
        [only] => format!("{kind}/{}", segment(&percent_encode(only))),
        _ => format!("{kind}/!"),
    }
}

/// The key stored at `<kind>/<dir>/<leaf>` (or `<kind>/<leaf>`), only if that is the
/// canonical path of the key it decodes to (no aliases).
fn key_at(kind: KeyKind, dir: Option<&str>, leaf: &str) -> Option<StorageKey> {
    let mut encoded = String::new();
    if let Some(marker) = kind.marker() {
        encoded.push_str(marker);
        encoded.push(':');
    }
    if let Some(dir) = dir {
        encoded.push_str(unsegment(dir));
        encoded.push(':');
    }
    encoded.push_str(unsegment(leaf));
    let key = StorageKey::decode(&encoded)?;
    let expected = match dir {
        Some(d) => format!("{}/{d}/{leaf}", kind.as_str()),
        None => format!("{}/{leaf}", kind.as_str()),
    };
    (key.kind() == kind && key_path(&key) == expected).then_some(key)
}

fn two_level(kind: KeyKind) -> bool {
    kind.arity() > 1
}

/// Our tombstone: `{"tombstone": true, ...}` in the KV data.
fn is_tombstone(data: &Value) -> bool {
    data.get("tombstone").and_then(Value::as_bool) == Some(true)
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

/// The longest history a delete destroys without reading the key's metadata first: the
/// request then names versions `1..t`, a few hundred bytes. Keys overwritten more often
/// (a token refreshed for months) take one metadata read to name only the live ones.
const BLIND_DESTROY_MAX: u64 = 128;

/// How many listed keys `scan` reads at once to leave out tombstones.
const LIST_READS_IN_FLIGHT: usize = 8;

impl VaultStore {
    /// A store for `config`. With AppRole it logs in first, so bad credentials or an
    /// unreachable server fail here.
    pub async fn connect(config: VaultConfig) -> Result<Self> {
        let http = VaultHttp::new(&config)?;
        http.ensure_token().await?;
        let join = |middle: &str| {
            if config.prefix.is_empty() {
                format!("{}/{middle}", config.mount)
            } else {
                format!("{}/{middle}/{}", config.mount, config.prefix)
            }
        };
        Ok(VaultStore {
            inner: Arc::new(Inner {
                data_base: join("data"),
                meta_base: join("metadata"),
                destroy_base: join("destroy"),
                http,
                config,
                cas_required: AtomicBool::new(false),
            }),
        })
    }

    /// The configuration in use (credentials redacted in `Debug`).
    pub fn config(&self) -> &VaultConfig {
        &self.inner.config
    }

    fn data_path(&self, key: &StorageKey) -> String {
        wire(&format!("{}/{}", self.inner.data_base, key_path(key)))
    }

    fn meta_path(&self, key: &StorageKey) -> String {
        wire(&format!("{}/{}", self.inner.meta_base, key_path(key)))
    }

    fn destroy_path(&self, key: &StorageKey) -> String {
        wire(&format!("{}/{}", self.inner.destroy_base, key_path(key)))
    }

    /// Runs a whole store call under the configured time limit.
    async fn bounded<T>(&self, op: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let limit = self.inner.config.timeout;
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::unavailable(
                BACKEND,
                format!("{op} timed out after {limit:?}"),
                None,
            )),
        }
    }

    async fn current(&self, key: &StorageKey) -> Result<Current> {
        let path = self.data_path(key);
        let reply = self.inner.http.call(Method::GET, &path, None).await?;
        match reply.status {
            StatusCode::NOT_FOUND => {
                // Soft-deleted or destroyed latest version: 404, but with its metadata.
                let cas = reply
                    .body
                    .pointer("/data/metadata/version")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                Ok(Current::Absent { cas })
            }
            s if s.is_success() => self.parse_current(key, &reply),
            _ => Err(status_error("read", &path, &reply)),
        }
    }

    fn parse_current(&self, key: &StorageKey, reply: &Reply) -> Result<Current> {
        // Without a version nothing can be written over it with `cas`: that stays an error
        // for every operation.
        let n = reply
            .body
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64)
            .ok_or_else(|| corrupt(key, "KV v2 answer without a version (is the mount KV v1?)"))?;
        let data = match reply.body.pointer("/data/data") {
            None | Some(Value::Null) => return Ok(Current::Absent { cas: n }),
            Some(d) => d,
        };
        if is_tombstone(data) {
            return Ok(Current::Absent { cas: n });
        }
        let Some(encoded) = data.get("value").and_then(Value::as_str) else {
            return Ok(Current::Undecodable {
                n,
                why: "no `value` field in the KV data (not written by token-store)",
            });
        };
        let Ok(bytes) = B64.decode(encoded) else {
            return Ok(Current::Undecodable {
                n,
                why: "`value` is not base64",
            });
        };
        // A record written by hand without a generation still gets a stable version.
        let generation = data
            .get("generation")
            .and_then(Value::as_str)
            .unwrap_or("0")
            .to_owned();
        Ok(Current::Present {
            n,
            generation,
            value: SecretBytes::new(bytes),
        })
    }

    /// Writes `data`, with KV v2's check-and-set when `cas` is given. `Ok(None)`: Vault
    /// refused it for check-and-set, i.e. `cas` did not match, or (without `cas`) the mount
    /// or key has `cas_required`.
    async fn post_data(
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

    fn conflict(key: &StorageKey, current: &Current) -> Error {
        Error::Conflict {
            backend: BACKEND,
            key: key.to_string(),
            current: current.version(),
        }
    }

    async fn write_inner(
        &self,
        key: &StorageKey,
        value: &[u8],
        pre: &Precondition,
    ) -> Result<Version> {
        let encoded = B64.encode(value);
        // One request where Vault alone can judge the precondition. Unconditional: a plain
        // write, whatever the key holds (record, tombstone, foreign data), under a new
        // generation. Create: `cas` 0 succeeds only when the key has no version at all; a
        // tombstone or a record makes it fail, and the loop below judges what is there.
        // `IfVersion` always reads first: `cas` compares only the KV version, and after a
        // metadata delete by someone else a re-created record repeats the numbers, so only
        // the read can tell its generation from the caller's (see the crate docs).
        let one_shot = match pre {
            Precondition::Any if !self.inner.cas_required.load(Ordering::Relaxed) => Some(None),
            Precondition::IfAbsent => Some(Some(0)),
            _ => None,
        };
        if let Some(cas) = one_shot {
            let generation = new_generation()?;
            let data = json!({ "value": encoded, "generation": generation });
            if let Some(n) = self.post_data(key, cas, data).await? {
                return Ok(make_version(n, &generation));
            }
            if cas.is_none() {
                self.inner.cas_required.store(true, Ordering::Relaxed);
            }
        }
        for _ in 0..MAX_ATTEMPTS {
            let current = self.current(key).await?;
            let (cas, generation) = match (&current, pre) {
                // Only with `cas_required`: a new generation, as the plain write above.
                (Current::Present { n, .. }, Precondition::Any) => (*n, new_generation()?),
                (Current::Absent { cas }, Precondition::Any | Precondition::IfAbsent) => {
                    (*cas, new_generation()?)
                }
                // Replaced like an absent record: nothing of it can be a version anyone holds.
                (Current::Undecodable { n, .. }, Precondition::Any) => (*n, new_generation()?),
                (Current::Undecodable { why, .. }, _) => return Err(corrupt(key, why)),
                (Current::Present { n, generation, .. }, Precondition::IfVersion(want))
                    if parse_version(want) == Some((*n, generation.as_str())) =>
                {
                    (*n, generation.clone())
                }
                _ => return Err(Self::conflict(key, &current)),
            };
            let data = json!({ "value": encoded, "generation": generation });
            if let Some(n) = self.post_data(key, Some(cas), data).await? {
                return Ok(make_version(n, &generation));
            }
            // Someone wrote between our read and our write: judge the precondition again.
        }
        Err(Self::conflict(key, &self.current(key).await?))
    }

    async fn remove_inner(&self, key: &StorageKey, pre: &Precondition) -> Result<bool> {
        for _ in 0..MAX_ATTEMPTS {
            let current = self.current(key).await?;
            let (n, generation) = match (&current, pre) {
                (Current::Absent { cas }, Precondition::Any | Precondition::IfAbsent) => {
                    if *cas > 0 {
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
                    if parse_version(want) == Some((*n, generation.as_str())) =>
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

    /// Whether a listed key holds something: a record, or data we cannot decode (listed, so
    /// it can be found and replaced); not a tombstone or a deleted or destroyed version.
    async fn is_listed(&self, key: &StorageKey) -> Result<bool> {
        match self.current(key).await {
            Ok(Current::Absent { .. }) => Ok(false),
            Ok(Current::Present { .. } | Current::Undecodable { .. }) => Ok(true),
            Err(Error::Corrupt { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// LIST of a folder; a missing folder (404) is empty.
    async fn list_folder(&self, folder: &str) -> Result<Vec<String>> {
        let path = wire(&format!("{}/{folder}/", self.inner.meta_base));
        let reply = self
            .inner
            .http
            .call_limited(
                Method::from_bytes(b"LIST")
                    .map_err(|e| Error::backend(BACKEND, "LIST method", Some(Box::new(e))))?,
                &path,
                None,
                LIST_ANSWER_LIMIT,
            )
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

    async fn scan_inner(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let kind_dir = kind.as_str();
        let mut out = Vec::new();
        let mut keys = Vec::new();
        let mut leaf_entry = |dir: Option<&str>, leaf: &str, out: &mut Vec<ListEntry>| {
            let location = match dir {
                Some(d) => format!("{kind_dir}/{d}/{leaf}"),
                None => format!("{kind_dir}/{leaf}"),
            };
            match key_at(kind, dir, leaf) {
                Some(key) => keys.push(key),
                None => out.push(ListEntry::Unreadable {
                    location,
                    reason: "not a token-store key path".into(),
                }),
            }
        };
        if two_level(kind) {
            let dirs: Vec<String> = match &filter.user_key {
                Some(user) => vec![segment(&percent_encode(user))],
                None => self
                    .list_folder(kind_dir)
                    .await?
                    .into_iter()
                    .filter_map(|d| d.strip_suffix('/').map(str::to_owned))
                    .collect(),
            };
            for dir in dirs {
                for name in self.list_folder(&format!("{kind_dir}/{dir}")).await? {
                    leaf_entry(Some(&dir), &name, &mut out);
                }
            }
        } else {
            for name in self.list_folder(kind_dir).await? {
                leaf_entry(None, &name, &mut out);
            }
        }
        // LIST names every key with metadata, deleted ones (tombstones) included: one read
        // per key tells them apart, a few at a time.
        let listed: Vec<(StorageKey, bool)> = stream::iter(keys)
            .map(|key| async move {
                let listed = self.is_listed(&key).await?;
                Ok::<_, Error>((key, listed))
            })
            .buffered(LIST_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        out.extend(
            listed
                .into_iter()
                .filter(|(_, listed)| *listed)
                .map(|(key, _)| ListEntry::Key(key)),
        );
        Ok(out)
    }
}

#[async_trait]
impl RawStore for VaultStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn raw_capabilities(&self) -> Capabilities {
        // No TTL: KV v2's only expiry (`delete_version_after`) soft-deletes and keeps the key
        // listed.
        Capabilities::new(MAX_VALUE_SIZE)
            .with_atomic_cas()
            .with_sharing_across_hosts()
            .with_persistence(true)
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        self.bounded("read", async {
            Ok(match self.current(key).await? {
                Current::Absent { .. } => None,
                Current::Undecodable { why, .. } => return Err(corrupt(key, why)),
                Current::Present {
                    n,
                    generation,
                    value,
                } => Some(RawRecord {
                    value,
                    version: make_version(n, &generation),
                    expires_at: None,
                }),
            })
        })
        .await
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(BACKEND, key, value.len(), MAX_VALUE_SIZE)?;
        self.bounded("write", self.write_inner(key, value, &options.precondition))
            .await
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        self.bounded("delete", self.remove_inner(key, precondition))
            .await
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        self.bounded("list", self.scan_inner(kind, filter)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_for_odd_parts() {
        let odd = ["", ".", "..", "!", "%2E", "a:b/c", "ü %", "~"];
        for kind in KeyKind::ALL {
            for p in odd {
                let parts: Vec<String> = (0..kind.arity()).map(|_| p.to_owned()).collect();
                let key = StorageKey::new(kind, parts).unwrap();
                let path = key_path(&key);
                let segs: Vec<&str> = path.split('/').collect();
                for s in &segs {
                    assert!(!s.is_empty() && *s != "." && *s != "..", "{path}");
                }
                let back = match segs.as_slice() {
                    [_, dir, leaf] => key_at(kind, Some(dir), leaf),
                    [_, leaf] => key_at(kind, None, leaf),
                    _ => None,
                };
                assert_eq!(back, Some(key), "{path}");
            }
        }
    }

    #[test]
    fn aliases_are_not_keys() {
        // `%41` is `A` written another way: not the canonical path of any key.
        assert_eq!(key_at(KeyKind::Meta, None, "%41"), None);
        assert_eq!(
            key_at(KeyKind::Meta, None, "A").map(|k| k.parts()[0].clone()),
            Some("A".into())
        );
        assert_eq!(key_at(KeyKind::Token, Some("u"), "only-one-part"), None);
    }

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

    #[test]
    fn versions_carry_the_generation() {
        let v = make_version(3, "abcd");
        assert_eq!(parse_version(&v), Some((3, "abcd")));
        assert_eq!(parse_version(&Version::new("3")), None);
    }
}
