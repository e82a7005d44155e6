//! The one error type of the token-store family.
//!
//! Every variant names the backend that failed and, where one is involved, the storage key
//! (never a token, secret or passphrase: keys are not secret by design, values are).

use std::fmt;

use crate::Version;

/// A boxed error from a backend's own client library, kept as the `source()` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout token-store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a token store.
///
/// Match on the variant to decide what to do: [`Error::Unavailable`] is worth a retry,
/// [`Error::Conflict`] means "re-read and try again", [`Error::Integrity`] and
/// [`Error::Corrupt`] mean the stored bytes cannot be trusted, and the rest are caller or
/// configuration mistakes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The record does not exist (only where absence is an error, e.g. a conditional delete).
    #[error("{backend}: no record at {key}")]
    NotFound {
        /// Backend name.
        backend: &'static str,
        /// The storage key.
        key: String,
    },

    /// A precondition failed: another writer got there first.
    #[error("{backend}: conflicting write at {key} (current version: {})", fmt_version(.current))]
    Conflict {
        /// Backend name.
        backend: &'static str,
        /// The storage key.
        key: String,
        /// The version now stored, `None` when the record is absent.
        current: Option<Version>,
    },

    /// The service is down, sealed, timed out or unreachable. Retrying later may succeed.
    #[error("{backend}: unavailable: {message}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// What happened, in words that contain no secret.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend refused access (HTTP 403, a locked keyring, file permissions).
    #[error("{backend}: permission denied: {message}")]
    PermissionDenied {
        /// Backend name.
        backend: &'static str,
        /// What was refused.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },

    /// The keyring or collection is locked and unlocking would need a user prompt.
    #[error("{backend}: locked: {message}")]
    Locked {
        /// Backend name.
        backend: &'static str,
        /// Which keyring or collection.
        message: String,
    },

    /// The stored bytes were tampered with, moved to another key, or cannot be decrypted.
    #[error("{backend}: integrity check failed at {key}: {message}")]
    Integrity {
        /// Backend name.
        backend: &'static str,
        /// The storage key (or file name) concerned.
        key: String,
        /// What failed.
        message: String,
    },

    /// The key or passphrase does not open this store.
    #[error("{backend}: wrong key or passphrase for this store")]
    WrongKey {
        /// Backend name.
        backend: &'static str,
    },

    /// The stored bytes are not a record of ours (truncated, foreign, undecodable).
    #[error("{backend}: corrupt record at {key}: {message}")]
    Corrupt {
        /// Backend name.
        backend: &'static str,
        /// The storage key (or file name) concerned.
        key: String,
        /// What is wrong with it.
        message: String,
        /// The decoder's error.
        #[source]
        source: Option<BoxError>,
    },

    /// The key cannot be stored by this backend (too long, forbidden characters).
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why.
        reason: String,
    },

    /// An argument is malformed (a record that cannot be serialised, a bad option).
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },

    /// The record is larger than the backend accepts.
    #[error("{backend}: record at {key} is too large ({size} bytes, at most {max})")]
    TooLarge {
        /// Backend name.
        backend: &'static str,
        /// The storage key.
        key: String,
        /// The encoded size.
        size: usize,
        /// The backend's limit.
        max: usize,
    },

    /// The store is misconfigured: a bad URL, a missing feature, a missing variable.
    #[error("configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// Any other backend failure.
    #[error("{backend}: {message}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// What happened.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },
}

fn fmt_version(v: &Option<Version>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "absent".to_owned(),
    }
}

impl Error {
    /// Whether retrying the same call later may succeed (the service was down or timed out).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// Whether this is a failed precondition ([`Error::Conflict`]).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// A configuration error with a message.
    pub fn config(message: impl fmt::Display) -> Self {
        Error::Config {
            message: message.to_string(),
            source: None,
        }
    }

    /// An invalid-key error with a reason.
    pub fn invalid_key(reason: impl fmt::Display) -> Self {
        Error::InvalidKey {
            reason: reason.to_string(),
        }
    }

    /// An invalid-input error with a message.
    pub fn invalid_input(message: impl fmt::Display) -> Self {
        Error::InvalidInput {
            message: message.to_string(),
        }
    }

    /// A service-unavailable error with a message and an optional source.
    pub fn unavailable(
        backend: &'static str,
        message: impl fmt::Display,
        source: Option<BoxError>,
    ) -> Self {
        Error::Unavailable {
            backend,
            message: message.to_string(),
            source,
        }
    }

    /// A generic backend error with a message and an optional source.
    pub fn backend(
        backend: &'static str,
        message: impl fmt::Display,
        source: Option<BoxError>,
    ) -> Self {
        Error::Backend {
            backend,
            message: message.to_string(),
            source,
        }
    }

    /// The backend named in this error, if any.
    pub fn backend_name(&self) -> Option<&'static str> {
        match self {
            Error::NotFound { backend, .. }
            | Error::Conflict { backend, .. }
            | Error::Unavailable { backend, .. }
            | Error::PermissionDenied { backend, .. }
            | Error::Locked { backend, .. }
            | Error::Integrity { backend, .. }
            | Error::WrongKey { backend }
            | Error::Corrupt { backend, .. }
            | Error::TooLarge { backend, .. }
            | Error::Backend { backend, .. } => Some(backend),
            Error::InvalidKey { .. } | Error::InvalidInput { .. } | Error::Config { .. } => None,
        }
    }
}
