//! The metrics of the `metrics` feature, counted with `metrics-util`'s debugging recorder:
//! store calls through `layers::Metrics` by outcome, refreshes by outcome, lease waits and
//! takeovers; labels are only backend, operation and outcome, never a key or a secret.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use token_store_core::layers::Metrics;
use token_store_core::metrics::{
    LEASE_TAKEOVERS, LEASE_WAIT, OPERATION_DURATION, OPERATIONS, REFRESHES,
};
use token_store_core::{
    ClientKey, ClientRegistration, Lease, LeaseOptions, ListFilter, Precondition, PutOptions,
    Query, RefreshError, StorageKey, TokenKey, TokenManager, TokenRecord, TokenStore, Version,
};

/// One series: its name and its labels, as `name{k=v,...}`.
type Series = String;

#[derive(Default, Debug)]
struct Seen {
    counters: BTreeMap<Series, u64>,
    /// Sample counts of histograms.
    histograms: BTreeMap<Series, usize>,
    labels: Vec<(String, String)>,
}

impl Seen {
    fn counter(&self, series: &str) -> u64 {
        self.counters.get(series).copied().unwrap_or(0)
    }
    fn samples(&self, series: &str) -> usize {
        self.histograms.get(series).copied().unwrap_or(0)
    }
    fn total(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Runs `body` on a current-thread runtime with a local debugging recorder; returns what it
/// recorded. (A local recorder is per thread, so everything runs on this one.)
fn recorded<F: Future<Output = ()>>(body: impl FnOnce() -> F) -> Seen {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(body()));
    let mut seen = Seen::default();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| {
                seen.labels.push((l.key().to_owned(), l.value().to_owned()));
                format!("{}={}", l.key(), l.value())
            })
            .collect();
        labels.sort();
        let series = format!("{}{{{}}}", key.name(), labels.join(","));
        match value {
            DebugValue::Counter(n) => *seen.counters.entry(series).or_default() += n,
            DebugValue::Histogram(v) => *seen.histograms.entry(series).or_default() += v.len(),
            DebugValue::Gauge(_) => panic!("no gauges are documented: {series}"),
        }
    }
    seen
}

fn op(operation: &str, outcome: &str) -> String {
    format!("{OPERATIONS}{{backend=memory,operation={operation},outcome={outcome}}}")
}

fn latency(operation: &str, outcome: &str) -> String {
    format!("{OPERATION_DURATION}{{backend=memory,operation={operation},outcome={outcome}}}")
}

fn refreshes(outcome: &str) -> String {
    format!("{REFRESHES}{{backend=memory,outcome={outcome}}}")
}

fn lease_wait(outcome: &str) -> String {
    format!("{LEASE_WAIT}{{backend=memory,outcome={outcome}}}")
}

const USER: &str = "alice-metrics-user";
const RESOURCE: &str = "https://metrics-resource.example/mcp";
const SECRET: &str = "at-SeCrEt-metrics";

fn key() -> TokenKey {
    TokenKey::new(USER, RESOURCE, Some("https://issuer.example"), ["read"])
}

fn expiring(tag: &str) -> TokenRecord {
    TokenRecord::new(format!("{SECRET}-{tag}"))
        .with_refresh_token(format!("rt-SeCrEt-{tag}"))
        .expires_in(Duration::ZERO)
}

/// Labels carry the backend, operation and outcome only, never a key part or a token.
fn assert_clean_labels(seen: &Seen) {
    assert!(!seen.labels.is_empty());
    for (k, v) in &seen.labels {
        assert!(
            ["backend", "operation", "outcome"].contains(&k.as_str()),
            "unexpected label {k}={v}"
        );
        for forbidden in [
            USER,
            RESOURCE,
            "issuer",
            "SeCrEt",
            "metrics-resource",
            "alice",
        ] {
            assert!(!v.contains(forbidden), "label {k}={v} carries {forbidden}");
        }
    }
}

