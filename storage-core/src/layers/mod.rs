//! Layers wrap a [`RawStore`](crate::RawStore) and are one themselves, so cross-cutting
//! concerns are written once for every backend (as in OpenDAL and tower):
//! [`Encrypted`] keeps only ciphertext in the backend, [`Timeout`] bounds every call,
//! [`Traced`] logs every call without its value.

mod encrypted;
mod timeout;
mod traced;

pub use encrypted::Encrypted;
pub use timeout::Timeout;
pub use traced::Traced;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::key::KeyKind;
use crate::raw::{ListFilter, RawStore};
use crate::url::StoreUrl;

/// Puts `store` under the [`Encrypted`] layer when its URL asks for a key
/// ([`StoreUrl::key_source`]), so every backend treats `key_file=` / `passphrase_env=` alike.
///
/// Refuses, with [`Error::Config`], the two mistakes that would lose or expose tokens: opening
/// an encrypted store without a key (it would read ciphertext as corrupt records), and adding
/// a key to a store that already holds plaintext records (they would become unreadable).
pub async fn encrypt_per_url<R: RawStore>(store: R, url: &StoreUrl) -> Result<Arc<dyn RawStore>> {
    let encrypted = Encrypted::is_initialized(&store).await?;
    match url.key_source()? {
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
