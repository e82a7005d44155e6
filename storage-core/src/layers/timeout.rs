use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::runtime::{self, Handle};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::key::{KeyKind, StorageKey};
use crate::raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore, Version,
};

/// Bounds every call: one that takes longer fails with [`Error::Unavailable`] instead of
/// hanging the caller. The inner future is dropped when the time is up, which cancels async
/// backends for real.
///
/// Needs a Tokio runtime with its time driver for calls that wait (as
/// `tokio::time::timeout` does); a call that completes at its first poll (an in-process
/// store) never touches the runtime.
///
/// Why not `tokio::time::timeout` per call: every network call would arm a timer of its own,
/// and arming a timer in an empty timer wheel wakes the thread parked in the I/O driver
/// (tokio unparks the driver whenever a new deadline precedes its next wake). On a
/// sequential client that is a cross-thread wake-up per call: 1.4–4 µs measured on a
/// 25 µs PostgreSQL read. Here the deadlines of a layer's calls wait in one ordered map per
/// runtime, watched by one task that sleeps until the earliest of them. All deadlines are
/// the same limit after their call's start, so a newer one never precedes the one the watch
/// sleeps for, and a call costs a clock read and two uncontended map updates.
pub struct Timeout<R> {
    inner: R,
    limit: Duration,
    watch: Arc<Watch>,
}

impl<R> fmt::Debug for Timeout<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<R: RawStore> Timeout<R> {
    /// Wraps `inner` with a per-call time limit.
    pub fn new(inner: R, limit: Duration) -> Self {
        Timeout {
            inner,
            limit,
            watch: Arc::new(Watch::default()),
        }
    }

    async fn run<T>(&self, op: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match (Deadline {
            inner: std::pin::pin!(fut),
            watch: &self.watch,
            limit: self.limit,
            entry: None,
        })
        .await
        {
            Some(result) => result,
            None => Err(Error::unavailable(
                self.inner.backend(),
                format!("{op} timed out after {:?}", self.limit),
                None,
            )),
        }
    }
}

/// The calls in flight, per runtime (a store handle may be used from several).
#[derive(Default)]
struct Watch {
    shards: Mutex<HashMap<runtime::Id, Shard>>,
}

/// One runtime's deadlines and the task that watches them.
struct Shard {
    /// Ordered by deadline; the sequence number tells equal deadlines apart.
    waiting: BTreeMap<(Instant, u64), Waker>,
    next: u64,
    /// The deadline the watcher sleeps until; `None` while it waits without a timer for a
    /// deadline to be filed.
    sleeping_until: Option<Instant>,
    /// Wakes the watcher for a deadline earlier than its own (only ever one filed while it
    /// waits without a timer), and to end.
    notify: Arc<Notify>,
    watcher: JoinHandle<()>,
}

/// Where a waiting call's deadline is filed.
struct Entry {
    runtime: runtime::Id,
    key: (Instant, u64),
}

impl Watch {
    fn lock(&self) -> MutexGuard<'_, HashMap<runtime::Id, Shard>> {
        // The map stays consistent whatever panicked while it was held: every update is one
        // insert or remove.
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files `deadline` for a call of this runtime; `None` outside a runtime.
    fn file(self: &Arc<Self>, deadline: Instant, waker: &Waker) -> Option<Entry> {
        let handle = Handle::try_current().ok()?;
        let runtime = handle.id();
        let mut shards = self.lock();
        // A watcher whose runtime shut down (its id may even be reused) is replaced.
        let stale = shards.get(&runtime).is_none_or(|s| s.watcher.is_finished());
        if stale {
            shards.retain(|_, s| !s.watcher.is_finished());
            let notify = Arc::new(Notify::new());
            let watcher = handle.spawn(watch(Arc::downgrade(self), runtime, notify.clone()));
            shards.insert(
                runtime,
                Shard {
                    waiting: BTreeMap::new(),
                    next: 0,
                    sleeping_until: None,
                    notify,
                    watcher,
                },
            );
        }
        let shard = shards.get_mut(&runtime)?;
        let key = (deadline, shard.next);
        shard.next = shard.next.wrapping_add(1);
        // Deadlines are filed in (nearly) the order they fall due: a watcher already asleep
        // until an earlier one needs no wake-up, which is what keeps a call off the other
        // threads.
        if shard.sleeping_until.is_none_or(|at| deadline < at) {
            shard.notify.notify_one();
        }
        shard.waiting.insert(key, waker.clone());
        Some(Entry { runtime, key })
    }

    fn update(&self, entry: &Entry, waker: &Waker) {
        let mut shards = self.lock();
        if let Some(w) = shards
            .get_mut(&entry.runtime)
            .and_then(|s| s.waiting.get_mut(&entry.key))
            && !w.will_wake(waker)
        {
            w.clone_from(waker);
        }
    }

