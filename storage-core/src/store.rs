//! [`TokenStore`]: the one store handle, typed, over any [`RawStore`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::audit::{self, Action};
use crate::cache::{CacheOptions, CacheStats, Cacheable, Found, Invalidating, ReadCache};
use crate::error::{Error, Result};
use crate::key::{ClientKey, KeyKind, StorageKey, TokenKey};
use crate::raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawStore, Version,
};
use crate::record::{AuthState, ClientRegistration, TokenRecord, Versioned, unix_now};

/// A page request for [`TokenStore::list`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Query {
    /// Which keys.
    pub filter: ListFilter,
    /// Continue after this cursor (from [`Page::next`]).
    pub after: Option<String>,
    /// At most this many keys; `None` for all.
    pub limit: Option<usize>,
}

impl Query {
    /// All keys matching `filter`, unpaged.
    pub fn new(filter: ListFilter) -> Self {
        Query {
            filter,
            after: None,
            limit: None,
        }
    }

    /// The same query limited to `limit` keys per page.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The same query continuing after `cursor`.
    pub fn after(mut self, cursor: Option<String>) -> Self {
        self.after = cursor;
        self
    }
}

/// One page of keys, sorted by their encoded form.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Page<K> {
    /// The keys.
    pub keys: Vec<K>,
    /// The cursor of the next page, `None` on the last.
    pub next: Option<String>,
    /// Entries the backend could not read; listed, never fatal.
    pub unreadable: Vec<Unreadable>,
}

/// An entry of a store that could not be read as a record of ours (a corrupt or foreign file,
/// an item with a malformed key). Never carries the entry's content.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unreadable {
    /// Where it is: a file name, a Redis key, a keychain item path.
    pub location: String,
    /// Why it could not be read.
    pub reason: String,
}

/// The store handle: typed tokens, client registrations and pending authorizations over any
/// backend. Cheap to clone (one `Arc`); clones share the backend and its connections.
///
/// Every API of the family takes this handle: `token_store::open` and `token_store::auto`
/// return it, [`crate::TokenManager`], [`crate::Lease`] and the rmcp adapters take it.
/// Backends implement the byte-level [`RawStore`]; [`TokenStore::new`] wraps one.
///
/// ```
/// # async fn demo() -> token_store_core::Result<()> {
/// use token_store_core::{MemoryStore, Precondition, TokenKey, TokenRecord, TokenStore};
/// let store = TokenStore::new(MemoryStore::new());
/// let key = TokenKey::for_server("https://mcp.example.com/mcp");
/// let v1 = store.put(&key, &TokenRecord::new("at-1"), Precondition::IfAbsent).await?;
/// let read = store.get(&key).await?.expect("stored");
/// assert_eq!(read.version, v1);
/// // A stale writer loses:
/// store.put(&key, &TokenRecord::new("at-2"), Precondition::IfVersion(v1.clone())).await?;
/// assert!(store.put(&key, &TokenRecord::new("at-3"), Precondition::IfVersion(v1)).await.unwrap_err().is_conflict());
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct TokenStore {
    raw: Arc<dyn RawStore>,
    /// The read cache, when [`TokenStore::with_cache`] turned it on (then `raw` is the
    /// layer that drops entries on every write).
    cache: Option<Arc<ReadCache>>,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TokenStore").field(&self.raw).finish()
    }
}

impl From<Arc<dyn RawStore>> for TokenStore {
    fn from(raw: Arc<dyn RawStore>) -> Self {
        TokenStore::from_arc(raw)
    }
}

/// What a pending authorization is stored as: its expiry travels with it so that backends
/// without TTL still never hand out a stale state.
#[derive(Serialize, Deserialize)]
struct StateEnvelope {
    expires_at: f64,
    state: AuthState,
}

fn state_key(state: &str) -> Result<StorageKey> {
    // The CSRF value is a bearer secret of sorts: store under its digest, not itself.
    StorageKey::single(
        KeyKind::State,
        crate::raw::Version::of_bytes(state.as_bytes()).to_string(),
    )
}

fn decode<T: DeserializeOwned>(backend: &'static str, key: &StorageKey, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        backend,
        key: key.to_string(),
        message: format!("not a valid record: {}", json_error_summary(&e)),
        source: None,
    })
}

/// A serde_json error described without any of the input: its own message can quote a value
/// ("invalid type: string \"...\"") and the value may be a token.
pub fn json_error_summary(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "a field of the wrong type or a missing field",
        serde_json::error::Category::Eof => "unexpected end of input",
    };
    format!("{kind} at line {}, column {}", e.line(), e.column())
}

