//! The keyutils store against the real kernel: the whole conformance suite and the model
//! check, at the kernel's own item limit and at Windows' 2 560-byte limit (so the chunked
//! layout Windows needs runs against a real keychain here).
//!
//! Needs `TOKEN_STORE_TEST_KEYUTILS=1` and a private session keyring: the CI script runs
//! `keyctl session - cargo test ...`, so the keys live in a fresh anonymous session keyring
//! rather than root's shared `@u`/`@s`, and every test deletes what it created.
#![cfg(target_os = "linux")]
// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use token_store_conformance::{Instance, model_check, model_check_cases, run, services};
use token_store_core::{
    Error, KeyKind, ListFilter, Precondition, PutOptions, RawStore, Scope, StorageKey,
};
use token_store_keychain::{KeychainConfig, KeyringStore, WINDOWS_ITEM_LIMIT};

fn enabled() -> bool {
    services::require("TOKEN_STORE_TEST_KEYUTILS").is_some()
}

#[derive(Clone, Default)]
struct Used(Arc<Mutex<Vec<KeychainConfig>>>);

impl Used {
    fn config(&self, chunk: Option<usize>) -> KeychainConfig {
        let mut config = KeychainConfig::default().with_service(services::unique("ts-ku"));
        if let Some(c) = chunk {
            config = config.with_chunk_size(c);
        }
        self.0.lock().unwrap().push(config.clone());
        config
    }

    async fn clean(&self) {
        let configs = self.0.lock().unwrap().clone();
        for config in configs {
            KeyringStore::keyutils(&config)
                .unwrap()
                .clear()
                .await
                .unwrap();
        }
    }
}

