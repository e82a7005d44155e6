//! The read cache of a [`TokenStore`](crate::TokenStore) handle
//! ([`TokenStore::with_cache`](crate::TokenStore::with_cache)): parsed records held per key
//! with their version, so that the per-request read (rmcp's `load()`, `TokenManager`'s first
//! look) costs no I/O and no JSON while the token is good.
//!
//! # What it guarantees
//!
//! - **A hit is never near expiry.** A token record is served from the cache only while its
//!   access token expires more than [`CacheOptions::refresh_margin`] from now (or never).
//!   Closer to expiry every read goes to the store, so a refresh another process or host made
//!   is adopted before this process would start its own.
//! - **Bounded staleness.** An entry is served for at most [`CacheOptions::max_age`] after it
//!   was read from the store (default 5 s): a write by another process or host (a new login,
//!   a `clear`) is seen within that time, and at once when the record is near expiry. Nor is
//!   it served past the record's TTL when the backend reports it (memory, file, SQLite,
//!   PostgreSQL); on Redis, which enforces TTLs without reporting them on a read, a record
//!   written with an explicit short TTL can be served up to the max age past it.
//! - **Writes by this handle are seen at once.** Every write or delete through the handle
//!   (typed or through [`TokenStore::raw`](crate::TokenStore::raw)), whatever its outcome
//!   (a compare-and-swap conflict included), drops the key's entry, and a read that raced
//!   with such a write never stores what it read (a per-key epoch is checked under the lock).
//!   Clones of the handle share the cache.
//! - **Bounded memory.** At most [`CacheOptions::max_entries`] entries and
//!   [`CacheOptions::max_bytes`] bytes (counted as the stored size of the records); the
//!   oldest entries go first.
//! - Reads that must see the store (under a refresh lease) use
//!   [`TokenStore::get_fresh`](crate::TokenStore::get_fresh), which bypasses the cache and
//!   refreshes it. Misses are not cached: a login elsewhere is seen on the next read.
//!
//! Only token records and client registrations are cached; states, leases and everything
//! else always go to the store.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::Result;
use crate::key::{KeyKind, StorageKey};
use crate::raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore, Version,
};
use crate::record::{ClientRegistration, TokenRecord, Versioned, unix_now};

/// How a [`TokenStore`](crate::TokenStore)'s read cache behaves; see the [module
/// docs](crate::cache) for the guarantees.
///
/// ```
/// use std::time::Duration;
/// use token_store_core::{CacheOptions, TokenStore};
/// let store = TokenStore::in_memory().with_cache(
///     CacheOptions::new().with_max_age(Duration::from_secs(2)).with_max_entries(100),
/// );
/// assert_eq!(store.cache_options().unwrap().max_age, Duration::from_secs(2));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheOptions {
    /// The longest an entry is served after it was read from the store: how stale a hit can
    /// be when another process or host wrote. Default 5 s.
    pub max_age: Duration,
    /// A token record whose access token expires within this margin is always read from the
    /// store. Default 60 s: at least the refresh margin of [`crate::TokenManager`] (60 s)
    /// and of rmcp (30 s), so whoever refreshes reads the store first.
    pub refresh_margin: Duration,
    /// At most this many entries. Default 1024.
    pub max_entries: usize,
    /// At most this many bytes of records (their stored size). Default 4 MiB.
    pub max_bytes: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_age: Duration::from_secs(5),
            refresh_margin: Duration::from_secs(60),
            max_entries: 1024,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

impl CacheOptions {
    /// The defaults: 5 s max age, 60 s refresh margin, 1024 entries, 4 MiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve an entry for at most `max_age` after it was read.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Always read tokens expiring within `margin` from the store.
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Keep at most `n` entries.
    pub fn with_max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// Keep at most `bytes` bytes of records.
    pub fn with_max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }
}

/// A parsed value the cache holds.
#[derive(Clone)]
pub(crate) enum Cached {
    Token(Arc<Versioned<TokenRecord>>),
    Client(Arc<Versioned<ClientRegistration>>),
}

