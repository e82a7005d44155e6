use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::key::{KeyKind, StorageKey};
use crate::raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore, Version,
};

/// Bounds every call: one that takes longer fails with [`Error::Unavailable`] instead of
/// hanging the caller. Dropping the inner future cancels async backends for real.
#[derive(Debug)]
pub struct Timeout<R> {
    inner: R,
    limit: Duration,
}

impl<R: RawStore> Timeout<R> {
    /// Wraps `inner` with a per-call time limit.
    pub fn new(inner: R, limit: Duration) -> Self {
        Timeout { inner, limit }
    }

    async fn run<T>(&self, op: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.limit, fut).await {
            Ok(result) => result,
            Err(_) => Err(Error::unavailable(
                self.inner.backend(),
                format!("{op} timed out after {:?}", self.limit),
                None,
            )),
        }
    }
}

#[async_trait]
impl<R: RawStore> RawStore for Timeout<R> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        self.run("get", self.inner.read(key)).await
    }
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        self.run("put", self.inner.write(key, value, options)).await
    }
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        self.run("delete", self.inner.remove(key, precondition))
            .await
    }
    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        self.run("list", self.inner.scan(kind, filter)).await
    }
}
