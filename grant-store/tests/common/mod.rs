//! Store factories for the grant-store tests: every backend, opened by URL exactly as a
//! server opens its store (`token_store::open`), each instance isolated (a fresh directory,
//! file, Redis prefix or Vault folder) and reopenable.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::sync::Arc;

use token_store_conformance::{BoxFuture, Instance, services};
use token_store_core::{MemoryStore, RawStore, Result};

pub type Factory = Arc<dyn Fn() -> BoxFuture<'static, Result<Instance>> + Send + Sync>;

async fn open_raw(url: String) -> Result<Arc<dyn RawStore>> {
    Ok(token_store::open(&url).await?.raw().clone())
}

/// A factory whose every instance opens `url_for(unique name)`.
pub fn by_url(url_for: impl Fn(&str) -> String + Send + Sync + 'static) -> Factory {
    Arc::new(move || {
        let url = url_for(&services::unique("g"));
        Box::pin(async move {
            let store = open_raw(url.clone()).await?;
            Ok(Instance::with_reopen(store, move || open_raw(url.clone())))
        })
    })
}

pub fn memory() -> Factory {
    Arc::new(|| Box::pin(async { Ok(Instance::new(Arc::new(MemoryStore::new()))) }))
}

pub fn file(root: Arc<tempfile::TempDir>) -> Factory {
    by_url(move |name| {
        let dir = root.path().join(name);
        format!("file://{}?key_file={}.key", dir.display(), dir.display())
    })
}

pub fn sqlite(root: Arc<tempfile::TempDir>) -> Factory {
    by_url(move |name| format!("sqlite://{}/{name}.db", root.path().display()))
}

pub fn redis() -> Option<Factory> {
    let base = services::require("TOKEN_STORE_TEST_REDIS_URL")?;
    Some(by_url(move |name| {
        format!(
            "{}?prefix=ts-test:{name}",
            base.trim_end_matches('/').to_owned() + "/"
        )
    }))
}

pub fn redis_cluster() -> Option<Factory> {
    let base = services::require("TOKEN_STORE_TEST_REDIS_CLUSTER_URL")?;
    Some(by_url(move |name| format!("{base}?prefix=ts-test:{name}")))
}

pub fn vault() -> Option<Factory> {
    let addr = services::require("TOKEN_STORE_TEST_VAULT_ADDR")?;
    services::require("TOKEN_STORE_TEST_VAULT_TOKEN")?;
    let host = addr
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    Some(by_url(move |name| {
        format!(
            "vault://{host}/secret?prefix=ts-test/{name}&token_env=TOKEN_STORE_TEST_VAULT_TOKEN"
        )
    }))
}

pub fn postgres() -> Option<Factory> {
    let base = services::require("TOKEN_STORE_TEST_POSTGRES_URL")?;
    Some(by_url(move |name| {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}table=g_{}", name.replace('-', "_"))
    }))
}
