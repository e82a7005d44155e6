//! TEMPORARY: the shared layers over the raw store, stacked exactly as
//! `token_store_core::layers::assemble` stacks them (`Timeout`, then `Encrypted` with its two
//! refusals).
//!
//! Core's `assemble` takes the store's name as `&dyn fmt::Display`, which is not `Sync`; the
//! reference lives across awaits, so its future, and `open` with it, is not `Send`: the
//! facade, the crash harness and any `tokio::spawn` could not use it. Once core takes
//! `&(dyn fmt::Display + Sync)`, [`assemble`]'s body becomes a call to core's and this file
//! goes (the SQLite and Redis backends carry the same stop-gap).

use std::sync::Arc;

use token_store_core::layers::{CommonOptions, Encrypted, Timeout};
use token_store_core::{Error, KeyKind, ListFilter, RawStore, Result, TokenStore};

pub(crate) async fn assemble<R: RawStore>(
    store: R,
    options: &CommonOptions,
    name: String,
) -> Result<TokenStore> {
    let timed: Arc<dyn RawStore> = match options.timeout {
        Some(limit) => Arc::new(Timeout::new(store, limit)),
        None => Arc::new(store),
    };
    let encrypted = Encrypted::is_initialized(&timed).await?;
    let keyed: Arc<dyn RawStore> = match options.key.clone() {
        None if encrypted => {
            return Err(Error::config(format!(
                "{name} is encrypted: add ?key_file=PATH or ?passphrase_env=VAR to its URL"
            )));
        }
        None => timed,
        Some(_) if !encrypted && holds_records(&timed).await? => {
            return Err(Error::config(format!(
                "{name} holds unencrypted records; it cannot be opened with a key (migrate them to a new encrypted store with `tokenstore migrate`)"
            )));
        }
        Some(source) => Arc::new(Encrypted::open(timed, source).await?),
    };
    Ok(TokenStore::from_arc(keyed))
}

async fn holds_records(store: &Arc<dyn RawStore>) -> Result<bool> {
    for kind in [KeyKind::Token, KeyKind::Client] {
        if !store.scan(kind, &ListFilter::all()).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}
