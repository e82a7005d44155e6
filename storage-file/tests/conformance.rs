//! The shared conformance suite and the model check on the encrypted file store: a fresh
//! temporary directory per store, reopened with the same key.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use token_store_conformance::{Instance, model_check, model_check_cases, run};
use token_store_core::KeySource;
use token_store_core::{Error, Result};

/// A store in a fresh temporary directory; `key` gets that directory (for a key file
/// beside the store).
async fn instance(key: impl FnOnce(&Path) -> KeySource) -> Result<Instance> {
    let tmp = Arc::new(tempfile::tempdir().map_err(Error::config)?);
    let dir = tmp.path().join("store");
    let key = key(tmp.path());
    let store = common::arc(common::open(&dir, key.clone()).await?);
    Ok(Instance::with_reopen(store, move || {
        // The closure owns the temporary directory, so it lives as long as the instance.
        let tmp = tmp.clone();
        let dir = dir.clone();
        let key = key.clone();
        async move {
            let _keep = tmp;
            Ok(common::arc(common::open(&dir, key).await?))
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_file_passphrase() {
    run("file", || instance(|_| common::pass("conformance")))
        .await
        .assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_file_key_file() {
    run("file+key_file", || {
        instance(|tmp| KeySource::KeyFile(tmp.join("token.key")))
    })
    .await
    .assert_ok();
}

#[test]
fn model_file() {
    model_check(
        "file",
        || instance(|_| common::pass("model")),
        model_check_cases(256),
    );
}
