//! The byte-level contract a backend implements: [`RawStore`].
//!
//! A backend stores opaque bytes under a [`StorageKey`] and offers `read`, a conditional
//! `write`, a conditional `remove` and `scan`. Everything typed (JSON, token/client/state
//! semantics, paging) is done once by [`crate::TokenStore`] on top of this, and cross-cutting
//! concerns (encryption, timeouts, tracing) are layers that wrap a `RawStore`
//! ([`crate::layers`]).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sha2::Digest;
use zeroize::Zeroizing;

use crate::error::Result;
use crate::key::{KeyKind, StorageKey};

/// An opaque record version, for compare-and-swap.
///
/// Backends choose its form: a counter, a native version (Vault KV v2), a random write id, or
/// a digest of the stored bytes ([`Version::of_bytes`]) where the backend has no versions and
/// foreign writers (e.g. mcp-agent on Redis) may write too. Compare versions only for equality.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(String);

impl Version {
    /// Wraps a backend's version string.
    pub fn new(v: impl Into<String>) -> Self {
        Version(v.into())
    }

    /// A version derived from the stored bytes: 128 bits of SHA-256, hex. Works for records
    /// written by writers that know nothing of versions.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let digest = sha2::Sha256::digest(bytes);
        Version(crate::crypto::hex(&digest[..16]))
    }

    /// A fresh random version (128 bits), for backends that stamp each write.
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 16];
        crate::crypto::fill_random(&mut bytes)?;
        Ok(Version(crate::crypto::hex(&bytes)))
    }

    /// The version as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The condition a write or delete is made under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precondition {
    /// Unconditional.
    #[default]
    Any,
    /// Only if no record exists (create).
    IfAbsent,
    /// Only if the stored record is at exactly this version (compare-and-swap).
    IfVersion(Version),
}

/// Options of a put.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct PutOptions {
    /// When the write may happen.
    pub precondition: Precondition,
    /// How long the record lives; `None` keeps it until deleted.
    pub ttl: Option<Duration>,
}

impl PutOptions {
    /// Options with a precondition and no TTL.
    pub fn new(precondition: Precondition) -> Self {
        PutOptions {
            precondition,
            ttl: None,
        }
    }

    /// The same options with a time-to-live.
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }
}

/// Stored bytes, zeroized when dropped (they hold tokens).
pub type SecretBytes = Zeroizing<Vec<u8>>;

/// One record as a backend returns it.
#[derive(Clone)]
#[non_exhaustive]
pub struct RawRecord {
    /// The stored bytes.
    pub value: SecretBytes,
    /// Its version.
    pub version: Version,
    /// When it expires, if it has a TTL and the backend reports it (Redis does not: it
    /// enforces expiry itself, and a read is one `GET`). The typed API never needs it.
    pub expires_at: Option<SystemTime>,
}

impl RawRecord {
    /// A record with no reported expiry.
    pub fn new(value: SecretBytes, version: Version) -> Self {
        RawRecord {
            value,
            version,
            expires_at: None,
        }
    }

    /// The same record, reporting when it expires.
    pub fn with_expiry(mut self, expires_at: Option<SystemTime>) -> Self {
        self.expires_at = expires_at;
        self
    }
}

impl fmt::Debug for RawRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRecord")
            .field("value", &format_args!("[{} bytes]", self.value.len()))
            .field("version", &self.version)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Narrows a listing. Backends may use it to list less; the core filters again, so ignoring
/// it is correct, only slower.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListFilter {
    /// Only keys whose first part (the token's `user_key`) is this.
    pub user_key: Option<String>,
    /// Only keys whose second part (the token's `resource`) is this.
    pub resource: Option<String>,
}

impl ListFilter {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only one user's keys.
    pub fn user(user_key: impl Into<String>) -> Self {
        ListFilter {
            user_key: Some(user_key.into()),
            resource: None,
        }
    }

    /// The same filter restricted to a resource.
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// The resource to narrow keys of `kind` by: only token keys have a resource part.
    pub fn resource_for(&self, kind: KeyKind) -> Option<&str> {
        self.resource.as_deref().filter(|_| kind == KeyKind::Token)
    }