/// The record types the cache holds (sealed: token records and client registrations).
pub(crate) trait Cacheable: Sized {
    fn wrap(value: Arc<Versioned<Self>>) -> Cached;
    fn unwrap(cached: &Cached) -> Option<&Arc<Versioned<Self>>>;
    /// When the value stops being worth serving from the cache (Unix seconds), if ever.
    fn expires_at(&self) -> Option<f64>;
}

impl Cacheable for TokenRecord {
    fn wrap(value: Arc<Versioned<Self>>) -> Cached {
        Cached::Token(value)
    }
    fn unwrap(cached: &Cached) -> Option<&Arc<Versioned<Self>>> {
        match cached {
            Cached::Token(v) => Some(v),
            Cached::Client(_) => None,
        }
    }
    fn expires_at(&self) -> Option<f64> {
        self.expires_at
    }
}

impl Cacheable for ClientRegistration {
    fn wrap(value: Arc<Versioned<Self>>) -> Cached {
        Cached::Client(value)
    }
    fn unwrap(cached: &Cached) -> Option<&Arc<Versioned<Self>>> {
        match cached {
            Cached::Client(v) => Some(v),
            Cached::Token(_) => None,
        }
    }
    fn expires_at(&self) -> Option<f64> {
        None
    }
}

struct Entry {
    value: Cached,
    /// Read from the store at + max age.
    fresh_until: Instant,
    /// When the access token expires, on the monotonic clock.
    expires: Option<Instant>,
    bytes: usize,
    seq: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<StorageKey, Entry>,
    /// Insertion order for eviction; an item whose `seq` no longer matches the entry's is
    /// skipped.
    order: VecDeque<(StorageKey, u64)>,
    bytes: usize,
    next_seq: u64,
}

/// Epoch stripes: a write bumps its key's stripe, and a read stores what it read only if the
/// stripe did not move meanwhile.
const STRIPES: usize = 64;

/// What a read found, for [`ReadCache::fill`].
pub(crate) struct Found<'a, T> {
    pub(crate) value: &'a Arc<Versioned<T>>,
    /// The stored size of the record.
    pub(crate) bytes: usize,
    /// When the backend will drop the record (its TTL), when it reports it.
    pub(crate) record_expires: Option<std::time::SystemTime>,
}

impl<'a, T> Found<'a, T> {
    #[cfg(test)]
    fn new(value: &'a Arc<Versioned<T>>, bytes: usize) -> Self {
        Found {
            value,
            bytes,
            record_expires: None,
        }
    }
}

/// What a read notes before going to the store, to insert only if no write intervened.
pub(crate) struct Ticket {
    stripe: usize,
    epoch: u64,
}

/// The cache itself, shared by clones of a handle.
pub(crate) struct ReadCache {
    options: CacheOptions,
    inner: RwLock<Inner>,
    epochs: [AtomicU64; STRIPES],
    stripe_hasher: RandomState,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadCache")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Counters of a handle's read cache ([`TokenStore::cache_stats`](crate::TokenStore::cache_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to the store.
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes of records held now.
    pub bytes: usize,
}

fn cacheable_kind(kind: KeyKind) -> bool {
    matches!(kind, KeyKind::Token | KeyKind::Client)
}

