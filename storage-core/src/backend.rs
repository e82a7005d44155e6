//! Helpers for backend authors, so every backend words its errors alike and shares one
//! implementation of the fiddly parts (precondition checks, key encoding, private files,
//! the cipher). Users of a store need none of this: they hold a [`crate::TokenStore`].

pub use crate::crypto::{
    Cipher, KeyHeader, OpenError, SEAL_OVERHEAD, fill_random, hex, read_or_create_key_file,
};
pub use crate::key::{percent_decode, percent_encode};
pub use crate::record::{to_unix, unix_now};
pub use crate::store::json_error_summary;

use crate::error::{Error, Result};
use crate::key::StorageKey;
use crate::raw::{Precondition, Version};

/// Private files and directories: created 0600 / 0700, written atomically and durably.
pub mod fs {
    pub use crate::fs::*;
}

/// Checks a value's size against a backend's limit; shared so every backend words it alike.
pub fn check_size(backend: &'static str, key: &StorageKey, size: usize, max: usize) -> Result<()> {
    if size > max {
        return Err(Error::TooLarge {
            backend,
            key: key.to_string(),
            size,
            max,
        });
    }
    Ok(())
}

/// Evaluates a precondition against the current version, for backends that check it
/// themselves under a lock (memory, file, keychain). Returns the `Conflict` error to give.
///
/// ```
/// use token_store_core::backend::check_precondition;
/// use token_store_core::{KeyKind, Precondition, StorageKey, Version};
/// let key = StorageKey::single(KeyKind::Meta, "k").unwrap();
/// let v1 = Version::new("1");
/// assert!(check_precondition("doc", &key, &Precondition::IfVersion(v1.clone()), Some(&v1)).is_ok());
/// assert!(check_precondition("doc", &key, &Precondition::IfAbsent, Some(&v1)).unwrap_err().is_conflict());
/// ```
pub fn check_precondition(
    backend: &'static str,
    key: &StorageKey,
    precondition: &Precondition,
    current: Option<&Version>,
) -> Result<()> {
    let ok = match precondition {
        Precondition::Any => true,
        Precondition::IfAbsent => current.is_none(),
        Precondition::IfVersion(v) => current == Some(v),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Conflict {
            backend,
            key: key.to_string(),
            current: current.cloned(),
        })
    }
}
