//! The Secret Service store against a real gnome-keyring over D-Bus: the whole conformance
//! suite and the model check on the shared bus (`DBUS_SESSION_BUS_ADDRESS` +
//! `TOKEN_STORE_TEST_SECRET_SERVICE=1` from `scripts/services.sh`), and locked / missing /
//! uninitialised keyrings on private buses this file starts itself.
#![cfg(target_os = "linux")]
// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use token_store_conformance::{Instance, model_check, model_check_cases, run, services};
use token_store_core::{
    Error, KeyKind, ListFilter, Precondition, PutOptions, RawStore, Scope, StorageKey, TokenKey,
    TokenRecord, TokenStore,
};
use token_store_keychain::{KeychainConfig, Platform, SecretServiceStore, probe_with};

fn shared_bus() -> Option<()> {
    services::require("TOKEN_STORE_TEST_SECRET_SERVICE")?;
    services::require("DBUS_SESSION_BUS_ADDRESS")?;
    Some(())
}

/// Service names a test used, to delete their items at the end.
#[derive(Clone, Default)]
struct Used(Arc<Mutex<Vec<String>>>);

impl Used {
    fn config(&self, prefix: &str) -> KeychainConfig {
        let service = services::unique(prefix);
        self.0.lock().unwrap().push(service.clone());
        KeychainConfig::default().with_service(service)
    }

    async fn clean(&self) {
        let services = self.0.lock().unwrap().clone();
        for service in services {
            let store =
                SecretServiceStore::connect(&KeychainConfig::default().with_service(service))
                    .await
                    .unwrap();
            store.clear().await.unwrap();
        }
    }
}

