//! The store's directories, used through open handles: every file is opened, created,
//! renamed and removed relative to its directory's descriptor (never by resolving a path
//! again), never through a symbolic link, and read only when it is a regular file.
//!
//! So nobody who can plant entries in (or above) the store directory can make the store
//! follow a link to a file elsewhere (create, lock or read it, as root too), nor hang it on a
//! FIFO or a device, nor read a file of unbounded length.
//!
//! On Unix this uses `openat` and friends with `O_NOFOLLOW` (through `rustix`); elsewhere
//! (`portable`) paths, with the same checks made by metadata first.

#[cfg(not(unix))]
mod portable;
#[cfg(unix)]
mod unix;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use token_store_core::Error;
use zeroize::Zeroizing;

use crate::BACKEND;

/// An open directory of the store (the store directory or a record directory).
pub(crate) struct Dir {
    /// For messages only: operations go through `fd`.
    path: PathBuf,
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
}

impl fmt::Debug for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Dir").field(&self.path).finish()
    }
}

impl Dir {
    /// The directory's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory, for messages.
    pub(crate) fn path_of(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// A file read whole, still open.
pub(crate) struct ReadFile {
    /// Kept by callers that must pin the file's inode (see `header::HeaderCache`).
    pub file: File,
    /// What identifies the file, taken before reading it.
    pub id: Option<FileId>,
    pub bytes: Zeroizing<Vec<u8>>,
}

/// What tells one file from another without reading it: device, inode, size and times.
/// A file replaced by rename changes inode; one edited in place changes size or times.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId([i128; 7]);

/// Reads up to `len` bytes: files are replaced, never grown in place, so this skips the
/// read that `read_to_end` would make to find the end. One that shrank meanwhile reads
/// short, which decoding then rejects.
fn read_len(file: &mut File, len: usize, path: &Path) -> token_store_core::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
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
    Ok(bytes)
}

/// A file that is not a regular file where one is expected: damage local to that name.
fn not_regular(label: &dyn fmt::Display, what: &str) -> Error {
    Error::Corrupt {
        backend: BACKEND,
        key: label.to_string(),
        message: format!("its file is {what}, not a regular file"),
        source: None,
    }
}

fn too_long(label: &dyn fmt::Display, len: u64) -> Error {
    Error::Corrupt {
        backend: BACKEND,
        key: label.to_string(),
        message: format!("{len} bytes: too long to be a file of this store"),
        source: None,
    }
}

fn symlink_refused(path: &Path, what: &str) -> Error {
    Error::PermissionDenied {
        backend: BACKEND,
        message: format!(
            "{what} {} is a symbolic link; refusing to follow it",
            path.display()
        ),
        source: None,
    }
}

pub(crate) fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
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
