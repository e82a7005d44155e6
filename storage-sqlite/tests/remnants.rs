//! A deleted token leaves no plaintext in the database files (`tokens.db`, `-wal`, `-shm`):
//! not after the store is dropped, not after the process exits right after the delete, not
//! while another store keeps the database open, not after a SIGKILL once the database is
//! opened again, and not for long while the store stays open.
//!
//! Each check writes a canary (a random marker repeated through a small value that fits in
//! its B-tree cell and a large one that spills into overflow pages), deletes it, and scans
//! every file's bytes for the marker, over several rounds on fresh databases.
//!
//! The children are this test binary run again with `TOKEN_STORE_SQLITE_REMNANT_CHILD` set,
//! filtered to `remnant_child` (which does nothing in a normal run).

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use token_store_core::{KeyKind, Precondition, PutOptions, RawStore, StorageKey};
use token_store_sqlite::{SqliteConfig, SqliteStore};

const CHILD_ENV: &str = "TOKEN_STORE_SQLITE_REMNANT_CHILD";
const DB_ENV: &str = "TOKEN_STORE_SQLITE_REMNANT_DB";
const CANARY_ENV: &str = "TOKEN_STORE_SQLITE_REMNANT_CANARY";

/// Rounds per check: `TOKEN_STORE_SQLITE_REMNANT_ROUNDS`, else 10.
fn rounds() -> usize {
    std::env::var("TOKEN_STORE_SQLITE_REMNANT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn canary() -> String {
    let mut b = [0u8; 12];
    token_store_core::backend::fill_random(&mut b).unwrap();
    format!("CANARY-{}", token_store_core::backend::hex(&b))
}

/// `canary` repeated to `len` bytes, so any surviving fragment of a page holds it whole.
fn value(canary: &str, len: usize) -> Vec<u8> {
    format!("{canary}|")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

fn key(name: &str) -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec![
            "user".into(),
            format!("https://{name}.example/mcp"),
            String::new(),
            String::new(),
        ],
    )
    .unwrap()
}

/// Writes the canary under two keys (one value in its cell, one over several overflow
/// pages), with a live neighbour on the same page, and deletes both canaries.
async fn put_and_delete(store: &SqliteStore, canary: &str) {
    let any = PutOptions::default();
    store
        .write(&key("neighbour"), b"a live record", &any)
        .await
        .unwrap();
    store
        .write(&key("small"), &value(canary, 600), &any)
        .await
        .unwrap();
    store
        .write(&key("large"), &value(canary, 20_000), &any)
        .await
        .unwrap();
    for name in ["small", "large"] {
        assert!(store.remove(&key(name), &Precondition::Any).await.unwrap());
    }
}

/// The files that hold the canary, with their sizes.
fn remnants(db: &Path, canary: &str) -> Vec<String> {
    let needle = canary.as_bytes();
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = PathBuf::from(format!("{}{suffix}", db.display()));
            let bytes = std::fs::read(&path).ok()?;
            bytes
                .windows(needle.len())
                .any(|w| w == needle)
                .then(|| format!("{} ({} bytes)", path.display(), bytes.len()))
        })
        .collect()
}

fn fresh_db(root: &Path, round: usize) -> PathBuf {
    root.join(format!("r{round}")).join("tokens.db")
}

/// Runs `check` for every round and fails naming the rounds whose files kept the canary.
async fn every_round<F, Fut>(what: &str, mut check: F)
where
    F: FnMut(PathBuf, String) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let root = tempfile::tempdir().unwrap();
    let n = rounds();
    let mut leaked = Vec::new();
    for round in 0..n {
        let found = check(fresh_db(root.path(), round), canary()).await;
        if !found.is_empty() {
            leaked.push(format!("round {round}: {}", found.join(", ")));
        }
    }
    println!(
        "remnants[{what}]: the deleted canary was in the files after {} of {n} rounds",
        leaked.len()
    );
    assert!(
        leaked.is_empty(),
        "{what}: deleted tokens left plaintext behind in {} of {n} rounds:\n{}",
        leaked.len(),
        leaked.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_left_after_the_store_is_dropped() {
    every_round("drop", |db, canary| async move {
        let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
        put_and_delete(&store, &canary).await;
        drop(store);
        remnants(&db, &canary)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_left_while_another_store_keeps_the_database_open() {
    // The other store is the last connection, so SQLite's own checkpoint-on-close never
    // runs for the store that deleted: only its explicit one can clear the WAL.
    every_round("other store open", |db, canary| async move {
        let other = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
        let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
        put_and_delete(&store, &canary).await;
        drop(store);
        let found = remnants(&db, &canary);
        assert!(other.read(&key("neighbour")).await.unwrap().is_some());
        found
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_left_soon_while_the_store_stays_open() {
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    every_round("store open", |db, canary| {
        let slowest = &slowest;
        async move {
            let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
            put_and_delete(&store, &canary).await;
            let deleted = Instant::now();
            // Deletes are scrubbed in the background, shortly after; allow a loaded machine.
            let found = loop {
                let found = remnants(&db, &canary);
                if found.is_empty() || deleted.elapsed() > Duration::from_secs(5) {
                    break found;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let mut slowest = slowest.lock().unwrap();
            *slowest = (*slowest).max(deleted.elapsed());
            drop(store);
            found
        }
    })
    .await;
    let slowest = slowest.into_inner().unwrap();
    println!("remnants[store open]: scrubbed at most {slowest:?} after the delete");
}

fn spawn_child(role: &str, db: &Path, canary: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "remnant_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, role)
        .env(DB_ENV, db)
        .env(CANARY_ENV, canary)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Runs only as a child (see the module docs): deletes the canary, then either exits at
/// once (`exit`) or waits to be killed (`kill`).
#[test]
fn remnant_child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = PathBuf::from(std::env::var(DB_ENV).unwrap());
    let canary = std::env::var(CANARY_ENV).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
        put_and_delete(&store, &canary).await;
        match role.as_str() {
            "exit" => {
                drop(store);
                // Right away: no runtime shutdown, no test harness epilogue.
                std::process::exit(0);
            }
            "kill" => {
                println!();
                println!("deleted");
                std::future::pending::<()>().await;
            }
            other => panic!("unknown child role {other}"),
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_left_after_the_process_exits_right_after_the_delete() {
    every_round("process exit", |db, canary| async move {
        let status = spawn_child("exit", &db, &canary).wait().unwrap();
        assert!(status.success(), "the child failed: {status}");
        remnants(&db, &canary)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writers_deleted_tokens_are_gone_once_the_database_is_opened() {
    every_round("SIGKILL, then open", |db, canary| async move {
        let mut child = spawn_child("kill", &db, &canary);
        let stdout = child.stdout.take().unwrap();
        let deleted = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l == "deleted");
        assert!(deleted, "the child did not delete");
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
        let found = remnants(&db, &canary);
        assert!(store.read(&key("neighbour")).await.unwrap().is_some());
        drop(store);
        found
    })
    .await;
}
