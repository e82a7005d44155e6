//! Compare-and-swap across the processes of one user on this host: advisory file locks that
//! every token-store process takes around its changes to a keychain.
//!
//! No keychain has compare-and-swap, so a conditional write is read-check-write under a
//! lock. [`crate::lock`] excludes the writers of one process; this module excludes the other
//! processes with an exclusive `flock` (`LockFileEx` on Windows) on a lock file, taken after
//! the in-process lock, so that the waiters of one process queue on its mutex and at most
//! one of them polls the file. The kernel drops the lock of a process that dies, however it
//! dies, so a crashed holder never blocks anyone.
//!
//! The layout below is a protocol between every process (and every version of token-store)
//! on the host; changing a name or the hash would put old and new processes on different
//! files, so it is versioned (`v1-`):
//!
//! - `<dir>/v1-key-XX.lock`: 256 files, `XX` = FNV-1a-64 of `backend \0 service \0 key` mod
//!   256. A bounded set, so random keys (PKCE states, leases) never pile up files; two keys
//!   sharing a file only wait for each other.
//! - `<dir>/v1-index-XX.lock`: 64 files by the hash of `backend \0 service`, for the index of
//!   the keyring-core platforms. Disjoint from the key files, so a writer holding its key's
//!   file can take the index file without ever waiting for itself.
//!
//! Order (deadlock-free): in-process key mutex, key file, then in-process index mutex, index
//! file; never two key files at once. Lock files are never deleted: a process could unlink
//! one between another's `open` and `flock`, and the two would then lock different inodes.
//! A lock file some cleaner (`systemd-tmpfiles`, macOS' `/var/folders` sweep) removed
//! anyway is noticed after locking (the path no longer names the locked inode) and opened
//! again.
//!
//! Waiting polls `try_lock` with a short backoff (1 ms doubling to 20 ms) until the call's
//! deadline, so it is cancellable in async code and never outlives the store's timeout; it
//! then fails with [`Error::Unavailable`].

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use token_store_core::{Error, Result};
use tokio::sync::OwnedMutexGuard;

use crate::lock;

/// Key lock files per directory.
const KEY_SHARDS: u64 = 256;
/// Index lock files per directory.
const INDEX_SHARDS: u64 = 64;
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// The lock files of one keychain namespace (backend and service name).
#[derive(Clone)]
pub(crate) struct HostLocks {
    inner: Arc<Inner>,
}

struct Inner {
    backend: &'static str,
    /// `backend \0 service`: what the shard hash starts from.
    namespace: String,
    dir: LockDir,
}

impl std::fmt::Debug for HostLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLocks")
            .field("dir", &self.inner.dir.path)
            .finish_non_exhaustive()
    }
}

/// A held lock file, released when dropped (closing the file would release it too).
#[derive(Debug)]
pub(crate) struct HostGuard {
    file: File,
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        // Closing the descriptor right after releases the lock anyway; nothing to report.
        let _ = self.file.unlock();
    }
}

/// An in-process lock and the host lock taken after it. Fields drop in order: the host
/// lock is released before the in-process one, so a waiter of this process never finds
/// the file still locked by us.
pub(crate) struct Held {
    _host: HostGuard,
    _local: OwnedMutexGuard<()>,
}

impl HostLocks {
    /// The locks of `service` on `backend` in `dir` (or the default directory), creating
    /// and checking the directory now, so that a bad one fails the store's opening.
    pub(crate) fn open(backend: &'static str, service: &str, dir: Option<&Path>) -> Result<Self> {
        let dir = match dir {
            Some(d) => LockDir::configured(backend, d)?,
            None => LockDir::default_for(backend)?,
        };
        dir.prepare()?;
        Ok(HostLocks {
            inner: Arc::new(Inner {
                backend,
                namespace: format!("{backend}\0{service}"),
                dir,
            }),
        })
    }

    /// The lock file of `key` (an encoded storage key, or a slot name).
    pub(crate) fn key_path(&self, key: &str) -> PathBuf {
        let h = fnv1a([self.inner.namespace.as_bytes(), b"\0", key.as_bytes()]);
        self.inner
            .dir
            .path
            .join(format!("v1-key-{:02x}.lock", h % KEY_SHARDS))
    }