/// A token's default write options: it lives as long as its refresh token may, when the
/// server said so, otherwise until deleted.
fn default_put_options(record: &TokenRecord, precondition: Precondition) -> PutOptions {
    let ttl = record
        .refresh_token
        .as_ref()
        .and(record.refresh_expires_at)
        .map(|at| Duration::from_secs_f64((at - unix_now()).max(1.0)));
    PutOptions::new(precondition).with_ttl(ttl)
}

fn encode<T: Serialize>(value: &T) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    // Room for a typical record (a 1 KB JWT and its fields: ~1.6 KB) at once: every
    // outgrown buffer would be wiped and copied.
    // A buffer that wipes what it outgrows: the JSON holds the tokens.
    let mut out = crate::json::SecretJson::with_capacity(2048);
    serde_json::to_writer(&mut out, value)
        .map_err(|e| Error::invalid_input(format!("record cannot be serialised: {e}")))?;
    Ok(out.0)
}

/// [`encode`] of a token record, written directly ([`crate::json`]): the same bytes.
fn encode_record(record: &TokenRecord) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut out = crate::json::SecretJson::with_capacity(2048);
    crate::json::write_record(&mut out, record)
        .map_err(|e| Error::invalid_input(format!("record cannot be serialised: {e}")))?;
    Ok(out.0)
}

async fn get_typed<T: DeserializeOwned>(
    raw: &dyn RawStore,
    key: &StorageKey,
) -> Result<Option<Versioned<T>>> {
    match raw.read(key).await? {
        None => Ok(None),
        Some(rec) => Ok(Some(Versioned {
            value: decode(raw.backend(), key, &rec.value)?,
            version: rec.version,
        })),
    }
}

fn page<K>(
    entries: Vec<ListEntry>,
    query: &Query,
    convert: impl Fn(StorageKey) -> Option<K>,
) -> Page<K> {
    let mut keys = Vec::new();
    let mut unreadable = Vec::new();
    for entry in entries {
        match entry {
            ListEntry::Key(k) if query.filter.matches(&k) => {
                if query
                    .after
                    .as_deref()
                    .is_none_or(|a| k.encode().as_str() > a)
                {
                    keys.push(k);
                }
            }
            ListEntry::Key(_) => {}
            ListEntry::Unreadable { location, reason } => {
                unreadable.push(Unreadable { location, reason })
            }
        }
    }
    // In the encoded order (cursors are encoded keys), without encoding every key.
    keys.sort_unstable_by(StorageKey::cmp_encoded);
    keys.dedup();
    let mut next = None;
    if let Some(limit) = query.limit
        && keys.len() > limit
    {
        keys.truncate(limit);
        next = keys.last().map(StorageKey::encode);
    }
    Page {
        keys: keys.into_iter().filter_map(convert).collect(),
        next,
        unreadable,
    }
}

impl TokenStore {
    /// A handle over a backend (or a backend wrapped in [`crate::layers`]).
    pub fn new(raw: impl RawStore) -> Self {
        Self::from_arc(Arc::new(raw))
    }

    /// A handle over a backend that is already shared.
    pub fn from_arc(raw: Arc<dyn RawStore>) -> Self {
        TokenStore { raw, cache: None }
    }

    /// The same store with a read cache (see [`crate::cache`] for what it guarantees):
    /// token records and client registrations are kept parsed, per key, with their version,
    /// and a read of a token that is not near expiry costs no I/O. Every write or delete
    /// through the returned handle and its clones drops the key's entry; another process's
    /// writes are seen within [`CacheOptions::max_age`], at once near expiry.
    ///
    /// ```
    /// # async fn demo() -> token_store_core::Result<()> {
    /// use std::time::Duration;
    /// use token_store_core::{CacheOptions, Precondition, TokenKey, TokenRecord, TokenStore};
    /// let store = TokenStore::in_memory().with_cache(CacheOptions::new());
    /// let key = TokenKey::for_server("https://mcp.example.com/mcp");
    /// let record = TokenRecord::new("at").expires_in(Duration::from_secs(3600));
    /// store.put(&key, &record, Precondition::Any).await?;
    /// store.get(&key).await?; // read from the store, kept
    /// store.get(&key).await?; // from the cache
    /// assert_eq!(store.cache_stats().unwrap().hits, 1);
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
    /// ```
    pub fn with_cache(&self, options: CacheOptions) -> Self {
        let cache = Arc::new(ReadCache::new(options));
        TokenStore {
            raw: Arc::new(Invalidating {
                inner: self.raw.clone(),
                cache: cache.clone(),
            }),
            cache: Some(cache),
        }
    }

