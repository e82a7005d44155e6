//! The connection thread: it owns the write connection and runs every write, delete and
//! sweep, so the async runtime never blocks on an fsync or on another process's lock. It
//! also scrubs deleted values out of the WAL (see [`Scrubs`]) and, when the store is
//! dropped, scrubs once more and closes the connection while the dropping thread waits.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use token_store_core::{Error, Result};
use tokio::sync::oneshot;

use crate::config::SqliteConfig;
use crate::error::{BACKEND, closed};
use crate::writer::Writer;

type Job = Box<dyn FnOnce(&mut Writer) + Send>;

/// A scrub runs once the connection thread has had no call for this long after a delete, so
/// a burst of deletes is scrubbed once and the call right after a delete does not wait.
pub(crate) const SCRUB_IDLE: Duration = Duration::from_millis(5);

/// ... but at most once per this interval: each scrub empties the WAL file, and until it has
/// grown back to its working size every commit that extends it costs more (with
/// `synchronous=FULL` a put or delete took twice as long in a loop scrubbed every 100 ms).
pub(crate) const SCRUB_INTERVAL: Duration = Duration::from_secs(1);

/// ... and, however busy the thread, at the latest this long after the first unscrubbed
/// delete (not less than the interval, so the interval always allows it).
pub(crate) const SCRUB_MAX_DELAY: Duration = Duration::from_secs(1);

/// The first wait before trying again when other connections kept a scrub from finishing.
const SCRUB_RETRY: Duration = Duration::from_millis(50);

/// The longest wait between attempts while other connections keep the WAL pinned.
const SCRUB_RETRY_MAX: Duration = Duration::from_secs(2);

/// How long the scrub at close waits for other connections (at most the busy timeout).
const CLOSE_SCRUB_WAIT: Duration = Duration::from_secs(1);

/// The handle to the connection thread. Dropping it lets the thread finish the calls already
/// queued, scrub and close the connection, and waits for that (bounded: see [`Drop`]).
pub(crate) struct ConnectionThread {
    jobs: Option<mpsc::Sender<Job>>,
    /// Disconnected when the thread has closed the connection and is about to end (in a
    /// mutex only to be `Sync`; only the drop reads it).
    done: Mutex<mpsc::Receiver<()>>,
    handle: Option<JoinHandle<()>>,
    /// The most the drop waits: a queued call's busy timeout, then the scrub at close.
    close_wait: Duration,
}

impl ConnectionThread {
    /// Starts the thread and opens (creating and migrating if needed) the database on it.
    pub(crate) async fn start(config: &SqliteConfig) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let (done_tx, done) = mpsc::channel::<()>();
        let close_scrub_wait = config.busy_timeout.min(CLOSE_SCRUB_WAIT);
        let thread_config = config.clone();
        let handle = std::thread::Builder::new()
            .name("token-store-sqlite".into())
            .spawn(move || {
                // Dropped last, after the connection has closed.
                let _done = done_tx;
                let mut writer = match Writer::open(&thread_config) {
                    Ok(writer) => writer,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Whatever a killed process left in the WAL goes before `open` returns (or
                // soon after, if other connections keep it busy now).
                let mut scrubs = Scrubs::default();
                scrubs.run(&mut writer);
                if ready_tx.send(Ok(())).is_ok() {
                    serve(writer, scrubs, &queue, close_scrub_wait);
                }
            })
            .map_err(|e| {
                Error::backend(
                    BACKEND,
                    "cannot start the connection thread",
                    Some(Box::new(e)),
                )
            })?;
        let this = ConnectionThread {
            jobs: Some(jobs),
            done: Mutex::new(done),
            handle: Some(handle),
            close_wait: config.busy_timeout + close_scrub_wait + Duration::from_secs(1),
        };
        ready_rx.await.map_err(|_| closed())??;
        Ok(this)
    }

    /// Runs `f` on the write connection. If the caller's future is dropped, the job still
    /// runs to its end (a transaction is never cut in half); only its result is dropped.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or_else(closed)?
            .send(Box::new(move |writer: &mut Writer| {
                let _ = tx.send(f(writer));
            }))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

impl Drop for ConnectionThread {
    /// Waits until the thread has run what was queued, scrubbed the WAL and closed the
    /// connection: a process that exits right after dropping its store must not take the
    /// scrub with it (a detached thread dies mid-way at exit). Bounded by `close_wait`;
    /// normally a few milliseconds. Blocks the dropping thread, runtime worker or not, like
    /// closing a file does.
    fn drop(&mut self) {
        drop(self.jobs.take());
        let Some(handle) = self.handle.take() else {
            return;
        };
        if handle.thread().id() == std::thread::current().id() {
            return;
        }
        let done = self.done.get_mut().unwrap_or_else(PoisonError::into_inner);
        match done.recv_timeout(self.close_wait) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = handle.join();
            }
            Err(RecvTimeoutError::Timeout) => tracing::warn!(
                waited = ?self.close_wait,
                "the token-store-sqlite connection thread did not close in time; it finishes on its own"
            ),
        }
    }
}

