//! [`FileStore`]: opening, locking, reads, conditional writes, scans and re-keying.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use token_store_core::crypto::{Cipher, KdfParams, KeyHeader, KeySource, fill_random, hex};
use token_store_core::fs::{
    create_private_dir, create_private_file, open_private_file, remove_durable, sync_dir,
    write_atomic,
};
use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, StorageKey, Version, check_precondition, check_size,
};
use zeroize::Zeroizing;

use crate::BACKEND;
use crate::format::{
    self, HEADER_FILE, LOCK_FILE, MAX_FILE, MAX_VALUE, RECORD_DIR_PREFIX, Record, StoreHeader,
    is_record_dir_name, is_record_file_name,
};

/// An encrypted store of one file per record in a private directory.
///
/// See the [crate docs](crate) for the layout, the guarantees and the threat model. Clones
/// share one open store (one key, one lock).
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Held open for the life of the store: `flock` excludes other open file descriptions
    /// (other processes, other handles), never this one, hence `op` below.
    lock_file: File,
    /// One locked operation at a time through `lock_file`. Its guard is moved into the
    /// blocking task, so a cancelled caller cannot release it while the task still works.
    op: Arc<tokio::sync::Mutex<()>>,
    keyed: RwLock<Arc<Keyed>>,
    /// `DIR/store.json`.
    header_path: PathBuf,
    /// The record directory `store.json` named when last read, to skip re-reading it while
    /// it is the same file (see [`Inner::is_current`]).
    header: Mutex<Option<CachedHeader>>,
    /// Argon2id parameters for a passphrase given to [`FileStore::rekey`].
    params: KdfParams,
}

/// The last `store.json` read and what identifies that file on disk.
struct CachedHeader {
    /// Held open so the file's inode stays allocated: while it is, no later `store.json`
    /// can get its inode number, so an equal [`FileId`] means this very file.
    _file: File,
    id: FileId,
    records: String,
}

/// What tells one `store.json` from another without reading it. It is only ever replaced by
/// rename (a re-key), which changes the inode; size and times also catch an edit in place.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    /// `None` where the platform gives no inode numbers: then the header is read every time.
    #[cfg(unix)]
    fn of(m: &std::fs::Metadata) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    #[cfg(not(unix))]
    fn of(_: &std::fs::Metadata) -> Option<Self> {
        None
    }
}

/// What the current key opens.
struct Keyed {
    cipher: Cipher,
    /// The record directory's name in the header (`d-...`).
    records: String,
    data_dir: PathBuf,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens the store in `dir`, creating it (directory 0700, a new key header) when it does
    /// not exist. A new store keyed by a passphrase gets [`KdfParams::DEFAULT`].
    ///
    /// Argon2id runs once here, on a blocking thread. A key that does not open an existing
    /// store is [`Error::WrongKey`]; a directory other users can write is refused.
    pub async fn open(dir: impl Into<PathBuf>, key: KeySource) -> Result<Self> {
        Self::open_unchecked(dir.into(), key, KdfParams::DEFAULT).await
    }

    /// Like [`FileStore::open`], with the Argon2id parameters a new store (or a passphrase
    /// given to [`FileStore::rekey`]) gets. Parameters below [`KdfParams::MINIMUM`] are
    /// refused. An existing store keeps the parameters recorded in its header.
    pub async fn open_with_params(
        dir: impl Into<PathBuf>,
        key: KeySource,
        params: KdfParams,
    ) -> Result<Self> {
        check_params(params)?;
        Self::open_unchecked(dir.into(), key, params).await
    }

    /// Like [`FileStore::open_with_params`] without the floor on the parameters, so tests
    /// run fast. Only built with the `insecure-test-kdf` feature.
    #[cfg(feature = "insecure-test-kdf")]
    pub async fn open_insecure_for_tests(
        dir: impl Into<PathBuf>,
        key: KeySource,
        params: KdfParams,
    ) -> Result<Self> {
        Self::open_unchecked(dir.into(), key, params).await
    }

