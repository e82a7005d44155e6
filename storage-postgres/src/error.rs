//! PostgreSQL and pool errors as token-store's [`Error`]: what a caller should do decides the
//! variant (retry: `Unavailable`; fix the setup: `Config`, `PermissionDenied`), and no
//! message carries a value.

use deadpool_postgres::{PoolError, TimeoutType};
use token_store_core::Error;
use tokio_postgres::error::SqlState;

pub(crate) const BACKEND: &str = "postgres";

/// Maps a client error of an operation (`what`, naming the key, never a value) on store
/// `name`.
///
/// A database error keeps only its SQLSTATE and primary message, never its `DETAIL`, and is
/// not kept as the source: the detail of a constraint violation quotes the failing row, value
/// included, and the source's `Debug` would show it.
pub(crate) fn pg(name: &str, what: &str, e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let message = format!("{name}: {what}: {} ({})", db.message(), code.code());
        return match class_of(code) {
            Class::Retry => Error::unavailable(BACKEND, message, None),
            Class::Denied => Error::PermissionDenied {
                backend: BACKEND,
                message,
                source: None,
            },
            Class::Setup => Error::config(message),
            Class::Other => Error::backend(BACKEND, message, None),
        };
    }
    let text = e.to_string();
    let message = format!("{name}: {what}: {text}");
    if tls_certificate_refused(&e) {
        // Not worth a retry: the certificate will not change by itself.
        return Error::Config {
            message,
            source: Some(Box::new(e)),
        };
    }
    // tokio-postgres tells its error kinds apart only in words.
    let transient = e.is_closed()
        || [
            "error connecting to server",
            "timeout waiting for server",
            "error communicating with the server",
            "error performing TLS handshake",
            "unexpected message from server",
            "error parsing response from server",
        ]
        .iter()
        .any(|p| text.starts_with(p));
    if transient {
        return Error::unavailable(BACKEND, message, Some(Box::new(e)));
    }
    if text.starts_with("authentication error") || text.starts_with("invalid configuration") {
        return Error::Config {
            message,
            source: Some(Box::new(e)),
        };
    }
    Error::backend(BACKEND, message, Some(Box::new(e)))
}

enum Class {
    Retry,
    Denied,
    Setup,
    Other,
}

fn class_of(code: &SqlState) -> Class {
    let c = code.code();
    if [
        // 08: connection exception; 53: out of resources (too many connections, disk full);
        // 57: operator intervention (shutdown, cancel, statement timeout); 40: serialization
        // failure, deadlock; 55P03: lock not available; 25006: read-only transaction (a
        // standby, e.g. in the middle of a failover).
        "08", "53", "57", "40",
    ]
    .iter()
    .any(|class| c.starts_with(class))
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
    {
        return Class::Retry;
    }
    if c.starts_with("28") || *code == SqlState::INSUFFICIENT_PRIVILEGE {
        return Class::Denied;
    }
    if *code == SqlState::INVALID_CATALOG_NAME
        || *code == SqlState::INVALID_SCHEMA_NAME
        || *code == SqlState::UNDEFINED_TABLE
        || *code == SqlState::UNDEFINED_COLUMN
    {
        return Class::Setup;
    }
    Class::Other
}

/// Whether the TLS handshake failed on the server's certificate (rustls wraps its error in
/// an `io::Error`; tokio-postgres in its own).
fn tls_certificate_refused(e: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        // An `io::Error`'s `source()` skips the error it wraps: look inside it by hand.
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|e| e as &(dyn std::error::Error + 'static));
        for e in [Some(s), inner].into_iter().flatten() {
            if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// Maps a failure to get a connection from the pool.
pub(crate) fn pool(name: &str, e: PoolError, size: usize) -> Error {
    match e {
        PoolError::Timeout(TimeoutType::Wait) => Error::unavailable(
            BACKEND,
            format!("{name}: all {size} connections of the pool stayed busy (pool_timeout_ms)"),
            None,
        ),
        PoolError::Timeout(TimeoutType::Create) => Error::unavailable(
            BACKEND,
            format!("{name}: connecting timed out (connect_timeout_ms)"),
            None,
        ),
        PoolError::Timeout(_) => Error::unavailable(
            BACKEND,
            format!("{name}: checking a pooled connection timed out"),
            None,
        ),
        PoolError::Backend(e) => pg(name, "cannot connect", e),
        PoolError::Closed => {
            Error::unavailable(BACKEND, format!("{name}: the pool is closed"), None)
        }
        other => Error::backend(BACKEND, format!("{name}: connection pool: {other}"), None),
    }
}
