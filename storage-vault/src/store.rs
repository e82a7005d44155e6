//! [`VaultStore`]: the KV v2 store. The path layout, the record format inside the KV data
//! map, writes (the CAS protocol), deletes (tombstones) and listing live in submodules.

mod cas;
mod delete;
mod layout;
mod list;
mod reclaim;
mod record;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use token_store_core::backend::check_size;
use token_store_core::{
    Capabilities, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore,
    Result, Scope, StorageKey, Version,
};

use crate::client::{BACKEND, VaultHttp, status_error};
use crate::config::VaultConfig;
use layout::{key_path, wire};
use record::{Current, corrupt, make_version};

pub use reclaim::{RECLAIM_LEASE, ReclaimReport};

/// The largest value accepted: base64 makes it 342 KiB inside the JSON data map, which fits
/// every Vault storage backend's entry limit (Consul's 512 KiB is the smallest).
pub const MAX_VALUE_SIZE: usize = 256 * 1024;

/// How often a write or delete re-reads and retries when another writer moved the record
/// between its read and its `cas` write, before giving up with `Conflict`.
const MAX_ATTEMPTS: usize = 16;

/// A token store in a Vault / OpenBao KV v2 engine: the raw backend, without layers (use
/// [`open`](crate::open) for the store handle with the configured time limit and
/// encryption). Cheap to clone (shared client).
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
    /// Set once the policy refused a reclamation: listings stop trying.
    reclaim_denied: AtomicBool,
}

impl fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultStore")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl VaultStore {
    /// The store `config` describes. With AppRole it logs in first, so bad credentials or an
    /// unreachable server fail here; with a token nothing is sent yet.
    pub async fn open(config: &VaultConfig) -> Result<Self> {
        config.validate()?;
        let http = VaultHttp::new(config)?;
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
                config: config.clone(),
                cas_required: AtomicBool::new(false),
                reclaim_denied: AtomicBool::new(false),
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

    /// One read of what the key holds.
    async fn current(&self, key: &StorageKey) -> Result<Current> {
        let path = self.data_path(key);
        let reply = self.inner.http.call(Method::GET, &path, None).await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(Current::from_not_found(&reply)),
            s if s.is_success() => Current::from_data(key, &reply),
            _ => Err(status_error("read", &path, &reply)),
        }
    }
}

#[async_trait]
impl RawStore for VaultStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // No TTL: KV v2's only expiry (`delete_version_after`) soft-deletes and keeps the key
        // listed.
        Capabilities::new(MAX_VALUE_SIZE)
            .with_sharing(Scope::Hosts)
            .with_cas(Scope::Hosts)
            .with_persistence(true)
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        Ok(match self.current(key).await? {
            Current::Absent { .. } => None,
            Current::Undecodable { why, .. } => return Err(corrupt(key, why)),
            Current::Present {
                n,
                generation,
                value,
            } => Some(RawRecord::new(value, make_version(n, &generation))),
        })
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(BACKEND, key, value.len(), MAX_VALUE_SIZE)?;
        self.write_inner(key, value, &options.precondition).await
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        self.remove_inner(key, precondition).await
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        self.scan_inner(kind, filter).await
    }
}