fn factory(
    used: Used,
    chunk: Option<usize>,
) -> impl Fn() -> token_store_conformance::BoxFuture<'static, token_store_core::Result<Instance>>
+ Send
+ Sync
+ 'static {
    move || {
        let config = used.config(chunk);
        Box::pin(async move {
            let store: Arc<dyn RawStore> = Arc::new(KeyringStore::keyutils(&config)?);
            // Not persistent across reboots, but a new handle in this session sees the data.
            Ok(Instance::with_reopen(store, move || {
                let config = config.clone();
                async move { Ok(Arc::new(KeyringStore::keyutils(&config)?) as Arc<dyn RawStore>) }
            }))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_keyutils() {
    if !enabled() {
        return;
    }
    let used = Used::default();
    let t = Instant::now();
    let report = run("keyutils", factory(used.clone(), None)).await;
    println!("conformance[keyutils] took {:?}", t.elapsed());
    used.clean().await;
    report.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_keyutils_windows_sized_chunks() {
    if !enabled() {
        return;
    }
    let used = Used::default();
    let report = run(
        "keyutils-2560",
        factory(used.clone(), Some(WINDOWS_ITEM_LIMIT)),
    )
    .await;
    used.clean().await;
    report.assert_ok();
}

#[test]
fn model_keyutils() {
    if !enabled() {
        return;
    }
    let used = Used::default();
    let t = Instant::now();
    model_check(
        "keyutils",
        factory(used.clone(), None),
        model_check_cases(256),
    );
    println!("model check[keyutils] took {:?}", t.elapsed());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(used.clean());
}

#[test]
fn model_keyutils_tiny_chunks() {
    if !enabled() {
        return;
    }
    let used = Used::default();
    model_check(
        "keyutils-64",
        factory(used.clone(), Some(64)),
        model_check_cases(64),
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(used.clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_are_honest_and_limits_typed() {
    if !enabled() {
        return;
    }
    let used = Used::default();
    let store = KeyringStore::keyutils(&used.config(None)).unwrap();
    let caps = store.capabilities();
    assert!(caps.cas == Scope::Host && caps.shared_with == Scope::Host && caps.ttl);
    assert!(!caps.persistent);
    let key = StorageKey::single(KeyKind::Meta, "big").unwrap();
    let over = vec![0u8; caps.max_value_size + 1];
    assert!(matches!(
        store.write(&key, &over, &PutOptions::default()).await,
        Err(Error::TooLarge { .. })
    ));
    // 40 000 bytes: over the kernel's 32 767-byte key limit, stored as two chunks.
    let big = vec![9u8; 40_000];
    store
        .write(&key, &big, &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.read(&key).await.unwrap().unwrap().value.as_slice(),
        big.as_slice()
    );
    assert_eq!(
        store
            .scan(KeyKind::Meta, &ListFilter::all())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.clear().await.unwrap(), 1);
    assert!(store.read(&key).await.unwrap().is_none());
    assert!(matches!(
        KeyringStore::keyutils(&KeychainConfig::default().with_chunk_size(10)),
        Err(Error::Config { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_url_keyutils() {
    if !enabled() {
        return;
    }
    let service = services::unique("ts-url");
    let url = token_store_core::StoreUrl::parse(&format!(
        "keychain:keyutils?service={service}&chunk_size=2560&timeout_ms=2000"
    ))
    .unwrap();
    let typed = token_store_keychain::open_url(&url).await.unwrap();
    assert_eq!(typed.backend(), "keyutils");
    let store = typed.raw();
    let key = StorageKey::single(KeyKind::Lease, "l").unwrap();
    store
        .write(&key, &[1u8; 6000], &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(store.read(&key).await.unwrap().unwrap().value.len(), 6000);
    store.remove(&key, &Default::default()).await.unwrap();
    KeyringStore::keyutils(&KeychainConfig::default().with_service(service))
        .unwrap()
        .clear()
        .await
        .unwrap();
    for bad in [
        "keychain:nope",
        "keychain:keyutils?what=1",
        "keychain:keyutils?chunk_size=x",
    ] {
        let url = token_store_core::StoreUrl::parse(bad).unwrap();
        assert!(
            matches!(
                token_store_keychain::open_url(&url).await,
                Err(Error::Config { .. })
            ),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency() {
    if !enabled() {
        return;
    }
    let used = Used::default();
    for chunk in [None, Some(WINDOWS_ITEM_LIMIT)] {
        let store = KeyringStore::keyutils(&used.config(chunk)).unwrap();
        let key = StorageKey::single(KeyKind::Meta, "lat").unwrap();
        let value = vec![b'x'; 4096];
        const N: u32 = 200;
        let t = Instant::now();
        for _ in 0..N {
            store
                .write(&key, &value, &PutOptions::default())
                .await
                .unwrap();
        }
        let put = t.elapsed() / N;
        let t = Instant::now();
        for _ in 0..N {
            store.read(&key).await.unwrap().unwrap();
        }
        let get = t.elapsed() / N;
        println!("keyutils latency (4 KiB, chunk {chunk:?}): put {put:?}, get {get:?}");
    }
    used.clean().await;
}

/// The other process of `reads_racing_another_process_deletes_see_the_record_or_nothing`:
/// creates and deletes one key until its time is up (nothing in a normal run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_child() {
    let Ok(service) = std::env::var("TS_KEYUTILS_CHURN_SERVICE") else {
        return;
    };
    let config = KeychainConfig::default().with_service(service);
    let writer = KeyringStore::keyutils(&config).unwrap();
    let key = StorageKey::single(KeyKind::State, "raced").unwrap();
    let started = Instant::now();
    let mut rounds = 0u32;
    while started.elapsed() < CHURN {
        writer
            .write(&key, b"value", &PutOptions::default())
            .await
            .unwrap();
        writer.remove(&key, &Precondition::Any).await.unwrap();
        rounds += 1;
    }
    println!("churned {rounds}");
}

const CHURN: std::time::Duration = std::time::Duration::from_secs(6);

/// Reads racing another process's deletes and re-creations of the key they read see the
/// record or its absence, never an error. keyutils answers EACCES for a key found by search
/// and unlinked by another process before it is read (this process's own writers are kept
/// off by its lock): once seen as "permission denied" by a refresh in an 8-process test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_another_process_deletes_see_the_record_or_nothing() {
    if !enabled() {
        return;
    }
    let used = Used::default();
    let config = used.config(None);
    let service = config.service.clone();
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "churn_child", "--nocapture", "--test-threads=1"])
        .env("TS_KEYUTILS_CHURN_SERVICE", &service)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reader = KeyringStore::keyutils(&config).unwrap();
    let key = StorageKey::single(KeyKind::State, "raced").unwrap();
    let (mut found, mut absent) = (0u32, 0u32);
    let started = Instant::now();
    while started.elapsed() < CHURN {
        match reader.read(&key).await {
            Ok(Some(r)) => {
                assert_eq!(r.value.as_slice(), b"value");
                found += 1;
            }
            Ok(None) => absent += 1,
            Err(e) => panic!("a read racing another process's deletes failed: {e}"),
        }
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "the churning process failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}reads found {found}, absent {absent}");
    assert!(
        stdout.contains("churned "),
        "the churning process did not run"
    );
    assert!(found > 10 && absent > 10, "the race did not run");
    used.clean().await;
}