impl ReadCache {
    pub(crate) fn new(options: CacheOptions) -> Self {
        ReadCache {
            options,
            inner: RwLock::new(Inner::default()),
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
            stripe_hasher: RandomState::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(crate) fn options(&self) -> &CacheOptions {
        &self.options
    }

    // Every update is a whole insert or remove, so a panic elsewhere cannot leave the map
    // half-changed: a poisoned lock is still safe to use.
    fn read_lock(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn stripe(&self, key: &StorageKey) -> usize {
        (self.stripe_hasher.hash_one(key) as usize) % STRIPES
    }

    /// The cached value of `key`, when it is fresh and its token expires after `margin`.
    pub(crate) fn lookup<T: Cacheable>(
        &self,
        key: &StorageKey,
        margin: Duration,
    ) -> Option<Arc<Versioned<T>>> {
        let inner = self.read_lock();
        let found = inner.map.get(key).and_then(|entry| {
            let now = Instant::now();
            let good = now < entry.fresh_until && entry.expires.is_none_or(|at| now + margin < at);
            good.then(|| T::unwrap(&entry.value).cloned()).flatten()
        });
        drop(inner);
        // Relaxed counters: statistics only, never used for correctness.
        match found {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        found
    }

    /// Noted before a read from the store.
    pub(crate) fn ticket(&self, key: &StorageKey) -> Ticket {
        let stripe = self.stripe(key);
        Ticket {
            stripe,
            epoch: self.epochs[stripe].load(Ordering::Acquire),
        }
    }

    /// Stores what a read found (`None`: nothing, which drops any entry), unless a write to a
    /// key of the same stripe happened since `ticket` was taken.
    pub(crate) fn fill<T: Cacheable>(
        &self,
        key: &StorageKey,
        ticket: Ticket,
        found: Option<Found<'_, T>>,
    ) {
        // Nothing found and nothing held: no need for the write lock (a miss stays cheap).
        if found.is_none() && !self.read_lock().map.contains_key(key) {
            return;
        }
        let mut inner = self.write_lock();
        if self.epochs[ticket.stripe].load(Ordering::Acquire) != ticket.epoch {
            // A write raced with the read: what was read may already be old.
            remove(&mut inner, key);
            return;
        }
        let Some(Found {
            value,
            bytes,
            record_expires,
        }) = found
        else {
            remove(&mut inner, key);
            return;
        };
        if bytes > self.options.max_bytes || self.options.max_entries == 0 {
            remove(&mut inner, key);
            return;
        }
        let now = Instant::now();
        let expires = value.value.expires_at().map(|at| {
            let left = at - unix_now();
            if left.is_finite() && left > 0.0 {
                now + Duration::from_secs_f64(left.min(1e9))
            } else {
                now
            }
        });
        // Never past the record's own TTL, when the backend reports it.
        let mut fresh_until = now + self.options.max_age;
        if let Some(at) = record_expires {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            fresh_until = fresh_until.min(now + left);
        }
        remove(&mut inner, key);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.bytes += bytes;
        inner.map.insert(
            key.clone(),
            Entry {
                value: T::wrap(value.clone()),
                fresh_until,
                expires,
                bytes,
                seq,
            },
        );
        inner.order.push_back((key.clone(), seq));
        while inner.map.len() > self.options.max_entries || inner.bytes > self.options.max_bytes {
            let Some((old, seq)) = inner.order.pop_front() else {
                break;
            };
            if inner.map.get(&old).is_some_and(|e| e.seq == seq) {
                remove(&mut inner, &old);
            }
        }
        // Superseded order items pile up when the same keys are refilled; compact them
        // before they outgrow the entries they stand for.
        if inner.order.len() > 2 * inner.map.len() + 64 {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(k, seq)| map.get(k).is_some_and(|e| e.seq == *seq));
        }
    }

    /// Drops `key`'s entry and stops reads in flight from storing what they read.
    pub(crate) fn invalidate(&self, key: &StorageKey) {
        if !cacheable_kind(key.kind()) {
            return;
        }
        let stripe = self.stripe(key);
        let mut inner = self.write_lock();
        self.epochs[stripe].fetch_add(1, Ordering::AcqRel);
        remove(&mut inner, key);
    }

    /// Drops every entry.
    pub(crate) fn invalidate_all(&self) {
        let mut inner = self.write_lock();
        for epoch in &self.epochs {
            epoch.fetch_add(1, Ordering::AcqRel);
        }
        inner.map.clear();
        inner.order.clear();
        inner.bytes = 0;
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let inner = self.read_lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: inner.map.len(),
            bytes: inner.bytes,
        }
    }
}

fn remove(inner: &mut Inner, key: &StorageKey) {
    if let Some(old) = inner.map.remove(key) {
        inner.bytes -= old.bytes;
    }
}

/// The layer under a cached handle: every write and delete, whoever makes it through the
/// handle (the typed API, a [`crate::Lease`], a caller of `raw()`), drops the key's entry
/// once the backend answered, whatever the answer.
pub(crate) struct Invalidating {
    pub(crate) inner: Arc<dyn RawStore>,
    pub(crate) cache: Arc<ReadCache>,
}

impl fmt::Debug for Invalidating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Transparent: the handle's Debug names the backend as before.
        fmt::Debug::fmt(&self.inner, f)
    }
}