#[test]
fn the_layer_counts_and_times_every_call_by_outcome() {
    let seen = recorded(|| async {
        let store = Metrics::wrap(TokenStore::in_memory());
        let key = key();
        assert!(store.get(&key).await.unwrap().is_none()); // get miss
        let v1 = store
            .put(&key, &TokenRecord::new(SECRET), Precondition::IfAbsent)
            .await
            .unwrap(); // put ok
        store.get(&key).await.unwrap().unwrap(); // get ok
        let stale = Precondition::IfVersion(Version::new("stale"));
        assert!(
            store
                .put(&key, &TokenRecord::new(SECRET), stale)
                .await
                .unwrap_err()
                .is_conflict()
        ); // put conflict
        store.list(&Query::new(ListFilter::all())).await.unwrap(); // list ok
        assert!(
            store
                .delete(&key, Precondition::IfVersion(v1))
                .await
                .unwrap()
        ); // delete ok
        assert!(!store.delete(&key, Precondition::Any).await.unwrap()); // delete miss
        // A record over the memory store's limit.
        let huge = TokenRecord::new("x".repeat(17 * 1024 * 1024));
        assert!(store.put(&key, &huge, Precondition::Any).await.is_err()); // put too_large
        // Not JSON: the typed read fails as corrupt, but the raw read itself succeeded.
        store
            .raw()
            .write(key.as_storage_key(), b"not json", &PutOptions::default())
            .await
            .unwrap(); // put ok
        assert!(store.get(&key).await.is_err()); // get ok (the bytes were there)
        store
            .put_client(
                &ClientKey::new("https://issuer.example"),
                &ClientRegistration::new("client-1"),
                Precondition::Any,
            )
            .await
            .unwrap(); // put ok
    });
    assert_eq!(seen.counter(&op("get", "miss")), 1, "{seen:#?}");
    assert_eq!(seen.counter(&op("get", "ok")), 2, "{seen:#?}");
    assert_eq!(seen.counter(&op("put", "ok")), 3, "{seen:#?}");
    assert_eq!(seen.counter(&op("put", "conflict")), 1, "{seen:#?}");
    assert_eq!(seen.counter(&op("put", "too_large")), 1, "{seen:#?}");
    assert_eq!(seen.counter(&op("list", "ok")), 1, "{seen:#?}");
    assert_eq!(seen.counter(&op("delete", "ok")), 1, "{seen:#?}");
    assert_eq!(seen.counter(&op("delete", "miss")), 1, "{seen:#?}");
    assert_eq!(seen.total(OPERATIONS), 11, "{seen:#?}");
    // One latency sample per call, under the same labels.
    for (operation, outcome, n) in [
        ("get", "miss", 1),
        ("get", "ok", 2),
        ("put", "ok", 3),
        ("put", "conflict", 1),
        ("delete", "miss", 1),
    ] {
        assert_eq!(seen.samples(&latency(operation, outcome)), n, "{seen:#?}");
    }
    assert_clean_labels(&seen);
}

#[test]
fn refreshes_are_counted_by_outcome() {
    let seen = recorded(|| async {
        let store = TokenStore::in_memory();
        let key = key();
        let manager = TokenManager::new(store.clone()).unwrap();
        let fresh = || async {
            Ok(TokenRecord::new(format!("{SECRET}-new"))
                .with_refresh_token("rt-SeCrEt-new")
                .expires_in(Duration::from_secs(3600)))
        };
        // refreshed
        // Through the manager's handle: its read cache sees its own writes at once.
        manager
            .store()
            .put(&key, &expiring("0"), Precondition::Any)
            .await
            .unwrap();
        manager.valid_token(&key, |_| fresh()).await.unwrap();
        // A valid token: no refresh, nothing counted.
        manager
            .valid_token(&key, |_| async { panic!("no refresh needed") })
            .await
            .unwrap();
        // adopted: two callers at once; the lease holder refreshes, the other adopts.
        manager
            .store()
            .put(&key, &expiring("1"), Precondition::Any)
            .await
            .unwrap();
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            fresh().await
        };
        let (a, b) = tokio::join!(
            manager.valid_token(&key, |_| slow()),
            manager.valid_token(&key, |_| slow())
        );
        a.unwrap();
        b.unwrap();
        // transient
        manager
            .store()
            .put(&key, &expiring("2"), Precondition::Any)
            .await
            .unwrap();
        manager
            .valid_token(&key, |_| async {
                Err(RefreshError::Transient("connection reset".into()))
            })
            .await
            .unwrap_err();
        // rejected
        manager
            .valid_token(&key, |_| async {
                Err(RefreshError::Rejected("invalid_grant".into()))
            })
            .await
            .unwrap_err();
        // login_required: expired and no refresh token.
        manager
            .store()
            .put(
                &key,
                &TokenRecord::new(SECRET).expires_in(Duration::ZERO),
                Precondition::Any,
            )
            .await
            .unwrap();
        manager
            .valid_token(&key, |_| async { panic!("nothing to refresh with") })
            .await
            .unwrap_err();
    });
    assert_eq!(seen.counter(&refreshes("refreshed")), 2, "{seen:#?}");
    assert_eq!(seen.counter(&refreshes("adopted")), 1, "{seen:#?}");
    assert_eq!(seen.counter(&refreshes("transient")), 1, "{seen:#?}");
    assert_eq!(seen.counter(&refreshes("rejected")), 1, "{seen:#?}");
    assert_eq!(seen.counter(&refreshes("login_required")), 1, "{seen:#?}");
    assert_eq!(seen.total(REFRESHES), 6, "{seen:#?}");
    // One lease wait per refresh attempt. The waiter's ends by adoption when it re-reads the
    // holder's token between steps, or by taking the released lease (then it adopts the
    // token it re-reads under it).
    assert_eq!(
        seen.samples(&lease_wait("acquired")) + seen.samples(&lease_wait("adopted")),
        6,
        "{seen:#?}"
    );
    assert_eq!(seen.samples(&lease_wait("timeout")), 0, "{seen:#?}");
    assert_clean_labels(&seen);
}

