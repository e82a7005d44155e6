use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::key::{KeyKind, StorageKey};
use crate::metrics::{OPERATION_DURATION, OPERATIONS};
use crate::raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore, Version,
};
use crate::store::TokenStore;

/// Records every call through the [`metrics`](::metrics) facade: a counter
/// ([`OPERATIONS`](crate::metrics::OPERATIONS)) and a latency histogram
/// ([`OPERATION_DURATION`](crate::metrics::OPERATION_DURATION)), labelled by backend,
/// operation (`get`, `put`, `delete`, `list`) and outcome (`ok`, `miss` (nothing found),
/// `conflict`, `unavailable`, `corrupt`, `integrity`, `permission`, `too_large`, `config`,
/// `other`). Never by key. Needs the crate feature `metrics`.
///
/// Put it outermost, so the latency includes encryption and the outcome includes timeouts:
///
/// ```
/// # async fn demo() -> token_store_core::Result<()> {
/// use token_store_core::{TokenKey, TokenStore, layers::Metrics};
/// let store = Metrics::wrap(TokenStore::in_memory());
/// store.get(&TokenKey::for_server("https://mcp.example.com")).await?; // outcome="miss"
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug)]
pub struct Metrics<R> {
    inner: R,
}

impl<R: RawStore> Metrics<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Metrics { inner }
    }
}

impl Metrics<Arc<dyn RawStore>> {
    /// The same store with every call recorded: `token_store::open(url)`'s handle, say.
    pub fn wrap(store: TokenStore) -> TokenStore {
        TokenStore::new(Metrics::new(store.raw().clone()))
    }
}

/// The `outcome` label of an error. Coarse on purpose: a label value per error variant an
/// operator would act on differently, and no more.
pub(crate) fn error_outcome(e: &Error) -> &'static str {
    match e {
        Error::NotFound { .. } => "miss",
        Error::Conflict { .. } => "conflict",
        Error::Unavailable { .. } => "unavailable",
        Error::Corrupt { .. } => "corrupt",
        Error::Integrity { .. } => "integrity",
        Error::PermissionDenied { .. } | Error::Locked { .. } => "permission",
        Error::TooLarge { .. } => "too_large",
        // A wrong key file or passphrase is a deployment mistake, like a bad URL.
        Error::Config { .. } | Error::WrongKey { .. } => "config",
        _ => "other",
    }
}

fn record(backend: &'static str, operation: &'static str, outcome: &'static str, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    ::metrics::counter!(OPERATIONS, "backend" => backend, "operation" => operation, "outcome" => outcome)
        .increment(1);
    ::metrics::histogram!(OPERATION_DURATION, "backend" => backend, "operation" => operation, "outcome" => outcome)
        .record(seconds);
}

fn outcome<T>(result: &Result<T>, found: impl FnOnce(&T) -> bool) -> &'static str {
    match result {
        Ok(v) if found(v) => "ok",
        Ok(_) => "miss",
        Err(e) => error_outcome(e),
    }
}

#[async_trait]
impl<R: RawStore> RawStore for Metrics<R> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        let t = Instant::now();
        let r = self.inner.read(key).await;
        record(self.backend(), "get", outcome(&r, Option::is_some), t);
        r
    }
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        let t = Instant::now();
        let r = self.inner.write(key, value, options).await;
        record(self.backend(), "put", outcome(&r, |_| true), t);
        r
    }
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        let t = Instant::now();
        let r = self.inner.remove(key, precondition).await;
        record(self.backend(), "delete", outcome(&r, |removed| *removed), t);
        r
    }
    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let t = Instant::now();
        let r = self.inner.scan(kind, filter).await;
        record(self.backend(), "list", outcome(&r, |_| true), t);
        r
    }
}