    async fn open_unchecked(dir: PathBuf, key: KeySource, params: KdfParams) -> Result<Self> {
        let inner = blocking(move || Inner::open(dir, &key, params)).await?;
        Ok(FileStore {
            inner: Arc::new(inner),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How the store's key is derived, as recorded in `store.json` now (KDF, Argon2id
    /// parameters, salt, key check): nothing secret.
    pub async fn key_header(&self) -> Result<KeyHeader> {
        let dir = self.inner.dir.clone();
        let header = blocking(move || read_header(&dir)?.ok_or_else(missing_header)).await?;
        Ok(header.key)
    }

    /// Re-encrypts every record under `new_key` and makes it the store's key; returns how
    /// many records were re-encrypted (expired ones are dropped).
    ///
    /// Crash-safe: the records are written under the new key into a new record directory,
    /// and one atomic replacement of `store.json` switches key and directory together. A
    /// crash before it leaves the store as it was (old key), after it the new store (new
    /// key); either way nothing is lost, and the next open removes the leftover directory.
    /// Writers in every process wait during the re-key. Other open handles (this process
    /// or others) fail with [`Error::WrongKey`] afterwards and must be reopened.
    ///
    /// An unreadable record (corrupt, tampered) or a foreign file among the records stops
    /// the re-key before anything changes: delete it first (it would be lost otherwise).
    pub async fn rekey(&self, new_key: KeySource) -> Result<usize> {
        let params = self.inner.params;
        let (key_header, cipher) = blocking(move || KeyHeader::create(&new_key, params)).await?;
        self.locked(move |inner, keyed| inner.rekey(keyed, key_header, cipher))
            .await
    }

    /// Runs `f` holding the in-process mutex and the directory's file lock, after checking
    /// that this handle's key is still the store's key.
    async fn locked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner, &Keyed) -> Result<T> + Send + 'static,
    ) -> Result<T> {
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
    /// thread and back.
    async fn unlocked<T>(&self, f: impl Fn(&Keyed) -> Result<T>) -> Result<T> {
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
    async fn unlocked_blocking<T: Send + 'static>(
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

fn check_params(params: KdfParams) -> Result<()> {
    let min = KdfParams::MINIMUM;
    if params.m_kib < min.m_kib || params.t < min.t || params.p < 1 {
        return Err(Error::config(format!(
            "Argon2id parameters m={} KiB, t={}, p={} are below the minimum m={} KiB, t={}",
            params.m_kib, params.t, params.p, min.m_kib, min.t
        )));
    }
    Ok(())
}

impl Inner {
    fn open(dir: PathBuf, key: &KeySource, params: KdfParams) -> Result<Self> {
        create_private_dir(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file =
            open_private_file(&lock_path).map_err(|e| io_error("open", &lock_path, e))?;
        let (cipher, records) = Self::unlock_or_create(&dir, &lock_file, key, params)?;
        Ok(Inner::new(dir, lock_file, cipher, records, params))
    }

    /// Creates the store or derives its key; returns the key and the record directory.
    fn unlock_or_create(
        dir: &Path,
        lock_file: &File,
        key: &KeySource,
        params: KdfParams,
    ) -> Result<(Cipher, String)> {
        loop {
            let Some(header) = read_header(dir)? else {
                let _flock = FileLock::acquire(lock_file, dir)?;
                if read_header(dir)?.is_some() {
                    // Another process created the store meanwhile: open theirs.
                    continue;
                }
                // Records without a header are a damaged store, not an empty one: creating a
                // new store here would let cleanup() delete every record.
                if let Some(orphan) = existing_record_dir(dir)? {
                    return Err(Error::Corrupt {
                        backend: BACKEND,
                        key: HEADER_FILE.to_owned(),
                        message: format!(
                            "{HEADER_FILE} is missing but record directory {orphan} exists; \
                             restore {HEADER_FILE} from a backup (records cannot be read without it)"
                        ),
                        source: None,
                    });
                }
                let (key_header, cipher) = KeyHeader::create(key, params)?;
                let records = new_record_dir_name()?;
                let data_dir = dir.join(&records);
                create_private_dir(&data_dir)?;
                sync_dir(dir).map_err(|e| io_error("sync", dir, e))?;
                let header = StoreHeader::new(records.clone(), key_header);
                let path = dir.join(HEADER_FILE);
                write_atomic(&path, &header.to_bytes()?)
                    .map_err(|e| io_error("write", &path, e))?;
                cleanup(dir, &records);
                tracing::debug!(dir = %dir.display(), "created a file store");
                return Ok((cipher, records));
            };
            if let Some(p) = header.key.params
                && check_params(p).is_err()
            {
                tracing::warn!(
                    dir = %dir.display(),
                    "this store's Argon2id parameters are below the recommended minimum; re-key it"
                );
            }
            // Argon2id without the lock: other processes keep writing meanwhile.
            let cipher = header.key.unlock(BACKEND, key)?;
            let _flock = FileLock::acquire(lock_file, dir)?;
            match read_header(dir)? {
                Some(now) if now.records == header.records => {}
                // Re-keyed between our read and the lock: derive again from the new header.
                _ => continue,
            }
            let data_dir = dir.join(&header.records);
            match std::fs::symlink_metadata(&data_dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) | Err(_) => {
                    return Err(Error::Corrupt {
                        backend: BACKEND,
                        key: HEADER_FILE.to_owned(),
                        message: format!("its record directory {} is missing", header.records),
                        source: None,
                    });
                }
            }
            create_private_dir(&data_dir)?;
            cleanup(dir, &header.records);
            return Ok((cipher, header.records));
        }
    }

    fn new(
        dir: PathBuf,
        lock_file: File,
        cipher: Cipher,
        records: String,
        params: KdfParams,
    ) -> Self {
        let keyed = Keyed {
            cipher,
            data_dir: dir.join(&records),
            records,
        };
        Inner {
            header_path: dir.join(HEADER_FILE),
            dir,
            lock_file,
            op: Arc::new(tokio::sync::Mutex::new(())),
            keyed: RwLock::new(Arc::new(keyed)),
            header: Mutex::new(None),
            params,
        }
    }

    /// One attempt of a lock-free read: `f`'s result, or `None` when a re-key replaced the
    /// key it used.
    fn try_unlocked<T>(&self, f: impl FnOnce(&Keyed) -> Result<T>) -> Result<Option<Result<T>>> {
        let keyed = self.keyed();
        let result = f(&keyed);
        // Checked after the read: the key in use then was current before.
        Ok(self.is_current(&keyed)?.then_some(result))
    }

    fn keyed(&self) -> Arc<Keyed> {
        self.keyed
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether `keyed` is still the store's key (no re-key replaced it).
    ///
    /// One `stat` of `store.json` when it is the file read last time; a changed file is
    /// read and parsed again. A missing or unreadable header is an error, as when it was
    /// read every time.
    fn is_current(&self, keyed: &Keyed) -> Result<bool> {
        let path = &self.header_path;
        let id = match std::fs::metadata(path) {
            Ok(m) => FileId::of(&m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing_header()),
            Err(e) => return Err(io_error("stat", path, e)),
        };
        if let Some(id) = id
            && let Some(cached) = self.cached_header().as_ref()
            && cached.id == id
        {
            return Ok(cached.records == keyed.records);
        }
        let Some(OpenedFile { file, meta, bytes }) = open_file(path)? else {
            return Err(missing_header());
        };
        let header = StoreHeader::parse(&bytes)?;
        let current = header.records == keyed.records;
        // The identity of the file read, taken before reading it (not the path's above,
        // which may be an older file): a change since makes the next check read it again.
        *self.cached_header() = FileId::of(&meta).map(|id| CachedHeader {
            _file: file,
            id,
            records: header.records,
        });
        Ok(current)
    }

    fn cached_header(&self) -> std::sync::MutexGuard<'_, Option<CachedHeader>> {
        self.header
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn rekey(&self, old: &Keyed, key_header: KeyHeader, cipher: Cipher) -> Result<usize> {
        let records = new_record_dir_name()?;
        let new_dir = self.dir.join(&records);
        create_private_dir(&new_dir)?;
        let copied = copy_reencrypted(old, &cipher, &new_dir);
        let count = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&new_dir);
                return Err(e);
            }
        };
        // The commit point: one rename switches key and record directory together.
        let header = StoreHeader::new(records.clone(), key_header);
        let path = self.dir.join(HEADER_FILE);
        if let Err(e) = write_atomic(&path, &header.to_bytes()?) {
            // The rename may have happened before the failure (a failed directory fsync):
            // then the new directory is the store and must stay.
            let committed = read_header(&self.dir)
                .ok()
                .flatten()
                .is_some_and(|h| h.records == records);
            if !committed {
                let _ = std::fs::remove_dir_all(&new_dir);
                return Err(io_error("write", &path, e));
            }
            tracing::warn!(dir = %self.dir.display(), error = %e, "re-key committed, but syncing the directory failed");
        }
        *self
            .keyed
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(Keyed {
            cipher,
            data_dir: new_dir,
            records: records.clone(),
        });
        cleanup(&self.dir, &records);
        tracing::info!(dir = %self.dir.display(), records = count, "re-keyed the file store");
        Ok(count)
    }
}

/// Writes every live record of `old` into `new_dir`, sealed with `cipher`; durable on return.
fn copy_reencrypted(old: &Keyed, cipher: &Cipher, new_dir: &Path) -> Result<usize> {
    let now = format::now_ms();
    let mut count = 0;
    for name in list_dir(&old.data_dir)? {
        if name.starts_with('.') {
            continue;
        }
        if !is_record_file_name(&name) {
            return Err(Error::Corrupt {
                backend: BACKEND,
                key: name,
                message: "a foreign file is among the records; move it away before re-keying"
                    .into(),
                source: None,
            });
        }
        let path = old.data_dir.join(&name);
        let Some(bytes) = read_file(&path)? else {
            continue;
        };
        let record = open_named(&old.cipher, &name, &bytes)?;
        if record.expired(now) {
            continue;
        }
        let new_name = cipher.keyed_name(record.key.encode().as_bytes());
        let sealed = format::seal(
            cipher,
            &new_name,
            &record.key,
            &record.version,
            record.expires_ms,
            &record.value,
        )?;
        let new_path = new_dir.join(&new_name);
        (|| {
            let mut file = create_private_file(&new_path)?;
            file.write_all(&sealed)?;
            file.sync_all()
        })()
        .map_err(|e| io_error("write", &new_path, e))?;
        count += 1;
    }
    sync_dir(new_dir).map_err(|e| io_error("sync", new_dir, e))?;
    Ok(count)
}

/// The name of a record directory in `dir`, if there is one.
fn existing_record_dir(dir: &Path) -> Result<Option<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        if let Some(name) = entry.file_name().to_str()
            && name.starts_with(RECORD_DIR_PREFIX)
            && is_record_dir_name(name)
        {
            return Ok(Some(name.to_owned()));
        }
    }
    Ok(None)
}

