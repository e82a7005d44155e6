//! TEMPORARY: `token_store_core::layers::assemble` with a `Sync` store name.
//!
//! Core's `assemble` (and `with_optional_encryption`) take the name as `&dyn fmt::Display`,
//! which is not `Sync`; the reference lives across awaits, so their futures are not `Send`
//! and `open_url` could not be spawned or boxed as the crash harness and the facade need.
//! This is the same stacking (Timeout, then Encrypted, with the same two refusals) until
//! core takes `&(dyn fmt::Display + Sync)`; then `open` calls `layers::assemble` again and
//! this file goes.

use std::sync::Arc;

use token_store_core::layers::{CommonOptions, Encrypted, Timeout};
use token_store_core::{Error, KeyKind, ListFilter, RawStore, Result, TokenStore};

use crate::store::SqliteStore;

pub(crate) async fn assemble(
    store: SqliteStore,
    options: &CommonOptions,
    name: &str,
) -> Result<TokenStore> {
    let timed: Arc<dyn RawStore> = match options.timeout {
        Some(limit) => Arc::new(Timeout::new(store, limit)),
        None => Arc::new(store),
    };
    let encrypted = Encrypted::is_initialized(&timed).await?;
    match options.key.clone() {
        None if encrypted => Err(Error::config(format!(
            "{name} is encrypted: add ?key_file=PATH or ?passphrase_env=VAR to its URL"
        ))),
        None => Ok(TokenStore::from_arc(timed)),
        Some(_) if !encrypted && holds_records(&timed).await? => Err(Error::config(format!(
            "{name} holds unencrypted records; it cannot be opened with a key (migrate them to a new encrypted store with `tokenstore migrate`)"
        ))),
        Some(source) => Ok(TokenStore::new(Encrypted::open(timed, source).await?)),
    }
}

async fn holds_records(store: &Arc<dyn RawStore>) -> Result<bool> {
    for kind in [KeyKind::Token, KeyKind::Client] {
        if !store.scan(kind, &ListFilter::all()).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}