    /// The lock file of this namespace's index.
    pub(crate) fn index_path(&self) -> PathBuf {
        let h = fnv1a([self.inner.namespace.as_bytes()]);
        self.inner
            .dir
            .path
            .join(format!("v1-index-{:02x}.lock", h % INDEX_SHARDS))
    }

    /// Locks `key` against every other process, waiting (asynchronously) until `deadline`.
    pub(crate) async fn lock_key(&self, key: &str, deadline: Instant) -> Result<HostGuard> {
        self.acquire(&self.key_path(key), "this key", deadline)
            .await
    }

    /// The in-process lock of `key` in `local_namespace` (see [`crate::lock`]), then the host
    /// lock of `key`, waiting until `deadline`.
    pub(crate) async fn lock_both(
        &self,
        local_namespace: &str,
        key: &str,
        deadline: Instant,
    ) -> Result<Held> {
        let local = lock::lock(local_namespace, key).await;
        let host = self.lock_key(key, deadline).await?;
        Ok(Held {
            _host: host,
            _local: local,
        })
    }

    /// [`lock_both`](Self::lock_both) for code on a blocking thread.
    pub(crate) fn lock_both_blocking(
        &self,
        local_namespace: &str,
        key: &str,
        deadline: Instant,
    ) -> Result<Held> {
        let local = lock::lock_blocking(local_namespace, key);
        let host = self.lock_key_blocking(key, deadline)?;
        Ok(Held {
            _host: host,
            _local: local,
        })
    }

    /// The in-process lock of the index `local_key` in `local_namespace`, then the host lock
    /// of this namespace's index, on a blocking thread.
    pub(crate) fn lock_index_both_blocking(
        &self,
        local_namespace: &str,
        local_key: &str,
        deadline: Instant,
    ) -> Result<Held> {
        let local = lock::lock_blocking(local_namespace, local_key);
        let host = self.lock_index_blocking(deadline)?;
        Ok(Held {
            _host: host,
            _local: local,
        })
    }

    /// [`lock_key`](Self::lock_key) for code on a blocking thread.
    pub(crate) fn lock_key_blocking(&self, key: &str, deadline: Instant) -> Result<HostGuard> {
        self.acquire_blocking(&self.key_path(key), "this key", deadline)
    }

    /// Locks the index, on a blocking thread.
    pub(crate) fn lock_index_blocking(&self, deadline: Instant) -> Result<HostGuard> {
        self.acquire_blocking(&self.index_path(), "the index", deadline)
    }

    async fn acquire(&self, path: &Path, what: &str, deadline: Instant) -> Result<HostGuard> {
        let mut wait = Wait::new(self, path, what, deadline)?;
        loop {
            match wait.attempt()? {
                Step::Held(guard) => return Ok(guard),
                Step::Pause(d) => tokio::time::sleep(d).await,
            }
        }
    }

    fn acquire_blocking(&self, path: &Path, what: &str, deadline: Instant) -> Result<HostGuard> {
        let mut wait = Wait::new(self, path, what, deadline)?;
        loop {
            match wait.attempt()? {
                Step::Held(guard) => return Ok(guard),
                Step::Pause(d) => std::thread::sleep(d),
            }
        }
    }

    fn open_file(&self, path: &Path) -> Result<File> {
        match open_lock_file(path) {
            Ok(f) => Ok(f),
            // The directory went away (a temp cleaner, a logout's /run/user cleanup) while
            // this process lives: make it again, checked as at opening.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.inner.dir.prepare()?;
                open_lock_file(path).map_err(|e| self.io_error("cannot open", path, e))
            }
            Err(e) => Err(self.io_error("cannot open", path, e)),
        }
    }

    fn io_error(&self, what: &str, path: &Path, e: io::Error) -> Error {
        io_error(self.inner.backend, what, path, e)
    }
}

enum Step {
    Held(HostGuard),
    Pause(Duration),
}

/// One wait for one lock file: the polling state shared by the async and blocking paths.
struct Wait<'a> {
    locks: &'a HostLocks,
    path: &'a Path,
    what: &'a str,
    deadline: Instant,
    started: Instant,
    pause: Duration,
    /// The file being waited for; taken when locked.
    file: Option<File>,
}

impl<'a> Wait<'a> {
    fn new(locks: &'a HostLocks, path: &'a Path, what: &'a str, deadline: Instant) -> Result<Self> {
        Ok(Wait {
            file: Some(locks.open_file(path)?),
            locks,
            path,
            what,
            deadline,
            started: Instant::now(),
            pause: FIRST_PAUSE,
        })
    }

