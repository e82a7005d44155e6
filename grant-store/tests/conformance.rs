//! The grant conformance suite (`token_store_conformance::grants`) on every backend this
//! machine runs: memory, the encrypted file store, SQLite, Redis standalone and Cluster,
//! Vault/OpenBao, PostgreSQL. The keychain backends run in `keychain.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use token_store_conformance::grants::run_grants;

async fn run(backend: &str, factory: common::Factory) {
    run_grants(backend, move || factory()).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_memory() {
    run("memory", common::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_file() {
    let root = Arc::new(tempfile::tempdir().unwrap());
    run("file", common::file(root)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_sqlite() {
    let root = Arc::new(tempfile::tempdir().unwrap());
    run("sqlite", common::sqlite(root)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_redis() {
    let Some(factory) = common::redis() else {
        return;
    };
    run("redis", factory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_redis_cluster() {
    let Some(factory) = common::redis_cluster() else {
        return;
    };
    run("redis-cluster", factory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_vault() {
    let Some(factory) = common::vault() else {
        return;
    };
    run("vault", factory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_postgres() {
    let Some(factory) = common::postgres() else {
        return;
    };
    run("postgres", factory).await;
}

/// A memory store claiming to be shared by every host while its compare-and-swap holds only
/// in this process: rotation could not be single-use there.
#[derive(Debug)]
struct Overshared(token_store_core::MemoryStore);

#[token_store_core::async_trait]
impl token_store_core::RawStore for Overshared {
    fn backend(&self) -> &'static str {
        "overshared"
    }
    fn capabilities(&self) -> token_store_core::Capabilities {
        self.0
            .capabilities()
            .with_sharing(token_store_core::Scope::Hosts)
    }
    async fn read(
        &self,
        key: &token_store_core::StorageKey,
    ) -> token_store_core::Result<Option<token_store_core::RawRecord>> {
        self.0.read(key).await
    }
    async fn write(
        &self,
        key: &token_store_core::StorageKey,
        value: &[u8],
        options: &token_store_core::PutOptions,
    ) -> token_store_core::Result<token_store_core::Version> {
        self.0.write(key, value, options).await
    }
    async fn remove(
        &self,
        key: &token_store_core::StorageKey,
        precondition: &token_store_core::Precondition,
    ) -> token_store_core::Result<bool> {
        self.0.remove(key, precondition).await
    }
    async fn scan(
        &self,
        kind: token_store_core::KeyKind,
        filter: &token_store_core::ListFilter,
    ) -> token_store_core::Result<Vec<token_store_core::ListEntry>> {
        self.0.scan(kind, filter).await
    }
}

#[test]
fn a_store_whose_cas_does_not_cover_its_sharing_is_refused() {
    use token_store_core::{MemoryStore, TokenStore};
    assert!(token_store_grants::GrantStore::new(TokenStore::in_memory()).is_ok());
    let err = token_store_grants::GrantStore::new(TokenStore::new(Overshared(MemoryStore::new())))
        .unwrap_err();
    assert!(
        matches!(err, token_store_core::Error::Config { .. }),
        "{err}"
    );
}