fn factory(
    used: Used,
) -> impl Fn() -> token_store_conformance::BoxFuture<'static, token_store_core::Result<Instance>>
+ Send
+ Sync
+ 'static {
    move || {
        let config = used.config("ts-conf");
        Box::pin(async move {
            let store: Arc<dyn RawStore> = Arc::new(SecretServiceStore::connect(&config).await?);
            Ok(Instance::with_reopen(store, move || {
                let config = config.clone();
                async move {
                    Ok(Arc::new(SecretServiceStore::connect(&config).await?) as Arc<dyn RawStore>)
                }
            }))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_secret_service() {
    if shared_bus().is_none() {
        return;
    }
    let used = Used::default();
    let t = Instant::now();
    let report = run("secret-service", factory(used.clone())).await;
    println!("conformance[secret-service] took {:?}", t.elapsed());
    used.clean().await;
    report.assert_ok();
}

#[test]
fn model_secret_service() {
    if shared_bus().is_none() {
        return;
    }
    let used = Used::default();
    let t = Instant::now();
    model_check(
        "secret-service",
        factory(used.clone()),
        model_check_cases(256),
    );
    println!("model check[secret-service] took {:?}", t.elapsed());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(used.clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_recognisable_and_hold_no_secret_in_attributes_or_labels() {
    if shared_bus().is_none() {
        return;
    }
    let used = Used::default();
    let config = used.config("ts-attrs");
    let typed = TokenStore::new(SecretServiceStore::connect(&config).await.unwrap());
    let store = typed.raw();
    let key = TokenKey::for_server("https://mcp.example.com/mcp");
    let record = TokenRecord::new("ACCESS-SECRET-123").with_refresh_token("REFRESH-SECRET-456");
    typed.put(&key, &record, Precondition::Any).await.unwrap();
    let state_opts = PutOptions::new(Precondition::Any).with_ttl(Some(Duration::from_secs(60)));
    let state = StorageKey::single(KeyKind::State, "abc").unwrap();
    store
        .write(&state, b"STATE-SECRET", &state_opts)
        .await
        .unwrap();

    // Look at what a keyring viewer sees, with the plain secret-service client.
    let ss = secret_service::SecretService::connect(secret_service::EncryptionType::Dh)
        .await
        .unwrap();
    let found = ss
        .search_items(HashMap::from([("service", config.service.as_str())]))
        .await
        .unwrap();
    assert_eq!(found.unlocked.len(), 2);
    let mut labels = Vec::new();
    for item in &found.unlocked {
        let attrs = item.get_attributes().await.unwrap();
        let label = item.get_label().await.unwrap();
        let text = format!("{attrs:?} {label}");
        assert!(
            !text.contains("SECRET"),
            "a secret in attributes or label: {text}"
        );
        assert_eq!(attrs["xdg:schema"], "org.token-store.Record");
        match attrs["kind"].as_str() {
            "token" => {
                assert_eq!(attrs["resource"], "https://mcp.example.com/mcp");
                assert_eq!(attrs["key"], key.storage_key().encode());
                assert!(!attrs.contains_key("expires"));
            }
            "state" => assert!(attrs["expires"].parse::<u64>().is_ok()),
            other => panic!("unexpected kind {other}"),
        }
        labels.push(label);
    }
    labels.sort();
    assert_eq!(
        labels,
        [
            "MCP OAuth token for https://mcp.example.com/mcp",
            "token-store pending authorization"
        ]
    );
    // Searching by attributes is how scan works: a resource filter narrows server-side.
    let filter = ListFilter::all().with_resource("https://mcp.example.com/mcp");
    assert_eq!(store.scan(KeyKind::Token, &filter).await.unwrap().len(), 1);
    let other = ListFilter::all().with_resource("https://other.example");
    assert!(store.scan(KeyKind::Token, &other).await.unwrap().is_empty());
    used.clean().await;
}

/// Reads search the whole service and keep what is in the default collection: an item with
/// this store's attributes in another collection (gnome-keyring's `session` one) is
/// neither read, listed nor deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_in_another_collection_are_not_ours() {
    if shared_bus().is_none() {
        return;
    }
    let used = Used::default();
    let config = used.config("ts-other-coll");
    let store = SecretServiceStore::connect(&config).await.unwrap();
    let ss = secret_service::SecretService::connect(secret_service::EncryptionType::Dh)
        .await
        .unwrap();
    let Ok(session) = ss.get_collection_by_alias("session").await else {
        println!("no session collection on this provider; nothing to check");
        return;
    };
    let default = ss.get_default_collection().await.unwrap();
    assert_ne!(session.collection_path, default.collection_path);
    let key = StorageKey::single(KeyKind::Meta, "elsewhere").unwrap();
    let encoded = key.encode();
    let attrs = HashMap::from([
        ("xdg:schema", "org.token-store.Record"),
        ("service", config.service.as_str()),
        ("kind", "meta"),
        ("key", encoded.as_str()),
        ("name", "elsewhere"),
    ]);
    // A valid envelope of this key, so only the collection tells it apart.
    store
        .write(&key, b"v", &PutOptions::default())
        .await
        .unwrap();
    let mine = default
        .search_items(HashMap::from([("key", encoded.as_str())]))
        .await
        .unwrap();
    let secret = mine[0].get_secret().await.unwrap();
    assert!(store.remove(&key, &Precondition::Any).await.unwrap());
    let foreign = session
        .create_item(
            "elsewhere",
            attrs,
            &secret,
            true,
            "application/octet-stream",
        )
        .await
        .unwrap();

    assert!(store.read(&key).await.unwrap().is_none());
    assert!(
        store
            .scan(KeyKind::Meta, &ListFilter::all())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.remove(&key, &Precondition::Any).await.unwrap());
    assert_eq!(foreign.get_secret().await.unwrap(), secret);
    foreign.delete().await.unwrap();
    used.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_passes_on_a_working_keyring() {
    if shared_bus().is_none() {
        return;
    }
    let t = Instant::now();
    let store = token_store_keychain::probe(Duration::from_secs(3))
        .await
        .unwrap();
    println!("probe took {:?}", t.elapsed());
    assert_eq!(store.backend(), "secret-service");
    let caps = store.capabilities();
    // Atomic across this host's processes (the host lock), not across hosts.
    assert!(caps.persistent && caps.cas == Scope::Host && caps.shared_with == Scope::Host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_collection_is_error_locked_within_the_timeout() {
    if shared_bus().is_none() || !common::have_binaries() {
        return;
    }
    let mut bus = common::PrivateBus::start(false);
    bus.start_keyring();
    let timeout = Duration::from_secs(2);
    let config = KeychainConfig::default()
        .with_bus_address(bus.address.clone())
        .with_timeout(timeout);
    let store = SecretServiceStore::connect(&config).await.unwrap();
    let key = StorageKey::single(KeyKind::Meta, "before-lock").unwrap();
    store
        .write(&key, b"v", &PutOptions::default())
        .await
        .unwrap();

    // Lock it through the D-Bus Service.Lock call (no prompt needed to lock).
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let ss = secret_service::SecretService::connect_with_existing(
        secret_service::EncryptionType::Dh,
        conn,
    )
    .await
    .unwrap();
    let coll = ss.get_default_collection().await.unwrap();
    coll.lock().await.unwrap();
    assert!(coll.is_locked().await.unwrap());

    let t = Instant::now();
    let read = store.read(&key).await;
    // A miss too: nothing matches, so only the collection can say it is locked.
    let never = StorageKey::single(KeyKind::Meta, "never-written").unwrap();
    let miss = store.read(&never).await;
    let write = store.write(&key, b"w", &PutOptions::default()).await;
    let remove = store.remove(&key, &Precondition::Any).await;
    let scan = store.scan(KeyKind::Meta, &ListFilter::all()).await;
    let elapsed = t.elapsed();
    for (op, r) in [
        ("read", read.map(|_| ())),
        ("miss", miss.map(|_| ())),
        ("write", write.map(|_| ())),
        ("remove", remove.map(|_| ())),
        ("scan", scan.map(|_| ())),
    ] {
        match r {
            Err(Error::Locked { message, .. }) => assert!(message.contains("locked"), "{message}"),
            other => panic!("{op} on a locked collection gave {other:?}"),
        }
    }
    println!("5 calls on a locked collection failed in {elapsed:?}");
    assert!(elapsed < timeout, "locked calls took {elapsed:?}");
    let why = probe_with(&config.clone().with_platform(Platform::SecretService))
        .await
        .unwrap_err()
        .to_string();
    assert!(why.contains("locked"), "{why}");
    // A fresh connection says the same (connecting needs no unlocked collection).
    let again = SecretServiceStore::connect(&config).await.unwrap();
    assert!(matches!(again.read(&key).await, Err(Error::Locked { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_service_on_the_bus_fails_fast_and_says_why() {
    if shared_bus().is_none() || !common::have_binaries() {
        return;
    }
    let bus = common::PrivateBus::start(false);
    let config = KeychainConfig::default()
        .with_bus_address(bus.address.clone())
        .with_timeout(Duration::from_secs(3));
    let t = Instant::now();
    let why = probe_with(&config.clone().with_platform(Platform::SecretService))
        .await
        .unwrap_err()
        .to_string();
    let elapsed = t.elapsed();
    println!("probe without a Secret Service: {elapsed:?}: {why}");
    assert!(why.contains("no Secret Service provider"), "{why}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    match SecretServiceStore::connect(&config).await {
        Err(e @ Error::Unavailable { .. }) => assert!(e.is_retryable()),
        other => panic!("connect gave {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bus_at_all_fails_fast_and_says_why() {
    if shared_bus().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = KeychainConfig::default()
        .with_bus_address(format!("unix:path={}/no-bus", dir.path().display()))
        .with_timeout(Duration::from_secs(3));
    let t = Instant::now();
    let why = probe_with(&config.clone().with_platform(Platform::SecretService))
        .await
        .unwrap_err()
        .to_string();
    println!("probe without a bus: {:?}: {why}", t.elapsed());
    assert!(
        why.contains("cannot connect to the D-Bus session bus"),
        "{why}"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninitialised_keyring_is_locked_not_a_hang() {
    if shared_bus().is_none() || !common::have_binaries() {
        return;
    }
    // gnome-keyring D-Bus-activated without --unlock (a headless login): no default
    // collection, creating one needs a prompt.
    let bus = common::PrivateBus::start(true);
    let config = KeychainConfig::default()
        .with_bus_address(bus.address.clone())
        .with_timeout(Duration::from_secs(4));
    let t = Instant::now();
    let why = probe_with(&config.clone().with_platform(Platform::SecretService))
        .await
        .unwrap_err()
        .to_string();
    println!(
        "probe on an uninitialised keyring: {:?}: {why}",
        t.elapsed()
    );
    assert!(
        why.contains("locked") || why.contains("no default collection"),
        "{why}"
    );
    assert!(t.elapsed() < Duration::from_secs(4));
    // The activated daemon is a child of our dbus-daemon; ask it to leave before the bus goes.
    let _ = std::process::Command::new("dbus-send")
        .arg(format!("--bus={}", bus.address))
        .args([
            "--dest=org.gnome.keyring",
            "/org/gnome/keyring/daemon",
            "org.gnome.keyring.Daemon.Quit",
        ])
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_reads_the_same_record_and_version() {
    if shared_bus().is_none() {
        return;
    }
    let used = Used::default();
    let config = used.config("ts-reopen");
    let first = SecretServiceStore::connect(&config).await.unwrap();
    let key = TokenKey::for_server("https://reopen.example").storage_key();
    let v = first
        .write(&key, b"persisted", &PutOptions::default())
        .await
        .unwrap();
    drop(first);
    let second = SecretServiceStore::connect(&config).await.unwrap();
    let got = second.read(&key).await.unwrap().unwrap();
    assert_eq!(
        (got.value.as_slice(), &got.version),
        (&b"persisted"[..], &v)
    );
    used.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency() {
    if shared_bus().is_none() {
        return;
    }
    let used = Used::default();
    let store = SecretServiceStore::connect(&used.config("ts-lat"))
        .await
        .unwrap();
    let key = TokenKey::for_server("https://lat.example").storage_key();
    let value = vec![b'x'; 2048];
    const N: u32 = 50;
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
    let t = Instant::now();
    for _ in 0..N {
        store
            .scan(KeyKind::Token, &ListFilter::all())
            .await
            .unwrap();
    }
    let list = t.elapsed() / N;
    let t = Instant::now();
    SecretServiceStore::connect(&used.config("ts-lat"))
        .await
        .unwrap();
    let connect = t.elapsed();
    println!(
        "secret-service latency (2 KiB): put {put:?}, get {get:?}, list(1) {list:?}, connect {connect:?}"
    );
    used.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers_times_out_instead_of_hanging() {
    if shared_bus().is_none() || !common::have_binaries() {
        return;
    }
    let mut bus = common::PrivateBus::start(false);
    if !bus.start_silent_provider() {
        assert!(!services::in_ci(), "python3-dbus missing under CI=true");
        println!("not run: python3-dbus is not installed");
        return;
    }
    let timeout = Duration::from_millis(500);
    let config = KeychainConfig::default()
        .with_bus_address(bus.address.clone())
        .with_timeout(timeout);
    let t = Instant::now();
    let why = probe_with(&config.clone().with_platform(Platform::SecretService))
        .await
        .unwrap_err()
        .to_string();
    let elapsed = t.elapsed();
    println!("probe against a silent provider: {elapsed:?}: {why}");
    assert!(
        why.contains("did not answer") || why.contains("timed out"),
        "{why}"
    );
    assert!(
        elapsed < timeout + Duration::from_millis(300),
        "took {elapsed:?}"
    );
    match SecretServiceStore::connect(&config).await {
        Err(e @ Error::Unavailable { .. }) => assert!(e.to_string().contains("timed out")),
        other => panic!("connect gave {other:?}"),
    }
}
