//! File-system helpers shared by the file-based backends (encrypted file, SQLite, key files):
//! private directories and files created with their final modes (no window with wider
//! permissions), and crash-safe replacement of a file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Creates `dir` (and missing parents) as 0700, or checks an existing one: it must be a
/// directory that no other user can write to.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            Ok(()) => {}
            Err(e) => return Err(io_config(dir, "cannot create directory", e)),
        }
        // lstat: a symbolic link in place of the directory could be pointed elsewhere later.
        let meta = std::fs::symlink_metadata(dir).map_err(|e| io_config(dir, "cannot stat", e))?;
        if meta.file_type().is_symlink() {
            return Err(Error::PermissionDenied {
                backend: "filesystem",
                message: format!(
                    "{} is a symbolic link; refusing to keep tokens behind it (give the real path)",
                    dir.display()
                ),
                source: None,
            });
        }
        if !meta.is_dir() {
            return Err(Error::config(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(Error::PermissionDenied {
                backend: "filesystem",
                message: format!(
                    "{} is writable by other users (mode {:o}); refusing to keep tokens there (chmod 700 it)",
                    dir.display(),
                    mode & 0o777
                ),
                source: None,
            });
        }
        // A directory owned by someone else could be swapped under us; root included (root
        // writing into another user's directory is exactly the case to refuse).
        let uid = current_uid();
        if let Some(uid) = uid
            && meta.uid() != uid
        {
            return Err(Error::PermissionDenied {
                backend: "filesystem",
                message: format!("{} belongs to another user", dir.display()),
                source: None,
            });
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(|e| io_config(dir, "cannot create directory", e))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_refuse_symlinks_and_shared_writes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = std::env::temp_dir().join(format!("ts-fs-{}", std::process::id()));
        let real = tmp.join("real");
        create_private_dir(&real).unwrap();
        let link = tmp.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = create_private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        let shared = tmp.join("shared");
        create_private_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(create_private_dir(&shared).is_err());
        // Secret files: a 0644 key file and a symlink to a good one are refused, a FIFO
        // does not block, and the read is bounded.
        let key = real.join("key");
        std::fs::write(&key, [1u8; 32]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            read_private_file(&key, 32, "key file")
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private_file(&key, 32, "key file").unwrap().len(), 32);
        let key_link = real.join("key-link");
        std::os::unix::fs::symlink(&key, &key_link).unwrap();
        assert!(read_private_file(&key_link, 32, "key file").is_err());
        assert!(read_private_file(Path::new("/dev/zero"), 32, "key file").is_err());
        let big = real.join("big");
        std::fs::write(&big, vec![0u8; 100]).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_private_file(&big, 32, "key file").is_err());
        let fifo = real.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let started = std::time::Instant::now();
            assert!(read_private_file(&fifo, 32, "key file").is_err());
            assert!(started.elapsed() < std::time::Duration::from_secs(2));
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

#[cfg(unix)]
fn current_uid() -> Option<u32> {
    Some(rustix::process::geteuid().as_raw())
}

/// Reads a small secret file (a key file, a passphrase file) the way ssh reads a private
/// key: the path must not be a symbolic link (opened with `O_NOFOLLOW`), and the opened file
/// (checked with `fstat`, so it cannot be swapped between check and read) must be a regular
/// file owned by the effective user (root included) with no group or other permission bits,
/// and at most `max_len` bytes long (at most `max_len + 1` bytes are ever read, so
/// `/dev/zero` or a huge file costs nothing). `what` names the file in errors.
pub fn read_private_file(
    path: &Path,
    max_len: usize,
    what: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // NONBLOCK: opening a FIFO planted at the path must not hang; it is refused below.
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        options.custom_flags(flags.bits() as i32);
    }
    let file = options.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            return Error::PermissionDenied {
                backend: "filesystem",
                message: format!(
                    "{what} {} is a symbolic link; refusing to follow it",
                    path.display()
                ),
                source: None,
            };
        }
        io_config(path, &format!("cannot open {what}"), e)
    })?;
    let meta = file
        .metadata()
        .map_err(|e| io_config(path, &format!("cannot stat {what}"), e))?;
    if !meta.is_file() {
        return Err(Error::config(format!(
            "{what} {} is not a regular file",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if let Some(uid) = current_uid()
            && meta.uid() != uid
        {
            return Err(Error::PermissionDenied {
                backend: "filesystem",
                message: format!(
                    "{what} {} belongs to another user (uid {}); whoever owns it knows the key",
                    path.display(),
                    meta.uid()
                ),
                source: None,
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::PermissionDenied {
                backend: "filesystem",
                message: format!(
                    "{what} {} is accessible by other users (mode {mode:o}); run `chmod 600 {}`",
                    path.display(),
                    path.display()
                ),
                source: None,
            });
        }
    }
    if meta.len() > max_len as u64 {
        return Err(Error::config(format!(
            "{what} {} is {} bytes, more than the {max_len} expected",
            path.display(),
            meta.len()
        )));
    }
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(max_len + 1));
    file.take(max_len as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_config(path, &format!("cannot read {what}"), e))?;
    if buf.len() > max_len {
        return Err(Error::config(format!(
            "{what} {} grew past {max_len} bytes while being read",
            path.display()
        )));
    }
    Ok(buf)
}

/// Creates a new file readable and writable by the owner only (0600); fails if it exists.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Opens (creating 0600 if needed) a file for reading and writing, e.g. a lock file.
pub fn open_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Replaces `path` with `bytes` atomically and durably: a 0600 temporary file in the same
/// directory, written and fsynced, renamed over `path`, then the directory fsynced. A crash at
/// any point leaves either the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(io::Error::other)?;
    let tmp_name = format!(".tmp-{}", crate::crypto::hex(&rnd));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = create_private_file(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes `path` durably (the directory entry is fsynced). Returns whether it existed.
pub fn remove_durable(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            sync_dir(path.parent().unwrap_or_else(|| Path::new(".")))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// fsyncs a directory so that renames and removals in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn io_config(path: &Path, what: &str, e: io::Error) -> Error {
    io_error("filesystem", format!("{what} {}", path.display()), e)
}

/// The error for an I/O failure on a store's own file or directory: `PermissionDenied` when
/// the operating system refused access or found a symbolic link where none may be (`ELOOP`
/// from a no-follow open), else `Config` (a missing or unusable path is the configuration's
/// problem, not the service's). `message` says what was done to which path.
pub fn io_error(backend: &'static str, message: String, e: io::Error) -> Error {
    #[cfg(unix)]
    let looped = e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error());
    #[cfg(not(unix))]
    let looped = false;
    if e.kind() == io::ErrorKind::PermissionDenied || looped {
        Error::PermissionDenied {
            backend,
            message,
            source: Some(Box::new(e)),
        }
    } else {
        Error::Config {
            message,
            source: Some(Box::new(e)),
        }
    }
}
