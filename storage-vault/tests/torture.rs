//! The shared torture suites on Vault / OpenBao KV v2.
//!
//! - Crash: 200 rounds of a client process SIGKILLed while writing through `open_url`. The
//!   dev server keeps everything in memory, so a crash of the *server* loses all data by
//!   design: here "crash" means the client dies mid-request (half-sent writes, tombstones
//!   left by an interrupted delete), and the server keeps running.
//! - The concurrent model check, hostile keys and hostile stored bytes.
//! - Hostile input to the decoders: KV data other writers left at our paths (no `value`,
//!   not base64, wrong types, odd tombstones), and a fake server answering every request with
//!   hostile HTTP (random statuses, bodies, wrong shapes, lying lengths).
//! - Service faults through the shared harness on a dev server of our own: stopped and
//!   restarted (empty: not durable), sealed and unsealed, paused (SIGSTOP) — with the same
//!   store object throughout.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env, instance, open_raw, token_config, unique_prefix};
use token_store_conformance::fault::{self, Fault};
use token_store_conformance::hostile::{self, hostile_cases};
use token_store_conformance::proptest::prelude::*;
use token_store_conformance::proptest::test_runner::{Config, TestCaseError, TestRunner};
use token_store_conformance::{
    BoxFuture, concurrent_model_check, crash, model_check_cases, proptest, services, summary,
};
use token_store_core::layers::Timeout;
use token_store_core::{
    Error, KeyKind, ListFilter, Precondition, PutOptions, RawStore, StorageKey, StoreUrl,
};
use token_store_vault::VaultStore;

fn open_url(url: StoreUrl) -> BoxFuture<'static, token_store_core::Result<Arc<dyn RawStore>>> {
    Box::pin(async move { Ok(token_store_vault::open_url(&url).await?.raw().clone()) })
}

/// The crash child (does nothing unless started by the crash harness).
#[test]
fn crash_child() {
    crash::child(open_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_rounds_vault_client() {
    let Some(e) = env() else { return };
    let host = e.addr.trim_start_matches("http://");
    let url = format!(
        "vault://{host}/secret?prefix={}&token_env=TOKEN_STORE_TEST_VAULT_TOKEN",
        unique_prefix("token-store-crash")
    );
    crash::run("vault", &url, open_url, crash::rounds(200), None)
        .await
        .assert_ok("vault");
}

fn root_factory(
    base: &'static str,
) -> impl Fn() -> BoxFuture<'static, token_store_core::Result<token_store_conformance::Instance>>
+ Send
+ Sync
+ 'static {
    let e = env();
    move || {
        let config = e
            .as_ref()
            .map(|e| token_config(&e.addr, &e.token, &unique_prefix(base)));
        Box::pin(async move {
            match config {
                Some(c) => instance(c).await,
                None => Err(Error::config("no Vault")),
            }
        })
    }
}

/// With deletes: a delete is one `cas` write of a tombstone, its final state (creates
/// cas-write over it), so no acknowledged create can be wiped by a later metadata delete.
/// (It could before: the delete's "purge if still the tombstone" was a read and a metadata
/// delete, and a create between them was acknowledged, then lost.)
#[test]
fn concurrent_model_vault() {
    if env().is_none() {
        return;
    }
    concurrent_model_check(
        "vault",
        root_factory("token-store-linear"),
        model_check_cases(256),
    );
}

#[test]
fn hostile_keys_vault() {
    if env().is_none() {
        return;
    }
    hostile::hostile_keys(
        "vault",
        root_factory("token-store-hostile"),
        hostile_cases(64),
    );
}

#[test]
fn hostile_bytes_vault() {
    if env().is_none() {
        return;
    }
    hostile::hostile_bytes(
        "vault",
        root_factory("token-store-hostile"),
        hostile_cases(64),
    );
}

/// KV data shapes another writer (or a bug, or a KV v1 mount) can leave at our path.
fn foreign_data() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let scalar = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,30}".prop_map(serde_json::Value::from),
        "[A-Za-z0-9+/]{0,40}={0,3}".prop_map(serde_json::Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!({"nested": {"value": "aGk="}})),
    ];
    (
        proptest::option::of(scalar.clone()),
        proptest::option::of(scalar.clone()),
        proptest::option::of(scalar),
        proptest::collection::vec(("[a-z_]{1,8}", ".{0,10}"), 0..3),
    )
        .prop_map(|(value, generation, tombstone, extra)| {
            let mut m = serde_json::Map::new();
            if let Some(v) = value {
                m.insert("value".into(), v);
            }
            if let Some(g) = generation {
                m.insert("generation".into(), g);
            }
            if let Some(t) = tombstone {
                m.insert("tombstone".into(), t);
            }
            for (k, v) in extra {
                m.insert(k, serde_json::Value::from(v));
            }
            serde_json::Value::Object(m)
        })
}

