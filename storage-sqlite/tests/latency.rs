//! Rough per-call latencies, printed, not asserted (`cargo test -p token-store-sqlite --test
//! latency -- --ignored --nocapture`). The benches crate has the real benchmarks.

use std::time::{Duration, Instant};

use token_store_core::{KeyKind, ListFilter, Precondition, PutOptions, RawStore, StorageKey};
use token_store_sqlite::{SqliteConfig, SqliteStore, Synchronous};

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints timings; run on demand"]
async fn latency_numbers() {
    for sync in [Synchronous::Full, Synchronous::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let config = SqliteConfig::new(dir.path().join("t.db")).with_synchronous(sync);
        let store = SqliteStore::open(config).await.unwrap();
        let value = vec![7u8; 2048];
        let key = |n: usize| {
            StorageKey::new(
                KeyKind::Token,
                vec![
                    format!("u{}", n % 10),
                    format!("r{n}"),
                    String::new(),
                    String::new(),
                ],
            )
            .unwrap()
        };
        let (mut puts, mut cas, mut gets) = (Vec::new(), Vec::new(), Vec::new());
        for n in 0..500 {
            let t = Instant::now();
            let v = store
                .write(&key(n), &value, &PutOptions::default())
                .await
                .unwrap();
            puts.push(t.elapsed());
            let t = Instant::now();
            store.read(&key(n)).await.unwrap().unwrap();
            gets.push(t.elapsed());
            let t = Instant::now();
            store
                .write(
                    &key(n),
                    &value,
                    &PutOptions::new(Precondition::IfVersion(v)),
                )
                .await
                .unwrap();
            cas.push(t.elapsed());
        }
        let t = Instant::now();
        let listed = store
            .scan(KeyKind::Token, &ListFilter::user("u3"))
            .await
            .unwrap();
        let scan = t.elapsed();
        println!(
            "synchronous={sync:?}: put p50 {:?} p99 {:?}; cas p50 {:?} p99 {:?}; get p50 {:?} p99 {:?}; scan of {} of 500 keys {:?}",
            pct(puts.clone(), 0.5),
            pct(puts, 0.99),
            pct(cas.clone(), 0.5),
            pct(cas, 0.99),
            pct(gets.clone(), 0.5),
            pct(gets, 0.99),
            listed.len(),
            scan
        );
    }
}

/// Both write paths in one process, without fsync (`synchronous=NORMAL`) so the per-call
/// cost shows: a current-thread runtime hands writes to the connection thread, a task on a
/// multi-thread runtime writes in place. Alternating blocks.
#[test]
#[ignore = "prints timings; run on demand"]
fn write_paths_compared() {
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig::new(dir.path().join("t.db")).with_synchronous(Synchronous::Normal);
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = multi.block_on(SqliteStore::open(config)).unwrap();
    let key = StorageKey::single(KeyKind::Meta, "k").unwrap();
    let value = vec![7u8; 1614];
    let block = |store: SqliteStore, key: StorageKey, value: Vec<u8>| async move {
        let mut v = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            store
                .write(&key, &value, &PutOptions::default())
                .await
                .unwrap();
            v.push(t.elapsed());
        }
        v
    };
    let (mut inline, mut hop) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let task = multi.spawn(block(store.clone(), key.clone(), value.clone()));
        inline.extend(multi.block_on(task).unwrap());
        hop.extend(single.block_on(block(store.clone(), key.clone(), value.clone())));
    }
    println!(
        "put, synchronous=NORMAL: in place (multi-thread worker) p50 {:?} p99 {:?}; via the connection thread (current-thread runtime) p50 {:?} p99 {:?}",
        pct(inline.clone(), 0.5),
        pct(inline, 0.99),
        pct(hop.clone(), 0.5),
        pct(hop, 0.99),
    );
}
