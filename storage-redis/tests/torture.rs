//! The shared torture suites on Redis: 200 SIGKILL crash rounds against the AOF Redis
//! (`appendfsync always`), the server killed too on every 20th round; the concurrent model
//! check on standalone and cluster; hostile keys and stored bytes; values and keys other
//! writers left under our prefix (foreign types, binary junk, non-UTF-8 and malformed keys);
//! and service faults through the shared harness: the AOF Redis stopped (SIGTERM) and
//! restarted, and paused (SIGSTOP) — with the same store object throughout.
//!
//! kill -9 of the server under load and a cluster master failover are in `tests/fault.rs`.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use token_store_conformance::fault::{self, Fault};
use token_store_conformance::hostile::{self, hostile_cases};
use token_store_conformance::proptest::prelude::*;
use token_store_conformance::proptest::test_runner::{Config, TestCaseError, TestRunner};
use token_store_conformance::{
    BoxFuture, concurrent_model_check, crash, model_check_cases, proptest, services, summary,
};
use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, RawStore, StorageKey, StoreUrl, TokenKey, TokenStore,
};
use token_store_redis::{RedisConfig, RedisStore};

/// The AOF Redis is stopped and killed by tests of this binary: one at a time.
static AOF: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn open_url(url: StoreUrl) -> BoxFuture<'static, token_store_core::Result<Arc<dyn RawStore>>> {
    Box::pin(async move { Ok(token_store_redis::open_url(&url).await?.raw().clone()) })
}

/// The crash child (does nothing unless started by the crash harness).
#[test]
fn crash_child() {
    crash::child(open_url);
}

struct Aof {
    url: String,
    pidfile: String,
    restart: String,
}