#[test]
fn lease_waits_timeouts_and_takeovers_are_recorded() {
    let seen = recorded(|| async {
        let store = TokenStore::in_memory();
        let opts = LeaseOptions::new(Duration::from_secs(5), Duration::from_millis(30))
            .with_poll(Duration::from_millis(5));
        let held = Lease::acquire(&store, "l", &opts).await.unwrap(); // acquired
        assert!(Lease::acquire(&store, "l", &opts).await.is_err()); // timeout
        held.release().await.unwrap();
        // A dead holder's record (unreadable counts as expired): taken over.
        let lease_key = StorageKey::single(token_store_core::KeyKind::Lease, "l").unwrap();
        store
            .raw()
            .write(&lease_key, b"garbage", &PutOptions::default())
            .await
            .unwrap();
        Lease::acquire(&store, "l", &opts)
            .await
            .unwrap()
            .release()
            .await
            .unwrap(); // acquired, taken over
    });
    assert_eq!(seen.samples(&lease_wait("acquired")), 2, "{seen:#?}");
    assert_eq!(seen.samples(&lease_wait("timeout")), 1, "{seen:#?}");
    assert_eq!(
        seen.counter(&format!("{LEASE_TAKEOVERS}{{backend=memory}}")),
        1,
        "{seen:#?}"
    );
    assert_clean_labels(&seen);
}

#[test]
fn descriptions_name_every_documented_metric() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        token_store_core::metrics::describe();
        // Described metrics show only once they have a value.
        token_store_core::metrics::record_refresh(
            &TokenStore::in_memory(),
            token_store_core::metrics::RefreshOutcome::Refreshed,
        );
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let (_, unit, description, _) = snapshot
        .iter()
        .find(|(k, ..)| k.key().name() == REFRESHES)
        .expect("the refresh counter");
    assert_eq!(*unit, Some(metrics::Unit::Count));
    assert!(
        description
            .as_deref()
            .is_some_and(|d| d.contains("Refreshes"))
    );
}

#[test]
fn a_layer_follows_the_recorder_in_force() {
    // A layer used before any recorder, then under two recorders in turn: each gets exactly
    // its own calls (handles are registered per recorder, not once per layer).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Metrics::wrap(TokenStore::in_memory());
    let key = key();
    let gets = |n: usize| {
        runtime.block_on(async {
            for _ in 0..n {
                assert!(store.get(&key).await.unwrap().is_none());
            }
        })
    };
    gets(1);
    let (a, b) = (DebuggingRecorder::new(), DebuggingRecorder::new());
    let (snap_a, snap_b) = (a.snapshotter(), b.snapshotter());
    metrics::with_local_recorder(&a, || gets(1));
    metrics::with_local_recorder(&b, || gets(2));
    metrics::with_local_recorder(&a, || gets(3));
    let count = |snap: &metrics_util::debugging::Snapshotter| -> u64 {
        snap.snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, ..)| k.key().name() == OPERATIONS)
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => n,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(count(&snap_a), 4);
    assert_eq!(count(&snap_b), 2);
}
