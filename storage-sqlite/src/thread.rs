//! The connection thread: it owns the write connection and runs every write, delete and
//! sweep, so the async runtime never blocks on an fsync or on another process's lock.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use token_store_core::{Error, Result};
use tokio::sync::oneshot;

use crate::config::SqliteConfig;
use crate::error::{BACKEND, closed};
use crate::writer::Writer;

type Job = Box<dyn FnOnce(&mut Writer) + Send>;

/// The handle to the connection thread; the thread ends when the handle is dropped.
pub(crate) struct ConnectionThread {
    jobs: mpsc::Sender<Job>,
}

impl ConnectionThread {
    /// Starts the thread and opens (creating and migrating if needed) the database on it.
    pub(crate) async fn start(config: &SqliteConfig) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let config = config.clone();
        std::thread::Builder::new()
            .name("token-store-sqlite".into())
            .spawn(move || {
                let mut writer = match Writer::open(&config) {
                    Ok(writer) => writer,
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
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut writer))).is_err() {
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
        Ok(ConnectionThread { jobs })
    }

    /// Runs `f` on the write connection. If the caller's future is dropped, the job still
    /// runs to its end (a transaction is never cut in half); only its result is dropped.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move |writer: &mut Writer| {
                let _ = tx.send(f(writer));
            }))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}
