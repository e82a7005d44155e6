//! The rustls crypto provider an application installs before opening a `rediss://` store is
//! the one used, and kept: the crate installs its own (aws-lc-rs) only when there is none.
//!
//! Its own binary: the provider is process-wide.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rustls::CipherSuite;
use rustls::crypto::CryptoProvider;
use token_store_conformance::services;
use token_store_core::{Precondition, StoreUrl, TokenKey, TokenRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_provider_is_kept() {
    let (Some(url), Some(ca)) = (
        services::require("TOKEN_STORE_TEST_REDIS_TLS_URL"),
        services::require("TOKEN_STORE_TEST_TLS_CA"),
    ) else {
        return;
    };
    assert!(CryptoProvider::get_default().is_none());
    // A provider recognisably not the default one: a single cipher suite.
    let mut mine = rustls::crypto::aws_lc_rs::default_provider();
    mine.cipher_suites
        .retain(|s| s.suite() == CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    mine.install_default().unwrap();
    let installed = CryptoProvider::get_default().unwrap().clone();

    let prefix = format!("ts-test:{}", services::unique("redis-provider"));
    let url = StoreUrl::parse(&format!("{url}?ca={ca}&prefix={prefix}")).unwrap();
    let store = token_store_redis::open_url(&url).await.unwrap();
    let key = TokenKey::for_server("https://provider.example");
    store
        .put(&key, &TokenRecord::new("t"), Precondition::Any)
        .await
        .unwrap();
    assert!(store.get(&key).await.unwrap().is_some());

    let now = CryptoProvider::get_default().unwrap();
    assert!(Arc::ptr_eq(now, &installed), "the provider was replaced");
    assert_eq!(now.cipher_suites.len(), 1);
}
