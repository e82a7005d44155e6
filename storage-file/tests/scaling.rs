//! The cost of a get or a put does not grow with the number of records (one file per
//! record, found by name). Prints the numbers; asserts only a loose bound, since the
//! machine is shared.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use token_store_core::KeySource;
use token_store_core::{KeyKind, ListFilter, PutOptions, RawStore, StorageKey};

fn key(n: usize) -> StorageKey {
    StorageKey::single(KeyKind::Meta, format!("record-{n}")).unwrap()
}

async fn per_op(store: &token_store_file::FileStore, n: usize) -> (Duration, Duration) {
    const OPS: usize = 100;
    let started = Instant::now();
    for i in 0..OPS {
        store.read(&key(i * 7 % n)).await.unwrap().unwrap();
    }
    let get = started.elapsed() / OPS as u32;
    let started = Instant::now();
    for i in 0..OPS {
        store
            .write(&key(i * 7 % n), &[7u8; 600], &PutOptions::default())
            .await
            .unwrap();
    }
    (get, started.elapsed() / OPS as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_put_cost_does_not_grow_with_the_number_of_records() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::open(
        &tmp.path().join("s"),
        KeySource::KeyFile(tmp.path().join("k")),
    )
    .await
    .unwrap();
    let mut results = Vec::new();
    let mut stored = 0;
    for target in [100, 3000] {
        while stored < target {
            store
                .write(&key(stored), &[1u8; 600], &PutOptions::default())
                .await
                .unwrap();
            stored += 1;
        }
        let (get, put) = per_op(&store, target).await;
        let started = Instant::now();
        let listed = store.scan(KeyKind::Meta, &ListFilter::all()).await.unwrap();
        assert_eq!(listed.len(), target);
        println!(
            "{target} records: get {get:?}, put {put:?} (two fsyncs), scan {:?}",
            started.elapsed()
        );
        results.push((get, put));
    }
    let (small, large) = (results[0].0, results[1].0);
    assert!(
        large < small * 10 + Duration::from_millis(2),
        "get slowed from {small:?} to {large:?} with 30x the records"
    );
}
