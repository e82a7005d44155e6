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
        let store = SqliteStore::open(&config).await.unwrap();
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
