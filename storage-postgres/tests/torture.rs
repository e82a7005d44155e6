//! The shared torture suites on PostgreSQL: 200 SIGKILL crash rounds through `open_url`
//! against the crash server (`fsync=on`, `synchronous_commit=on`), the server killed with
//! SIGKILL too on every 20th round and restarted by its script; the concurrent model check on
//! plain and TLS servers; hostile keys and stored bytes; and rows other writers left in our
//! table (foreign kinds, parts that form no key, ids that are not their key's digest,
//! arbitrary values, values over the size limit).
//!
//! Server restarts, killed connections, a full pool and statement timeouts are in
//! `tests/failover.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use token_store_conformance::hostile::{self, hostile_cases};
use token_store_conformance::proptest::prelude::*;
use token_store_conformance::proptest::test_runner::{Config, TestCaseError, TestRunner};
use token_store_conformance::{
    BoxFuture, concurrent_model_check, crash, fault, model_check_cases, proptest, services, summary,
};
use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, Precondition, RawStore, StorageKey, StoreUrl, TokenKey,
    TokenRecord, TokenStore,
};
use token_store_postgres::PostgresStore;

fn open_url(url: StoreUrl) -> BoxFuture<'static, token_store_core::Result<Arc<dyn RawStore>>> {
    Box::pin(async move { Ok(token_store_postgres::open_url(&url).await?.raw().clone()) })
}

/// The crash child (does nothing unless started by the crash harness).
#[test]
fn crash_child() {
    crash::child(open_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_rounds_postgres() {
    let Some(url) = services::require("TOKEN_STORE_TEST_POSTGRES_CRASH_URL") else {
        return;
    };
    let pidfile = services::require("TOKEN_STORE_TEST_POSTGRES_CRASH_PIDFILE").unwrap();
    let script = services::require("TOKEN_STORE_TEST_POSTGRES_CRASH_RESTART").unwrap();
    let url = common::with_params(
        &url,
        &format!("schema={}&table=crash", common::ident("crash")),
    );
    let _drop = common::DropSchema(
        token_store_postgres::PostgresConfig::from_url(&StoreUrl::parse(&url).unwrap()).unwrap(),
    );
    let server = crash::ServerCrash {
        every: 20,
        kill: Box::new(move || fault::signal(fault::read_pid(&pidfile), "-KILL")),
        restart: Box::new(move || fault::run_script(&script)),
    };
    crash::run("postgres", &url, open_url, crash::rounds(200), Some(server))
        .await
        .assert_ok("postgres");
}

#[test]
fn concurrent_model_postgres() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    concurrent_model_check("postgres", common::factory(config), model_check_cases(256));
}

#[test]
fn concurrent_model_postgres_tls() {
    let Some(config) = common::tls() else { return };
    let _drop = common::DropSchema(config.clone());
    concurrent_model_check(
        "postgres-tls",
        common::factory(config),
        model_check_cases(128),
    );
}

#[test]
fn hostile_keys_postgres() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    hostile::hostile_keys("postgres", common::factory(config), hostile_cases(64));
}

#[test]
fn hostile_keys_postgres_tls() {
    let Some(config) = common::tls() else { return };
    let _drop = common::DropSchema(config.clone());
    hostile::hostile_keys("postgres-tls", common::factory(config), hostile_cases(32));
}

#[test]
fn hostile_bytes_postgres() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    hostile::hostile_bytes("postgres", common::factory(config), hostile_cases(64));
}

#[test]
fn hostile_bytes_postgres_tls() {
    let Some(config) = common::tls() else { return };
    let _drop = common::DropSchema(config.clone());
    hostile::hostile_bytes("postgres-tls", common::factory(config), hostile_cases(32));
}

/// What other writers can leave in our table.
#[derive(Clone, Debug)]
enum Foreign {
    /// Arbitrary bytes as the value of a token row at a real key.
    Value(Vec<u8>),
    /// A value longer than the store's limit at a real key.
    Oversized(usize),
    /// A row whose kind and parts are arbitrary text, with its id right or wrong.
    Row {
        kind: String,
        parts: [String; 4],
        right_id: bool,
    },
}

/// Text a foreign writer can store (PostgreSQL's `text` holds no NUL).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(hostile::PALETTE).prop_map(str::to_owned),
        "[a-z:%#/]{0,12}",
        hostile::key_part(),
    ]
    .prop_map(|s| s.replace('\0', ""))
}

fn foreign() -> impl Strategy<Value = Foreign> {
    prop_oneof![
        3 => hostile::hostile_bytes_strategy().prop_map(Foreign::Value),
        1 => (1usize..4000).prop_map(Foreign::Oversized),
        3 => (
            prop_oneof![
                proptest::sample::select(&["token", "client", "state", "lease", "meta"][..]).prop_map(str::to_owned),
                "[a-z]{0,8}",
            ],
            [text(), text(), text(), text()],
            any::<bool>(),
        )
            .prop_map(|(kind, parts, right_id)| Foreign::Row { kind, parts, right_id }),
    ]
}

fn digest(encoded: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(encoded.as_bytes()).to_vec()
}

/// The store's value limit here: above every hostile value, so oversized rows are the only ones over it.
const MAX: usize = 256 * 1024;

