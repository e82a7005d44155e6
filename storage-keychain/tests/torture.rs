//! The shared torture suites on the keychains: the concurrent model check, hostile keys and
//! hostile stored bytes on the Secret Service (gnome-keyring on the shared bus) and on
//! keyutils; foreign items under our attributes (junk and forged envelopes); and service
//! faults on a private bus: the gnome-keyring daemon killed (SIGKILL) and started again, and
//! paused (SIGSTOP) — with the same store object throughout.
//!
//! Clients killed with SIGKILL in the middle of a write (holding the host lock) are in
//! `tests/processes.rs`: a killed Secret Service client leaves at most a duplicate item, which
//! the store already resolves (newest wins); a killed keyutils client at most orphaned chunks.
#![cfg(target_os = "linux")]
// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use token_store_conformance::fault::{self, Fault};
use token_store_conformance::hostile::{self, hostile_cases};
use token_store_conformance::proptest::prelude::*;
use token_store_conformance::proptest::test_runner::{
    Config as RunnerConfig, TestCaseError, TestRunner,
};
use token_store_conformance::{
    BoxFuture, Instance, concurrent_model_check, model_check_cases, proptest, services, summary,
};
use token_store_core::{
    Error, KeyKind, ListFilter, Precondition, PutOptions, RawStore, StorageKey,
};
use token_store_keychain::{KeychainConfig, KeyringStore, SecretServiceStore};

fn shared_bus() -> bool {
    services::require("TOKEN_STORE_TEST_SECRET_SERVICE").is_some()
        && services::require("DBUS_SESSION_BUS_ADDRESS").is_some()
}

fn keyutils() -> bool {
    services::require("TOKEN_STORE_TEST_KEYUTILS").is_some()
}

/// A factory that deletes the previous store's items whenever it makes a new one (gnome-keyring
/// rewrites its whole file on every change, so thousands of leftovers would slow every case).
#[derive(Clone)]
struct Tidy {
    keyutils: bool,
    live: Arc<Mutex<Vec<KeychainConfig>>>,
}

impl Tidy {
    fn new(keyutils: bool) -> Self {
        Tidy {
            keyutils,
            live: Arc::default(),
        }
    }

    async fn clear(keyutils: bool, config: KeychainConfig) {
        if keyutils {
            let _ = KeyringStore::keyutils(&config).unwrap().clear().await;
        } else if let Ok(s) = SecretServiceStore::connect(&config).await {
            let _ = s.clear().await;
        }
    }

    async fn finish(&self) {
        let live: Vec<KeychainConfig> = std::mem::take(&mut *self.live.lock().unwrap());
        for c in live {
            Self::clear(self.keyutils, c).await;
        }
    }

    fn factory(
        &self,
    ) -> impl Fn() -> BoxFuture<'static, token_store_core::Result<Instance>> + Send + Sync + 'static
    {
        let tidy = self.clone();
        move || {
            let tidy = tidy.clone();
            Box::pin(async move {
                let old: Vec<KeychainConfig> = std::mem::take(&mut *tidy.live.lock().unwrap());
                for c in old {
                    Tidy::clear(tidy.keyutils, c).await;
                }
                let config = KeychainConfig::default().with_service(services::unique("ts-torture"));
                tidy.live.lock().unwrap().push(config.clone());
                let store: Arc<dyn RawStore> = if tidy.keyutils {
                    Arc::new(KeyringStore::keyutils(&config)?)
                } else {
                    Arc::new(SecretServiceStore::connect(&config).await?)
                };
                Ok(Instance::new(store))
            })
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

#[test]
fn concurrent_model_secret_service() {
    if !shared_bus() {
        return;
    }
    let tidy = Tidy::new(false);
    concurrent_model_check("secret-service", tidy.factory(), model_check_cases(256));
    block_on(tidy.finish());
}

#[test]
fn hostile_keys_secret_service() {
    if !shared_bus() {
        return;
    }
    let tidy = Tidy::new(false);
    hostile::hostile_keys("secret-service", tidy.factory(), hostile_cases(64));
    block_on(tidy.finish());
}

#[test]
fn hostile_bytes_secret_service() {
    if !shared_bus() {
        return;
    }
    let tidy = Tidy::new(false);
    hostile::hostile_bytes("secret-service", tidy.factory(), hostile_cases(64));
    block_on(tidy.finish());
}

#[test]
fn concurrent_model_keyutils() {
    if !keyutils() {
        return;
    }
    let tidy = Tidy::new(true);
    concurrent_model_check("keyutils", tidy.factory(), model_check_cases(256));
    block_on(tidy.finish());
}

#[test]
fn hostile_keys_keyutils() {
    if !keyutils() {
        return;
    }
    let tidy = Tidy::new(true);
    hostile::hostile_keys("keyutils", tidy.factory(), hostile_cases(64));
    block_on(tidy.finish());
}

#[test]
fn hostile_bytes_keyutils() {
    if !keyutils() {
        return;
    }
    let tidy = Tidy::new(true);
    hostile::hostile_bytes("keyutils", tidy.factory(), hostile_cases(64));
    block_on(tidy.finish());
}

/// A forged envelope (see the crate's envelope layout): right magic, every field chosen.
fn forged_envelope(encoded_key: String) -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 0..40),
        any::<u64>(),
        prop_oneof![Just(0u64), any::<u64>(), Just(u64::MAX)],
        prop_oneof![Just(None), any::<u32>().prop_map(Some)],
        prop_oneof![
            Just(encoded_key.into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..30)
        ],
        proptest::collection::vec(any::<u8>(), 0..50),
        prop_oneof![4 => Just(None), 1 => any::<u8>().prop_map(Some)],
    )
        .prop_map(
            |(version, written, expires, key_len, key, value, vlen_lie)| {
                let mut out = b"TSK1".to_vec();
                out.push(vlen_lie.unwrap_or(version.len().min(255) as u8));
                out.extend_from_slice(&version[..version.len().min(255)]);
                out.extend_from_slice(&written.to_be_bytes());
                out.extend_from_slice(&expires.to_be_bytes());
                out.extend_from_slice(&key_len.unwrap_or(key.len() as u32).to_be_bytes());
                out.extend_from_slice(&key);
                out.extend_from_slice(&value);
                out
            },
        )
}

