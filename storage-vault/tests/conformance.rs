//! The shared conformance suite and the model check against a real OpenBao, with the root
//! token and with an AppRole token confined to its prefix.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{approle, env, instance, token_config, unique_prefix};
use token_store_conformance::services::require;
use token_store_conformance::{model_check, model_check_cases, run};
use token_store_core::{Error, KeyKind, PutOptions, RawStore, StorageKey, StoreUrl};
use token_store_vault::{VaultConfig, VaultStore};

struct AppRoleEnv {
    addr: String,
    prefix: String,
    role_id: String,
    secret_id: String,
}

fn approle_env() -> Option<AppRoleEnv> {
    Some(AppRoleEnv {
        addr: require("TOKEN_STORE_TEST_VAULT_ADDR")?,
        prefix: require("TOKEN_STORE_TEST_VAULT_APPROLE_PREFIX")?,
        role_id: require("TOKEN_STORE_TEST_VAULT_ROLE_ID")?,
        secret_id: require("TOKEN_STORE_TEST_VAULT_SECRET_ID")?,
    })
}

fn approle_config(e: &AppRoleEnv, role_id: &str, secret_id: &str) -> VaultConfig {
    VaultConfig::new(&e.addr, approle(role_id, secret_id))
        .unwrap()
        .with_prefix(unique_prefix(&e.prefix))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_vault_root_token() {
    let Some(e) = env() else { return };
    run("vault", move || {
        let config = token_config(&e.addr, &e.token, &unique_prefix("token-store-test"));
        async move { instance(config).await }
    })
    .await
    .assert_ok();
}

#[test]
fn model_vault_root_token() {
    let Some(e) = env() else { return };
    model_check(
        "vault",
        move || {
            let config = token_config(&e.addr, &e.token, &unique_prefix("token-store-model"));
            async move { instance(config).await }
        },
        model_check_cases(256),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_vault_approle() {
    let Some(e) = approle_env() else { return };
    run("vault+approle", move || {
        let config = approle_config(&e, &e.role_id, &e.secret_id);
        async move { instance(config).await }
    })
    .await
    .assert_ok();
}

#[test]
fn model_vault_approle() {
    let Some(e) = approle_env() else { return };
    model_check(
        "vault+approle",
        move || {
            let config = approle_config(&e, &e.role_id, &e.secret_id);
            async move { instance(config).await }
        },
        model_check_cases(256),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_outside_its_prefix_is_permission_denied() {
    let Some(e) = approle_env() else { return };
    let config = VaultConfig::new(&e.addr, approle(&e.role_id, &e.secret_id))
        .unwrap()
        .with_prefix("not-the-approle-prefix")
        .unwrap();
    let store = VaultStore::open(&config).await.unwrap();
    let key = StorageKey::single(KeyKind::Meta, "x").unwrap();
    for result in [
        store.read(&key).await.map(drop),
        store
            .write(&key, b"v", &PutOptions::default())
            .await
            .map(drop),
        store
            .scan(KeyKind::Meta, &Default::default())
            .await
            .map(drop),
    ] {
        match result {
            Err(Error::PermissionDenied { message, .. }) => {
                assert!(message.contains("403"), "{message}");
                assert!(!message.contains(&e.secret_id), "{message}");
            }
            other => panic!("outside the policy: {other:?}"),
        }
    }
    // Bad AppRole credentials fail at open, as PermissionDenied, naming no secret.
    let bad = VaultConfig::new(&e.addr, approle(&e.role_id, "wrong-secret-id")).unwrap();
    match VaultStore::open(&bad).await {
        Err(err @ Error::PermissionDenied { .. }) => {
            assert!(
                !format!("{err} {err:?}").contains("wrong-secret-id"),
                "{err}"
            )
        }
        other => panic!("bad secret id: {:?}", other.map(|_| ())),
    }
    match token_store_vault::open(bad).await {
        Err(err @ Error::PermissionDenied { .. }) => {
            assert!(
                !format!("{err} {err:?}").contains("wrong-secret-id"),
                "{err}"
            )
        }
        other => panic!("bad secret id: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_approle_token_is_renewed_or_replaced_unnoticed() {
    let Some(e) = approle_env() else { return };
    let Some(rid) = require("TOKEN_STORE_TEST_VAULT_SHORT_ROLE_ID") else {
        return;
    };
    let Some(sid) = require("TOKEN_STORE_TEST_VAULT_SHORT_SECRET_ID") else {
        return;
    };
    // token_ttl 10 s: over 25 s the first token would have expired twice without renewal.
    let store = VaultStore::open(&approle_config(&e, &rid, &sid))
        .await
        .unwrap();
    let key = StorageKey::single(KeyKind::Meta, "renewal").unwrap();
    let start = Instant::now();
    let mut calls = 0;
    while start.elapsed() < Duration::from_secs(25) {
        let v = store
            .write(&key, format!("{calls}").as_bytes(), &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("after {:?}: {e}", start.elapsed()));
        let got = store.read(&key).await.unwrap().unwrap();
        assert_eq!(got.version, v);
        calls += 1;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // And after a pause longer than the whole TTL (no renewal possible: a fresh login).
    tokio::time::sleep(Duration::from_secs(11)).await;
    store.read(&key).await.unwrap().unwrap();
    println!("short-TTL AppRole: {calls} write+read rounds over 25 s, then a read after 11 s idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca() {
    let Some(addr) = require("TOKEN_STORE_TEST_VAULT_TLS_ADDR") else {
        return;
    };
    let Some(ca) = require("TOKEN_STORE_TEST_VAULT_TLS_CACERT") else {
        return;
    };
    let Some(token) = require("TOKEN_STORE_TEST_VAULT_TLS_TOKEN") else {
        return;
    };
    let hostport = addr.trim_start_matches("https://");
    // The token comes from a variable the URL names, never from the URL itself.
    let prefix = unique_prefix("token-store-tls");
    let url = StoreUrl::parse(&format!(
        "vaults://{hostport}/secret?prefix={prefix}&ca={ca}&token_env=TOKEN_STORE_TEST_VAULT_TLS_TOKEN"
    ))
    .unwrap();
    let store = token_store_vault::open_url(&url).await.unwrap();
    let store = store.raw();
    let key = StorageKey::single(KeyKind::Meta, "tls").unwrap();
    let v = store
        .write(&key, b"over tls", &PutOptions::default())
        .await
        .unwrap();
    let got = store.read(&key).await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.version), (&b"over tls"[..], v));

    // Without the CA the server's certificate is unknown: refused, and said so.
    let url = StoreUrl::parse(&format!(
        "vaults://{hostport}/secret?prefix={prefix}&token_env=TOKEN_STORE_TEST_VAULT_TLS_TOKEN"
    ))
    .unwrap();
    // open_url reads the store's encryption header, so the refusal comes at open already.
    let refused = match token_store_vault::open_url(&url).await {
        Ok(store) => store.raw().read(&key).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match refused {
        Err(Error::Unavailable { message, .. }) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}")
        }
        other => panic!("TLS without the CA: {other:?}"),
    }

    // The whole suite over TLS too.
    let config = VaultConfig::new(&addr, token_store_vault::Auth::token(token))
        .unwrap()
        .with_ca_cert(Some(ca.into()));
    run("vault+tls", move || {
        let config = config
            .clone()
            .with_prefix(unique_prefix("token-store-tls"))
            .unwrap();
        async move { instance(config).await }
    })
    .await
    .assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_with_namespace_isolates_data() {
    let Some(e) = env() else { return };
    // OpenBao has namespaces; each one has its own mounts.
    let ns = token_store_conformance::services::unique("ns");
    let http = reqwest::Client::new();
    let call =
        |method: reqwest::Method, path: String, ns: Option<&str>, body: serde_json::Value| {
            let mut r = http
                .request(method, format!("{}/v1/{path}", e.addr))
                .header("X-Vault-Token", &e.token)
                .json(&body);
            if let Some(ns) = ns {
                r = r.header("X-Vault-Namespace", ns);
            }
            r.send()
        };
    let r = call(
        reqwest::Method::POST,
        format!("sys/namespaces/{ns}"),
        None,
        serde_json::json!({}),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "create namespace: {}", r.status());
    let r = call(
        reqwest::Method::POST,
        "sys/mounts/secret".into(),
        Some(&ns),
        serde_json::json!({"type": "kv", "options": {"version": "2"}}),
    )
    .await
    .unwrap();
    assert!(
        r.status().is_success(),
        "mount kv in namespace: {}",
        r.status()
    );

    let prefix = unique_prefix("token-store-ns");
    let in_ns = token_config(&e.addr, &e.token, &prefix).with_namespace(Some(ns.clone()));
    let root = token_config(&e.addr, &e.token, &prefix);
    let a = VaultStore::open(&in_ns).await.unwrap();
    let b = VaultStore::open(&root).await.unwrap();
    let key = StorageKey::single(KeyKind::Meta, "ns").unwrap();
    a.write(&key, b"in namespace", &PutOptions::default())
        .await
        .unwrap();
    assert!(a.read(&key).await.unwrap().is_some());
    assert!(
        b.read(&key).await.unwrap().is_none(),
        "namespace leaked to root"
    );
    let unknown =
        token_config(&e.addr, &e.token, &prefix).with_namespace(Some("no-such-ns".into()));
    let c = VaultStore::open(&unknown).await.unwrap();
    // A wrong namespace or mount is a configuration error, not an empty store.
    match c.read(&key).await {
        Err(Error::Config { message, .. }) => assert!(message.contains("namespace"), "{message}"),
        other => panic!("unknown namespace: {other:?}"),
    }
    let wrong_mount = token_config(&e.addr, &e.token, &prefix)
        .with_mount("no-such-mount")
        .unwrap();
    let d = VaultStore::open(&wrong_mount).await.unwrap();
    for result in [
        d.read(&key).await.map(drop),
        d.scan(KeyKind::Meta, &Default::default()).await.map(drop),
    ] {
        assert!(
            matches!(result, Err(Error::Config { .. })),
            "wrong mount: {result:?}"
        );
    }
}

/// Not a benchmark: a sanity figure for the report (request counts per operation, see the
/// crate docs), printed with `--nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_latency_figures() {
    let Some(e) = env() else { return };
    let store = VaultStore::open(&token_config(
        &e.addr,
        &e.token,
        &unique_prefix("token-store-latency"),
    ))
    .await
    .unwrap();
    const N: usize = 100;
    let keys: Vec<StorageKey> = (0..N)
        .map(|i| StorageKey::single(KeyKind::Meta, format!("k{i}")).unwrap())
        .collect();
    let value = vec![7u8; 2048];
    let mut figures = Vec::new();
    let start = Instant::now();
    for k in &keys {
        store
            .write(k, &value, &PutOptions::default())
            .await
            .unwrap();
    }
    figures.push(("write (create)", start.elapsed() / N as u32));
    let start = Instant::now();
    for k in &keys {
        store.read(k).await.unwrap().unwrap();
    }
    figures.push(("read", start.elapsed() / N as u32));
    let start = Instant::now();
    store
        .scan(KeyKind::Meta, &Default::default())
        .await
        .unwrap();
    figures.push(("list (100 keys)", start.elapsed()));
    let start = Instant::now();
    for k in &keys {
        assert!(store.remove(k, &Default::default()).await.unwrap());
    }
    figures.push(("delete", start.elapsed() / N as u32));
    for (op, t) in figures {
        println!("vault latency: {op}: {t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_url_with_key_file_stores_only_ciphertext() {
    use token_store_core::{Precondition, TokenKey, TokenRecord};
    let Some(e) = env() else { return };
    let host = e.addr.trim_start_matches("http://");
    let prefix = unique_prefix("token-store-enc");
    // The key file's directory must be private (core refuses a world-writable one).
    let dir = std::env::temp_dir().join(token_store_conformance::services::unique("vault-key"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let key_file = dir.join("key");
    let url = StoreUrl::parse(&format!(
        "vault://{host}/secret?prefix={prefix}&token_env=TOKEN_STORE_TEST_VAULT_TOKEN&key_file={}",
        key_file.display()
    ))
    .unwrap();
    let store = token_store_vault::open_url(&url).await.unwrap();
    let k = TokenKey::for_server("https://mcp.example.com/mcp");
    store
        .put(&k, &TokenRecord::new("PLAINTEXT-TOKEN"), Precondition::Any)
        .await
        .unwrap();
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(got.value.access_token.expose(), "PLAINTEXT-TOKEN");
    let plain = VaultStore::open(&token_config(&e.addr, &e.token, &prefix))
        .await
        .unwrap();
    let raw = plain.read(&k.storage_key()).await.unwrap().unwrap();
    assert!(
        !raw.value.windows(9).any(|w| w == b"PLAINTEXT"),
        "plaintext reached Vault"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A delete leaves a tombstone as the latest version and destroys every older one (the
/// token bytes are gone from KV history); a create over the tombstone is a newer version,
/// and the next delete destroys everything before its own tombstone, the first one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_destroys_older_versions_and_keeps_a_tombstone() {
    let Some(e) = env() else { return };
    let prefix = unique_prefix("token-store-destroy");
    let store = VaultStore::open(&token_config(&e.addr, &e.token, &prefix))
        .await
        .unwrap();
    let key = StorageKey::single(KeyKind::Meta, "k").unwrap();
    for v in [&b"one"[..], b"two", b"three"] {
        store.write(&key, v, &PutOptions::default()).await.unwrap();
    }
    assert!(store.remove(&key, &Default::default()).await.unwrap());
    let metadata = |prefix: String| {
        let (addr, token) = (e.addr.clone(), e.token.clone());
        async move {
            let body: serde_json::Value = reqwest::Client::new()
                .get(format!("{addr}/v1/secret/metadata/{prefix}/meta/k"))
                .header("X-Vault-Token", token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let versions = body["data"]["versions"].as_object().unwrap().clone();
            let mut out: Vec<(u64, bool)> = versions
                .iter()
                .map(|(n, v)| (n.parse().unwrap(), v["destroyed"].as_bool().unwrap()))
                .collect();
            out.sort_unstable();
            out
        }
    };
    // Versions 1-3 held values; 4 is the tombstone.
    assert_eq!(
        metadata(prefix.clone()).await,
        vec![(1, true), (2, true), (3, true), (4, false)]
    );
    assert!(store.read(&key).await.unwrap().is_none());
    let v = store
        .write(&key, b"again", &PutOptions::default())
        .await
        .unwrap();
    assert!(v.as_str().starts_with("5@"), "{v:?}");
    assert_eq!(
        store.read(&key).await.unwrap().map(|r| r.value.to_vec()),
        Some(b"again".to_vec())
    );
    assert!(store.remove(&key, &Default::default()).await.unwrap());
    assert_eq!(
        metadata(prefix.clone()).await,
        vec![
            (1, true),
            (2, true),
            (3, true),
            (4, true),
            (5, true),
            (6, false)
        ]
    );
    // Deleting the absent key again changes nothing and says so.
    assert!(!store.remove(&key, &Default::default()).await.unwrap());
    assert!(
        store
            .scan(KeyKind::Meta, &Default::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Raw KV v2 call with the test token, for what only an operator or another client does.
async fn kv(e: &common::Env, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}/v1/secret/{path}", e.addr))
        .header("X-Vault-Token", &e.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let status = req.send().await.unwrap().status();
    assert!(status.is_success(), "{path}: {status}");
}

/// ABA: after `bao kv metadata delete` (maintenance, another client) a re-created key starts
/// again at KV version 1, so a version held from before names the same KV version as the new
/// record. `cas` alone would let it through; the generation makes it a conflict, for writes
/// and deletes alike. (Why a CAS put reads first instead of one `cas` write.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_version_fails_after_metadata_delete_and_re_create() {
    use token_store_core::{Error, Precondition};
    let Some(e) = env() else { return };
    let prefix = unique_prefix("token-store-aba");
    let store = VaultStore::open(&token_config(&e.addr, &e.token, &prefix))
        .await
        .unwrap();
    let key = StorageKey::single(KeyKind::Meta, "k").unwrap();
    let create = PutOptions::new(Precondition::IfAbsent);
    let stale = store.write(&key, b"old", &create).await.unwrap();
    assert!(stale.as_str().starts_with("1@"), "{stale:?}");
    assert!(store.remove(&key, &Precondition::Any).await.unwrap());
    kv(
        &e,
        reqwest::Method::DELETE,
        &format!("metadata/{prefix}/meta/k"),
        None,
    )
    .await;
    for pre in [create, PutOptions::default()] {
        let fresh = store.write(&key, b"new", &pre).await.unwrap();
        assert!(fresh.as_str().starts_with("1@"), "{fresh:?}");
        assert_ne!(fresh, stale);
        let r = store
            .write(
                &key,
                b"stale",
                &PutOptions::new(Precondition::IfVersion(stale.clone())),
            )
            .await;
        assert!(
            matches!(r, Err(Error::Conflict { .. })),
            "stale write: {r:?}"
        );
        let r = store
            .remove(&key, &Precondition::IfVersion(stale.clone()))
            .await;
        assert!(
            matches!(r, Err(Error::Conflict { .. })),
            "stale delete: {r:?}"
        );
        let got = store.read(&key).await.unwrap().unwrap();
        assert_eq!((got.value.to_vec(), got.version), (b"new".to_vec(), fresh));
        kv(
            &e,
            reqwest::Method::DELETE,
            &format!("metadata/{prefix}/meta/k"),
            None,
        )
        .await;
    }
}

/// With `cas_required` on a key, Vault refuses the single unconditional write: the store
/// falls back to read + `cas` write, and later calls go that way directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconditional_writes_work_where_cas_is_required() {
    use token_store_core::{Error, Precondition};
    let Some(e) = env() else { return };
    let prefix = unique_prefix("token-store-casreq");
    let store = VaultStore::open(&token_config(&e.addr, &e.token, &prefix))
        .await
        .unwrap();
    let key = StorageKey::single(KeyKind::Meta, "k").unwrap();
    kv(
        &e,
        reqwest::Method::POST,
        &format!("metadata/{prefix}/meta/k"),
        Some(serde_json::json!({ "cas_required": true })),
    )
    .await;
    for value in [&b"one"[..], b"two"] {
        let v = store
            .write(&key, value, &PutOptions::default())
            .await
            .unwrap();
        let got = store.read(&key).await.unwrap().unwrap();
        assert_eq!((got.value.to_vec(), got.version), (value.to_vec(), v));
    }
    let r = store
        .write(&key, b"x", &PutOptions::new(Precondition::IfAbsent))
        .await;
    assert!(matches!(r, Err(Error::Conflict { .. })), "{r:?}");
    assert!(store.remove(&key, &Precondition::Any).await.unwrap());
    assert!(store.read(&key).await.unwrap().is_none());
}

/// A key with more history than a delete names blindly: the metadata is read and every
/// older version with data is destroyed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_destroys_a_long_history() {
    let Some(e) = env() else { return };
    let prefix = unique_prefix("token-store-history");
    let store = VaultStore::open(&token_config(&e.addr, &e.token, &prefix))
        .await
        .unwrap();
    let key = StorageKey::single(KeyKind::Meta, "k").unwrap();
    for i in 0..140u32 {
        store
            .write(&key, &i.to_be_bytes(), &PutOptions::default())
            .await
            .unwrap();
    }
    assert!(store.remove(&key, &Default::default()).await.unwrap());
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/secret/metadata/{prefix}/meta/k", e.addr))
        .header("X-Vault-Token", &e.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let versions = body["data"]["versions"].as_object().unwrap();
    // KV keeps the last 10 (the default max_versions): 131-140 held values, 141 the tombstone.
    let live: Vec<u64> = versions
        .iter()
        .filter(|(_, v)| v["destroyed"] == false)
        .map(|(n, _)| n.parse().unwrap())
        .collect();
    assert_eq!(live, vec![141], "{versions:?}");
}
