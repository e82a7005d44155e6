//! The shared torture suites on SQLite: 200 SIGKILL crash rounds through `open_url`, the
//! concurrent model check (plain and encrypted), hostile keys and stored bytes, and damaged
//! database files (random bytes overwritten anywhere in a real database).

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use token_store_conformance::hostile::{self, hostile_cases};
use token_store_conformance::proptest::prelude::*;
use token_store_conformance::proptest::test_runner::{Config, TestCaseError, TestRunner};
use token_store_conformance::{
    BoxFuture, Instance, concurrent_model_check, crash, model_check_cases, proptest, summary,
};
use token_store_core::KeySource;
use token_store_core::layers::Encrypted;
use token_store_core::{KeyKind, ListFilter, PutOptions, RawStore, StorageKey, StoreUrl};
use token_store_sqlite::{SqliteConfig, SqliteStore};

type Factory =
    Box<dyn Fn() -> BoxFuture<'static, token_store_core::Result<Instance>> + Send + Sync>;

fn factory(encrypted: bool) -> Factory {
    let root = Arc::new(tempfile::tempdir().unwrap());
    Box::new(move || {
        let root = root.clone();
        Box::pin(async move {
            let path = root
                .path()
                .join(token_store_conformance::services::unique("db"))
                .join("tokens.db");
            let open = move || {
                let path = path.clone();
                let root = root.clone();
                async move {
                    let _keep = root;
                    let key = KeySource::KeyFile(path.with_extension("key"));
                    let store = SqliteStore::open(&SqliteConfig::new(path)).await?;
                    let store: Arc<dyn RawStore> = if encrypted {
                        Arc::new(Encrypted::open(store, key).await?)
                    } else {
                        Arc::new(store)
                    };
                    Ok(store)
                }
            };
            let store = open().await?;
            Ok(Instance::with_reopen(store, open))
        })
    })
}

fn open_url(url: StoreUrl) -> BoxFuture<'static, token_store_core::Result<Arc<dyn RawStore>>> {
    Box::pin(async move { Ok(token_store_sqlite::open_url(&url).await?.raw().clone()) })
}

/// The crash child (does nothing unless started by the crash harness).
#[test]
fn crash_child() {
    crash::child(open_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_rounds_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        tmp.path().join("db").join("tokens.db").display()
    );
    crash::run("sqlite", &url, open_url, crash::rounds(200), None)
        .await
        .assert_ok("sqlite");
}

#[test]
fn concurrent_model_sqlite() {
    concurrent_model_check("sqlite", factory(false), model_check_cases(256));
}

#[test]
fn concurrent_model_sqlite_encrypted() {
    concurrent_model_check("sqlite+encrypted", factory(true), model_check_cases(256));
}

#[test]
fn hostile_keys_sqlite() {
    hostile::hostile_keys("sqlite", factory(false), hostile_cases(64));
}

#[test]
fn hostile_bytes_sqlite() {
    hostile::hostile_bytes("sqlite", factory(false), hostile_cases(64));
}

fn key(n: usize) -> StorageKey {
    StorageKey::single(KeyKind::Meta, format!("damaged-{n}")).unwrap()
}

/// A closed database with 40 records of varying size (some over a page), checkpointed.
async fn pristine(dir: &Path) -> PathBuf {
    let path = dir.join("pristine").join("tokens.db");
    let store = SqliteStore::open(&SqliteConfig::new(&path)).await.unwrap();
    for n in 0..40 {
        let value = vec![n as u8; 10 + n * 300];
        store
            .write(&key(n), &value, &PutOptions::default())
            .await
            .unwrap();
    }
    // The drop returns once the connection thread has checkpointed and closed the database.
    drop(store);
    path
}

/// Overwrites random bytes of a real database file; open, read, list and write must give
/// values or typed errors, in bounded time, never a panic.
#[test]
fn damaged_database_files() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pristine = rt.block_on(pristine(tmp.path()));
    let bytes = std::fs::read(&pristine).unwrap();
    let wal = std::fs::read(pristine.with_extension("db-wal")).unwrap_or_default();
    let len = bytes.len();
    let cases = hostile_cases(64);
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(
        (0..len, proptest::collection::vec(any::<u8>(), 1..64)),
        1..6,
    );
    runner
        .run(&strategy, |damage| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = tmp.path().join(format!("case{n}"));
            std::fs::create_dir_all(&dir).unwrap();
            // The store refuses files other users could read.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            let mut damaged = bytes.clone();
            for (at, junk) in damage {
                for (i, b) in junk.into_iter().enumerate() {
                    if let Some(slot) = damaged.get_mut(at + i) {
                        *slot = b;
                    }
                }
            }
            let path = dir.join("tokens.db");
            std::fs::write(&path, &damaged).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if !wal.is_empty() {
                let w = path.with_extension("db-wal");
                std::fs::write(&w, &wal).unwrap();
                std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            let outcome = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), use_damaged(&path)).await
            });
            let outcome =
                outcome.map_err(|_| TestCaseError::fail("a call on a damaged database hung"))?;
            *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        })
        .unwrap();
    let outcomes = outcomes.into_inner().unwrap();
    println!("damaged databases: {outcomes:?}");
    summary::torture(
        "hostile-decoder",
        "sqlite",
        &[
            ("cases", cases.to_string()),
            ("decoder", "database-file".into()),
            ("outcomes", format!("{outcomes:?}").replace(' ', "")),
        ],
    );
}

/// What happened, in a word per step; errors are fine, panics are not.
async fn use_damaged(path: &Path) -> String {
    let store = match SqliteStore::open(&SqliteConfig::new(path)).await {
        Ok(s) => s,
        Err(e) => return format!("open:{}", variant(&e)),
    };
    let mut read_errors = 0;
    for n in 0..40 {
        if store.read(&key(n)).await.is_err() {
            read_errors += 1;
        }
    }
    let scan = match store.scan(KeyKind::Meta, &ListFilter::all()).await {
        Ok(_) => "ok".to_owned(),
        Err(e) => variant(&e),
    };
    let write = match store
        .write(&key(99), b"after", &PutOptions::default())
        .await
    {
        Ok(_) => "ok".to_owned(),
        Err(e) => variant(&e),
    };
    format!(
        "opened,read_errors:{},scan:{scan},write:{write}",
        if read_errors == 0 { "none" } else { "some" }
    )
}

fn variant(e: &token_store_core::Error) -> String {
    format!("{e:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or("?")
        .to_owned()
}