    /// Tries once: the lock, or how long to pause before the next try, or the error that
    /// the deadline passed.
    fn attempt(&mut self) -> Result<Step> {
        let file = match self.file.take() {
            Some(f) => f,
            None => self.locks.open_file(self.path)?,
        };
        match file.try_lock() {
            Ok(()) => {
                let guard = HostGuard { file };
                if still_linked(&guard.file, self.path)
                    .map_err(|e| self.locks.io_error("cannot check", self.path, e))?
                {
                    return Ok(Step::Held(guard));
                }
                // Locked a file that was unlinked meanwhile and that nobody else will ever
                // look at: start over on the one the path names now, at once.
                return Ok(Step::Pause(Duration::ZERO));
            }
            Err(TryLockError::WouldBlock) => self.file = Some(file),
            Err(TryLockError::Error(e)) => {
                return Err(self.locks.io_error("cannot lock", self.path, e));
            }
        }
        let now = Instant::now();
        if now >= self.deadline {
            return Err(Error::unavailable(
                self.locks.inner.backend,
                format!(
                    "another process holds the keychain lock for {} ({}); gave up after {:?}",
                    self.what,
                    self.path.display(),
                    now.duration_since(self.started)
                ),
                None,
            ));
        }
        let pause = self.pause.min(self.deadline - now);
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Ok(Step::Pause(pause))
    }
}

/// Where the lock files live, and which of its directories token-store owns (creates and
/// checks) rather than the system (`/tmp`, `$XDG_RUNTIME_DIR`).
#[derive(Debug)]
struct LockDir {
    backend: &'static str,
    path: PathBuf,
    /// The first directory of `path` that is ours; every one from it down is checked.
    owned_from: PathBuf,
}

impl LockDir {
    fn configured(backend: &'static str, dir: &Path) -> Result<Self> {
        // Processes started from different directories must meet on the same files.
        if !dir.is_absolute() {
            return Err(Error::config(format!(
                "the keychain lock directory must be an absolute path, not {}",
                dir.display()
            )));
        }
        Ok(LockDir {
            backend,
            path: dir.to_owned(),
            owned_from: dir.to_owned(),
        })
    }

    /// `$XDG_RUNTIME_DIR/token-store/locks`; on Linux without it `/run/user/<uid>/...` when
    /// that exists (what the variable names under systemd, so processes started without it,
    /// e.g. from cron, still meet the others); else `<temp dir>/token-store-<uid>/locks`
    /// (the temp dir is per user on macOS and Windows, shared on Linux: hence the uid and
    /// the ownership checks).
    fn default_for(backend: &'static str) -> Result<Self> {
        #[cfg(target_os = "linux")]
        {
            let runtime = std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .or_else(|| {
                    let run = PathBuf::from(format!("/run/user/{}", euid()));
                    check_owned(backend, &run).is_ok().then_some(run)
                });
            if let Some(run) = runtime {
                let owned_from = run.join("token-store");
                return Ok(LockDir {
                    backend,
                    path: owned_from.join("locks"),
                    owned_from,
                });
            }
        }
        #[cfg(unix)]
        let owned_from = std::env::temp_dir().join(format!("token-store-{}", euid()));
        #[cfg(not(unix))]
        let owned_from = std::env::temp_dir().join("token-store");
        Ok(LockDir {
            backend,
            path: owned_from.join("locks"),
            owned_from,
        })
    }

    /// Creates what is missing (0700) and checks every directory token-store owns.
    fn prepare(&self) -> Result<()> {
        let base = self.owned_from.parent().unwrap_or(Path::new("/"));
        create_dirs(base).map_err(|e| io_error(self.backend, "cannot create", base, e))?;
        let below = self
            .path
            .strip_prefix(&self.owned_from)
            .map_err(|_| Error::config("the lock directory is not below its owned part"))?;
        let mut dir = self.owned_from.clone();
        create_one(self.backend, &dir)?;
        for part in below.components() {
            dir.push(part);
            create_one(self.backend, &dir)?;
        }
        Ok(())
    }
}

/// Makes `dir` (0700) unless it exists, then checks it.
fn create_one(backend: &'static str, dir: &Path) -> Result<()> {
    match private_dir_builder().create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(backend, "cannot create", dir, e)),
    }
    check_owned(backend, dir)
}

