//! Reads are bounded: a value longer than `max_value_size` that another writer left at one of
//! our keys is refused with `TooLarge` without being transferred (issue 17), and the bounded
//! read still tells an empty value from a missing key.
//!
//! One test in its own binary, so the process's resident memory reflects only this test.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use token_store_conformance::services;
use token_store_core::{
    Error, KeyKind, Precondition, PutOptions, RawStore, StorageKey, TokenKey, TokenStore,
};
use token_store_redis::{DEFAULT_MAX_VALUE_SIZE, RedisConfig, RedisStore};

const HUGE: usize = 64 * 1024 * 1024 + 1;

/// This process's resident set size in KiB, from /proc/self/status.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn meta(name: &str) -> StorageKey {
    StorageKey::single(KeyKind::Meta, name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_bounded_and_tell_empty_from_missing() {
    let Some(url) = services::require("TOKEN_STORE_TEST_REDIS_URL") else {
        return;
    };
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let config = RedisConfig::standalone(&url).with_prefix(common::prefix());
    let store = RedisStore::open(&config).await.unwrap();
    let key = TokenKey::for_server("https://huge.example/mcp");
    let rkey = store.redis_key(&key.storage_key());
    let store = std::sync::Arc::new(store);
    let typed = TokenStore::from_arc(store.clone());

    // A 64 MiB + 1 B foreign string, made server-side so this process never holds it.
    let _: usize = raw.setrange(&rkey, (HUGE - 1) as isize, "x").await.unwrap();
    let before = rss_kib();
    let started = Instant::now();
    let read = store.read(&key.storage_key()).await;
    let took = started.elapsed();
    let typed_read = typed.get(&key).await;
    let grew = rss_kib().saturating_sub(before);
    for got in [read.map(drop), typed_read.map(drop)] {
        match got {
            Err(Error::TooLarge { size, max, .. }) => {
                assert_eq!((size, max), (HUGE, DEFAULT_MAX_VALUE_SIZE));
            }
            other => panic!("a {HUGE}-byte value read as {other:?}, not TooLarge"),
        }
    }
    println!(
        "limits: a {HUGE}-byte foreign value is TooLarge after {took:?}; resident memory grew {grew} KiB"
    );
    assert!(took < Duration::from_millis(500), "refusing took {took:?}");
    assert!(grew < 16 * 1024, "resident memory grew {grew} KiB");

    // Conditional writes and deletes refuse it too, without Redis copying or hashing it;
    // an unconditional delete removes it.
    let record = token_store_core::TokenRecord::new("t");
    let started = Instant::now();
    for pre in [
        Precondition::IfVersion(token_store_core::Version::new("0")),
        Precondition::IfAbsent,
    ] {
        match typed.put(&key, &record, pre.clone()).await {
            Err(Error::TooLarge { size: HUGE, .. }) => {}
            other => panic!("a put {pre:?} over the huge value gave {other:?}"),
        }
        match typed.delete(&key, pre.clone()).await {
            Err(Error::TooLarge { size: HUGE, .. }) => {}
            other => panic!("a delete {pre:?} of the huge value gave {other:?}"),
        }
    }
    let cas_took = started.elapsed() / 4;
    println!("limits: a conditional write or delete over it is TooLarge after {cas_took:?}");
    assert!(cas_took < Duration::from_millis(100), "took {cas_took:?}");
    assert!(typed.delete(&key, Precondition::Any).await.unwrap());
    assert!(store.read(&key.storage_key()).await.unwrap().is_none());

    // The boundary: exactly the limit reads, one byte more does not.
    let small = RedisStore::open(&config.clone().with_max_value_size(1000))
        .await
        .unwrap();
    let edge = meta("edge");
    let at_limit = vec![b'a'; 1000];
    small
        .write(&edge, &at_limit, &PutOptions::new(Precondition::Any))
        .await
        .unwrap();
    let got = small.read(&edge).await.unwrap().unwrap();
    assert_eq!(got.value.as_slice(), at_limit.as_slice());
    let _: usize = raw.append(small.redis_key(&edge), "b").await.unwrap();
    assert!(matches!(
        small.read(&edge).await,
        Err(Error::TooLarge {
            size: 1001,
            max: 1000,
            ..
        })
    ));

    // An empty value is a value, a missing key is none (GETRANGE answers "" for both).
    let empty = meta("empty");
    let version = small
        .write(&empty, b"", &PutOptions::new(Precondition::IfAbsent))
        .await
        .unwrap();
    let got = small
        .read(&empty)
        .await
        .unwrap()
        .expect("an empty value is there");
    assert!(got.value.is_empty());
    assert_eq!(got.version, version);
    assert!(small.read(&meta("missing")).await.unwrap().is_none());
    let _: () = raw.del(small.redis_key(&edge)).await.unwrap();
    let _: () = raw.del(small.redis_key(&empty)).await.unwrap();
}
