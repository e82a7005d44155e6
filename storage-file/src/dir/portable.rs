//! [`Dir`] where there are no descriptor-relative calls: by path, each file's metadata
//! checked (not followed) before it is opened. Same refusals as on Unix, without the
//! guarantee against a swap between the check and the open.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;

use token_store_core::backend::fs::{
    create_private_dir, create_private_file, open_private_file, remove_durable, sync_dir,
    write_atomic,
};
use token_store_core::{Error, Result};
use zeroize::Zeroizing;

use super::{Dir, FileId, ReadFile, io_error, not_regular, read_len, symlink_refused, too_long};

fn describe(m: &std::fs::Metadata) -> &'static str {
    if m.file_type().is_symlink() {
        "a symbolic link"
    } else if m.is_dir() {
        "a directory"
    } else {
        "of an unknown type"
    }
}

impl Dir {
    /// Opens the store directory `path`, creating it (and missing parents). `own` is for
    /// narrowing Unix modes, which do not exist here.
    pub(crate) fn open_store(path: &Path, own: fn(&str) -> bool) -> Result<Dir> {
        let _ = own;
        create_private_dir(path)?;
        Self::checked(path)
    }

    fn checked(path: &Path) -> Result<Dir> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_error("stat", path, e))?;
        if meta.file_type().is_symlink() {
            return Err(symlink_refused(path, "directory"));
        }
        if !meta.is_dir() {
            return Err(Error::config(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        Ok(Dir {
            path: path.to_owned(),
        })
    }

    /// Opens the subdirectory `name`; `None` when it does not exist.
    pub(crate) fn subdir(&self, name: &str) -> Result<Option<Dir>> {
        let path = self.path_of(name);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            _ => Self::checked(&path).map(Some),
        }
    }

    /// Creates the subdirectory `name` (or takes the existing one) and opens it.
    pub(crate) fn create_subdir(&self, name: &str) -> Result<Dir> {
        let path = self.path_of(name);
        create_private_dir(&path)?;
        Self::checked(&path)
    }

    /// Opens (creating) the lock file `name`; a link or a non-file is refused.
    pub(crate) fn lock_file(&self, name: &str) -> Result<File> {
        let path = self.path_of(name);
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && !meta.is_file()
        {
            return Err(symlink_refused(&path, "lock file"));
        }
        open_private_file(&path).map_err(|e| io_error("open", &path, e))
    }

    /// Reads the regular file `name` whole; `None` when there is none.
    pub(crate) fn read(
        &self,
        name: &str,
        max: usize,
        label: &dyn fmt::Display,
    ) -> Result<Option<ReadFile>> {
        let path = self.path_of(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.is_file() => return Err(not_regular(label, describe(&m))),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("stat", &path, e)),
        }
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("open", &path, e)),
        };
        let meta = file.metadata().map_err(|e| io_error("stat", &path, e))?;
        if !meta.is_file() {
            return Err(not_regular(label, describe(&meta)));
        }
        if meta.len() > max as u64 {
            return Err(too_long(label, meta.len()));
        }
        let bytes = read_len(&mut file, meta.len() as usize, &path)?;
        Ok(Some(ReadFile {
            file,
            id: None,
            bytes: Zeroizing::new(bytes),
        }))
    }

    /// No file identity here: callers read the file every time.
    pub(crate) fn file_id(&self, name: &str) -> io::Result<Option<FileId>> {
        std::fs::symlink_metadata(self.path_of(name)).map(|_| None)
    }

    /// Creates the new file `name` holding `bytes`, synced.
    pub(crate) fn create(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut file = create_private_file(&self.path_of(name))?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    /// Replaces `name` with `bytes` atomically and durably.
    pub(crate) fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.path_of(name), bytes)
    }

    /// Removes the file `name` durably; returns whether it existed.
    pub(crate) fn remove(&self, name: &str) -> io::Result<bool> {
        remove_durable(&self.path_of(name))
    }

    /// Removes `name` and, when it is a directory, what it holds.
    pub(crate) fn remove_tree(&self, name: &str) -> io::Result<()> {
        let path = self.path_of(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Syncs the directory where the platform can.
    pub(crate) fn sync(&self) -> io::Result<()> {
        sync_dir(&self.path)
    }

    /// The names in the directory.
    pub(crate) fn names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.path).map_err(|e| io_error("list", &self.path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &self.path, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}