#[test]
fn foreign_kv_data_at_our_paths() {
    let Some(e) = env() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = unique_prefix("token-store-foreign");
    let store = rt
        .block_on(VaultStore::open(&token_config(&e.addr, &e.token, &prefix)))
        .unwrap();
    let http = reqwest::Client::new();
    let key = StorageKey::single(KeyKind::Meta, "foreign").unwrap();
    // A one-part key lives at `<kind>/<encoded part>` under the prefix.
    let url = format!("{}/v1/secret/data/{prefix}/meta/foreign", e.addr);
    let cases = hostile_cases(128);
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::<&str, u32>::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&foreign_data(), |data| {
            rt.block_on(async {
                let r = http
                    .post(&url)
                    .header("X-Vault-Token", &e.token)
                    .json(&serde_json::json!({ "data": data }))
                    .send()
                    .await
                    .unwrap();
                prop_assert!(r.status().is_success(), "seeding: {}", r.status());
                let outcome = match store.read(&key).await {
                    Ok(Some(_)) => "read",
                    Ok(None) => "absent",
                    Err(Error::Corrupt { .. }) => "corrupt",
                    Err(other) => return Err(TestCaseError::fail(format!("read: {other:?}"))),
                };
                // A conditional write over it: typed outcomes only. An unconditional write
                // and delete replace whatever is there.
                match store
                    .write(&key, b"v", &PutOptions::new(Precondition::IfAbsent))
                    .await
                {
                    Ok(_) | Err(Error::Conflict { .. } | Error::Corrupt { .. }) => {}
                    Err(other) => return Err(TestCaseError::fail(format!("write: {other:?}"))),
                }
                if let Err(e) = store.write(&key, b"v", &PutOptions::default()).await {
                    return Err(TestCaseError::fail(format!("unconditional write: {e:?}")));
                }
                match store.remove(&key, &Precondition::Any).await {
                    Ok(true) => {}
                    other => return Err(TestCaseError::fail(format!("delete: {other:?}"))),
                }
                store
                    .scan(KeyKind::Meta, &ListFilter::all())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("scan: {e:?}")))?;
                *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
                Ok(())
            })
        })
        .unwrap();
    println!("foreign KV data: {:?}", outcomes.lock().unwrap());
    summary::torture(
        "hostile-decoder",
        "vault",
        &[
            ("cases", cases.to_string()),
            ("decoder", "foreign-kv-data".into()),
        ],
    );
}

/// An entry at our path that does not decode (no `value`, not base64: a foreign writer, a
/// KV v1 leftover) reads as `Corrupt`, and an unconditional `write` replaces it and `remove`
/// deletes it, as in the file and Secret Service backends. (Both failed with `Corrupt` once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconditional_write_replaces_an_undecodable_entry() {
    let Some(e) = env() else { return };
    let prefix = unique_prefix("token-store-foreign");
    let store = VaultStore::open(&token_config(&e.addr, &e.token, &prefix))
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/secret/data/{prefix}/meta/foreign", e.addr))
        .header("X-Vault-Token", &e.token)
        .json(&serde_json::json!({ "data": { "something": "else" } }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let key = StorageKey::single(KeyKind::Meta, "foreign").unwrap();
    assert!(matches!(store.read(&key).await, Err(Error::Corrupt { .. })));
    assert!(matches!(
        store
            .write(&key, b"x", &PutOptions::new(Precondition::IfAbsent))
            .await,
        Err(Error::Corrupt { .. })
    ));
    let written = store.write(&key, b"mine", &PutOptions::default()).await;
    assert!(written.is_ok(), "unconditional write over it: {written:?}");
    assert_eq!(
        store.read(&key).await.unwrap().map(|r| r.value.to_vec()),
        Some(b"mine".to_vec())
    );
    let removed = store.remove(&key, &Precondition::Any).await;
    assert!(
        matches!(removed, Ok(true)),
        "unconditional delete: {removed:?}"
    );
    assert!(store.read(&key).await.unwrap().is_none());

    // The same for a delete straight over a foreign entry.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/secret/data/{prefix}/meta/foreign", e.addr))
        .header("X-Vault-Token", &e.token)
        .json(&serde_json::json!({ "data": { "value": "not base64!" } }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let listed = store.scan(KeyKind::Meta, &ListFilter::all()).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "an undecodable entry is listed: {listed:?}"
    );
    let removed = store.remove(&key, &Precondition::Any).await;
    assert!(
        matches!(removed, Ok(true)),
        "unconditional delete: {removed:?}"
    );
    assert!(store.read(&key).await.unwrap().is_none());
    assert!(
        store
            .scan(KeyKind::Meta, &ListFilter::all())
            .await
            .unwrap()
            .is_empty()
    );
}

/// One hostile HTTP answer.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// Content-Length to claim (`None`: the true length); shorter or longer than the body.
    length: Option<usize>,
    /// Close the connection after the headers.
    cut: bool,
}

fn vault_shaped() -> impl Strategy<Value = Vec<u8>> {
    use serde_json::json;
    let any_json = prop_oneof![
        Just(json!(null)),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!(["a", 1, null])),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
    ];
    (
        any_json.clone(),
        any_json.clone(),
        any_json.clone(),
        any_json,
    )
        .prop_map(|(version, value, keys, errors)| {
            json!({
                "data": {
                    "data": {"value": value, "generation": "g"},
                    "metadata": {"version": version},
                    "version": version,
                    "keys": keys,
                },
                "errors": errors,
                "auth": {"client_token": value, "lease_duration": version, "renewable": keys},
            })
            .to_string()
            .into_bytes()
        })
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        proptest::sample::select(
            &[
                200u16, 200, 200, 204, 301, 400, 403, 404, 404, 412, 429, 500, 502, 503, 504, 599,
            ][..],
        ),
        prop_oneof![
            3 => vault_shaped(),
            2 => hostile::hostile_json(),
            1 => proptest::collection::vec(any::<u8>(), 0..300),
        ],
        proptest::option::weighted(0.2, 0usize..100_000),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(status, body, length, cut)| Answer {
            status,
            body,
            length,
            cut,
        })
}

