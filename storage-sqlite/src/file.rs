//! The database file before SQLite opens it: created privately, refused when others can
//! reach it.

use std::path::Path;

use token_store_core::backend::fs::{create_private_dir, create_private_file, sync_dir};
use token_store_core::{Error, Result};

use crate::error::{BACKEND, io_error};

/// Creates the directory (0700) and the database file (0600) before SQLite opens it, so
/// SQLite never creates the file with the umask's mode, and `-wal`/`-shm` (which SQLite
/// creates with the database file's mode) are 0600 as well. An existing file must be a
/// regular file that only its owner can read and write.
pub(crate) fn prepare_file(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    create_private_dir(dir)?;
    match create_private_file(path) {
        Ok(file) => {
            // An empty file is a valid empty database; make its directory entry durable.
            file.sync_all()
                .and_then(|()| sync_dir(dir))
                .map_err(|e| io_error(path, "cannot create", e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(path, "cannot create", e)),
    }
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, "cannot stat", e))?;
    if !meta.is_file() {
        return Err(Error::config(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::PermissionDenied {
                backend: BACKEND,
                message: format!(
                    "{} is accessible by other users (mode {mode:o}); refusing to keep tokens in it (chmod 600 it)",
                    path.display()
                ),
                source: None,
            });
        }
    }
    Ok(())
}
