//! The whole conformance suite and the model check on SQLite, plain and under the encryption
//! layer. Each factory call gets a fresh database file in its own directory; reopening opens
//! the same file again, as another process would.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use token_store_conformance::{Instance, model_check, model_check_cases, run};
use token_store_core::KeySource;
use token_store_core::RawStore;
use token_store_core::layers::Encrypted;
use token_store_sqlite::{SqliteConfig, SqliteStore};

fn fresh_path(root: &Path) -> PathBuf {
    root.join(token_store_conformance::services::unique("db"))
        .join("tokens.db")
}

async fn plain(path: PathBuf) -> token_store_core::Result<Arc<dyn RawStore>> {
    Ok(Arc::new(SqliteStore::open(&SqliteConfig::new(path)).await?))
}

/// Under the encryption layer with a key file beside the database (a raw key: the layer's
/// key derivation is not under test here, and Argon2id per case would dominate the run).
async fn encrypted(path: PathBuf) -> token_store_core::Result<Arc<dyn RawStore>> {
    let key = KeySource::KeyFile(path.with_extension("key"));
    let store = SqliteStore::open(&SqliteConfig::new(path)).await?;
    Ok(Arc::new(Encrypted::open(store, key).await?))
}

fn plain_factory(
    root: Arc<tempfile::TempDir>,
) -> impl Fn() -> token_store_conformance::BoxFuture<'static, token_store_core::Result<Instance>>
+ Send
+ Sync
+ 'static {
    move || {
        let path = fresh_path(root.path());
        Box::pin(async move {
            let store = plain(path.clone()).await?;
            Ok(Instance::with_reopen(store, move || plain(path.clone())))
        })
    }
}

fn encrypted_factory(
    root: Arc<tempfile::TempDir>,
) -> impl Fn() -> token_store_conformance::BoxFuture<'static, token_store_core::Result<Instance>>
+ Send
+ Sync
+ 'static {
    move || {
        let path = fresh_path(root.path());
        Box::pin(async move {
            let store = encrypted(path.clone()).await?;
            Ok(Instance::with_reopen(store, move || {
                encrypted(path.clone())
            }))
        })
    }
}

fn root() -> Arc<tempfile::TempDir> {
    Arc::new(tempfile::tempdir().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sqlite() {
    run("sqlite", plain_factory(root())).await.assert_ok();
}

/// The whole suite through the read cache of the handle (`TokenStore::with_cache`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sqlite_cached() {
    let factory = plain_factory(root());
    run("sqlite+cache", move || {
        let instance = factory();
        async move {
            Ok(instance
                .await?
                .cached(token_store_core::CacheOptions::new()))
        }
    })
    .await
    .assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sqlite_encrypted() {
    run("sqlite+encrypted", encrypted_factory(root()))
        .await
        .assert_ok();
}

#[test]
fn model_sqlite() {
    model_check("sqlite", plain_factory(root()), model_check_cases(256));
}

#[test]
fn model_sqlite_encrypted() {
    model_check(
        "sqlite+encrypted",
        encrypted_factory(root()),
        model_check_cases(256),
    );
}
