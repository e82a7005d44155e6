//! The conformance suite and the model check over TLS on the two topologies `conformance.rs`
//! runs in plaintext: a TLS-only Redis Cluster (`rediss+cluster://`, cluster bus and
//! replication over TLS too) and TLS Sentinel (`rediss+sentinel://`: the sentinels, the
//! master and its replica listen on TLS ports only). Both trust the test CA through `ca=`,
//! so the store is opened the way users open it: from a URL, through `open_url`.
//!
//! Needs `TOKEN_STORE_TEST_REDIS_TLS_CLUSTER_URL`, `TOKEN_STORE_TEST_REDIS_TLS_SENTINEL_URL`
//! and `TOKEN_STORE_TEST_TLS_CA`, which `scripts/services.sh start` exports; unset, a test
//! fails under CI and reports "not run" locally.

// Test code states its expectations with unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use token_store_conformance::{Instance, model_check, model_check_cases, run, services};
use token_store_core::{RawStore, Result, StoreUrl};

/// `url` with the test CA and a fresh prefix as query parameters.
fn store_url(url: &str, ca: &str, prefix: &str) -> Result<StoreUrl> {
    let sep = if url.contains('?') { '&' } else { '?' };
    StoreUrl::parse(&format!("{url}{sep}ca={ca}&prefix={prefix}"))
}

async fn open_raw(url: StoreUrl) -> Result<Arc<dyn RawStore>> {
    Ok(token_store_redis::open_url(&url).await?.raw().clone())
}

/// A factory opening the store at `url` (with the test CA) under a fresh prefix per
/// instance, reopenable with a new connection.
fn factory(
    url: String,
    ca: String,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Instance>> + Send>>
+ Send
+ Sync
+ 'static {
    move || {
        let parsed = store_url(&url, &ca, &common::prefix());
        Box::pin(async move {
            let parsed = parsed?;
            let store = open_raw(parsed.clone()).await?;
            Ok(Instance::with_reopen(store, move || {
                open_raw(parsed.clone())
            }))
        })
    }
}

/// The URL in `var` and the test CA, or `None` (not run) when either is unset.
fn service(var: &str) -> Option<(String, String)> {
    let url = services::require(var)?;
    let ca = services::require("TOKEN_STORE_TEST_TLS_CA")?;
    Some((url, ca))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redis_tls_cluster() {
    let Some((url, ca)) = service("TOKEN_STORE_TEST_REDIS_TLS_CLUSTER_URL") else {
        return;
    };
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    let report = run("redis-tls-cluster", factory(url, ca)).await;
    report.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redis_tls_sentinel() {
    let Some((url, ca)) = service("TOKEN_STORE_TEST_REDIS_TLS_SENTINEL_URL") else {
        return;
    };
    assert!(url.starts_with("rediss+sentinel://"), "{url}");
    let report = run("redis-tls-sentinel", factory(url, ca)).await;
    report.assert_ok();
}

#[test]
fn model_redis_tls_cluster() {
    let Some((url, ca)) = service("TOKEN_STORE_TEST_REDIS_TLS_CLUSTER_URL") else {
        return;
    };
    model_check(
        "redis-tls-cluster",
        factory(url, ca),
        model_check_cases(128),
    );
}

#[test]
fn model_redis_tls_sentinel() {
    let Some((url, ca)) = service("TOKEN_STORE_TEST_REDIS_TLS_SENTINEL_URL") else {
        return;
    };
    model_check(
        "redis-tls-sentinel",
        factory(url, ca),
        model_check_cases(128),
    );
}

/// Without the CA the server certificate is refused: the connection really is TLS, checked
/// against the given roots (not silently plaintext or unverified).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_topologies_refuse_an_unknown_ca() {
    for var in [
        "TOKEN_STORE_TEST_REDIS_TLS_CLUSTER_URL",
        "TOKEN_STORE_TEST_REDIS_TLS_SENTINEL_URL",
    ] {
        let Some(url) = services::require(var) else {
            return;
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let parsed = StoreUrl::parse(&format!(
            "{url}{sep}prefix={}&timeout_ms=3000",
            common::prefix()
        ))
        .unwrap();
        match token_store_redis::open_url(&parsed).await {
            Ok(_) => panic!("{var}: opened without the test CA"),
            // A configuration error would mean the URL was never tried over TLS at all.
            Err(e @ token_store_core::Error::Config { .. }) => {
                panic!("{var}: refused as a configuration error, not by TLS: {e}")
            }
            Err(e) => {
                let text = format!("{e:?}");
                assert!(
                    text.contains("certificate") || text.contains("UnknownIssuer"),
                    "{var}: not a certificate error: {text}"
                );
                println!("{var} without the CA: {e}");
            }
        }
    }
}