    fn remove(&self, entry: &Entry) {
        if let Some(shard) = self.lock().get_mut(&entry.runtime) {
            shard.waiting.remove(&entry.key);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The watchers hold only a weak reference: wake the idle ones so that they end.
        for shard in self.lock().values() {
            shard.notify.notify_one();
        }
    }
}

/// The watcher of one runtime's deadlines: wakes the calls whose time is up, then sleeps
/// until the earliest remaining deadline, or without a timer while none is filed. Ends with
/// the layer.
async fn watch(watch: Weak<Watch>, runtime: runtime::Id, notify: Arc<Notify>) {
    loop {
        let earliest = {
            let Some(watch) = watch.upgrade() else { return };
            let mut shards = watch.lock();
            let Some(shard) = shards.get_mut(&runtime) else {
                return;
            };
            let now = Instant::now();
            while let Some(entry) = shard.waiting.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                // Woken, the call sees its deadline passed and removes nothing: its entry is
                // gone already.
                entry.remove().wake();
            }
            shard.sleeping_until = shard.waiting.first_key_value().map(|((at, _), _)| *at);
            shard.sleeping_until
        };
        let mut notified = std::pin::pin!(notify.notified());
        let mut sleep = std::pin::pin!(earliest.map(|at| tokio::time::sleep_until(at.into())));
        std::future::poll_fn(|cx| {
            let timer = match sleep.as_mut().as_pin_mut() {
                Some(s) => s.poll(cx),
                None => Poll::Pending,
            };
            match (notified.as_mut().poll(cx), timer) {
                (Poll::Pending, Poll::Pending) => Poll::Pending,
                _ => Poll::Ready(()),
            }
        })
        .await;
    }
}

/// A call under its deadline: `None` once the time is up.
struct Deadline<'a, F> {
    inner: Pin<&'a mut F>,
    watch: &'a Arc<Watch>,
    limit: Duration,
    /// Filed at the first poll that found the call waiting, with its deadline.
    entry: Option<(Instant, Option<Entry>)>,
}

impl<F: Future> Future for Deadline<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let started = match &this.entry {
            Some((deadline, _)) if Instant::now() >= *deadline => return Poll::Ready(None),
            Some(_) => None,
            None => Some(Instant::now()),
        };
        if let Poll::Ready(out) = this.inner.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match (&this.entry, started) {
            (Some((_, Some(entry))), _) => this.watch.update(entry, cx.waker()),
            (Some((_, None)), _) => {}
            (None, Some(started)) => {
                let deadline = started + this.limit;
                this.entry = Some((deadline, this.watch.file(deadline, cx.waker())));
            }
            (None, None) => {}
        }
        Poll::Pending
    }
}

impl<F> Drop for Deadline<'_, F> {
    fn drop(&mut self) {
        if let Some((_, Some(entry))) = &self.entry {
            self.watch.remove(entry);
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
    use crate::memory::MemoryStore;

    /// A store whose reads take `delay` (a server that answers late).
    #[derive(Debug)]
    struct Slow {
        inner: MemoryStore,
        delay: Duration,
    }

    #[async_trait]
    impl RawStore for Slow {
        fn backend(&self) -> &'static str {
            "slow"
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
            tokio::time::sleep(self.delay).await;
            self.inner.read(key).await
        }
        async fn write(
            &self,
            key: &StorageKey,
            value: &[u8],
            options: &PutOptions,
        ) -> Result<Version> {
            self.inner.write(key, value, options).await
        }
        async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
            self.inner.remove(key, precondition).await
        }
        async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
            self.inner.scan(kind, filter).await
        }
    }

    fn key(n: usize) -> StorageKey {
        crate::TokenKey::for_server(&format!("https://mcp-{n}.example.com/mcp")).storage_key()
    }

    fn slow(delay: Duration, limit: Duration) -> Timeout<Slow> {
        Timeout::new(
            Slow {
                inner: MemoryStore::new(),
                delay,
            },
            limit,
        )
    }

    fn waiting(store: &Timeout<Slow>) -> usize {
        store.watch.lock().values().map(|s| s.waiting.len()).sum()
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
        assert_eq!(waiting(&store), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn calls_in_time_succeed_and_leave_nothing_filed() {
        let store = slow(Duration::from_millis(5), Duration::from_secs(10));
        store
            .write(&key(1), b"v", &PutOptions::new(Precondition::Any))
            .await
            .unwrap();
        for _ in 0..20 {
            let got = store.read(&key(1)).await.unwrap().unwrap();
            assert_eq!(&got.value[..], b"v");
        }
        assert_eq!(waiting(&store), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_each_get_their_own_deadline() {
        // Half answer in time, half not: each is judged on its own deadline.
        let store = Arc::new(slow(Duration::from_millis(300), Duration::from_millis(150)));
        let fast = Arc::new(slow(Duration::from_millis(10), Duration::from_millis(150)));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (s, f) = (store.clone(), fast.clone());
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    s.read(&key(i)).await.is_err()
                } else {
                    f.read(&key(i)).await.is_ok()
                }
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(waiting(&store), 0);
        assert_eq!(waiting(&fast), 0);
    }

    #[test]
    fn a_store_outlives_runtimes_and_each_gets_a_watcher() {
        // One handle used from one runtime after another (tests, CLIs): a watcher that died
        // with its runtime must not leave later calls without a time limit.
        let store = Arc::new(slow(Duration::from_secs(30), Duration::from_millis(100)));
        for _ in 0..3 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let s = store.clone();
            let err = rt.block_on(async move { s.read(&key(2)).await.unwrap_err() });
            assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
            drop(rt);
        }
        assert_eq!(waiting(&store), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_watcher_ends_with_the_layer() {
        let store = slow(Duration::from_millis(1), Duration::from_secs(10));
        store.read(&key(3)).await.unwrap();
        let watcher = {
            let mut shards = store.watch.lock();
            let shard = shards.values_mut().next().unwrap();
            std::mem::replace(&mut shard.watcher, tokio::spawn(async {}))
        };
        drop(store);
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the watcher ended")
            .unwrap();
    }

    #[test]
    fn an_in_process_call_needs_no_runtime() {
        let store = Timeout::new(MemoryStore::new(), Duration::from_secs(1));
        let got = futures_lite_block_on(store.read(&key(4))).unwrap();
        assert!(got.is_none());
    }

    /// Polls a future to completion on this thread, with no runtime at all.
    fn futures_lite_block_on<F: Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }
}
