//! One mapping from SQLite and I/O failures to the core's error enum, so every statement
//! words its errors alike and none leaks SQLite's "database is locked".

use std::path::Path;

use token_store_core::Error;

/// The backend name in errors and logs.
pub(crate) const BACKEND: &str = "sqlite";

/// The error of a call made after the connection thread has ended.
pub(crate) fn closed() -> Error {
    Error::unavailable(BACKEND, "the connection thread has stopped", None)
}

/// `map_err` as a closure, for `.map_err(at(path, "cannot ..."))`.
pub(crate) fn at<'a>(path: &'a str, what: &'a str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |e| map_err(path, what, e)
}

/// Maps a rusqlite error to the one error enum. `what` says what failed, naming the key
/// where there is one; no value ever reaches a message (values are bound parameters, and
/// SQLite's messages name tables and columns only).
pub(crate) fn map_err(path: &str, what: &str, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    let message = format!("{what} ({path})");
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "{message}: the database stayed locked by another connection for longer than the busy timeout"
            ),
            source: Some(Box::new(e)),
        },
        Some(ErrorCode::NotADatabase) => Error::Corrupt {
            backend: BACKEND,
            key: path.to_owned(),
            message: format!("{what}: the file is not an SQLite database"),
            source: Some(Box::new(e)),
        },
        Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt {
            backend: BACKEND,
            key: path.to_owned(),
            message: format!("{what}: the database file is corrupt"),
            source: Some(Box::new(e)),
        },
        Some(ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => Error::PermissionDenied {
            backend: BACKEND,
            message,
            source: Some(Box::new(e)),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::NotFound) => Error::Config {
            message: format!("{BACKEND}: {message}"),
            source: Some(Box::new(e)),
        },
        _ => Error::Backend {
            backend: BACKEND,
            message,
            source: Some(Box::new(e)),
        },
    }
}

/// An I/O error on the database file or its directory.
pub(crate) fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    token_store_core::backend::fs::io_error(BACKEND, format!("{what} {}", path.display()), e)
}