/// Serves `answers` round-robin to every request on a loopback port, until dropped.
struct FakeVault {
    addr: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeVault {
    fn start(answers: Vec<Answer>) -> FakeVault {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let a = answers[n % answers.len()].clone();
                n += 1;
                std::thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                    // Read the request head (and whatever body came with it).
                    let mut buf = [0u8; 65536];
                    let _ = conn.read(&mut buf);
                    let length = a.length.unwrap_or(a.body.len());
                    let head = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
                        a.status
                    );
                    let _ = conn.write_all(head.as_bytes());
                    if !a.cut {
                        let _ = conn.write_all(&a.body);
                    }
                });
            }
        });
        FakeVault { addr, stop }
    }
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn hostile_http_answers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let limit = Duration::from_millis(700);
    let cases = hostile_cases(64);
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(answer(), 1..6), |answers| {
            let fake = FakeVault::start(answers);
            rt.block_on(async {
                let config = token_config(&fake.addr, "hostile-token", "p").with_timeout(limit);
                // The backend under core's time limit, as `open` stacks it (without `open`'s
                // read of the encryption header, which would meet the hostile answers first).
                let store = VaultStore::open(&config)
                    .await
                    .map(|s| Timeout::new(s, limit))
                    .map_err(|e| TestCaseError::fail(format!("open: {e:?}")))?;
                let key = StorageKey::single(KeyKind::Meta, "h").unwrap();
                for op in 0..4 {
                    let t = Instant::now();
                    let r: Result<(), Error> = match op {
                        0 => store.read(&key).await.map(drop),
                        1 => store
                            .write(&key, b"v", &PutOptions::default())
                            .await
                            .map(drop),
                        2 => store.remove(&key, &Precondition::Any).await.map(drop),
                        _ => store
                            .scan(KeyKind::Meta, &ListFilter::all())
                            .await
                            .map(drop),
                    };
                    let took = t.elapsed();
                    prop_assert!(
                        took < limit + Duration::from_millis(1500),
                        "op {} took {:?}",
                        op,
                        took
                    );
                    let word = match &r {
                        Ok(()) => "ok".to_owned(),
                        Err(e) => format!("{e:?}")
                            .split([' ', '{', '('])
                            .next()
                            .unwrap_or("?")
                            .to_owned(),
                    };
                    *outcomes.lock().unwrap().entry(word).or_default() += 1;
                }
                Ok(())
            })
        })
        .unwrap();
    println!("hostile HTTP answers: {:?}", outcomes.lock().unwrap());
    summary::torture(
        "hostile-decoder",
        "vault",
        &[
            ("cases", cases.to_string()),
            ("decoder", "http-answers".into()),
        ],
    );
}

