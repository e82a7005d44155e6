//! Maps `redis` errors onto the one token-store error enum.

use redis::{ErrorKind, RedisError, ServerErrorKind};
use token_store_core::{Error, StorageKey};

/// The backend name in errors and logs.
pub(crate) const BACKEND: &str = "redis";

/// Down, timed out, failing over, loading or resharding: worth a retry (`Unavailable`).
/// Refused by ACL: `PermissionDenied`. A foreign value type at our key: `Corrupt`.
pub(crate) fn map_err(e: RedisError, key: Option<&StorageKey>) -> Error {
    let retryable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
            ) | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::NoValidReplicasFoundBySentinel
        );
    if retryable {
        return Error::unavailable(BACKEND, describe(&e, key), Some(Box::new(e)));
    }
    match e.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => {
            Error::PermissionDenied {
                backend: BACKEND,
                message: describe(&e, key),
                source: Some(Box::new(e)),
            }
        }
        _ if e.code() == Some("WRONGTYPE") => Error::Corrupt {
            backend: BACKEND,
            key: key.map(ToString::to_string).unwrap_or_default(),
            message: "the Redis key holds a non-string value (not written by a token store)"
                .to_owned(),
            source: Some(Box::new(e)),
        },
        _ if e.code() == Some("NOAUTH") || e.code() == Some("WRONGPASS") => {
            Error::PermissionDenied {
                backend: BACKEND,
                message: describe(&e, key),
                source: Some(Box::new(e)),
            }
        }
        _ => Error::backend(BACKEND, describe(&e, key), Some(Box::new(e))),
    }
}

fn describe(e: &RedisError, key: Option<&StorageKey>) -> String {
    // Redis error texts carry server messages and addresses, never values we sent.
    match key {
        Some(k) => format!("{e} (key {k})"),
        None => e.to_string(),
    }
}