    /// The same store without a read cache. Writes through it still drop the entries of the
    /// cached handle it was made from.
    pub fn without_cache(&self) -> Self {
        TokenStore {
            raw: self.raw.clone(),
            cache: None,
        }
    }

    /// This handle, or a cached one when it has no cache yet ([`CacheOptions::default`]).
    pub fn cached_or_default(&self) -> Self {
        match self.cache {
            Some(_) => self.clone(),
            None => self.with_cache(CacheOptions::default()),
        }
    }

    /// The read cache's options, when the handle has one.
    pub fn cache_options(&self) -> Option<&CacheOptions> {
        self.cache.as_deref().map(ReadCache::options)
    }

    /// The read cache's counters, when the handle has one.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_deref().map(ReadCache::stats)
    }

    /// Drops the cached entry of `key` (after a 401 from the resource server, say), so the
    /// next read goes to the store. Without a cache it does nothing.
    pub fn invalidate(&self, key: &TokenKey) {
        if let Some(cache) = &self.cache {
            cache.invalidate(key.as_storage_key());
        }
    }

    /// Drops the cached entry of a client registration.
    pub fn invalidate_client(&self, key: &ClientKey) {
        if let Some(cache) = &self.cache {
            cache.invalidate(key.as_storage_key());
        }
    }

    /// Drops every cached entry.
    pub fn invalidate_all(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }

    /// A read through the cache: a fresh entry whose token expires after `margin` (never less
    /// than the cache's own refresh margin), else the store.
    pub(crate) async fn get_within<T: Cacheable + DeserializeOwned>(
        &self,
        key: &StorageKey,
        margin: Duration,
    ) -> Result<Option<Arc<Versioned<T>>>> {
        let Some(cache) = &self.cache else {
            return Ok(get_typed(&*self.raw, key).await?.map(Arc::new));
        };
        let margin = margin.max(cache.options().refresh_margin);
        if let Some(hit) = cache.lookup::<T>(key, margin) {
            return Ok(Some(hit));
        }
        self.read_through(cache, key).await
    }

    async fn read_through<T: Cacheable + DeserializeOwned>(
        &self,
        cache: &ReadCache,
        key: &StorageKey,
    ) -> Result<Option<Arc<Versioned<T>>>> {
        let ticket = cache.ticket(key);
        let found = match self.raw.read(key).await {
            Ok(found) => found,
            Err(e) => {
                cache.fill::<T>(key, ticket, None);
                return Err(e);
            }
        };
        let Some(rec) = found else {
            cache.fill::<T>(key, ticket, None);
            return Ok(None);
        };
        let value = match decode(self.raw.backend(), key, &rec.value) {
            Ok(value) => value,
            Err(e) => {
                cache.fill::<T>(key, ticket, None);
                return Err(e);
            }
        };
        let shared = Arc::new(Versioned {
            value,
            version: rec.version,
        });
        cache.fill(
            key,
            ticket,
            Some(Found {
                value: &shared,
                bytes: rec.value.len(),
                record_expires: rec.expires_at,
            }),
        );
        Ok(Some(shared))
    }

    /// Reads a token record from the store itself, bypassing the read cache (and refreshing
    /// it): for reads that must see every other process's writes, such as the re-read under
    /// a refresh lease. The same as [`TokenStore::get`] on a handle without a cache.
    pub async fn get_fresh(&self, key: &TokenKey) -> Result<Option<Versioned<TokenRecord>>> {
        let key = key.as_storage_key();
        match &self.cache {
            None => get_typed(&*self.raw, key).await,
            Some(cache) => Ok(self
                .read_through::<TokenRecord>(cache, key)
                .await?
                .map(Arc::unwrap_or_clone)),
        }
    }

    /// [`TokenStore::get`] without copying a cached record: the shared value the cache holds
    /// (for callers that only look, or keep their own conversion per version).
    pub async fn get_shared(&self, key: &TokenKey) -> Result<Option<Arc<Versioned<TokenRecord>>>> {
        self.get_within(key.as_storage_key(), Duration::ZERO).await
    }

    /// A fresh in-memory store: nothing persists. For tests and examples.
    pub fn in_memory() -> Self {
        TokenStore::new(crate::MemoryStore::new())
    }

    /// The byte-level backend, for layers, migration tools and benchmarks.
    pub fn raw(&self) -> &Arc<dyn RawStore> {
        &self.raw
    }

    /// The backend's short name (`"file"`, `"redis"`, `"secret-service"`, ...).
    pub fn backend(&self) -> &'static str {
        self.raw.backend()
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.raw.capabilities()
    }

    /// Reads a token record and its version.
    ///
    /// With a read cache ([`TokenStore::with_cache`]) a token that is not near expiry may
    /// come from the cache, at most [`CacheOptions::max_age`] old.
    pub async fn get(&self, key: &TokenKey) -> Result<Option<Versioned<TokenRecord>>> {
        let key = key.as_storage_key();
        if self.cache.is_none() {
            return get_typed(&*self.raw, key).await;
        }
        Ok(self
            .get_within(key, Duration::ZERO)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    /// Writes a token record under a precondition, with the default expiry: as long as the
    /// refresh token may live when the server said so, otherwise until deleted.
    pub async fn put(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        precondition: Precondition,
    ) -> Result<Version> {
        let options = default_put_options(record, precondition);
        self.write_token(key, record, &options, Action::Stored)
            .await
    }

    /// Writes a token record with explicit options (precondition and TTL).
    pub async fn put_with(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        options: &PutOptions,
    ) -> Result<Version> {
        self.write_token(key, record, options, Action::Stored).await
    }

    /// Writes the result of a refresh: [`TokenStore::put`], audited as `refreshed` instead of
    /// `stored` ([`crate::audit`]). For refresh layers ([`crate::TokenManager`], the rmcp
    /// adapter).
    pub async fn put_refreshed(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        precondition: Precondition,
    ) -> Result<Version> {
        let options = default_put_options(record, precondition);
        self.write_token(key, record, &options, Action::Refreshed)
            .await
    }

    async fn write_token(
        &self,
        key: &TokenKey,
        record: &TokenRecord,
        options: &PutOptions,
        action: Action,
    ) -> Result<Version> {
        let storage_key = key.as_storage_key();
        storage_key.validate()?;
        let bytes = encode_record(record)?;
        let result = self.raw.write(storage_key, &bytes, options).await;
        audit::written(action, &*self.raw, storage_key, &result);
        result
    }

    /// Deletes a token record under a precondition; returns whether it existed.
    pub async fn delete(&self, key: &TokenKey, precondition: Precondition) -> Result<bool> {
        self.remove_audited(key.as_storage_key(), precondition, Action::Deleted)
            .await
    }

    /// Deletes a token record whose refresh token the authorization server rejected:
    /// [`TokenStore::delete`], audited as `revoked` ([`crate::audit`]).
    pub async fn delete_revoked(&self, key: &TokenKey, precondition: Precondition) -> Result<bool> {
        self.remove_audited(key.as_storage_key(), precondition, Action::Revoked)
            .await
    }

    async fn remove_audited(
        &self,
        key: &StorageKey,
        precondition: Precondition,
        action: Action,
    ) -> Result<bool> {
        let result = self.raw.remove(key, &precondition).await;
        let expected = match &precondition {
            Precondition::IfVersion(v) => Some(v),
            _ => None,
        };
        audit::removed(action, &*self.raw, key, &result, expected);
        result
    }

    /// Lists token keys, a page at a time.
    pub async fn list(&self, query: &Query) -> Result<Page<TokenKey>> {
        let entries = self.raw.scan(KeyKind::Token, &query.filter).await?;
        Ok(page(entries, query, TokenKey::from_owned_storage_key))
    }

    /// Reads a client registration.
    pub async fn get_client(
        &self,
        key: &ClientKey,
    ) -> Result<Option<Versioned<ClientRegistration>>> {
        let key = key.as_storage_key();
        if self.cache.is_none() {
            return get_typed(&*self.raw, key).await;
        }
        Ok(self
            .get_within(key, Duration::ZERO)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    /// Writes a client registration under a precondition.
    pub async fn put_client(
        &self,
        key: &ClientKey,
        registration: &ClientRegistration,
        precondition: Precondition,
    ) -> Result<Version> {
        let storage_key = key.as_storage_key();
        storage_key.validate()?;
        let bytes = encode(registration)?;
        let result = self
            .raw
            .write(storage_key, &bytes, &PutOptions::new(precondition))
            .await;
        audit::written(Action::Stored, &*self.raw, storage_key, &result);
        result
    }

    /// Deletes a client registration; returns whether it existed.
    pub async fn delete_client(&self, key: &ClientKey, precondition: Precondition) -> Result<bool> {
        self.remove_audited(key.as_storage_key(), precondition, Action::Deleted)
            .await
    }

    /// Lists client registration keys.
    pub async fn list_clients(&self) -> Result<Page<ClientKey>> {
        let entries = self.raw.scan(KeyKind::Client, &ListFilter::all()).await?;
        Ok(page(
            entries,
            &Query::default(),
            ClientKey::from_owned_storage_key,
        ))
    }

    /// Saves a pending authorization under its CSRF `state` value for at most `ttl`.
    pub async fn save_state(&self, state: &str, auth: &AuthState, ttl: Duration) -> Result<()> {
        let key = state_key(state)?;
        let envelope = StateEnvelope {
            expires_at: unix_now() + ttl.as_secs_f64(),
            state: auth.clone(),
        };
        let bytes = encode(&envelope)?;
        let options = PutOptions::new(Precondition::Any).with_ttl(Some(ttl));
        self.raw.write(&key, &bytes, &options).await?;
        Ok(())
    }

    /// Reads the pending authorization for `state` without taking it (`None` once expired).
    /// For flows that validate before consuming; finish with [`TokenStore::take_state`].
    pub async fn peek_state(&self, state: &str) -> Result<Option<AuthState>> {
        let key = state_key(state)?;
        Ok(get_typed::<StateEnvelope>(&*self.raw, &key)
            .await?
            .map(|found| found.value)
            .filter(|env| env.expires_at > unix_now())
            .map(|env| env.state))
    }

    /// Returns and deletes the pending authorization for `state`, at most once even when
    /// several callers race (on backends with atomic compare-and-swap).
    pub async fn take_state(&self, state: &str) -> Result<Option<AuthState>> {
        let key = state_key(state)?;
        let Some(found) = get_typed::<StateEnvelope>(&*self.raw, &key).await? else {
            return Ok(None);
        };
        // Delete-if-unchanged is the atomic "take": of several racing callers exactly one
        // deletes the version they all read.
        match self
            .raw
            .remove(&key, &Precondition::IfVersion(found.version))
            .await
        {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) if e.is_conflict() => return Ok(None),
            Err(e) => return Err(e),
        }
        if found.value.expires_at <= unix_now() {
            return Ok(None);
        }
        Ok(Some(found.value.state))
    }

    /// Deletes expired pending authorizations; returns how many.
    pub async fn purge_expired_states(&self) -> Result<usize> {
        let raw = &*self.raw;
        let mut purged = 0;
        for entry in raw.scan(KeyKind::State, &ListFilter::all()).await? {
            let ListEntry::Key(key) = entry else { continue };
            let found = match get_typed::<StateEnvelope>(raw, &key).await {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                // An unreadable or tampered state can never be taken: it is garbage too.
                Err(Error::Corrupt { .. } | Error::Integrity { .. }) => {
                    if raw.remove(&key, &Precondition::Any).await? {
                        purged += 1;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if found.value.expires_at <= unix_now() {
                match raw
                    .remove(&key, &Precondition::IfVersion(found.version))
                    .await
                {
                    Ok(true) => purged += 1,
                    Ok(false) => {}
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_never_quote_the_input() {
        let bad = br#"{"access_token": {"nested": "SECRET-VALUE"}}"#;
        let err = serde_json::from_slice::<TokenRecord>(bad).unwrap_err();
        let summary = json_error_summary(&err);
        assert!(!summary.contains("SECRET"), "{summary}");
        let err =
            serde_json::from_slice::<TokenRecord>(br#"{"scopes": "SECRET-VALUE"}"#).unwrap_err();
        assert!(
            err.to_string().contains("SECRET-VALUE"),
            "serde quotes values: {err}"
        );
        assert!(!json_error_summary(&err).contains("SECRET"));
    }

    #[test]
    fn encoding_a_large_record_gives_the_same_json_as_serde() {
        let mut record = TokenRecord::new("a".repeat(5000)).with_refresh_token("r".repeat(3000));
        record.scopes = (0..200).map(|n| format!("scope-{n}")).collect();
        let ours = encode(&record).unwrap();
        assert_eq!(
            ours.as_slice(),
            serde_json::to_vec(&record).unwrap().as_slice()
        );
    }

    #[tokio::test]
    async fn peek_state_does_not_consume() {
        let store = TokenStore::in_memory();
        store
            .save_state("s", &AuthState::new("v"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(store.peek_state("s").await.unwrap().is_some());
        assert!(store.take_state("s").await.unwrap().is_some());
        assert!(store.peek_state("s").await.unwrap().is_none());
    }
}