/// Invalidates when dropped: after the backend answered, and also when the caller gives up
/// on the call (a dropped future), since the write may have landed all the same.
struct InvalidateOnDrop<'a>(&'a ReadCache, &'a StorageKey);

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        self.0.invalidate(self.1);
    }
}

#[async_trait]
impl RawStore for Invalidating {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        self.inner.read(key).await
    }
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        let _drop = InvalidateOnDrop(&self.cache, key);
        self.inner.write(key, value, options).await
    }
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        let _drop = InvalidateOnDrop(&self.cache, key);
        self.inner.remove(key, precondition).await
    }
    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        self.inner.scan(kind, filter).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_store::ReadProbe;
    use crate::{TokenKey, TokenStore};

    fn setup(options: CacheOptions) -> (Arc<ReadProbe>, TokenStore, TokenStore) {
        let counting = Arc::new(ReadProbe::default());
        let plain = TokenStore::from_arc(counting.clone());
        let cached = plain.with_cache(options);
        (counting, plain, cached)
    }

    fn reads(c: &ReadProbe) -> usize {
        c.reads()
    }

    fn good(tag: &str) -> TokenRecord {
        TokenRecord::new(format!("at-{tag}")).expires_in(Duration::from_secs(3600))
    }

    fn key() -> TokenKey {
        TokenKey::for_server("https://mcp.example.com/mcp")
    }

    #[tokio::test]
    async fn a_hit_reads_nothing_and_every_write_through_the_handle_drops_the_entry() {
        let (counting, _, store) = setup(CacheOptions::new());
        let v1 = store
            .put(&key(), &good("1"), Precondition::Any)
            .await
            .unwrap();
        assert_eq!(store.get(&key()).await.unwrap().unwrap().version, v1);
        for _ in 0..10 {
            let hit = store.get(&key()).await.unwrap().unwrap();
            assert_eq!(hit.value.access_token.expose(), "at-1");
        }
        assert_eq!(reads(&counting), 1, "hits went to the store");

        // A typed write, a write through raw(), and a failed CAS each drop the entry.
        let v2 = store
            .put(&key(), &good("2"), Precondition::IfVersion(v1.clone()))
            .await
            .unwrap();
        assert_eq!(store.get(&key()).await.unwrap().unwrap().version, v2);
        store
            .raw()
            .write(
                key().as_storage_key(),
                &serde_json::to_vec(&good("3")).unwrap(),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        let read = store.get(&key()).await.unwrap().unwrap();
        assert_eq!(read.value.access_token.expose(), "at-3");
        let before = reads(&counting);
        let conflict = store
            .put(&key(), &good("4"), Precondition::IfVersion(v1))
            .await
            .unwrap_err();
        assert!(conflict.is_conflict());
        store.get(&key()).await.unwrap();
        assert_eq!(reads(&counting), before + 1, "a conflict kept the entry");
        store.delete(&key(), Precondition::Any).await.unwrap();
        assert!(store.get(&key()).await.unwrap().is_none());
        // A handle made without the cache still drops the cached handle's entries.
        store
            .put(&key(), &good("5"), Precondition::Any)
            .await
            .unwrap();
        store.get(&key()).await.unwrap();
        store
            .without_cache()
            .put(&key(), &good("6"), Precondition::Any)
            .await
            .unwrap();
        let read = store.get(&key()).await.unwrap().unwrap();
        assert_eq!(read.value.access_token.expose(), "at-6");
    }

    #[tokio::test]
    async fn a_token_near_expiry_is_always_read_from_the_store() {
        let (counting, _, store) = setup(CacheOptions::new());
        let soon = TokenRecord::new("at").expires_in(Duration::from_secs(30));
        store.put(&key(), &soon, Precondition::Any).await.unwrap();
        for n in 1..=3 {
            store.get(&key()).await.unwrap().unwrap();
            assert_eq!(reads(&counting), n);
        }
        // A wider margin asked for by the caller (a manager's leeway) is honoured too.
        let later = TokenRecord::new("at").expires_in(Duration::from_secs(90));
        store.put(&key(), &later, Precondition::Any).await.unwrap();
        store.get(&key()).await.unwrap();
        store.get(&key()).await.unwrap();
        assert_eq!(reads(&counting), 4);
        store
            .get_within::<TokenRecord>(key().as_storage_key(), Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(reads(&counting), 5);
    }

    #[tokio::test]
    async fn another_writer_is_seen_within_the_max_age_and_get_fresh_sees_it_at_once() {
        let max_age = Duration::from_millis(100);
        let (_, other, store) = setup(CacheOptions::new().with_max_age(max_age));
        // `other` writes beside the cache, as another process would.
        let other = TokenStore::from_arc(other.raw().clone());
        other
            .put(&key(), &good("1"), Precondition::Any)
            .await
            .unwrap();
        store.get(&key()).await.unwrap();
        let written = Instant::now();
        other
            .put(&key(), &good("2"), Precondition::Any)
            .await
            .unwrap();
        let fresh = store.get_fresh(&key()).await.unwrap().unwrap();
        assert_eq!(fresh.value.access_token.expose(), "at-2");
        other
            .put(&key(), &good("3"), Precondition::Any)
            .await
            .unwrap();
        loop {
            let seen = store.get(&key()).await.unwrap().unwrap();
            if seen.value.access_token.expose() == "at-3" {
                break;
            }
            assert!(
                written.elapsed() < max_age * 2 + Duration::from_millis(50),
                "still stale after {:?}",
                written.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn a_read_that_raced_a_write_stores_nothing() {
        let cache = ReadCache::new(CacheOptions::new());
        let key = key();
        let k = key.as_storage_key();
        let value = Arc::new(Versioned {
            value: good("old"),
            version: Version::new("1"),
        });
        let ticket = cache.ticket(k);
        cache.invalidate(k); // the write lands while the read is in flight
        cache.fill(k, ticket, Some(Found::new(&value, 10)));
        assert!(cache.lookup::<TokenRecord>(k, Duration::ZERO).is_none());
        let ticket = cache.ticket(k);
        cache.fill(k, ticket, Some(Found::new(&value, 10)));
        assert!(cache.lookup::<TokenRecord>(k, Duration::ZERO).is_some());
    }

    #[test]
    fn entries_and_bytes_are_bounded_oldest_first() {
        let cache = ReadCache::new(CacheOptions::new().with_max_entries(3).with_max_bytes(250));
        let keys: Vec<TokenKey> = (0..10)
            .map(|i| TokenKey::for_server(&format!("https://s{i}.example")))
            .collect();
        let value = Arc::new(Versioned {
            value: good("x"),
            version: Version::new("1"),
        });
        for k in &keys {
            // The same key refilled over and over must not grow the eviction queue.
            for _ in 0..100 {
                let ticket = cache.ticket(k.as_storage_key());
                cache.fill(k.as_storage_key(), ticket, Some(Found::new(&value, 100)));
            }
        }
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (2, 200));
        let held = |k: &TokenKey| {
            cache
                .lookup::<TokenRecord>(k.as_storage_key(), Duration::ZERO)
                .is_some()
        };
        assert!(held(&keys[9]) && held(&keys[8]) && !held(&keys[7]) && !held(&keys[0]));
        assert!(cache.read_lock().order.len() <= 2 * 2 + 64);
        // A record larger than the whole budget is never held.
        let ticket = cache.ticket(keys[0].as_storage_key());
        cache.fill(
            keys[0].as_storage_key(),
            ticket,
            Some(Found::new(&value, 251)),
        );
        assert!(!held(&keys[0]));
    }

    #[tokio::test]
    async fn client_registrations_are_cached_and_dropped_on_write() {
        let (counting, _, store) = setup(CacheOptions::new());
        let ck = crate::ClientKey::new("https://as.example");
        store
            .put_client(&ck, &ClientRegistration::new("c1"), Precondition::Any)
            .await
            .unwrap();
        store.get_client(&ck).await.unwrap().unwrap();
        store.get_client(&ck).await.unwrap().unwrap();
        assert_eq!(reads(&counting), 1);
        store
            .put_client(&ck, &ClientRegistration::new("c2"), Precondition::Any)
            .await
            .unwrap();
        assert_eq!(
            store
                .get_client(&ck)
                .await
                .unwrap()
                .unwrap()
                .value
                .client_id,
            "c2"
        );
        store.invalidate_client(&ck);
        store.get_client(&ck).await.unwrap();
        assert_eq!(reads(&counting), 3);
    }
}