#[test]
fn foreign_items_under_our_attributes() {
    if !shared_bus() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = KeychainConfig::default().with_service(services::unique("ts-foreign"));
    let key = StorageKey::single(KeyKind::Meta, "foreign").unwrap();
    let encoded = key.encode();
    let (store, ss) = rt.block_on(async {
        let store = SecretServiceStore::connect(&config).await.unwrap();
        let ss = secret_service::SecretService::connect(secret_service::EncryptionType::Dh)
            .await
            .unwrap();
        (store, ss)
    });
    let strategy = prop_oneof![
        hostile::hostile_bytes_strategy(),
        forged_envelope(encoded.clone()),
    ];
    let cases = hostile_cases(64);
    let outcomes = Mutex::new(std::collections::BTreeMap::<&str, u32>::new());
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    runner
        .run(&strategy, |secret| {
            rt.block_on(async {
                let coll = ss.get_default_collection().await.unwrap();
                let attrs = HashMap::from([
                    ("xdg:schema", "org.token-store.Record"),
                    ("service", config.service.as_str()),
                    ("kind", "meta"),
                    ("key", encoded.as_str()),
                    ("name", "foreign"),
                ]);
                coll.create_item("foreign", attrs, &secret, true, "application/octet-stream")
                    .await
                    .unwrap();
                let outcome = match store.read(&key).await {
                    Ok(Some(_)) => "read",
                    Ok(None) => "absent",
                    Err(Error::Corrupt { .. }) => "corrupt",
                    Err(e) => return Err(TestCaseError::fail(format!("read: {e:?}"))),
                };
                store
                    .scan(KeyKind::Meta, &ListFilter::all())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("scan: {e:?}")))?;
                // An unconditional write replaces what the store cannot read.
                store
                    .write(&key, b"mine", &PutOptions::default())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("overwrite: {e:?}")))?;
                let back = store
                    .read(&key)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("read back: {e:?}")))?;
                prop_assert_eq!(back.map(|r| r.value.to_vec()), Some(b"mine".to_vec()));
                *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(store.clear()).unwrap();
    println!("foreign items: {:?}", outcomes.lock().unwrap());
    summary::torture(
        "hostile-decoder",
        "secret-service",
        &[
            ("cases", cases.to_string()),
            ("decoder", "foreign-items".into()),
        ],
    );
}

