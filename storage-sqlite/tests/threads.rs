//! Reads on the caller's thread (a pool of read-only connections) beside writes on the
//! connection thread: many tasks on both runtime flavours, read-your-writes, old counted
//! versions still accepted.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use token_store_core::{
    Error, KeyKind, ListFilter, Precondition, PutOptions, RawStore, StorageKey, Version,
};
use token_store_sqlite::{SqliteConfig, SqliteStore};

fn meta_key(name: &str) -> StorageKey {
    StorageKey::single(KeyKind::Meta, name).unwrap()
}

/// 64 tasks, each owning a key: a CAS chain where every write is read back at once (from
/// whichever connection the read lands on), plus listings and reads of a shared key.
async fn many_tasks(store: SqliteStore) {
    let shared = meta_key("shared");
    store
        .write(&shared, b"shared", &PutOptions::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let store = store.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let key = meta_key(&format!("task{t}"));
            let mut version = store
                .write(&key, b"0", &PutOptions::new(Precondition::IfAbsent))
                .await
                .unwrap();
            for round in 1..20u32 {
                let value = round.to_string();
                let next = store
                    .write(
                        &key,
                        value.as_bytes(),
                        &PutOptions::new(Precondition::IfVersion(version.clone())),
                    )
                    .await
                    .unwrap();
                assert_ne!(next, version);
                let got = store.read(&key).await.unwrap().unwrap();
                assert_eq!(got.version, next, "a read missed the write before it");
                assert_eq!(&got.value[..], value.as_bytes());
                // The replaced version is stale now, whichever connection checks it.
                match store
                    .write(
                        &key,
                        b"stale",
                        &PutOptions::new(Precondition::IfVersion(version)),
                    )
                    .await
                {
                    Err(Error::Conflict { current, .. }) => assert_eq!(current, Some(next.clone())),
                    other => panic!("a stale CAS gave {other:?}"),
                }
                version = next;
                assert!(store.read(&shared).await.unwrap().is_some());
                if round % 5 == 0 {
                    let listed = store.scan(KeyKind::Meta, &ListFilter::all()).await.unwrap();
                    assert!(listed.len() >= 2);
                }
            }
            assert!(
                store
                    .remove(&key, &Precondition::IfVersion(version))
                    .await
                    .unwrap()
            );
            assert!(store.read(&key).await.unwrap().is_none());
        }));
    }
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("64 tasks did not finish: stuck on the connections?");
    let left = store.scan(KeyKind::Meta, &ListFilter::all()).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_on_a_multi_thread_runtime() {
    let root = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(root.path().join("t.db")))
        .await
        .unwrap();
    many_tasks(store).await;
}

#[tokio::test(flavor = "current_thread")]
async fn sixty_four_tasks_on_a_current_thread_runtime() {
    let root = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(root.path().join("t.db")))
        .await
        .unwrap();
    many_tasks(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_reading_threads_than_read_connections() {
    // Plain threads, each with its own runtime, all reading at once: some find every read
    // connection busy and go through the connection thread.
    let root = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(root.path().join("t.db")))
        .await
        .unwrap();
    let key = meta_key("k");
    let v = store
        .write(&key, b"v", &PutOptions::default())
        .await
        .unwrap();
    let v = Arc::new(v);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            let v = v.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    for _ in 0..2000 {
                        let got = store.read(&key).await.unwrap().unwrap();
                        assert_eq!(&got.version, &*v);
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[tokio::test]
async fn versions_are_random_and_counted_versions_still_work() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("t.db");
    let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
    let key = meta_key("v");
    let v1 = store
        .write(&key, b"1", &PutOptions::default())
        .await
        .unwrap();
    let v2 = store
        .write(&key, b"2", &PutOptions::default())
        .await
        .unwrap();
    for v in [&v1, &v2] {
        let n: i64 = v.as_str().parse().unwrap();
        assert!(n > 0, "{v:?}");
    }
    assert_ne!(v1, v2);
    // A row written by an older version of this crate (a counted version, 7), and its
    // counter: the counter is left alone, the old version is matched exactly.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE records SET version = 7 WHERE kind = 'meta' AND p1 = 'v'",
        [],
    )
    .unwrap();
    let counter = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT last_version FROM version_counter", [], |r| r.get(0))
            .unwrap()
    };
    let before = counter(&conn);
    assert_eq!(
        store.read(&key).await.unwrap().unwrap().version,
        Version::new("7")
    );
    let v3 = store
        .write(
            &key,
            b"3",
            &PutOptions::new(Precondition::IfVersion(Version::new("7"))),
        )
        .await
        .unwrap();
    assert_ne!(v3, Version::new("7"));
    assert!(
        store
            .remove(&key, &Precondition::IfVersion(v3))
            .await
            .unwrap()
    );
    assert_eq!(counter(&conn), before);
}

/// A `LocalSet` on a multi-thread runtime is a place where blocking in place is refused
/// (tokio panics there): writes must still work, on the connection thread.
#[test]
fn writes_from_a_local_set_on_a_multi_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("t.db");
    runtime.block_on(async {
        let store = SqliteStore::open(&SqliteConfig::new(path)).await.unwrap();
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let task = tokio::task::spawn_local(async move {
                    let key = meta_key("local");
                    let v = store
                        .write(&key, b"1", &PutOptions::new(Precondition::IfAbsent))
                        .await
                        .unwrap();
                    let got = store.read(&key).await.unwrap().unwrap();
                    assert_eq!(got.version, v);
                    assert!(
                        store
                            .remove(&key, &Precondition::IfVersion(v))
                            .await
                            .unwrap()
                    );
                });
                task.await.unwrap();
            })
            .await;
    });
}
