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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_store::ReadProbe;
    use std::time::Instant;

    fn key(n: usize) -> StorageKey {
        crate::TokenKey::for_server(&format!("https://mcp-{n}.example.com/mcp")).storage_key()
    }

    fn slow(delay: Duration, limit: Duration) -> Timeout<ReadProbe> {
        Timeout::new(ReadProbe::slow(delay), limit)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_answer_is_unavailable_within_the_limit() {
        let store = slow(Duration::from_secs(30), Duration::from_millis(200));
        let started = Instant::now();
        let err = store.read(&key(0)).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(
            err.to_string().contains("get timed out after 200ms"),
            "{err}"
        );
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn calls_in_time_succeed() {
        let store = slow(Duration::from_millis(5), Duration::from_secs(10));
        store
            .write(&key(1), b"v", &PutOptions::new(Precondition::Any))
            .await
            .unwrap();
        for _ in 0..20 {
            let got = store.read(&key(1)).await.unwrap().unwrap();
            assert_eq!(&got.value[..], b"v");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_each_get_their_own_deadline() {
        // Half answer in time, half not: each is judged on its own deadline.
        let late =
            std::sync::Arc::new(slow(Duration::from_millis(300), Duration::from_millis(150)));
        let fast = std::sync::Arc::new(slow(Duration::from_millis(10), Duration::from_millis(150)));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (l, f) = (late.clone(), fast.clone());
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    l.read(&key(i)).await.is_err()
                } else {
                    f.read(&key(i)).await.is_ok()
                }
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap());
        }
    }
}