/// Removes what a crash can leave behind: record directories other than `current` (a re-key
/// that did not commit, or the old directory of one that did) and temporary files. Called
/// with the lock held, so no writer's temporary file is removed under it.
fn cleanup(dir: &Path, current: &str) {
    let result = (|| -> io::Result<()> {
        let mut changed = false;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = entry.path();
            if name.starts_with(RECORD_DIR_PREFIX) && is_record_dir_name(&name) && name != current {
                std::fs::remove_dir_all(&path)?;
                changed = true;
            } else if name.starts_with(".tmp-") {
                std::fs::remove_file(&path)?;
                changed = true;
            }
        }
        if changed {
            sync_dir(dir)?;
        }
        let data_dir = dir.join(current);
        let mut changed = false;
        for entry in std::fs::read_dir(&data_dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(".tmp-"))
            {
                std::fs::remove_file(entry.path())?;
                changed = true;
            }
        }
        if changed {
            sync_dir(&data_dir)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        // Leftovers are garbage, not data: failing to remove them must not fail the store.
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove leftover files");
    }
}

fn new_record_dir_name() -> Result<String> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    Ok(format!("{RECORD_DIR_PREFIX}{}", hex(&bytes)))
}

fn read_header(dir: &Path) -> Result<Option<StoreHeader>> {
    let path = dir.join(HEADER_FILE);
    match read_file(&path)? {
        Some(bytes) => StoreHeader::parse(&bytes).map(Some),
        None => Ok(None),
    }
}

