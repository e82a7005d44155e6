//! [`Dir`] on Unix: descriptor-relative system calls with `O_NOFOLLOW`.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use token_store_core::backend::fs::create_private_dir;
use token_store_core::{Error, Result};
use zeroize::Zeroizing;

use super::{Dir, FileId, ReadFile, io_error, not_regular, read_len, symlink_refused, too_long};
use crate::BACKEND;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// `NONBLOCK`: opening a FIFO planted under a name must not hang; it is refused after the
/// `fstat`. It changes nothing for regular files.
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);
const PRIVATE_FILE: Mode = Mode::RUSR.union(Mode::WUSR);
/// Removing a tree deeper than this is refused: the store never nests directories.
const MAX_DEPTH: usize = 8;

impl FileId {
    fn of(st: &Stat) -> Self {
        FileId([
            i128::from(st.st_dev),
            i128::from(st.st_ino),
            i128::from(st.st_size),
            i128::from(st.st_mtime),
            i128::from(st.st_mtime_nsec),
            i128::from(st.st_ctime),
            i128::from(st.st_ctime_nsec),
        ])
    }
}

fn describe(file_type: FileType) -> &'static str {
    match file_type {
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        _ => "of an unknown type",
    }
}

/// Random name of a write in flight, `.tmp-` and 16 hex digits (the name cleanup removes).
fn temp_name() -> io::Result<String> {
    let mut rnd = [0u8; 8];
    token_store_core::backend::fill_random(&mut rnd).map_err(io::Error::other)?;
    Ok(format!(".tmp-{}", token_store_core::backend::hex(&rnd)))
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

impl Dir {
    /// Opens the store directory `path`, creating it (and missing parents) 0700.
    ///
    /// Refused: a symbolic link (the last component: links higher up the path are the
    /// user's own layout), anything but a directory, a directory of another user (root
    /// included), one that group or others can write (they could swap files in it). One that
    /// group or others can only read or enter is narrowed to 0700, with a warning, when it
    /// holds nothing but entries `own` recognises (a fresh `mkdir`, or a store whose mode was
    /// loosened: narrowing breaks nothing there); anything else there (a home directory, a
    /// shared folder) makes it refused, since narrowing would change more than the store.
    pub(crate) fn open_store(path: &Path, own: fn(&str) -> bool) -> Result<Dir> {
        create_private_dir(path)?;
        let fd = rfs::openat(rfs::CWD, path, DIR_FLAGS, Mode::empty())
            .map_err(|e| dir_open_error(path, e))?;
        let dir = Dir {
            path: path.to_owned(),
            fd,
        };
        dir.check_private(own)?;
        Ok(dir)
    }

    /// Opens the subdirectory `name` with the checks of [`Dir::open_store`]; `None` when
    /// it does not exist.
    pub(crate) fn subdir(&self, name: &str) -> Result<Option<Dir>> {
        let path = self.path_of(name);
        let fd = match rfs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(dir_open_error(&path, e)),
        };
        let dir = Dir { path, fd };
        // Everything in a subdirectory of the store is the store's.
        dir.check_private(|_| true)?;
        Ok(Some(dir))
    }

    /// Creates the subdirectory `name` 0700 (or takes the existing one) and opens it.
    pub(crate) fn create_subdir(&self, name: &str) -> Result<Dir> {
        match rfs::mkdirat(&self.fd, name, Mode::RWXU) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io_error("create", &self.path_of(name), e.into())),
        }
        self.subdir(name)?.ok_or_else(|| {
            io_error(
                "open",
                &self.path_of(name),
                io::Error::from(io::ErrorKind::NotFound),
            )
        })
    }

    fn check_private(&self, own: fn(&str) -> bool) -> Result<()> {
        let st = rfs::fstat(&self.fd).map_err(|e| io_error("stat", &self.path, e.into()))?;
        if st.st_uid != euid() {
            return Err(Error::PermissionDenied {
                backend: BACKEND,
                message: format!(
                    "{} belongs to another user (uid {})",
                    self.path.display(),
                    st.st_uid
                ),
                source: None,
            });
        }
        let mode = Mode::from_raw_mode(st.st_mode);
        let others = Mode::RWXG | Mode::RWXO;
        if mode.intersects(Mode::WGRP | Mode::WOTH) {
            return Err(Error::PermissionDenied {
                backend: BACKEND,
                message: format!(
                    "{} is writable by other users (mode {:o}); refusing to keep tokens there (chmod 700 it)",
                    self.path.display(),
                    mode.bits() & 0o777
                ),
                source: None,
            });
        }
        if mode.intersects(others) {
            if let Some(foreign) = self.names()?.into_iter().find(|n| !own(n)) {
                return Err(Error::PermissionDenied {
                    backend: BACKEND,
                    message: format!(
                        "{} is readable by other users (mode {:o}) and holds more than a token store (`{}`); give the store a directory of its own, or chmod 700 it",
                        self.path.display(),
                        mode.bits() & 0o777,
                        foreign.escape_debug()
                    ),
                    source: None,
                });
            }
            rfs::fchmod(&self.fd, mode.difference(others))
                .map_err(|e| io_error("chmod", &self.path, e.into()))?;
            tracing::warn!(
                dir = %self.path.display(),
                mode = format!("{:o}", mode.bits() & 0o777),
                "the token store directory was readable by other users; made it 0700"
            );
        }
        Ok(())
    }

    /// Opens (creating 0600) the lock file `name`. A symbolic link, anything but a regular
    /// file, or a file of another user is refused: locking it would create or touch a file
    /// elsewhere.
    pub(crate) fn lock_file(&self, name: &str) -> Result<File> {
        let path = self.path_of(name);
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rfs::openat(&self.fd, name, flags, PRIVATE_FILE).map_err(|e| match e {
            Errno::LOOP => symlink_refused(&path, "lock file"),
            e => io_error("open", &path, e.into()),
        })?;
        let st = rfs::fstat(&fd).map_err(|e| io_error("stat", &path, e.into()))?;
        let file_type = FileType::from_raw_mode(st.st_mode);
        if file_type != FileType::RegularFile || st.st_uid != euid() {
            return Err(Error::PermissionDenied {
                backend: BACKEND,
                message: format!(
                    "lock file {} is {}; refusing to lock it",
                    path.display(),
                    if file_type == FileType::RegularFile {
                        "another user's file"
                    } else {
                        describe(file_type)
                    }
                ),
                source: None,
            });
        }
        Ok(File::from(fd))
    }

    /// Reads the regular file `name` whole; `None` when there is none. A symbolic link, a
    /// FIFO, a socket, a device or a directory under that name, or a file longer than `max`
    /// bytes, is [`Error::Corrupt`] for `label`, without reading it.
    pub(crate) fn read(
        &self,
        name: &str,
        max: usize,
        label: &dyn fmt::Display,
    ) -> Result<Option<ReadFile>> {
        let path = self.path_of(name);
        let fd = match rfs::openat(&self.fd, name, READ_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(not_regular(label, "a symbolic link")),
            // What opening a socket gives.
            Err(Errno::NXIO) => return Err(not_regular(label, "a socket")),
            Err(e) => return Err(io_error("open", &path, e.into())),
        };
        let st = rfs::fstat(&fd).map_err(|e| io_error("stat", &path, e.into()))?;
        let file_type = FileType::from_raw_mode(st.st_mode);
        if file_type != FileType::RegularFile {
            return Err(not_regular(label, describe(file_type)));
        }
        let len = u64::try_from(st.st_size).unwrap_or(u64::MAX);
        if len > max as u64 {
            return Err(too_long(label, len));
        }
        let mut file = File::from(fd);
        // `len <= max`, a usize.
        let bytes = read_len(&mut file, len as usize, &path)?;
        Ok(Some(ReadFile {
            file,
            id: Some(FileId::of(&st)),
            bytes: Zeroizing::new(bytes),
        }))
    }

    /// What identifies the file `name` now, without following a link or opening it.
    pub(crate) fn file_id(&self, name: &str) -> io::Result<Option<FileId>> {
        let st = rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(Some(FileId::of(&st)))
    }

    /// Creates the new file `name` (0600) holding `bytes`, fsynced (the directory is not:
    /// see [`Dir::sync`]). Fails if `name` exists, as a link too.
    pub(crate) fn create(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut file = File::from(rfs::openat(&self.fd, name, flags, PRIVATE_FILE)?);
        file.write_all(bytes)?;
        file.sync_all()
    }

    /// Replaces `name` with `bytes` atomically and durably: a new temporary file, fsynced,
    /// renamed over `name` (a link there is replaced, never followed), then the directory
    /// fsynced. A crash leaves the old or the new content.
    pub(crate) fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = temp_name()?;
        let result = self.create(&tmp, bytes).and_then(|()| {
            rfs::renameat(&self.fd, &tmp, &self.fd, name)?;
            self.sync()
        });
        if result.is_err() {
            let _ = rfs::unlinkat(&self.fd, &tmp, AtFlags::empty());
        }
        result
    }

    /// Removes the file `name` durably; returns whether it existed.
    pub(crate) fn remove(&self, name: &str) -> io::Result<bool> {
        match rfs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => {
                self.sync()?;
                Ok(true)
            }
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `name` and, when it is a directory, what it holds (not durably: callers
    /// sync this directory when done). A link is removed, never followed.
    pub(crate) fn remove_tree(&self, name: &str) -> io::Result<()> {
        remove_tree_at(self.fd.as_fd(), name, 0)
    }

    /// fsyncs the directory, so that entries created, renamed or removed in it persist.
    pub(crate) fn sync(&self) -> io::Result<()> {
        Ok(rfs::fsync(&self.fd)?)
    }

    /// The names in the directory (`.` and `..` left out); a name that is not UTF-8 is
    /// given lossily, so it can never be taken for a record's name.
    pub(crate) fn names(&self) -> Result<Vec<String>> {
        let list = |e: Errno| io_error("list", &self.path, e.into());
        let mut names = Vec::new();
        for entry in rfs::Dir::read_from(&self.fd).map_err(list)? {
            let entry = entry.map_err(list)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        Ok(names)
    }
}

fn remove_tree_at<P: rustix::path::Arg + Copy>(
    parent: BorrowedFd<'_>,
    name: P,
    depth: usize,
) -> io::Result<()> {
    let fd: OwnedFd = match rfs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        // A file or a link, not a directory.
        Err(Errno::LOOP | Errno::NOTDIR) => {
            return Ok(rfs::unlinkat(parent, name, AtFlags::empty())?);
        }
        Err(e) => return Err(e.into()),
    };
    // Names first, then removals: a directory changed while it is being read may list
    // some entries twice or not at all.
    let mut children = Vec::new();
    for entry in rfs::Dir::read_from(&fd)? {
        let entry = entry?;
        let child = entry.file_name();
        if child != c"." && child != c".." {
            children.push(child.to_owned());
        }
    }
    for child in &children {
        match rfs::unlinkat(&fd, child.as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR | Errno::PERM) if depth < MAX_DEPTH => {
                remove_tree_at(fd.as_fd(), child.as_c_str(), depth + 1)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

/// Why a directory could not be opened: a link or a file where it should be is refused by
/// name.
fn dir_open_error(path: &Path, e: Errno) -> Error {
    match e {
        Errno::LOOP | Errno::NOTDIR => match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => symlink_refused(path, "directory"),
            _ => Error::config(format!("{} is not a directory", path.display())),
        },
        e => io_error("open", path, e.into()),
    }
}
