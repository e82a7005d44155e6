//! A memory store for core's unit tests that watches the reads reaching it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::key::{KeyKind, StorageKey};
use crate::memory::MemoryStore;
use crate::raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore, Version,
};

/// Counts the reads that reach it and answers each `delay` late (a slow server); every
/// other call goes straight to a [`MemoryStore`].
#[derive(Debug, Default)]
pub(crate) struct ReadProbe {
    inner: MemoryStore,
    reads: AtomicUsize,
    delay: Duration,
}

impl ReadProbe {
    /// A probe whose reads take `delay`.
    pub(crate) fn slow(delay: Duration) -> Self {
        ReadProbe {
            delay,
            ..ReadProbe::default()
        }
    }

    /// The reads so far.
    pub(crate) fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl RawStore for ReadProbe {
    fn backend(&self) -> &'static str {
        "probe"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.read(key).await
    }
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        self.inner.write(key, value, options).await
    }
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        self.inner.remove(key, precondition).await
    }
    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        self.inner.scan(kind, filter).await
    }
}
