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
        let meta = std::fs::metadata(dir).map_err(|e| io_config(dir, "cannot stat", e))?;
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
        // A directory owned by someone else could be swapped under us.
        let uid = current_uid();
        if let Some(uid) = uid
            && meta.uid() != uid
            && uid != 0
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

#[cfg(unix)]
fn current_uid() -> Option<u32> {
    // The owner of a file we just created is our effective uid; no libc call needed.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
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
    if e.kind() == io::ErrorKind::PermissionDenied {
        return Error::PermissionDenied {
            backend: "filesystem",
            message: format!("{what} {}", path.display()),
            source: Some(Box::new(e)),
        };
    }
    Error::Config {
        message: format!("{what} {}", path.display()),
        source: Some(Box::new(e)),
    }
}
