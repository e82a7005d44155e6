//! Failure behaviour on an OpenBao dev server of our own (so stopping or sealing it disturbs
//! no other test): a stopped server is `Unavailable` within the time limit and the store
//! works again after a restart; a sealed one is `Unavailable` saying "sealed".

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{OwnBao, open_raw, token_config};
use token_store_core::{Error, KeyKind, PutOptions, StorageKey};
use token_store_vault::VaultStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_is_unavailable_then_works_again_after_restart() {
    let Some(mut bao) = OwnBao::start().await else {
        return;
    };
    let limit = Duration::from_secs(2);
    let store =
        open_raw(token_config(&bao.addr(), &bao.token, "token-store-outage").with_timeout(limit))
            .await
            .unwrap();
    let key = StorageKey::single(KeyKind::Meta, "outage").unwrap();
    store
        .write(&key, b"before", &PutOptions::default())
        .await
        .unwrap();

    bao.stop();
    for op in ["read", "write", "list"] {
        let start = Instant::now();
        let result = match op {
            "read" => store.read(&key).await.map(drop),
            "write" => store
                .write(&key, b"during", &PutOptions::default())
                .await
                .map(drop),
            _ => store
                .scan(KeyKind::Meta, &Default::default())
                .await
                .map(drop),
        };
        let took = start.elapsed();
        match result {
            Err(e @ Error::Unavailable { .. }) => {
                assert!(e.is_retryable());
                assert!(!e.to_string().contains(&bao.token), "{e}");
                println!("{op} while down: {e} (after {took:?})");
            }
            other => panic!("{op} while down: {other:?}"),
        }
        assert!(
            took <= limit + Duration::from_millis(500),
            "{op} took {took:?}"
        );
    }

    // Dev mode is in memory: after the restart the data is gone, but the same client works.
    bao.launch().await;
    let v = store
        .write(&key, b"after", &PutOptions::default())
        .await
        .unwrap();
    let got = store.read(&key).await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.version), (&b"after"[..], v));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_server_is_unavailable_and_says_sealed() {
    let Some(bao) = OwnBao::start().await else {
        return;
    };
    let store = open_raw(token_config(&bao.addr(), &bao.token, "token-store-sealed"))
        .await
        .unwrap();
    let key = StorageKey::single(KeyKind::Meta, "sealed").unwrap();
    store
        .write(&key, b"v", &PutOptions::default())
        .await
        .unwrap();
    let status = bao.post("sys/seal", serde_json::json!({})).await;
    assert!(status.is_success(), "seal: {status}");
    for result in [
        store.read(&key).await.map(drop),
        store
            .write(&key, b"w", &PutOptions::default())
            .await
            .map(drop),
    ] {
        match result {
            Err(Error::Unavailable { message, .. }) => {
                assert!(message.contains("sealed"), "{message}");
                assert!(message.contains("503"), "{message}");
                println!("sealed: {message}");
            }
            other => panic!("sealed server: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logs_in_again_after_the_server_forgot_its_token() {
    let Some(mut bao) = OwnBao::start().await else {
        return;
    };
    bao.provision_approle("role-outage", "secret-outage").await;
    let config = token_store_vault::VaultConfig::new(
        &bao.addr(),
        common::approle("role-outage", "secret-outage"),
    )
    .unwrap()
    .with_prefix("token-store-outage")
    .unwrap();
    let store = open_raw(config).await.unwrap();
    let key = StorageKey::single(KeyKind::Meta, "relogin").unwrap();
    store
        .write(&key, b"before", &PutOptions::default())
        .await
        .unwrap();
    // A restart of a dev server forgets every token: ours now gets 403 until it logs in again.
    bao.stop();
    bao.launch().await;
    bao.provision_approle("role-outage", "secret-outage").await;
    store
        .write(&key, b"after", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.read(&key).await.unwrap().unwrap().value.as_slice(),
        b"after"
    );
}

/// A server that accepts connections (the kernel's backlog does) but never answers: open
/// (which reads the store's encryption header under the time limit) and every call fail with
/// `Unavailable` within the limit, through the `Timeout` layer or, for a raw `VaultStore`,
/// reqwest's per-request limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_server_times_out_as_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let limit = Duration::from_millis(800);
    let config = token_config(&addr, "t", "p").with_timeout(limit);
    let within_limit = |what: &str, took: Duration| {
        assert!(
            took >= limit && took < limit + Duration::from_millis(500),
            "{what}: {took:?}"
        );
    };
    let start = Instant::now();
    match token_store_vault::open(config.clone()).await {
        Err(e @ Error::Unavailable { .. }) => println!("hanging server at open: {e}"),
        other => panic!("hanging server at open: {:?}", other.map(|_| ())),
    }
    within_limit("open", start.elapsed());

    let raw = VaultStore::open(&config).await.unwrap();
    let key = StorageKey::single(KeyKind::Meta, "hang").unwrap();
    let start = Instant::now();
    match token_store_core::RawStore::read(&raw, &key).await {
        Err(e @ Error::Unavailable { .. }) => println!("hanging server, raw store: {e}"),
        other => panic!("hanging server: {other:?}"),
    }
    within_limit("raw read", start.elapsed());
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_at_open_with_approle_is_unavailable() {
    // Nothing listens on port 9 of loopback (discard): refused at once.
    let config =
        token_store_vault::VaultConfig::new("http://127.0.0.1:9", common::approle("r", "s"))
            .unwrap()
            .with_timeout(Duration::from_secs(2));
    match VaultStore::open(&config).await {
        Err(e @ Error::Unavailable { .. }) => assert!(!e.to_string().contains("\"s\"")),
        other => panic!("{:?}", other.map(|_| ())),
    }
}