#[test]
fn foreign_rows_in_our_table() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let config = config.with_table("foreign").with_max_value_size(MAX);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (store, raw) = rt.block_on(async {
        let store = PostgresStore::open(&config).await.unwrap();
        (store, common::raw_client(&config).await)
    });
    let table = format!("\"{}\".\"foreign\"", config.schema);
    let store = Arc::new(store);
    let typed = TokenStore::from_arc(store.clone());
    let token = TokenKey::for_server("https://foreign.example/mcp");
    let key = token.storage_key();
    let cases = hostile_cases(128);
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let insert = format!(
        "INSERT INTO {table} (kind, id, p1, p2, p3, p4, value, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, now())
         ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value"
    );
    runner
        .run(&proptest::collection::vec(foreign(), 1..4), |items| {
            rt.block_on(async {
                raw.batch_execute(&format!("DELETE FROM {table}"))
                    .await
                    .unwrap();
                let parts = key.parts().to_vec();
                let mut outcome = Vec::new();
                for item in items {
                    match item {
                        Foreign::Value(bytes) => {
                            raw.execute(
                                &insert,
                                &[
                                    &"token",
                                    &digest(&key.encode()),
                                    &parts[0],
                                    &parts[1],
                                    &parts[2],
                                    &parts[3],
                                    &bytes,
                                ],
                            )
                            .await
                            .unwrap();
                            let got = store
                                .read(&key)
                                .await
                                .map_err(|e| TestCaseError::fail(format!("raw read: {e:?}")))?;
                            prop_assert_eq!(got.map(|r| r.value.to_vec()), Some(bytes.clone()));
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
                        Foreign::Oversized(extra) => {
                            let bytes = vec![b'x'; MAX + extra];
                            raw.execute(
                                &insert,
                                &[
                                    &"token",
                                    &digest(&key.encode()),
                                    &parts[0],
                                    &parts[1],
                                    &parts[2],
                                    &parts[3],
                                    &bytes,
                                ],
                            )
                            .await
                            .unwrap();
                            match store.read(&key).await {
                                Err(Error::TooLarge { size, max, .. })
                                    if size == MAX + extra && max == MAX =>
                                {
                                    outcome.push("too-large")
                                }
                                other => {
                                    return Err(TestCaseError::fail(format!(
                                        "oversized read: {:?}",
                                        other.map(|r| r.map(|r| r.value.len()))
                                    )));
                                }
                            }
                            // An unconditional write replaces it; a CAS against it conflicts.
                            let cas = typed
                                .put(&token, &TokenRecord::new("t"), Precondition::IfAbsent)
                                .await;
                            prop_assert!(matches!(cas, Err(Error::Conflict { .. })), "{cas:?}");
                        }
                        Foreign::Row {
                            kind,
                            parts,
                            right_id,
                        } => {
                            let encoded = parts.join(":");
                            let id = if right_id {
                                StorageKey::new(
                                    KeyKind::ALL
                                        .iter()
                                        .copied()
                                        .find(|k| k.as_str() == kind)
                                        .unwrap_or(KeyKind::Meta),
                                    parts.to_vec(),
                                )
                                .map(|k| digest(&k.encode()))
                                .unwrap_or_else(|_| digest(&encoded))
                            } else {
                                digest(&format!("{kind}/{encoded}/wrong"))
                            };
                            raw.execute(
                                &insert,
                                &[
                                    &kind,
                                    &id,
                                    &parts[0],
                                    &parts[1],
                                    &parts[2],
                                    &parts[3],
                                    &b"x".to_vec(),
                                ],
                            )
                            .await
                            .unwrap();
                            outcome.push("foreign-row");
                        }
                    }
                }
                // Listing every kind works over whatever is there: keys that decode, whose
                // id is their digest, or unreadable entries.
                for kind in KeyKind::ALL {
                    let entries = store
                        .scan(kind, &ListFilter::all())
                        .await
                        .map_err(|e| TestCaseError::fail(format!("scan {kind:?}: {e:?}")))?;
                    for e in entries {
                        match e {
                            ListEntry::Key(k) => {
                                prop_assert_eq!(k.kind(), kind);
                                prop_assert!(StorageKey::decode(&k.encode()).is_some());
                                // A listed key reads back (its row is found by its digest),
                                // or is over the size limit.
                                let read = store.read(&k).await;
                                prop_assert!(
                                    matches!(read, Ok(Some(_)) | Err(Error::TooLarge { .. })),
                                    "{:?}",
                                    read.map(|r| r.map(|r| r.value.len()))
                                );
                            }
                            ListEntry::Unreadable { .. } => outcome.push("unreadable"),
                            _ => {}
                        }
                    }
                }
                typed
                    .list(&Default::default())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("typed list: {e:?}")))?;
                outcome.sort_unstable();
                outcome.dedup();
                *outcomes
                    .lock()
                    .unwrap()
                    .entry(outcome.join("+"))
                    .or_default() += 1;
                Ok(())
            })
        })
        .unwrap();
    println!("foreign rows: {:?}", outcomes.lock().unwrap());
    summary::torture(
        "hostile-decoder",
        "postgres",
        &[
            ("cases", cases.to_string()),
            ("decoder", "foreign-rows".into()),
        ],
    );
}
