//! [`SqliteStore`]: the async `RawStore` over one connection owned by a dedicated thread.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, SecretBytes, StorageKey, Version, check_size,
};
use tokio::sync::oneshot;

use crate::config::SqliteConfig;
use crate::db::{BACKEND, Db, KeyCols};

type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// An SQLite token store: one database file, shared safely by every process that opens it.
///
/// Every call runs on a dedicated thread that owns the connection, so the async runtime never
/// blocks on SQLite (nor on the busy timeout while another process writes). Cloning is cheap
/// and shares the connection; the thread ends and the connection closes with the last clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::Sender<Job>,
    config: SqliteConfig,
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
        Ok(SqliteStore {
            inner: Arc::new(Inner { jobs, config }),
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
        let cols = KeyCols::new(key);
        self.call(move |db| db.read(&cols)).await
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(BACKEND, key, value.len(), self.inner.config.max_value_size)?;
        let cols = KeyCols::new(key);
        let value = SecretBytes::new(value.to_vec());
        let precondition = options.precondition.clone();
        let ttl: Option<Duration> = options.ttl;
        self.call(move |db| db.write(&cols, &value, &precondition, ttl))
            .await
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        let cols = KeyCols::new(key);
        let precondition = precondition.clone();
        self.call(move |db| db.remove(&cols, &precondition)).await
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let filter = filter.clone();
        self.call(move |db| db.scan(kind, &filter)).await
    }
}
