//! [`SqliteStore`]: the async `RawStore`: writes on one connection owned by a dedicated
//! thread, reads on the caller's thread from a small pool of read-only connections.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError, mpsc};

use async_trait::async_trait;
use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, SecretBytes, StorageKey, Version, check_size,
};
use tokio::sync::oneshot;

use crate::config::SqliteConfig;
use crate::db::{self, BACKEND, Db};

type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// An SQLite token store: one database file, shared safely by every process that opens it.
///
/// Writes and deletes run on a dedicated thread that owns the write connection, so the async
/// runtime never blocks on an fsync or on the busy timeout while another process writes.
/// (Writing in place with `block_in_place` saved ~7 µs of a ~100 µs write, but tokio panics
/// there inside a `LocalSet`; a test keeps writes from one working.) Reads and listings run on the caller's thread, on one of a few read-only
/// connections (a WAL reader never waits for a writer: a read is a few microseconds of
/// B-tree lookup, less than handing it to another thread and back); when every read
/// connection is in use by other threads, the read goes to the connection thread instead of
/// waiting. Cloning is cheap and shares the connections; the thread ends and the connections
/// close with the last clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

// Field order is drop order: the read connections close before the write connection's
// thread is told to stop, so the writer is the last connection and can checkpoint and remove
// the WAL.
struct Inner {
    readers: Readers,
    jobs: mpsc::Sender<Job>,
    config: SqliteConfig,
}

/// The read-only connections, each used by one thread at a time.
struct Readers {
    slots: Box<[Mutex<Option<rusqlite::Connection>>]>,
    /// Where the next caller starts looking, so concurrent callers spread over the slots.
    next: AtomicUsize,
    path: String,
}

/// How many read connections a store keeps at most: one per thread that can read at once
/// (runtime workers), within reason. Slots are opened on first use.
fn reader_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

impl Readers {
    /// Runs `f` on a free read connection, opening it if it is the first use of its slot.
    /// `None` when every slot is in use by another thread: the caller goes elsewhere rather
    /// than block its thread behind someone else's read.
    fn try_with<T>(
        &self,
        config: &SqliteConfig,
        f: impl FnOnce(&rusqlite::Connection, &str) -> Result<T>,
    ) -> Option<Result<T>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let mut slot = match self.slots[(start + i) % n].try_lock() {
                Ok(guard) => guard,
                // A panic while reading leaves the connection usable: its statement was
                // reset when it unwound.
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            let conn = match &mut *slot {
                Some(conn) => conn,
                empty => match db::open_reader(config) {
                    Ok(conn) => empty.insert(conn),
                    Err(e) => return Some(Err(e)),
                },
            };
            return Some(f(conn, &self.path));
        }
        None
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.config.path)
            .field("busy_timeout", &self.inner.config.busy_timeout)
            .field("synchronous", &self.inner.config.synchronous)
            .finish_non_exhaustive()
    }
}

fn closed() -> Error {
    Error::unavailable(BACKEND, "the connection thread has stopped", None)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `config.path`: creates the directory 0700
    /// and the file 0600, sets WAL, the busy timeout, `synchronous` and `secure_delete`, and
    /// applies schema migrations.
    ///
    /// Errors: a file that is not an SQLite database is [`Error::Corrupt`]; a database of
    /// another application or with a newer schema is [`Error::Config`]; a file or directory
    /// open to other users is [`Error::PermissionDenied`].
    pub async fn open(config: SqliteConfig) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let thread_config = config.clone();
        std::thread::Builder::new()
            .name("token-store-sqlite".into())
            .spawn(move || {
                let mut db = match Db::open(&thread_config) {
                    Ok(db) => db,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if ready_tx.send(Ok(())).is_err() {
                    return;
                }
                while let Ok(job) = queue.recv() {
                    // A panic in one call must not take the connection away from the others;
                    // an open transaction is rolled back when it unwinds.
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut db))).is_err() {
                        tracing::error!("a token-store-sqlite call panicked");
                    }
                }
            })
            .map_err(|e| {
                Error::backend(
                    BACKEND,
                    "cannot start the connection thread",
                    Some(Box::new(e)),
                )
            })?;
        ready_rx.await.map_err(|_| closed())??;
        // One read connection now, so a database that cannot be read this way fails at open.
        let mut first = Some(db::open_reader(&config)?);
        let slots: Box<[_]> = (0..reader_slots())
            .map(|_| Mutex::new(first.take()))
            .collect();
        let readers = Readers {
            slots,
            next: AtomicUsize::new(0),
            path: config.path.display().to_string(),
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                readers,
                jobs,
                config,
            }),
        })
    }

    /// Opens the database at `path` with the default settings.
    pub async fn open_path(path: impl Into<std::path::PathBuf>) -> Result<Self> {
        Self::open(SqliteConfig::new(path)).await
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        // If the caller's future is dropped, the job still runs to its end (a transaction is
        // never cut in half); only its result is dropped.
        self.inner
            .jobs
            .send(Box::new(move |db: &mut Db| {
                let _ = tx.send(f(db));
            }))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

#[async_trait]
impl RawStore for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn raw_capabilities(&self) -> Capabilities {
        Capabilities::new(self.inner.config.max_value_size)
            .with_atomic_cas()
            .with_ttl()
            .with_sharing_across_processes()
            .with_persistence(true)
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        key.validate()?;
        let inner = &self.inner;
        if let Some(result) = inner
            .readers
            .try_with(&inner.config, |conn, path| db::read_row(conn, path, key))
        {
            return result;
        }
        let key = key.clone();
        self.call(move |db| db.read(&key)).await
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(BACKEND, key, value.len(), self.inner.config.max_value_size)?;
        let ttl = options.ttl;
        let key = key.clone();
        let value = SecretBytes::new(value.to_vec());
        let precondition = options.precondition.clone();
        self.call(move |db| db.write(&key, &value, &precondition, ttl))
            .await
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        let key = key.clone();
        let precondition = precondition.clone();
        self.call(move |db| db.remove(&key, &precondition)).await
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let inner = &self.inner;
        let Some(result) = inner.readers.try_with(&inner.config, |conn, path| {
            db::scan_rows(conn, path, kind, filter)
        }) else {
            let filter = filter.clone();
            return self.call(move |db| db.scan(kind, &filter)).await;
        };
        let (entries, expired_at) = result?;
        if let Some(now) = expired_at {
            // Deleting needs the write connection; the listing is complete either way.
            let _ = self
                .call(move |db| {
                    db.sweep_opportunistically(now);
                    Ok(())
                })
                .await;
        }
        Ok(entries)
    }
}