    /// Whether a key passes.
    pub fn matches(&self, key: &StorageKey) -> bool {
        let parts = key.parts();
        self.user_key
            .as_deref()
            .is_none_or(|u| parts.first().map(String::as_str) == Some(u))
            && (key.kind() != KeyKind::Token
                || self
                    .resource
                    .as_deref()
                    .is_none_or(|r| parts.get(1).map(String::as_str) == Some(r)))
    }
}

/// One entry of a listing: a key, or something in the store that could not be read as one.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ListEntry {
    /// A readable key.
    Key(StorageKey),
    /// An entry the backend could not read (a corrupt or foreign file, say).
    Unreadable {
        /// Where it is (a file name, a Redis key): never its content.
        location: String,
        /// Why it could not be read.
        reason: String,
    },
}

/// How far a guarantee reaches: who can open the same records, and against whom a
/// compare-and-swap is atomic. Ordered: `Process < Host < Hosts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// This process only (the memory store; a keychain guarded by an in-process lock).
    Process,
    /// Every process of the user on this host (the file store, SQLite, the OS keychain).
    Host,
    /// Every process on every host that reaches the service (Redis, Vault).
    Hosts,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Process => "within this process only",
            Scope::Host => "across processes on this host",
            Scope::Hosts => "across processes on every host",
        })
    }
}

/// What a backend can do. The conformance suite runs only the cases that apply, and the
/// refresh layer ([`crate::TokenManager`], [`crate::Lease`]) refuses a store whose
/// compare-and-swap reaches less far than the store is shared.
///
/// ```
/// use token_store_core::{Capabilities, Scope};
/// // A backend that several processes of one host share, with host-wide compare-and-swap:
/// let caps = Capabilities::new(64 * 1024).with_sharing(Scope::Host).with_cas(Scope::Host).with_ttl();
/// assert!(caps.cas_covers_sharing());
/// assert_eq!(caps.cas.to_string(), "across processes on this host");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Who can open the same records (this process, every process on the host, every host).
    pub shared_with: Scope,
    /// Against whom conditional writes and deletes are atomic.
    pub cas: Scope,
    /// Records can have a time-to-live that the backend enforces.
    pub ttl: bool,
    /// Values are encrypted before they reach the storage medium.
    pub encrypted_at_rest: bool,
    /// Records survive a restart of the process (and of the service, where there is one).
    pub persistent: bool,
    /// The largest value, in bytes, the backend accepts.
    pub max_value_size: usize,
}

/// Builder methods, so backends in other crates (where the struct is `#[non_exhaustive]`)
/// declare their capabilities in one expression.
impl Capabilities {
    /// Storage of values up to `max_value_size` bytes, private to this process, with
    /// compare-and-swap within this process.
    pub fn new(max_value_size: usize) -> Self {
        Capabilities {
            shared_with: Scope::Process,
            cas: Scope::Process,
            ttl: false,
            encrypted_at_rest: false,
            persistent: false,
            max_value_size,
        }
    }

    /// Who can open the same records.
    pub fn with_sharing(mut self, scope: Scope) -> Self {
        self.shared_with = scope;
        self
    }

    /// Against whom conditional writes are atomic.
    pub fn with_cas(mut self, scope: Scope) -> Self {
        self.cas = scope;
        self
    }

    /// Records can have an enforced time-to-live.
    pub fn with_ttl(mut self) -> Self {
        self.ttl = true;
        self
    }

    /// Values are encrypted before they reach the medium.
    pub fn with_encryption_at_rest(mut self) -> Self {
        self.encrypted_at_rest = true;
        self
    }

