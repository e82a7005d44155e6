use std::time::Instant;

use async_trait::async_trait;

use crate::error::Result;
use crate::key::{KeyKind, StorageKey};
use crate::raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore, Version,
};

/// Logs every call at DEBUG (errors at WARN) with the backend, operation, key kind, outcome
/// and latency. Values never reach the log; neither do key parts (they can name users).
#[derive(Debug)]
pub struct Traced<R> {
    inner: R,
}

impl<R: RawStore> Traced<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Traced { inner }
    }
}

fn log<T>(backend: &str, op: &str, kind: KeyKind, started: Instant, result: &Result<T>) {
    let micros = started.elapsed().as_micros() as u64;
    match result {
        Ok(_) => tracing::debug!(
            backend,
            op,
            kind = kind.as_str(),
            micros,
            "token store call"
        ),
        Err(e) => {
            tracing::warn!(backend, op, kind = kind.as_str(), micros, error = %e, "token store call failed")
        }
    }
}

#[async_trait]
impl<R: RawStore> RawStore for Traced<R> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        let t = Instant::now();
        let r = self.inner.read(key).await;
        log(self.backend(), "get", key.kind(), t, &r);
        r
    }
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        let t = Instant::now();
        let r = self.inner.write(key, value, options).await;
        log(self.backend(), "put", key.kind(), t, &r);
        r
    }
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        let t = Instant::now();
        let r = self.inner.remove(key, precondition).await;
        log(self.backend(), "delete", key.kind(), t, &r);
        r
    }
    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let t = Instant::now();
        let r = self.inner.scan(kind, filter).await;
        log(self.backend(), "list", kind, t, &r);
        r
    }
}
