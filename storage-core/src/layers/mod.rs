//! Layers wrap a [`RawStore`] and are one themselves, so cross-cutting
//! concerns are written once for every backend (as in OpenDAL and tower):
//! [`Encrypted`] keeps only ciphertext in the backend, [`Timeout`] bounds every call,
//! [`Traced`] logs every call without its value, `Metrics` (feature `metrics`) counts and
//! times every call.

mod encrypted;
#[cfg(feature = "metrics")]
mod metrics;
mod timeout;
mod traced;

#[cfg(feature = "metrics")]
pub use self::metrics::Metrics;
pub use crate::crypto::KdfParams;
pub use encrypted::Encrypted;
pub use timeout::Timeout;
pub use traced::Traced;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::KeySource;
use crate::error::{Error, Result};
use crate::key::KeyKind;
use crate::raw::{ListFilter, RawStore};
use crate::store::TokenStore;
use crate::url::QueryParams;

/// The options every backend shares, read from the same URL parameters everywhere
/// ([`CommonOptions::from_params`]): the encryption key (`key_file`, `passphrase_file`,
/// `passphrase_env`) and the per-call time limit (`timeout_ms`).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CommonOptions {
    /// Encrypt values with token-store's own layer under this key.
    pub key: Option<KeySource>,
    /// Fail any call that takes longer with [`Error::Unavailable`].
    pub timeout: Option<Duration>,
}

impl CommonOptions {
    /// No encryption layer, no time limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the shared parameters from a URL's query.
    pub fn from_params(params: &mut QueryParams) -> Result<Self> {
        Ok(CommonOptions {
            key: params.key_source()?,
            timeout: params.timeout()?,
        })
    }

    /// The same options with values encrypted under `key`.
    pub fn with_key(mut self, key: KeySource) -> Self {
        self.key = Some(key);
        self
    }

    /// The same options with a per-call time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Wraps a backend in the shared layers and returns the store handle: [`Timeout`] when
/// `options.timeout` is set, then [`Encrypted`] when `options.key` is (see
/// [`with_optional_encryption`]). Every backend's `open` ends here, so the layers are stacked
/// alike everywhere. `name` names the store in errors (a redacted URL).
pub async fn assemble<R: RawStore>(
    store: R,
    options: &CommonOptions,
    name: &(dyn fmt::Display + Sync),
) -> Result<TokenStore> {
    let timed: Arc<dyn RawStore> = match options.timeout {
        Some(limit) => Arc::new(Timeout::new(store, limit)),
        None => Arc::new(store),
    };
    let keyed = with_optional_encryption(timed, options.key.clone(), name).await?;
    Ok(TokenStore::from_arc(keyed))
}

/// Puts `store` under the [`Encrypted`] layer when its URL named a key (`key` as read by
/// [`QueryParams::key_source`](crate::QueryParams::key_source)), so every backend treats
/// `key_file=` / `passphrase_file=` / `passphrase_env=` alike. `url` names the store in
/// errors.
///
/// Refuses, with [`Error::Config`], the two mistakes that would lose or expose tokens: opening
/// an encrypted store without a key (it would read ciphertext as corrupt records), and adding
/// a key to a store that already holds plaintext records (they would become unreadable).
pub async fn with_optional_encryption<R: RawStore>(
    store: R,
    key: Option<KeySource>,
    url: &(dyn fmt::Display + Sync),
) -> Result<Arc<dyn RawStore>> {
    let encrypted = Encrypted::is_initialized(&store).await?;
    match key {
        None if encrypted => Err(Error::config(format!(
            "{url} is encrypted: add ?key_file=PATH or ?passphrase_env=VAR to its URL"
        ))),
        None => Ok(Arc::new(store)),
        Some(_) if !encrypted && holds_records(&store).await? => Err(Error::config(format!(
            "{url} holds unencrypted records; it cannot be opened with a key (migrate them to a new encrypted store with `tokenstore migrate`)"
        ))),
        Some(source) => Ok(Arc::new(Encrypted::open(store, source).await?)),
    }
}

async fn holds_records<R: RawStore>(store: &R) -> Result<bool> {
    for kind in [KeyKind::Token, KeyKind::Client] {
        if !store.scan(kind, &ListFilter::all()).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    #[test]
    fn opening_through_the_layers_is_send() {
        // Backends open stores inside spawned tasks: the future must be Send.
        let name = String::from("memory:");
        assert_send(assemble(
            crate::MemoryStore::new(),
            &CommonOptions::new(),
            &name,
        ));
    }
}