fn missing_header() -> Error {
    Error::Corrupt {
        backend: BACKEND,
        key: HEADER_FILE.to_owned(),
        message: "the store header was removed".into(),
        source: None,
    }
}

/// Reads a whole file, `None` when it does not exist. Files longer than any record are
/// refused unread.
fn read_file(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>> {
    Ok(open_file(path)?.map(|opened| opened.bytes))
}

/// A file read whole, still open.
struct OpenedFile {
    file: File,
    /// Taken before reading.
    meta: std::fs::Metadata,
    bytes: Zeroizing<Vec<u8>>,
}

/// Like [`read_file`], also returning the open file and its metadata.
fn open_file(path: &Path) -> Result<Option<OpenedFile>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", path, e)),
    };
    let meta = file.metadata().map_err(|e| io_error("stat", path, e))?;
    let len = meta.len();
    if len > MAX_FILE as u64 {
        return Err(Error::Corrupt {
            backend: BACKEND,
            key: file_label(path),
            message: format!("{len} bytes: too long to be a record"),
            source: None,
        });
    }
    // Up to the length just read: files are replaced, never grown in place, so this skips
    // the read that `read_to_end` would make to find the end. One that shrank meanwhile
    // reads short, which decrypting then rejects.
    let mut bytes = Zeroizing::new(vec![0u8; len as usize]);
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("read", path, e)),
        }
    }
    bytes.truncate(filled);
    Ok(Some(OpenedFile { file, meta, bytes }))
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error("list", dir, e))? {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Opens the record file `name` found by listing: its embedded key must be the one its
/// name stands for.
fn open_named(cipher: &Cipher, name: &str, bytes: &[u8]) -> Result<Record> {
    let record = format::open(cipher, name, bytes, &name)?;
    if cipher.keyed_name(record.key.encode().as_bytes()) != name {
        return Err(Error::Integrity {
            backend: BACKEND,
            key: name.to_owned(),
            message: "the record's key does not match its file name".into(),
        });
    }
    Ok(record)
}

/// The file name of `key`'s record.
fn record_name(keyed: &Keyed, key: &StorageKey) -> String {
    keyed.cipher.keyed_name(key.encode().as_bytes())
}

/// Reads the record of `key` from its file `name` (expired or not); `Ok(None)` when there
/// is no file.
fn read_record(keyed: &Keyed, key: &StorageKey, name: &str) -> Result<Option<Record>> {
    let Some(bytes) = read_file(&keyed.data_dir.join(name))? else {
        return Ok(None);
    };
    let record = format::open(&keyed.cipher, name, &bytes, key)?;
    if record.key != *key {
        return Err(Error::Integrity {
            backend: BACKEND,
            key: key.to_string(),
            message: "the file holds another key's record".into(),
        });
    }
    Ok(Some(record))
}

/// What a key's file holds, for a locked operation.
enum Current {
    /// No file.
    Absent,
    /// A record whose TTL has passed: absent, but its file is still there.
    Expired,
    /// A corrupt or tampered file (only for unconditional operations, see `current_for`).
    Unreadable,
    /// A live record.
    Live(Record),
}

impl Current {
    fn version(&self) -> Option<&Version> {
        match self {
            Current::Live(r) => Some(&r.version),
            _ => None,
        }
    }
}

/// The current record for a locked operation. An unreadable record fails a conditional
/// operation (its version is unknown) but not an unconditional one, which replaces or removes
/// it: that is how a damaged record is cleared.
fn current_for(
    keyed: &Keyed,
    key: &StorageKey,
    name: &str,
    precondition: &Precondition,
) -> Result<Current> {
    match read_record(keyed, key, name) {
        Ok(Some(r)) if r.expired(format::now_ms()) => Ok(Current::Expired),
        Ok(Some(r)) => Ok(Current::Live(r)),
        Ok(None) => Ok(Current::Absent),
        Err(Error::Corrupt { .. } | Error::Integrity { .. })
            if *precondition == Precondition::Any =>
        {
            Ok(Current::Unreadable)
        }
        Err(e) => Err(e),
    }
}

fn write_locked(
    keyed: &Keyed,
    key: &StorageKey,
    value: &[u8],
    options: &PutOptions,
) -> Result<Version> {
    let name = record_name(keyed, key);
    // An unconditional put replaces whatever is there (even an unreadable file) without
    // looking at it.
    if options.precondition != Precondition::Any {
        let current = current_for(keyed, key, &name, &options.precondition)?;
        check_precondition(BACKEND, key, &options.precondition, current.version())?;
    }
    let version = Version::random()?;
    let file = format::seal(
        &keyed.cipher,
        &name,
        key,
        &version,
        format::expiry_ms(options.ttl),
        value,
    )?;
    let path = keyed.data_dir.join(&name);
    write_atomic(&path, &file).map_err(|e| io_error("write", &path, e))?;
    Ok(version)
}

fn remove_locked(keyed: &Keyed, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
    let name = record_name(keyed, key);
    let current = current_for(keyed, key, &name, precondition)?;
    check_precondition(BACKEND, key, precondition, current.version())?;
    if matches!(current, Current::Absent) {
        return Ok(false);
    }
    let path = keyed.data_dir.join(&name);
    remove_durable(&path).map_err(|e| io_error("remove", &path, e))?;
    Ok(!matches!(current, Current::Expired))
}

struct Scanned {
    entries: Vec<ListEntry>,
    expired: Vec<(String, Version)>,
}

fn scan_dir(keyed: &Keyed, kind: KeyKind, filter: &ListFilter) -> Result<Scanned> {
    let now = format::now_ms();
    let mut scanned = Scanned {
        entries: Vec::new(),
        expired: Vec::new(),
    };
    for name in list_dir(&keyed.data_dir)? {
        // Temporary files of writers in flight (or of a crash, removed at the next open).
        if name.starts_with('.') {
            continue;
        }
        if !is_record_file_name(&name) {
            scanned.entries.push(ListEntry::Unreadable {
                location: name,
                reason: "not a record file of this store".into(),
            });
            continue;
        }
        let path = keyed.data_dir.join(&name);
        let record = match read_file(&path) {
            Ok(Some(bytes)) => open_named(&keyed.cipher, &name, &bytes),
            // Deleted since the listing.
            Ok(None) => continue,
            Err(e) => Err(e),
        };
        match record {
            Ok(r) if r.expired(now) => scanned.expired.push((name, r.version)),
            Ok(r) => {
                if r.key.kind() == kind && filter.matches(&r.key) {
                    scanned.entries.push(ListEntry::Key(r.key));
                }
            }
            Err(e) => scanned.entries.push(ListEntry::Unreadable {
                location: name,
                reason: e.to_string(),
            }),
        }
    }
    Ok(scanned)
}

/// Removes the records found expired by a scan, unless they were rewritten since.
fn sweep_locked(keyed: &Keyed, expired: &[(String, Version)]) -> Result<()> {
    let now = format::now_ms();
    for (name, version) in expired {
        let path = keyed.data_dir.join(name);
        let Some(bytes) = read_file(&path)? else {
            continue;
        };
        if let Ok(r) = open_named(&keyed.cipher, name, &bytes)
            && r.version == *version
            && r.expired(now)
        {
            remove_durable(&path).map_err(|e| io_error("remove", &path, e))?;
        }
    }
    Ok(())
}

#[async_trait]
impl RawStore for FileStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn raw_capabilities(&self) -> Capabilities {
        Capabilities::new(MAX_VALUE)
            .with_atomic_cas()
            .with_ttl()
            .with_encryption_at_rest()
            .with_sharing_across_processes()
            .with_persistence(true)
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        key.validate()?;
        let record = self
            .unlocked(|keyed| read_record(keyed, key, &record_name(keyed, key)))
            .await?;
        Ok(record
            .filter(|r| !r.expired(format::now_ms()))
            .map(|r| RawRecord {
                expires_at: r.expires_at(),
                value: r.value,
                version: r.version,
            }))
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(BACKEND, key, value.len(), MAX_VALUE)?;
        let key = key.clone();
        let value = Zeroizing::new(value.to_vec());
        let options = options.clone();
        self.locked(move |_, keyed| write_locked(keyed, &key, &value, &options))
            .await
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        let key = key.clone();
        let precondition = precondition.clone();
        self.locked(move |_, keyed| remove_locked(keyed, &key, &precondition))
            .await
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let filter = filter.clone();
        let scanned = self
            .unlocked_blocking(move |keyed| scan_dir(keyed, kind, &filter))
            .await?;
        if !scanned.expired.is_empty() {
            // Removing needs the lock: a writer may have replaced the record since.
            let expired = scanned.expired;
            self.locked(move |_, keyed| sweep_locked(keyed, &expired))
                .await?;
        }
        Ok(scanned.entries)
    }
}

/// An exclusive `flock` on the store's lock file, released on drop (and by the kernel if
/// the process dies, so a crashed writer never leaves the store locked).
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn acquire(file: &'a File, dir: &Path) -> Result<Self> {
        file.lock()
            .map_err(|e| io_error("lock", &dir.join(LOCK_FILE), e))?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend(BACKEND, "file task failed", Some(Box::new(e))))?
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    let message = format!("cannot {what} {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            backend: BACKEND,
            message,
            source: Some(Box::new(e)),
        },
        _ => Error::Backend {
            backend: BACKEND,
            message,
            source: Some(Box::new(e)),
        },
    }
}
