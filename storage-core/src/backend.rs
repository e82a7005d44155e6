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

/// A new record version for backends that keep versions as integers: a random positive
/// `i64` (63 bits from the OS generator), never `not` (the version a compare-and-swap
/// replaces). A record deleted and created again gets an old version back only by a 2⁻⁶³
/// chance, so a stale compare-and-swap fails (no ABA) without a counter every writer would
/// contend on.
pub fn random_version_number(backend: &'static str, not: Option<i64>) -> Result<i64> {
    loop {
        let mut bytes = [0u8; 8];
        fill_random(&mut bytes).map_err(|e| {
            Error::backend(
                backend,
                "the system random number generator failed",
                Some(Box::new(e)),
            )
        })?;
        let v = i64::from_le_bytes(bytes) & i64::MAX;
        if v != 0 && Some(v) != not {
            return Ok(v);
        }
    }
}

/// The `with_key` and `with_timeout` builders of a backend config that holds its shared
/// options in a `common: CommonOptions` field, so every backend's config offers them alike.
///
/// ```
/// use token_store_core::layers::CommonOptions;
/// #[derive(Clone, Debug, Default)]
/// pub struct MyConfig { common: CommonOptions }
/// token_store_core::common_option_builders!(MyConfig);
/// let config = MyConfig::default().with_timeout(std::time::Duration::from_secs(2));
/// assert_eq!(config.common.timeout, Some(std::time::Duration::from_secs(2)));
/// ```
#[macro_export]
macro_rules! common_option_builders {
    ($config:ty) => {
        impl $config {
            /// The same config with values encrypted under `key` (token-store's own
            /// encryption layer; the file store's own encryption).
            pub fn with_key(mut self, key: $crate::KeySource) -> Self {
                self.common = self.common.with_key(key);
                self
            }

            /// The same config with a per-call time limit: a call that takes longer fails
            /// with `Error::Unavailable` (a write it started may still complete).
            pub fn with_timeout(mut self, timeout: ::std::time::Duration) -> Self {
                self.common = self.common.with_timeout(timeout);
                self
            }
        }
    };
}

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