fn aof() -> Option<Aof> {
    Some(Aof {
        url: services::require("TOKEN_STORE_TEST_REDIS_AOF_URL")?,
        pidfile: services::require("TOKEN_STORE_TEST_REDIS_AOF_PIDFILE")?,
        restart: services::require("TOKEN_STORE_TEST_REDIS_AOF_RESTART")?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_rounds_redis_aof() {
    let Some(aof) = aof() else { return };
    let _one = AOF.lock().await;
    let url = format!("{}?prefix={}", aof.url, common::prefix());
    let pidfile = aof.pidfile.clone();
    let script = aof.restart.clone();
    let server = crash::ServerCrash {
        every: 20,
        kill: Box::new(move || fault::signal(fault::read_pid(&pidfile), "-KILL")),
        restart: Box::new(move || fault::run_script(&script)),
    };
    crash::run("redis", &url, open_url, crash::rounds(200), Some(server))
        .await
        .assert_ok("redis");
}

#[test]
fn concurrent_model_redis_standalone() {
    let Some(config) = common::standalone() else {
        return;
    };
    concurrent_model_check("redis", common::factory(config), model_check_cases(256));
}

#[test]
fn concurrent_model_redis_cluster() {
    let Some(config) = common::cluster() else {
        return;
    };
    concurrent_model_check(
        "redis-cluster",
        common::factory(config),
        model_check_cases(256),
    );
}

#[test]
fn hostile_keys_redis() {
    let Some(config) = common::standalone() else {
        return;
    };
    hostile::hostile_keys("redis", common::factory(config), hostile_cases(64));
}

#[test]
fn hostile_keys_redis_cluster() {
    let Some(config) = common::cluster() else {
        return;
    };
    hostile::hostile_keys("redis-cluster", common::factory(config), hostile_cases(32));
}

#[test]
fn hostile_bytes_redis() {
    let Some(config) = common::standalone() else {
        return;
    };
    hostile::hostile_bytes("redis", common::factory(config), hostile_cases(64));
}

/// What other writers can leave at our keys and under our prefix.
#[derive(Clone, Debug)]
enum Foreign {
    /// A string of arbitrary bytes at a token key (mcp-agent, redis-cli, a bug).
    Bytes(Vec<u8>),
    /// A value of another Redis type at a token key.
    Type(&'static str),
    /// A key under the prefix that is not ours: arbitrary bytes after `prefix:`.
    Key(Vec<u8>),
}

const FOREIGN_KEYS: &[&[u8]] = &[
    b"#client:only-one-part",
    b"#client:%zz:x",
    b"#state:a:b",
    b"#meta:",
    b"#nope:x",
    b"a:b:c",
    b"a:b:c:d:e",
    b"%FF%FE:b:c:d",
    b"\xff\xfe:b:c:d",
    b"::::",
    b"#client:%41:b",
];

fn foreign() -> impl Strategy<Value = Foreign> {
    prop_oneof![
        3 => hostile::hostile_bytes_strategy().prop_map(Foreign::Bytes),
        1 => proptest::sample::select(&["hash", "list", "set", "zset", "stream"][..]).prop_map(Foreign::Type),
        2 => prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::sample::select(FOREIGN_KEYS).prop_map(|b| b.to_vec()),
        ].prop_map(Foreign::Key),
    ]
}

#[test]
fn foreign_values_and_keys_under_our_prefix() {
    let Some(config) = common::standalone() else {
        return;
    };
    let url = services::require("TOKEN_STORE_TEST_REDIS_URL").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (store, raw) = rt.block_on(async {
        let store = RedisStore::open(&config.with_prefix(common::prefix()))
            .await
            .unwrap();
        let raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        (store, raw)
    });
    let prefix = store.config().prefix.clone();
    let rkey = store.redis_key(&TokenKey::for_server("https://foreign.example/mcp").storage_key());
    let store = Arc::new(store);
    let typed = TokenStore::from_arc(store.clone());
    let cases = hostile_cases(128);
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let token = TokenKey::for_server("https://foreign.example/mcp");
    runner
        .run(&proptest::collection::vec(foreign(), 1..4), |items| {
            let mut raw = raw.clone();
            rt.block_on(async {
                let _: () = redis::cmd("DEL")
                    .arg(&rkey)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                let mut outcome = Vec::new();
                for item in items {
                    match item {
                        Foreign::Bytes(b) => {
                            let _: () = redis::cmd("DEL")
                                .arg(&rkey)
                                .query_async(&mut raw)
                                .await
                                .unwrap();
                            let _: () = redis::cmd("SET")
                                .arg(&rkey)
                                .arg(&b)
                                .query_async(&mut raw)
                                .await
                                .unwrap();
                            let got = store.read(&token.storage_key()).await.map_err(|e| {
                                TestCaseError::fail(format!("raw read of a foreign string: {e:?}"))
                            })?;
                            prop_assert_eq!(got.map(|r| r.value.to_vec()), Some(b.clone()));
                            match typed.get(&token).await {
                                Ok(Some(_)) => outcome.push("parsed"),
                                Err(Error::Corrupt { .. }) => outcome.push("corrupt"),
                                other => {
                                    return Err(TestCaseError::fail(format!(
                                        "typed get: {other:?}"
                                    )));
                                }
                            }
                        }
                        Foreign::Type(t) => {
                            let _: () = redis::cmd("DEL")
                                .arg(&rkey)
                                .query_async(&mut raw)
                                .await
                                .unwrap();
                            let mut c = match t {
                                "hash" => redis::cmd("HSET"),
                                "list" => redis::cmd("RPUSH"),
                                "set" => redis::cmd("SADD"),
                                "zset" => redis::cmd("ZADD"),
                                _ => redis::cmd("XADD"),
                            };
                            c.arg(&rkey);
                            match t {
                                "hash" => c.arg("f").arg("v"),
                                "zset" => c.arg(1).arg("m"),
                                "stream" => c.arg("*").arg("f").arg("v"),
                                _ => c.arg("v"),
                            };
                            let _: redis::Value = c.query_async(&mut raw).await.unwrap();
                            for (op, r) in [
                                ("read", store.read(&token.storage_key()).await.map(drop)),
                                (
                                    "cas",
                                    typed
                                        .put(
                                            &token,
                                            &token_store_core::TokenRecord::new("t"),
                                            token_store_core::Precondition::IfAbsent,
                                        )
                                        .await
                                        .map(drop),
                                ),
                            ] {
                                match r {
                                    Err(Error::Corrupt { .. } | Error::Conflict { .. }) => {}
                                    other => {
                                        return Err(TestCaseError::fail(format!(
                                            "{op} over a {t}: {other:?}"
                                        )));
                                    }
                                }
                            }
                            outcome.push("foreign-type");
                        }
                        Foreign::Key(k) => {
                            let mut full = format!("{prefix}:").into_bytes();
                            full.extend_from_slice(&k);
                            let _: () = redis::cmd("SET")
                                .arg(&full)
                                .arg("x")
                                .query_async(&mut raw)
                                .await
                                .unwrap();
                            outcome.push("foreign-key");
                        }
                    }
                }
                // Listing every kind works over whatever is there, and lists only keys that
                // decode, or flags them.
                for kind in KeyKind::ALL {
                    let entries = store
                        .scan(kind, &ListFilter::all())
                        .await
                        .map_err(|e| TestCaseError::fail(format!("scan {kind:?}: {e:?}")))?;
                    for e in entries {
                        if let ListEntry::Key(k) = e {
                            prop_assert_eq!(k.kind(), kind);
                            prop_assert!(StorageKey::decode(&k.encode()).is_some());
                        }
                    }
                }
                typed
                    .list(&Default::default())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("typed list: {e:?}")))?;
                *outcomes
                    .lock()
                    .unwrap()
                    .entry(outcome.join("+"))
                    .or_default() += 1;
                Ok(())
            })
        })
        .unwrap();
    println!("foreign values and keys: {:?}", outcomes.lock().unwrap());
    summary::torture(
        "hostile-decoder",
        "redis",
        &[
            ("cases", cases.to_string()),
            ("decoder", "foreign-values-and-keys".into()),
        ],
    );
}

const TIMEOUT: Duration = Duration::from_secs(2);

async fn aof_store(aof: &Aof) -> Arc<dyn RawStore> {
    let config = RedisConfig::standalone(aof.url.clone())
        .with_prefix(common::prefix())
        .with_timeout(TIMEOUT);
    common::open_raw(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_redis_stopped_then_restarted() {
    let Some(aof) = aof() else { return };
    let _one = AOF.lock().await;
    let store = aof_store(&aof).await;
    let (pidfile, script) = (aof.pidfile.clone(), aof.restart.clone());
    fault::signal_then_restart(
        "redis",
        store,
        Fault::new("stopped-sigterm", TIMEOUT),
        pidfile,
        "-TERM",
        script,
    )
    .await
    .assert_ok("redis", "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_redis_paused() {
    let Some(aof) = aof() else { return };
    let _one = AOF.lock().await;
    let store = aof_store(&aof).await;
    let pid = fault::read_pid(&aof.pidfile);
    fault::run(
        "redis",
        store,
        Fault::new("paused-sigstop", TIMEOUT),
        move || Box::pin(async move { fault::signal(pid, "-STOP") }),
        move || Box::pin(async move { fault::signal(pid, "-CONT") }),
    )
    .await
    .assert_ok("redis", "paused");
}
