//! The host-wide lock against the real keychains, held from another process: a holder
//! killed with SIGKILL releases it at once and the waiting write goes through, a wait
//! longer than the store's timeout fails with `Error::Unavailable` within the timeout (while
//! reads go on), and the lock directory named by URL is created private and checked.
//!
//! The holder is this test binary run again (`holder_child`, selected by an environment
//! variable naming the lock file), which locks the file the way any other process would
//! and sleeps until it is killed.
#![cfg(target_os = "linux")]
// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use token_store_conformance::services;
use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawStore, StorageKey, StoreUrl,
};
use token_store_keychain::{KeyLock, KeychainConfig, KeyringStore, Platform, SecretServiceStore};

fn lock_file(
    platform: Platform,
    config: &KeychainConfig,
    key: &StorageKey,
) -> token_store_core::Result<PathBuf> {
    Ok(KeyLock::new(platform, config, key)?.path())
}

const HOLD: &str = "TS_KEYCHAIN_TEST_HOLD_LOCK_FILE";

/// Not a test: the lock holder the tests below start (nothing in a normal run).
#[test]
fn holder_child() {
    let Ok(path) = std::env::var(HOLD) else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .unwrap();
    file.lock().unwrap();
    println!("\n@@ holding");
    std::thread::sleep(Duration::from_secs(3600));
}

/// A child process holding a lock file; SIGKILLed when dropped, if not before.
struct Holder(Child);

impl Holder {
    fn start(path: &Path) -> Holder {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["holder_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(HOLD, path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("@@ holding") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the holder never took the lock");
        Holder(child)
    }

