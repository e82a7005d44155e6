//! The byte-level contract a backend implements: [`RawStore`].
//!
//! A backend stores opaque bytes under a [`StorageKey`] and offers get, conditional put,
//! conditional delete and list. Everything typed (JSON, token/client/state semantics, paging)
//! is done once in [`crate::store`] on top of this, and cross-cutting concerns (encryption,
//! timeouts, tracing) are layers that wrap a `RawStore` ([`crate::layers`]).

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
pub struct RawRecord {
    /// The stored bytes.
    pub value: SecretBytes,
    /// Its version.
    pub version: Version,
    /// When it expires, if it has a TTL and the backend reports it (Redis does not: it
    /// enforces expiry itself, and a read is one `GET`). The typed API never needs it.
    pub expires_at: Option<SystemTime>,
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

/// What a backend can do. The conformance suite runs only the cases that apply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Conditional writes are atomic against every other writer of the store, in every
    /// process that shares it.
    pub atomic_cas: bool,
    /// Conditional writes are atomic only within one process (e.g. a keychain with a
    /// process-wide lock): another process may still race.
    pub process_local_cas: bool,
    /// Records can have a time-to-live that the backend enforces.
    pub ttl: bool,
    /// Values are encrypted before they reach the storage medium.
    pub encrypted_at_rest: bool,
    /// Several hosts can share the store (Redis, Vault).
    pub shared_across_hosts: bool,
    /// Several processes on one host can share the store safely.
    pub shared_across_processes: bool,
    /// Records survive a restart of the process (and of the service, where there is one).
    pub persistent: bool,
    /// The largest value, in bytes, the backend accepts.
    pub max_value_size: usize,
}

/// Builder methods, so backends in other crates (where the struct is `#[non_exhaustive]`)
/// declare their capabilities in one expression.
impl Capabilities {
    /// Nothing but storage of values up to `max_value_size` bytes.
    pub fn new(max_value_size: usize) -> Self {
        Capabilities {
            max_value_size,
            ..Self::default()
        }
    }

    /// Conditional writes are atomic across every process sharing the store.
    pub fn with_atomic_cas(mut self) -> Self {
        self.atomic_cas = true;
        self
    }

    /// Conditional writes are atomic within one process only.
    pub fn with_process_local_cas(mut self) -> Self {
        self.process_local_cas = true;
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

    /// Several hosts can share the store (implies several processes).
    pub fn with_sharing_across_hosts(mut self) -> Self {
        self.shared_across_hosts = true;
        self.shared_across_processes = true;
        self
    }

    /// Several processes on one host can share the store.
    pub fn with_sharing_across_processes(mut self) -> Self {
        self.shared_across_processes = true;
        self
    }

    /// Records survive restarts when `persistent` is true.
    pub fn with_persistence(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            atomic_cas: false,
            process_local_cas: false,
            ttl: false,
            encrypted_at_rest: false,
            shared_across_hosts: false,
            shared_across_processes: false,
            persistent: false,
            max_value_size: 1024 * 1024,
        }
    }
}

/// The byte-level store a backend implements.
///
/// Contract (checked by the conformance suite):
/// - `get` returns `None` for an absent or expired record.
/// - `put` honours its [`Precondition`]: a failed one returns [`crate::Error::Conflict`] with
///   the current version and writes nothing. It returns the new version; a later `get` returns
///   the same version until the next write.
/// - `delete` returns whether a record was removed; with `IfVersion`/`IfAbsent` it fails with
///   `Conflict` like `put`.
/// - `list` returns the keys of `kind`, at least those matching `filter`, in any order.
/// - Values longer than `capabilities().max_value_size` fail with [`crate::Error::TooLarge`].
#[async_trait]
pub trait RawStore: Send + Sync + fmt::Debug + 'static {
    /// A short backend name for errors and logs (`"redis"`, `"file"`, ...).
    fn backend(&self) -> &'static str;

    /// What this backend can do.
    fn raw_capabilities(&self) -> Capabilities;

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
    fn raw_capabilities(&self) -> Capabilities {
        (**self).raw_capabilities()
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
    fn raw_capabilities(&self) -> Capabilities {
        (**self).raw_capabilities()
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

/// Checks a value's size against a backend's limit; shared so every backend words it alike.
pub fn check_size(backend: &'static str, key: &StorageKey, size: usize, max: usize) -> Result<()> {
    if size > max {
        return Err(crate::Error::TooLarge {
            backend,
            key: key.to_string(),
            size,
            max,
        });
    }
    Ok(())
}

/// Evaluates a precondition against the current version, for backends that check it
/// themselves under a lock (memory, file, keychain). Returns the `Conflict` error to give.
pub fn check_precondition(
    backend: &'static str,
    key: &StorageKey,
    precondition: &Precondition,
    current: Option<&Version>,
) -> Result<()> {
    let ok = match precondition {
        Precondition::Any => true,
        Precondition::IfAbsent => current.is_none(),
        Precondition::IfVersion(v) => current == Some(v),
    };
    if ok {
        Ok(())
    } else {
        Err(crate::Error::Conflict {
            backend,
            key: key.to_string(),
            current: current.cloned(),
        })
    }
}