    /// Records survive restarts when `persistent` is true.
    pub fn with_persistence(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Whether compare-and-swap holds against every process that can open the records: the
    /// condition for a refresh lease, and so for refreshing rotating tokens safely.
    pub fn cas_covers_sharing(&self) -> bool {
        self.cas >= self.shared_with
    }
}

/// The byte-level store a backend implements. Users never call it directly: they hold a
/// [`crate::TokenStore`], which wraps any `RawStore` (`TokenStore::new(backend)`).
///
/// Contract (checked by the shared conformance suite, `token-store-conformance`):
/// - `read` returns `None` for an absent or expired record.
/// - `write` honours its [`Precondition`]: a failed one returns [`crate::Error::Conflict`]
///   with the current version and writes nothing. It returns the new version; a later `read`
///   returns the same version until the next write, and a version is never reused for a
///   different value of the same key (no ABA after delete and re-create).
/// - `remove` returns whether a record was removed; with `IfVersion`/`IfAbsent` it fails with
///   `Conflict` like `write`.
/// - `scan` returns the keys of `kind`, at least those matching `filter`, in any order, and
///   reports entries it cannot read as [`ListEntry::Unreadable`] instead of failing.
/// - Values longer than `capabilities().max_value_size` fail with [`crate::Error::TooLarge`].
/// - No value ever appears in an error, a log line or `Debug` output.
///
/// [`capabilities`](RawStore::capabilities) must tell the truth: the refresh layer relies on
/// `cas` covering `shared_with`.
///
/// # Writing a backend
///
/// The helpers in [`crate::backend`] word errors alike across backends. A backend that
/// checks preconditions itself under a lock looks like this (the memory store is the full
/// reference):
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use token_store_core::backend::{check_precondition, check_size};
/// use token_store_core::{
///     Capabilities, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
///     RawStore, Result, SecretBytes, StorageKey, TokenStore, Version, async_trait,
/// };
///
/// #[derive(Debug, Default)]
/// struct MapStore(Mutex<HashMap<StorageKey, (Vec<u8>, Version)>>);
///
/// #[async_trait]
/// impl RawStore for MapStore {
///     fn backend(&self) -> &'static str { "map" }
///     fn capabilities(&self) -> Capabilities { Capabilities::new(64 * 1024) }
///     async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
///         let map = self.0.lock().unwrap();
///         Ok(map.get(key).map(|(v, ver)| RawRecord::new(SecretBytes::new(v.clone()), ver.clone())))
///     }
///     async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
///         check_size(self.backend(), key, value.len(), self.capabilities().max_value_size)?;
///         let mut map = self.0.lock().unwrap();
///         check_precondition(self.backend(), key, &options.precondition, map.get(key).map(|e| &e.1))?;
///         let version = Version::random()?;
///         map.insert(key.clone(), (value.to_vec(), version.clone()));
///         Ok(version)
///     }
///     async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
///         let mut map = self.0.lock().unwrap();
///         check_precondition(self.backend(), key, precondition, map.get(key).map(|e| &e.1))?;
///         Ok(map.remove(key).is_some())
///     }
///     async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
///         let map = self.0.lock().unwrap();
///         Ok(map.keys().filter(|k| k.kind() == kind && filter.matches(k)).cloned().map(ListEntry::Key).collect())
///     }
/// }
///
/// # async fn demo() -> token_store_core::Result<()> {
/// let store = TokenStore::new(MapStore::default());
/// let key = token_store_core::TokenKey::for_server("https://mcp.example.com");
/// store.put(&key, &token_store_core::TokenRecord::new("at"), Precondition::IfAbsent).await?;
/// assert!(store.get(&key).await?.is_some());
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
#[async_trait]
pub trait RawStore: Send + Sync + fmt::Debug + 'static {
    /// A short backend name for errors and logs (`"redis"`, `"file"`, ...).
    fn backend(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Reads one record.
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>>;

    /// Writes one record under a precondition; returns the new version.
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version>;

    /// Deletes one record under a precondition; returns whether one existed.
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool>;

    /// Lists keys of one kind.
    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>>;
}

#[async_trait]
impl<R: RawStore + ?Sized> RawStore for Arc<R> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        (**self).read(key).await
    }
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        (**self).write(key, value, options).await
    }
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        (**self).remove(key, precondition).await
    }
    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        (**self).scan(kind, filter).await
    }
}

#[async_trait]
impl<R: RawStore + ?Sized> RawStore for Box<R> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        (**self).read(key).await
    }
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        (**self).write(key, value, options).await
    }
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        (**self).remove(key, precondition).await
    }
    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        (**self).scan(kind, filter).await
    }
}