/// The thread's loop: calls in order, scrubs when due, then the scrub at close.
fn serve(
    mut writer: Writer,
    mut scrubs: Scrubs,
    queue: &mpsc::Receiver<Job>,
    close_scrub_wait: Duration,
) {
    loop {
        let next = match scrubs.wait(Instant::now()) {
            None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(wait) => queue.recv_timeout(wait),
        };
        match next {
            Ok(job) => {
                // A panic in one call must not take the connection away from the others;
                // an open transaction is rolled back when it unwinds.
                if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut writer))).is_err() {
                    tracing::error!("a token-store-sqlite call panicked");
                }
                let now = Instant::now();
                if writer.take_deleted() {
                    scrubs.deleted(now);
                }
                if scrubs.overdue(now) {
                    scrubs.run(&mut writer);
                }
            }
            Err(RecvTimeoutError::Timeout) => scrubs.run(&mut writer),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Unconditionally: replaced values are in older page images too, and after close
    // nothing but the live records should be in the files.
    match writer.scrub(close_scrub_wait) {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            path = writer.path(),
            "other connections kept the WAL busy at close; deleted values stay in it until their next checkpoint"
        ),
        Err(e) => {
            tracing::warn!(path = writer.path(), error = %e, "the WAL could not be scrubbed at close")
        }
    }
}

/// When the connection thread next scrubs the WAL ([`Writer::scrub`]) after deletes.
///
/// A checkpoint with `TRUNCATE` costs milliseconds (it syncs the main file), so it is not run
/// inside each delete: the delete returns once committed, and the scrub follows when the
/// thread is idle ([`SCRUB_IDLE`]), no sooner than [`SCRUB_INTERVAL`] after the last one
/// and no later than [`SCRUB_MAX_DELAY`] after the first delete it covers (or after the
/// interval allows it). When other connections keep it from finishing, it is tried again
/// with backoff, never waiting on their locks (queued calls must not stall behind it).
#[derive(Default)]
struct Scrubs {
    /// The latest moment of the next scrub; `None` when nothing is left to scrub.
    due: Option<Instant>,
    /// No scrub before this ([`SCRUB_INTERVAL`] after the last one), unless retrying.
    earliest: Option<Instant>,
    /// The last attempt could not finish: wait for `due`, not for idleness.
    retrying: bool,
    /// The wait after the next unfinished attempt.
    backoff: Duration,
}

impl Scrubs {
    fn deleted(&mut self, now: Instant) {
        if !self.retrying {
            let latest = (now + SCRUB_MAX_DELAY).max(self.earliest.unwrap_or(now));
            self.due = Some(self.due.map_or(latest, |due| due.min(latest)));
        }
    }

    /// How long to wait for the next call before scrubbing; `None`: nothing to scrub.
    fn wait(&self, now: Instant) -> Option<Duration> {
        let due = self.due?;
        let at = if self.retrying {
            due
        } else {
            let idle = (now + SCRUB_IDLE).max(self.earliest.unwrap_or(now));
            due.min(idle)
        };
        Some(at.saturating_duration_since(now))
    }

    fn overdue(&self, now: Instant) -> bool {
        self.due.is_some_and(|due| due <= now)
    }

    fn run(&mut self, writer: &mut Writer) {
        match writer.scrub(Duration::ZERO) {
            Ok(true) => {
                *self = Scrubs {
                    earliest: Some(Instant::now() + SCRUB_INTERVAL),
                    ..Scrubs::default()
                }
            }
            outcome => {
                if let Err(e) = outcome {
                    tracing::debug!(path = writer.path(), error = %e, "scrubbing the WAL failed; trying again later");
                }
                let wait = self.backoff.max(SCRUB_RETRY);
                self.due = Some(Instant::now() + wait);
                self.retrying = true;
                self.backoff = (wait * 2).min(SCRUB_RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_isolated_delete_is_scrubbed_once_the_thread_is_idle() {
        let t = Instant::now();
        let mut s = Scrubs::default();
        assert_eq!(s.wait(t), None, "nothing deleted, nothing to scrub");
        s.deleted(t);
        assert_eq!(s.wait(t), Some(SCRUB_IDLE));
        // Another call 3 ms later restarts the idle wait; the deadline stays.
        s.deleted(t + 3 * MS);
        assert_eq!(s.wait(t + 3 * MS), Some(SCRUB_IDLE));
        assert_eq!(s.due, Some(t + SCRUB_MAX_DELAY));
        assert!(!s.overdue(t + 3 * MS));
    }

    #[test]
    fn scrubs_are_spaced_and_a_busy_thread_still_scrubs_in_time() {
        let t = Instant::now();
        // Just scrubbed: the next one waits for the interval, idle or not.
        let mut s = Scrubs {
            earliest: Some(t + SCRUB_INTERVAL),
            ..Scrubs::default()
        };
        s.deleted(t);
        assert_eq!(s.wait(t), Some(SCRUB_INTERVAL));
        assert_eq!(s.due, Some(t + SCRUB_MAX_DELAY));
        // Calls keep coming every millisecond: never idle, scrubbed at the deadline.
        assert!(!s.overdue(t + SCRUB_MAX_DELAY - MS));
        assert!(s.overdue(t + SCRUB_MAX_DELAY));
    }

    #[test]
    fn retries_wait_for_their_backoff_not_for_idleness() {
        let t = Instant::now();
        let mut s = Scrubs {
            due: Some(t + SCRUB_RETRY),
            retrying: true,
            backoff: 2 * SCRUB_RETRY,
            ..Scrubs::default()
        };
        assert_eq!(s.wait(t), Some(SCRUB_RETRY));
        // A delete meanwhile is covered by the retry.
        s.deleted(t);
        assert_eq!(s.due, Some(t + SCRUB_RETRY));
    }
}