/// Creates `dir` and its parents if missing (new ones 0700); checks nothing, as these are
/// not token-store's.
fn create_dirs(dir: &Path) -> io::Result<()> {
    private_dir_builder().recursive(true).create(dir)
}

/// Directories created 0700 from the start (no window with wider access).
fn private_dir_builder() -> std::fs::DirBuilder {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        builder
    }
    #[cfg(not(unix))]
    {
        std::fs::DirBuilder::new()
    }
}

/// A directory fit to hold lock files: a real directory (not a symlink someone planted),
/// and on Unix owned by this process' effective user with no group or other access, since
/// anyone who can write there can take or swap the locks.
fn check_owned(backend: &'static str, dir: &Path) -> Result<()> {
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| io_error(backend, "cannot stat", dir, e))?;
    let refused = |why: String| Error::PermissionDenied {
        backend,
        message: format!(
            "refusing the keychain lock directory {}: {why}",
            dir.display()
        ),
        source: None,
    };
    if meta.file_type().is_symlink() {
        return Err(refused("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(Error::config(format!(
            "the keychain lock directory {} is not a directory",
            dir.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = euid();
        if meta.uid() != me {
            return Err(refused(format!(
                "it belongs to uid {}, not to this user (uid {me})",
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(refused(format!(
                "other users have access (mode {mode:o}; chmod 700 it)"
            )));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // A symlink in our private directory can only be a mistake or an attack: never
        // follow it to lock (or create) a file elsewhere.
        options
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    options.open(path)
}

/// Whether `path` still names the inode `file` has open.
#[cfg(unix)]
fn still_linked(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(held.dev() == now.dev() && held.ino() == now.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Windows cannot delete a file that is open without sharing deletion, and the path
/// cannot name another file while it stays open: nothing to check.
#[cfg(not(unix))]
fn still_linked(_file: &File, _path: &Path) -> io::Result<bool> {
    Ok(true)
}

fn io_error(backend: &'static str, what: &str, path: &Path, e: io::Error) -> Error {
    let message = format!(
        "{what} the keychain lock file or directory {}: {e}",
        path.display()
    );
    token_store_core::backend::fs::io_error(backend, message, e)
}

/// FNV-1a, 64 bits: stable across builds, platforms and versions, unlike std's hasher.
fn fnv1a<const N: usize>(parts: [&[u8]; N]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline_in(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    fn refused(r: Result<HostLocks>) -> String {
        match r {
            Err(e @ Error::PermissionDenied { .. }) => e.to_string(),
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
    }

    #[test]
    fn creates_private_directories_and_files_and_keeps_the_file_count_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/locks");
        let locks = HostLocks::open("t", "svc", Some(&dir)).unwrap();
        for n in 0..2000 {
            drop(
                locks
                    .lock_key_blocking(&format!("key {n}"), deadline_in(1000))
                    .unwrap(),
            );
        }
        drop(locks.lock_index_blocking(deadline_in(1000)).unwrap());
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.len() <= 257, "{} lock files", names.len());
        assert_eq!(
            names.iter().filter(|n| n.starts_with("v1-index-")).count(),
            1
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&tmp.path().join("a")), 0o700, "missing parents too");
            assert_eq!(mode(&locks.key_path("key 1")), 0o600);
        }
    }

    #[test]
    fn the_file_names_are_a_protocol() {
        // Every process on the host must map a key to the same file, whatever its version
        // or platform: pin the hash and the names.
        let tmp = tempfile::tempdir().unwrap();
        let locks =
            HostLocks::open("keyutils", "token-store", Some(&tmp.path().join("l"))).unwrap();
        let name = |p: PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(fnv1a([b"a".as_slice()]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(name(locks.key_path("k")), name(locks.key_path("k")));
        assert_ne!(name(locks.key_path("k")), name(locks.index_path()));
        let h = fnv1a([b"keyutils\0token-store".as_slice(), b"\0", b"k"]);
        assert_eq!(
            name(locks.key_path("k")),
            format!("v1-key-{:02x}.lock", h % 256)
        );
        let h = fnv1a([b"keyutils\0token-store".as_slice()]);
        assert_eq!(
            name(locks.index_path()),
            format!("v1-index-{:02x}.lock", h % 64)
        );
    }

    #[test]
    fn a_relative_directory_is_refused() {
        assert!(matches!(
            HostLocks::open("t", "svc", Some(Path::new("locks"))),
            Err(Error::Config { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let why = refused(HostLocks::open("t", "svc", Some(&link)));
        assert!(
            why.contains("symbolic link") && why.contains("link"),
            "{why}"
        );
        // Also when it is the default's owned part an attacker planted in a shared /tmp.
        let planted = LockDir {
            backend: "t",
            path: link.join("locks"),
            owned_from: link.clone(),
        };
        assert!(matches!(
            planted.prepare(),
            Err(Error::PermissionDenied { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o755, 0o750, 0o701, 0o770] {
            let dir = tmp.path().join(format!("m{mode:o}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let why = refused(HostLocks::open("t", "svc", Some(&dir)));
            assert!(
                why.contains("chmod 700") && why.contains(&format!("m{mode:o}")),
                "{why}"
            );
        }
        let ok = tmp.path().join("ok");
        std::fs::create_dir(&ok).unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o700)).unwrap();
        HostLocks::open("t", "svc", Some(&ok)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_of_another_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        let dir = if euid() == 0 {
            std::os::unix::fs::chown(&dir, Some(4242), None).unwrap();
            dir
        } else {
            // Not allowed to give a directory away: take one that is root's.
            PathBuf::from("/")
        };
        let why = refused(HostLocks::open("t", "svc", Some(&dir)));
        assert!(why.contains("belongs to uid"), "{why}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_lock_file_is_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("locks");
        let locks = HostLocks::open("t", "svc", Some(&dir)).unwrap();
        let target = tmp.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, locks.key_path("k")).unwrap();
        assert!(matches!(
            locks.lock_key_blocking("k", deadline_in(100)),
            Err(Error::PermissionDenied { .. })
        ));
        assert!(
            !target.exists(),
            "the lock file was created through the link"
        );
    }

    #[tokio::test]
    async fn a_held_lock_is_waited_for_until_the_deadline_then_unavailable() {
        let tmp = tempfile::tempdir().unwrap();
        let locks = HostLocks::open("t", "svc", Some(&tmp.path().join("l"))).unwrap();
        // Another open file description excludes us as another process' would.
        let other = open_lock_file(&locks.key_path("k")).unwrap();
        other.lock().unwrap();
        let started = Instant::now();
        let e = locks.lock_key("k", deadline_in(200)).await.unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("another process holds the keychain lock"),
            "{e}"
        );
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_millis(400),
            "{waited:?}"
        );
        // The same on a blocking thread, and the other keys' files are free meanwhile.
        assert!(matches!(
            locks.lock_key_blocking("k", deadline_in(50)),
            Err(Error::Unavailable { .. })
        ));
        let other_key = (0..1000)
            .map(|n| format!("o{n}"))
            .find(|k| locks.key_path(k) != locks.key_path("k"))
            .unwrap();
        drop(locks.lock_key(&other_key, deadline_in(50)).await.unwrap());
        // Released: taken at the next poll.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock_key("k", deadline_in(2000)).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        other.unlock().unwrap();
        let guard = waiter.await.unwrap().unwrap();
        // And now we exclude the other description.
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(guard);
        other.try_lock().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_file_removed_while_waiting_is_opened_again() {
        let tmp = tempfile::tempdir().unwrap();
        let locks = HostLocks::open("t", "svc", Some(&tmp.path().join("l"))).unwrap();
        let path = locks.key_path("k");
        let mut wait = Wait::new(&locks, &path, "this key", deadline_in(1000)).unwrap();
        // A cleaner removes the file we opened; another process creates and locks a new one.
        std::fs::remove_file(&path).unwrap();
        let other = open_lock_file(&path).unwrap();
        other.lock().unwrap();
        // Locking the orphaned file must not count: the next tries see the new one held.
        assert!(matches!(wait.attempt().unwrap(), Step::Pause(d) if d.is_zero()));
        assert!(matches!(wait.attempt().unwrap(), Step::Pause(d) if !d.is_zero()));
        other.unlock().unwrap();
        assert!(matches!(wait.attempt().unwrap(), Step::Held(_)));
    }

    #[test]
    fn a_removed_directory_is_made_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("l");
        let locks = HostLocks::open("t", "svc", Some(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        drop(locks.lock_key_blocking("k", deadline_in(100)).unwrap());
        assert!(locks.key_path("k").exists());
    }
}
