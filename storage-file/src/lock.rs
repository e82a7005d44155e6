//! Who may change the store when: an exclusive `flock` on `DIR/.lock` against other
//! processes (and other handles), an in-process mutex against this handle's own tasks
//! (`flock` does not exclude the open file description that holds it), and the check, after
//! every operation, that no re-key replaced the key it used.

use std::fs::File;
use std::sync::Arc;

use token_store_core::{Error, Result};

use crate::BACKEND;
use crate::dir::{Dir, io_error};
use crate::format::LOCK_FILE;
use crate::store::{FileStore, Inner, Keyed, blocking};

/// An exclusive `flock` on the store's lock file, released on drop (and by the kernel if
/// the process dies, so a crashed writer never leaves the store locked).
pub(crate) struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    pub(crate) fn acquire(file: &'a File, dir: &Dir) -> Result<Self> {
        file.lock()
            .map_err(|e| io_error("lock", &dir.path_of(LOCK_FILE), e))?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl FileStore {
    /// Runs `f` on the blocking pool holding the in-process mutex and the directory's file
    /// lock, after checking that this handle's key is still the store's key.
    pub(crate) async fn locked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner, &Keyed) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        // The guard is moved into the blocking task, so a cancelled caller (a timeout) cannot
        // release it while the task still works.
        let guard = self.inner.op.clone().lock_owned().await;
        let inner = self.inner.clone();
        blocking(move || {
            let _guard = guard;
            let _flock = FileLock::acquire(&inner.lock_file, &inner.dir)?;
            let keyed = inner.keyed();
            if !inner.is_current(&keyed)? {
                return Err(Error::WrongKey { backend: BACKEND });
            }
            f(&inner, &keyed)
        })
        .await
    }

    /// Runs a lock-free read `f` on the calling thread, then checks that the key it used was
    /// still the store's key (re-keying moves the records). A re-key by this handle is
    /// waited for and the read retried; one by another handle is [`Error::WrongKey`].
    ///
    /// Inline, not on the blocking pool: a read is one small file from the page cache plus
    /// a `stat` of `store.json`, a few microseconds, less than the hand-off to a blocking
    /// thread and back. Reads need no lock: records are replaced by rename, atomically.
    pub(crate) async fn unlocked<T>(&self, f: impl Fn(&Keyed) -> Result<T>) -> Result<T> {
        for attempt in 0..2 {
            match self.inner.try_unlocked(&f)? {
                Some(result) => return result,
                None if attempt == 0 => self.wait_for_rekey().await,
                None => {}
            }
        }
        Err(Error::WrongKey { backend: BACKEND })
    }

    /// Like [`FileStore::unlocked`], on the blocking pool: for `scan`, which reads every
    /// record.
    pub(crate) async fn unlocked_blocking<T: Send + 'static>(
        &self,
        f: impl Fn(&Keyed) -> Result<T> + Send + Sync + 'static,
    ) -> Result<T> {
        let f = Arc::new(f);
        for attempt in 0..2 {
            let inner = self.inner.clone();
            let f = f.clone();
            match blocking(move || inner.try_unlocked(&*f)).await? {
                Some(result) => return result,
                None if attempt == 0 => self.wait_for_rekey().await,
                None => {}
            }
        }
        Err(Error::WrongKey { backend: BACKEND })
    }

    /// Returns once no locked operation of this handle (a re-key among them) is running.
    async fn wait_for_rekey(&self) {
        drop(self.inner.op.lock().await);
    }
}

impl Inner {
    /// One attempt of a lock-free read: `f`'s result, or `None` when a re-key replaced the
    /// key it used.
    fn try_unlocked<T>(&self, f: impl FnOnce(&Keyed) -> Result<T>) -> Result<Option<Result<T>>> {
        let keyed = self.keyed();
        let result = f(&keyed);
        // Checked after the read: the key in use then was current before.
        Ok(self.is_current(&keyed)?.then_some(result))
    }
}