/// Peak resident memory of this process, from /proc.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A broken or hostile server or proxy answering without end must not make the client
/// allocate without bound: it stops reading at a cap (1 MiB, far above any KV answer for
/// records of at most 256 KiB) and fails with `Backend`. (It once read the whole answer with
/// `Response::text()`: 256 MiB raised peak memory by 516 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_answer_is_not_buffered_whole() {
    const HUGE: usize = 256 * 1024 * 1024;
    // Declared up front, and (the harder case) not declared: read until the server closes.
    for declared in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    let _ = conn.read(&mut buf);
                    let length = if declared {
                        format!("Content-Length: {HUGE}\r\n")
                    } else {
                        "Connection: close\r\n".to_owned()
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}\r\n"
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let chunk = vec![b' '; 1 << 20];
                    for _ in 0..HUGE / chunk.len() {
                        if conn.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let before = peak_rss_kib();
        let store =
            VaultStore::open(&token_config(&addr, "t", "p").with_timeout(Duration::from_secs(20)))
                .await
                .unwrap();
        let key = StorageKey::single(KeyKind::Meta, "huge").unwrap();
        let t = Instant::now();
        let result = store.read(&key).await;
        let took = t.elapsed();
        let grew = peak_rss_kib().saturating_sub(before) / 1024;
        println!(
            "a {} MiB answer (length declared: {declared}): {result:?} in {took:?}, \
             peak memory grew by {grew} MiB",
            HUGE >> 20
        );
        assert!(
            grew < 64,
            "one read of a {} MiB answer grew peak memory by {grew} MiB",
            HUGE >> 20
        );
        assert!(matches!(result, Err(Error::Backend { .. })), "{result:?}");
    }
}

/// A dev server of our own that keeps its unseal key (from its output), for seal/unseal,
/// stop/restart and SIGSTOP; killed on drop.
struct Bao {
    bin: String,
    port: u16,
    home: std::path::PathBuf,
    child: Option<Child>,
    unseal_key: String,
}

const BAO_TOKEN: &str = "torture-root-token";

impl Bao {
    async fn start() -> Option<Bao> {
        let bin = services::require("TOKEN_STORE_TEST_VAULT_BAO_BIN")?;
        let home = std::env::temp_dir().join(services::unique("ts-vault-torture"));
        std::fs::create_dir_all(&home).unwrap();
        let mut bao = Bao {
            bin,
            port: free_port_pair(),
            home,
            child: None,
            unseal_key: String::new(),
        };
        bao.launch().await;
        Some(bao)
    }

    fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let log = self.home.join("log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&self.bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={BAO_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{}", self.port),
            ])
            .env("HOME", &self.home)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start bao");
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = http
                .get(format!("{}/v1/auth/token/lookup-self", self.addr()))
                .header("X-Vault-Token", BAO_TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "own OpenBao did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The key is printed just after the server starts answering.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(key) = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Unseal Key: "))
            {
                self.unseal_key = key.trim().to_owned();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::StatusCode {
        reqwest::Client::new()
            .post(format!("{}/v1/{path}", self.addr()))
            .header("X-Vault-Token", BAO_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused server must be resumed to die of SIGKILL promptly everywhere.
            fault::signal(c.id(), "-CONT");
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 65535 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

const TIMEOUT: Duration = Duration::from_secs(2);

async fn bao_store(bao: &Bao) -> Arc<dyn RawStore> {
    open_raw(token_config(&bao.addr(), BAO_TOKEN, "token-store-torture").with_timeout(TIMEOUT))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_sealed_then_unsealed() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    assert!(
        !bao.unseal_key.is_empty(),
        "no unseal key in the dev server's output"
    );
    let store = bao_store(&bao).await;
    let bao = Arc::new(bao);
    let (b1, b2) = (bao.clone(), bao.clone());
    fault::run(
        "vault",
        store,
        Fault::new("sealed", TIMEOUT),
        move || {
            Box::pin(async move {
                let s = b1.post("sys/seal", serde_json::json!({})).await;
                assert!(s.is_success(), "seal: {s}");
            })
        },
        move || {
            Box::pin(async move {
                let s = b2
                    .post("sys/unseal", serde_json::json!({ "key": b2.unseal_key }))
                    .await;
                assert!(s.is_success(), "unseal: {s}");
            })
        },
    )
    .await
    .assert_ok("vault", "sealed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_paused() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    let store = bao_store(&bao).await;
    let pid = bao.pid();
    fault::run(
        "vault",
        store,
        Fault::new("paused-sigstop", TIMEOUT),
        move || Box::pin(async move { fault::signal(pid, "-STOP") }),
        move || Box::pin(async move { fault::signal(pid, "-CONT") }),
    )
    .await
    .assert_ok("vault", "paused");
    drop(bao);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_stopped_then_restarted() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    let store = bao_store(&bao).await;
    let bao = Arc::new(tokio::sync::Mutex::new(bao));
    let (b1, b2) = (bao.clone(), bao.clone());
    fault::run(
        "vault",
        store,
        // A dev server restarts empty: recovery is checked, not the data.
        Fault::new("stopped-restarted", TIMEOUT).not_durable(),
        move || Box::pin(async move { b1.lock().await.stop() }),
        move || Box::pin(async move { b2.lock().await.launch().await }),
    )
    .await
    .assert_ok("vault", "stopped");
}
