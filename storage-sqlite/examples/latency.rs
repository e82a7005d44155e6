//! Per-call latencies of the raw SQLite store, printed as medians and 99th percentiles:
//! `cargo run --release -p token-store-sqlite --example latency [-- ROUNDS]`.
//!
//! A quick check for changes to the write path (the benches crate has the real benchmarks):
//! put of a new key, get, compare-and-swap, delete, a put right after a delete and one 10 ms
//! after a delete (they queue behind whatever the delete left the connection thread to do),
//! a listing, and what one `PRAGMA wal_checkpoint(TRUNCATE)` right after a delete costs (the
//! price of scrubbing the WAL inside every delete, which the store does not pay).

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use token_store_core::{KeyKind, ListFilter, Precondition, PutOptions, RawStore, StorageKey};
use token_store_sqlite::{SqliteConfig, SqliteStore, Synchronous};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn key(n: usize) -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec![
            format!("u{}", n % 10),
            format!("https://r{n}.example/mcp"),
            String::new(),
            String::new(),
        ],
    )
    .expect("valid key")
}

#[derive(Default)]
struct Samples {
    put: Vec<Duration>,
    get: Vec<Duration>,
    cas: Vec<Duration>,
    delete: Vec<Duration>,
    put_after_delete: Vec<Duration>,
    put_10ms_after_delete: Vec<Duration>,
    checkpoint_after_delete: Vec<Duration>,
}

async fn timed<T>(into: &mut Vec<Duration>, f: impl Future<Output = T>) -> T {
    let t = Instant::now();
    let out = f.await;
    into.push(t.elapsed());
    out
}

async fn run(store: &SqliteStore, rounds: usize) -> Samples {
    // A token record's size, give or take.
    let value = vec![7u8; 2048];
    let any = PutOptions::default();
    let mut s = Samples::default();
    for n in 0..rounds {
        let k = key(n);
        let v = timed(&mut s.put, store.write(&k, &value, &any))
            .await
            .unwrap();
        timed(&mut s.get, store.read(&k)).await.unwrap().unwrap();
        let cas = PutOptions::new(Precondition::IfVersion(v));
        timed(&mut s.cas, store.write(&k, &value, &cas))
            .await
            .unwrap();
        assert!(
            timed(&mut s.delete, store.remove(&k, &Precondition::Any))
                .await
                .unwrap()
        );
        timed(&mut s.put_after_delete, store.write(&k, &value, &any))
            .await
            .unwrap();
    }
    let path = store.config().path.clone();
    let checkpointer = rusqlite::Connection::open(&path).unwrap();
    for n in 0..rounds / 5 {
        let k = key(rounds + n);
        store.write(&k, &value, &any).await.unwrap();
        assert!(store.remove(&k, &Precondition::Any).await.unwrap());
        let t = Instant::now();
        let busy: i64 = checkpointer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        // Busy: the store's own scrub was under way; that sample measures nothing.
        if busy == 0 {
            s.checkpoint_after_delete.push(t.elapsed());
        }
        assert!(store.remove(&key(n), &Precondition::Any).await.unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
        timed(&mut s.put_10ms_after_delete, store.write(&k, &value, &any))
            .await
            .unwrap();
    }
    s
}

fn line(name: &str, v: &mut [Duration]) -> String {
    format!("{name} p50 {:?} p99 {:?}", pct(v, 0.5), pct(v, 0.99))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    for sync in [Synchronous::Full, Synchronous::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let config = SqliteConfig::new(dir.path().join("t.db")).with_synchronous(sync);
        let store = SqliteStore::open(&config).await.unwrap();
        let mut s = run(&store, rounds).await;
        let t = Instant::now();
        let listed = store
            .scan(KeyKind::Token, &ListFilter::user("u3"))
            .await
            .unwrap();
        let scan = t.elapsed();
        let t = Instant::now();
        drop(store);
        let close = t.elapsed();
        println!("synchronous={sync:?}, {rounds} rounds:");
        for (name, v) in [
            ("put", &mut s.put),
            ("get", &mut s.get),
            ("cas", &mut s.cas),
            ("delete", &mut s.delete),
            ("put after delete", &mut s.put_after_delete),
            ("put 10 ms after delete", &mut s.put_10ms_after_delete),
            (
                "TRUNCATE checkpoint after delete",
                &mut s.checkpoint_after_delete,
            ),
        ] {
            println!("  {}", line(name, v));
        }
        println!(
            "  scan of {} keys {scan:?}; drop (close) {close:?}",
            listed.len()
        );
    }
}