/// The pid of the process owning org.freedesktop.secrets on `bus`.
fn secrets_owner_pid(bus: &str) -> u32 {
    let out = std::process::Command::new("dbus-send")
        .arg(format!("--bus={bus}"))
        .args([
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetConnectionUnixProcessID",
            "string:org.freedesktop.secrets",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no owner of org.freedesktop.secrets: {text}"))
}

const TIMEOUT: Duration = Duration::from_secs(2);

fn unavailable_or_locked(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Locked { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_keyring_daemon_paused() {
    if !shared_bus() || !common::have_binaries() {
        return;
    }
    let mut bus = common::PrivateBus::start(false);
    bus.start_keyring();
    let pid = secrets_owner_pid(&bus.address);
    let config = KeychainConfig::default()
        .with_bus_address(bus.address.clone())
        .with_timeout(TIMEOUT);
    let store: Arc<dyn RawStore> = Arc::new(SecretServiceStore::connect(&config).await.unwrap());
    fault::run(
        "secret-service",
        store,
        Fault::new("daemon-paused-sigstop", TIMEOUT),
        move || Box::pin(async move { fault::signal(pid, "-STOP") }),
        move || Box::pin(async move { fault::signal(pid, "-CONT") }),
    )
    .await
    .assert_ok("secret-service", "daemon paused");
}

async fn keyring_killed(same_store: bool) {
    let mut bus = common::PrivateBus::start(false);
    bus.start_keyring();
    let address = bus.address.clone();
    let config = KeychainConfig::default()
        .with_bus_address(address.clone())
        .with_timeout(TIMEOUT);
    let store: Arc<dyn RawStore> = Arc::new(SecretServiceStore::connect(&config).await.unwrap());
    let bus = Arc::new(Mutex::new(bus));
    let restart = bus.clone();
    let mut fault = Fault::new("daemon-killed", TIMEOUT).expecting(unavailable_or_locked);
    if !same_store {
        fault = fault.without_recovery();
        fault.name = "daemon-killed-new-store".into();
    }
    let report = fault::run(
        "secret-service",
        store,
        fault,
        move || {
            Box::pin(async move {
                fault::signal(secrets_owner_pid(&address), "-KILL");
            })
        },
        move || {
            Box::pin(async move {
                tokio::task::spawn_blocking(move || restart.lock().unwrap().start_keyring())
                    .await
                    .unwrap();
            })
        },
    )
    .await;
    report.assert_ok("secret-service", "daemon killed");
    if !same_store {
        // The records survived the daemon's death: a new store reads the counter back.
        let again = SecretServiceStore::connect(&config).await.unwrap();
        let counter = report.counter.clone().unwrap();
        let end: u64 = std::str::from_utf8(&again.read(&counter).await.unwrap().unwrap().value)
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            end >= report.acked,
            "acknowledged increments lost: {end} < {}",
            report.acked
        );
    }
    drop(bus);
}

/// gnome-keyring killed and started again under load: the same store works again (its
/// Diffie-Hellman session belonged to the dead daemon; the store opens a new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_keyring_daemon_killed_then_restarted() {
    if !shared_bus() || !common::have_binaries() {
        return;
    }
    keyring_killed(true).await;
}

/// The first call of each kind after a restart succeeds (the dead session is found, a new
/// one opened and the call retried once), calls while the daemon is gone fail with
/// `Unavailable`, and no call is ever `Backend`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_call_after_daemon_restart_succeeds() {
    if !shared_bus() || !common::have_binaries() {
        return;
    }
    let mut bus = common::PrivateBus::start(false);
    bus.start_keyring();
    let config = KeychainConfig::default()
        .with_bus_address(bus.address.clone())
        .with_timeout(TIMEOUT);
    let store = SecretServiceStore::connect(&config).await.unwrap();
    let key = StorageKey::single(KeyKind::Meta, "restart").unwrap();
    let other = StorageKey::single(KeyKind::Meta, "restart-other").unwrap();
    let v1 = store
        .write(&key, b"one", &PutOptions::new(Precondition::IfAbsent))
        .await
        .unwrap();
    store
        .write(&other, b"x", &PutOptions::default())
        .await
        .unwrap();

    // Returns once the bus has noticed (the killed child stays a zombie until the bus is
    // dropped, so its pid cannot tell).
    let kill_daemon = |bus: &common::PrivateBus| {
        fault::signal(secrets_owner_pid(&bus.address), "-KILL");
        assert!(
            bus.wait_for_secrets_owner(false, Duration::from_secs(5)),
            "the daemon did not die"
        );
    };

    // Down: typed and fast, for reads and writes alike.
    kill_daemon(&bus);
    for _ in 0..3 {
        let e = store.read(&key).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "read: {e:?}");
        let e = store
            .write(&other, b"y", &PutOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "write: {e:?}");
    }
    bus.start_keyring();
    // The store saw the daemon gone: its first call opens a new session up front.
    let back = store.read(&key).await.unwrap().unwrap();
    assert_eq!(back.value.as_slice(), b"one");

    // Killed and restarted with no call in between: the store still holds the dead session,
    // and each first call must find that out and retry.
    kill_daemon(&bus);
    bus.start_keyring();
    let back = store.read(&key).await.unwrap().unwrap();
    assert_eq!((back.value.as_slice(), &back.version), (&b"one"[..], &v1));

    kill_daemon(&bus);
    bus.start_keyring();
    let v2 = store
        .write(&key, b"two", &PutOptions::new(Precondition::IfVersion(v1)))
        .await
        .unwrap();

    kill_daemon(&bus);
    bus.start_keyring();
    let listed = store.scan(KeyKind::Meta, &ListFilter::all()).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");

    kill_daemon(&bus);
    bus.start_keyring();
    assert!(
        store
            .remove(&key, &Precondition::IfVersion(v2))
            .await
            .unwrap()
    );
    assert!(store.read(&key).await.unwrap().is_none());
    assert_eq!(store.clear().await.unwrap(), 1);
}

/// The same fault, checked from outside the store: calls fail typed (`Unavailable`) and
/// fast while the daemon is gone, nothing hangs or panics, and the records survive (read
/// back through a new store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_keyring_daemon_killed_records_survive() {
    if !shared_bus() || !common::have_binaries() {
        return;
    }
    keyring_killed(false).await;
}