    fn kill(&mut self) {
        self.0.kill().unwrap(); // SIGKILL: no unlock, no cleanup
        self.0.wait().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shared_bus() -> bool {
    services::require("TOKEN_STORE_TEST_SECRET_SERVICE").is_some()
        && services::require("DBUS_SESSION_BUS_ADDRESS").is_some()
}

fn keyutils() -> bool {
    services::require("TOKEN_STORE_TEST_KEYUTILS").is_some()
}

async fn open(platform: Platform, config: &KeychainConfig) -> Arc<dyn RawStore> {
    token_store_keychain::open_raw(&config.clone().with_platform(platform))
        .await
        .unwrap()
}

async fn clear(platform: Platform, config: &KeychainConfig) {
    match platform {
        Platform::Keyutils => KeyringStore::keyutils(config)
            .unwrap()
            .clear()
            .await
            .map(drop),
        _ => SecretServiceStore::connect(config)
            .await
            .unwrap()
            .clear()
            .await
            .map(drop),
    }
    .unwrap();
}

fn key() -> StorageKey {
    StorageKey::single(KeyKind::Lease, "held-by-another-process").unwrap()
}

async fn a_killed_holder_releases_the_lock(platform: Platform, name: &str) {
    let config = KeychainConfig::default().with_service(services::unique("ts-hold"));
    let store = open(platform, &config).await;
    let v0 = store
        .write(&key(), b"before", &PutOptions::new(Precondition::IfAbsent))
        .await
        .unwrap();
    let mut holder = Holder::start(&lock_file(platform, &config, &key()).unwrap());
    let write = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .write(
                    &key(),
                    b"after",
                    &PutOptions::new(Precondition::IfVersion(v0)),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !write.is_finished(),
        "[{name}] the compare-and-swap went through while another process held the lock"
    );
    holder.kill();
    let killed = Instant::now();
    let v1 = write.await.unwrap().unwrap();
    let after_kill = killed.elapsed();
    assert!(
        after_kill < Duration::from_secs(1),
        "[{name}] {after_kill:?}"
    );
    let got = store.read(&key()).await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), &got.version), (&b"after"[..], &v1));
    let listed = store
        .scan(KeyKind::Lease, &ListFilter::all())
        .await
        .unwrap();
    assert!(
        matches!(&listed[..], [ListEntry::Key(k)] if *k == key()),
        "[{name}] {listed:?}"
    );
    println!(
        "[{name}] a compare-and-swap waited for a lock held by another process and went through {:.1} ms after that process was killed",
        after_kill.as_secs_f64() * 1000.0
    );
    clear(platform, &config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_releases_the_lock_keyutils() {
    if keyutils() {
        a_killed_holder_releases_the_lock(Platform::Keyutils, "keyutils").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_releases_the_lock_secret_service() {
    if shared_bus() {
        a_killed_holder_releases_the_lock(Platform::SecretService, "secret-service").await;
    }
}

async fn a_longer_wait_fails_within_the_timeout(platform: Platform, name: &str) {
    const TIMEOUT: Duration = Duration::from_millis(400);
    // Connecting gets the ordinary timeout; the calls under test the short one.
    let config = KeychainConfig::default().with_service(services::unique("ts-hold"));
    let v0 = open(platform, &config)
        .await
        .write(&key(), b"before", &PutOptions::default())
        .await
        .unwrap();
    let store = open(platform, &config.clone().with_timeout(TIMEOUT)).await;
    let mut holder = Holder::start(&lock_file(platform, &config, &key()).unwrap());

    let unavailable = |r: token_store_core::Result<()>, what: &str, started: Instant| {
        let took = started.elapsed();
        match r {
            Err(e @ Error::Unavailable { .. }) => {
                assert!(
                    e.to_string()
                        .contains("another process holds the keychain lock"),
                    "[{name}] {what}: {e}"
                );
            }
            other => panic!("[{name}] {what}: {other:?}"),
        }
        assert!(
            took >= TIMEOUT && took < TIMEOUT + Duration::from_millis(300),
            "[{name}] {what} took {took:?} with a {TIMEOUT:?} timeout"
        );
        took
    };
    let t = Instant::now();
    let r = store
        .write(
            &key(),
            b"x",
            &PutOptions::new(Precondition::IfVersion(v0.clone())),
        )
        .await
        .map(drop);
    let cas_took = unavailable(r, "CAS put", t);
    let t = Instant::now();
    let r = store.write(&key(), b"x", &PutOptions::default()).await;
    unavailable(r.map(drop), "put", t);
    let t = Instant::now();
    let r = store.remove(&key(), &Precondition::Any).await;
    unavailable(r.map(drop), "delete", t);
    // Reads take no host lock: unaffected.
    let t = Instant::now();
    let got = store.read(&key()).await.unwrap().unwrap();
    let read_took = t.elapsed();
    assert_eq!(got.value.as_slice(), b"before");
    assert!(read_took < TIMEOUT, "[{name}] read took {read_took:?}");

    holder.kill();
    store
        .write(
            &key(),
            b"after",
            &PutOptions::new(Precondition::IfVersion(v0)),
        )
        .await
        .unwrap();
    println!(
        "[{name}] with another process holding the lock, a CAS put failed with Unavailable after {:.0} ms (timeout {TIMEOUT:?}); a read took {:.1} ms",
        cas_took.as_secs_f64() * 1000.0,
        read_took.as_secs_f64() * 1000.0
    );
    clear(platform, &config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_longer_than_the_timeout_is_unavailable_keyutils() {
    if keyutils() {
        a_longer_wait_fails_within_the_timeout(Platform::Keyutils, "keyutils").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_longer_than_the_timeout_is_unavailable_secret_service() {
    if shared_bus() {
        a_longer_wait_fails_within_the_timeout(Platform::SecretService, "secret-service").await;
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_directory_named_by_url_is_made_private_and_checked() {
    if !keyutils() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let service = services::unique("ts-lockdir");
    let url = |dir: &Path| {
        StoreUrl::parse(&format!(
            "keychain:keyutils?service={service}&lock_dir={}",
            dir.display()
        ))
        .unwrap()
    };
    let dir = tmp.path().join("new/locks");
    let store = token_store_keychain::open_url(&url(&dir)).await.unwrap();
    store
        .raw()
        .write(&key(), b"v", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!((mode(&dir), mode(&tmp.path().join("new"))), (0o700, 0o700));
    // A new key took its key file and the index file; both private.
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| mode(f) == 0o600), "{files:?}");
    let config = KeychainConfig::default()
        .with_service(&service)
        .with_lock_dir(&dir);
    assert!(files.contains(&lock_file(Platform::Keyutils, &config, &key()).unwrap()));
    clear(Platform::Keyutils, &config).await;

    let open_to_all = tmp.path().join("open");
    std::fs::create_dir(&open_to_all).unwrap();
    std::fs::set_permissions(&open_to_all, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    for bad in [&open_to_all, &link] {
        match token_store_keychain::open_url(&url(bad)).await {
            Err(e @ Error::PermissionDenied { .. }) => {
                assert!(e.to_string().contains(&*bad.to_string_lossy()), "{e}")
            }
            other => panic!("{}: {other:?}", bad.display()),
        }
    }
    let relative = StoreUrl::parse("keychain:keyutils?lock_dir=locks").unwrap();
    assert!(matches!(
        token_store_keychain::open_url(&relative).await,
        Err(Error::Config { .. })
    ));

    // The default directory, as every store without `lock_dir` uses it.
    let default = lock_file(Platform::Keyutils, &KeychainConfig::default(), &key()).unwrap();
    let default_dir = default.parent().unwrap();
    assert_eq!(mode(default_dir), 0o700, "{}", default_dir.display());
    let expected_root = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    assert!(
        default_dir.starts_with(&expected_root) || default_dir.starts_with("/run/user"),
        "{}",
        default_dir.display()
    );
    println!("default lock directory: {}", default_dir.display());
}
