//! Reclaiming deleted keys (issue 17): tombstones and metadata of deleted keys are removed
//! without ever losing a write that races the reclamation.
//!
//! - The concurrent model check with a reclaimer sweeping the prefix all the time: every
//!   history (creates, CAS writes, conditional deletes, reads from 2 to 4 tasks) must stay
//!   linearizable while tombstones are reclaimed under it.
//! - Creates and unconditional writes aimed at the moment of a reclamation, counted.
//! - `purge_expired_states` before and after: taken states no longer accumulate.
//! - An abandoned reclamation (a marker whose reclaimer died) is taken over after the lease.
//! - A policy without the metadata `update`/`delete` reclamation needs: listings still work.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{env, unique_prefix};
use token_store_conformance::{Instance, concurrent_model_check, model_check_cases};
use token_store_core::{
    AuthState, Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions,
    RawRecord, RawStore, Result, StorageKey, TokenStore, Version, async_trait,
};
use token_store_vault::{Auth, RECLAIM_LEASE, ReclaimReport, VaultConfig, VaultStore};

/// Reclamation in the tests: tombstones of 60 ms may go (production: an hour), so that they
/// are reclaimed while a history still runs.
const AGE: Duration = Duration::from_millis(60);

fn config(prefix: &str, age: Duration) -> Option<VaultConfig> {
    let e = env()?;
    Some(
        VaultConfig::new(&e.addr, Auth::token(e.token))
            .unwrap()
            .with_prefix(prefix)
            .unwrap()
            .with_reclaim_after(age)
            .unwrap(),
    )
}

/// Totals of every reclamation the wrappers ran.
#[derive(Default)]
struct Totals {
    sweeps: AtomicU64,
    reclaimed: AtomicU64,
    raced: AtomicU64,
    too_young: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Totals {
    fn add(&self, r: &ReclaimReport) {
        self.sweeps.fetch_add(1, Ordering::Relaxed);
        self.reclaimed
            .fetch_add(r.reclaimed as u64, Ordering::Relaxed);
        self.raced.fetch_add(r.raced as u64, Ordering::Relaxed);
        self.too_young
            .fetch_add(r.too_young as u64, Ordering::Relaxed);
    }
}

/// The Vault store with a reclaimer sweeping its prefix for as long as it lives, and a random
/// pause before each call so histories last long enough for their tombstones to age.
#[derive(Debug)]
struct Reclaiming {
    store: VaultStore,
    sweeper: tokio::task::JoinHandle<()>,
}

impl Drop for Reclaiming {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

async fn jitter() {
    let mut b = [0u8; 1];
    token_store_core::backend::fill_random(&mut b).unwrap();
    tokio::time::sleep(Duration::from_millis(u64::from(b[0]) % 60)).await;
}

#[async_trait]
impl RawStore for Reclaiming {
    fn backend(&self) -> &'static str {
        self.store.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        jitter().await;
        self.store.read(key).await
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        jitter().await;
        self.store.write(key, value, options).await
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        jitter().await;
        self.store.remove(key, precondition).await
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        self.store.scan(kind, filter).await
    }
}

/// With deletes and a reclaimer running all along: the delete/create race the tombstones
/// were introduced for must not come back through reclamation (`Error` from a sweep fails).
#[test]
fn concurrent_model_vault_with_reclamation() {
    if env().is_none() {
        return;
    }
    let totals = Arc::new(Totals::default());
    let t = totals.clone();
    concurrent_model_check(
        "vault-reclaiming",
        move || {
            let totals = t.clone();
            async move {
                let config = config(&unique_prefix("token-store-reclaim-linear"), AGE)
                    .ok_or_else(|| Error::config("no Vault"))?;
                let store = VaultStore::open(&config).await?;
                let sweeping = store.clone();
                // The histories' keys are tokens: sweep that kind (one LIST, a read per key)
                // as fast as it goes, and now and then the whole prefix.
                let sweeper = tokio::spawn(async move {
                    for n in 0u64.. {
                        let swept = if n % 16 == 15 {
                            sweeping.reclaim(Duration::ZERO).await
                        } else {
                            sweeping.reclaim_kind(KeyKind::Token, Duration::ZERO).await
                        };
                        match swept {
                            Ok(r) => totals.add(&r),
                            Err(e) => totals.errors.lock().unwrap().push(e.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                });
                Ok(Instance::new(Arc::new(Reclaiming { store, sweeper })))
            }
        },
        model_check_cases(64),
    );
    let errors = totals.errors.lock().unwrap().clone();
    let (sweeps, reclaimed, raced) = (
        totals.sweeps.load(Ordering::Relaxed),
        totals.reclaimed.load(Ordering::Relaxed),
        totals.raced.load(Ordering::Relaxed),
    );
    println!(
        "reclaiming concurrently: {sweeps} sweeps, {reclaimed} keys reclaimed mid-history, {raced} reclamations lost to a write, {} sweep errors",
        errors.len()
    );
    assert!(errors.is_empty(), "sweeps failed: {errors:?}");
    assert!(
        reclaimed > 0,
        "nothing was reclaimed while the histories ran"
    );
}

fn token_key(user: &str, n: usize) -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec![
            user.to_owned(),
            format!("https://r{n}.example"),
            String::new(),
            String::new(),
        ],
    )
    .unwrap()
}

/// Rounds of: a key deleted, aged past the reclaim age, then a reclamation, a create and an
/// unconditional write started at the same instant. Every acknowledged write must be there
/// afterwards (the last acknowledged one, or a later one), whatever the reclamation did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_a_reclamation_are_never_lost() {
    let Some(config) = config(&unique_prefix("token-store-reclaim-race"), AGE) else {
        return;
    };
    let store = VaultStore::open(&config).await.unwrap();
    let rounds = 60;
    let (mut reclaimed, mut raced, mut survived) = (0, 0, 0);
    for round in 0..rounds {
        let key = token_key("race", round % 3);
        store
            .write(&key, b"before", &PutOptions::new(Precondition::Any))
            .await
            .unwrap();
        assert!(store.remove(&key, &Precondition::Any).await.unwrap());
        tokio::time::sleep(AGE + Duration::from_millis(5 + (round as u64 % 7) * 3)).await;
        let (a, b, c) = (store.clone(), store.clone(), store.clone());
        let (k1, k2) = (key.clone(), key.clone());
        let sweep = tokio::spawn(async move { a.reclaim(Duration::ZERO).await });
        let create = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros((round as u64 % 5) * 700)).await;
            b.write(&k1, b"created", &PutOptions::new(Precondition::IfAbsent))
                .await
        });
        let blind = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros((round as u64 % 4) * 900)).await;
            c.write(&k2, b"blind", &PutOptions::new(Precondition::Any))
                .await
        });
        let report = sweep.await.unwrap().unwrap();
        let created = create.await.unwrap();
        let blind = blind.await.unwrap().unwrap();
        reclaimed += report.reclaimed;
        raced += report.raced;
        let now = store
            .read(&key)
            .await
            .unwrap()
            .expect("acknowledged writes vanished");
        match created {
            // Both acknowledged: whichever Vault applied last is there, never nothing.
            Ok(v) => assert!(now.version == blind || now.version == v, "round {round}"),
            Err(e) if e.is_conflict() => assert_eq!(now.version, blind, "round {round}"),
            Err(e) => panic!("round {round}: create failed: {e}"),
        }
        survived += 1;
        assert!(store.remove(&key, &Precondition::Any).await.unwrap());
    }
    println!(
        "racing reclamations: {rounds} rounds, {reclaimed} keys reclaimed at the moment of a create and a write, {raced} reclamations lost to them, {survived} rounds with every acknowledged write there"
    );
    assert!(reclaimed + raced > 0, "no reclamation ever met a write");
}

/// Taken PKCE states used to stay as tombstones that every `purge_expired_states` listed and
/// read; reclamation removes them, and listings reclaim what they meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_states_no_longer_slow_down_the_purge() {
    let prefix = unique_prefix("token-store-reclaim-purge");
    let Some(base) = config(&prefix, AGE) else {
        return;
    };
    let n = 200;
    let quiet = VaultStore::open(&base.clone().with_reclaim_in_listings(false))
        .await
        .unwrap();
    let typed = TokenStore::from_arc(Arc::new(quiet.clone()));
    for i in 0..n {
        typed
            .save_state(
                &format!("state-{i}"),
                &AuthState::new("verifier"),
                Duration::from_secs(600),
            )
            .await
            .unwrap();
    }
    for i in 0..n {
        assert!(
            typed
                .take_state(&format!("state-{i}"))
                .await
                .unwrap()
                .is_some()
        );
    }
    let purge_time = |typed: TokenStore| async move {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            assert_eq!(typed.purge_expired_states().await.unwrap(), 0);
            times.push(t.elapsed());
        }
        times.sort();
        times[2]
    };
    let before = purge_time(typed.clone()).await;
    // What LIST names under the prefix (the keys a listing reads one by one): a sweep with an
    // age nothing here has reclaims nothing and counts them.
    let listed = |store: VaultStore| async move {
        store
            .reclaim(Duration::from_secs(86_400))
            .await
            .unwrap()
            .examined
    };
    assert_eq!(
        listed(quiet.clone()).await,
        n,
        "every taken state is still listed"
    );
    tokio::time::sleep(AGE).await;
    let report = quiet.reclaim(Duration::ZERO).await.unwrap();
    assert_eq!((report.reclaimed, report.raced), (n, 0), "{report:?}");
    let after = purge_time(typed.clone()).await;
    assert_eq!(
        listed(quiet.clone()).await,
        0,
        "reclaimed keys are still listed"
    );
    println!(
        "purge_expired_states over {n} taken states: {before:?} before reclaiming (median of 5), {after:?} after; reclaim took them all ({report:?})"
    );
    assert!(after < before, "{after:?} >= {before:?}");

    // Lazily: listings (the purge among them) reclaim up to 16 old tombstones each.
    for i in 0..40 {
        typed
            .save_state(
                &format!("lazy-{i}"),
                &AuthState::new("v"),
                Duration::from_secs(600),
            )
            .await
            .unwrap();
        assert!(
            typed
                .take_state(&format!("lazy-{i}"))
                .await
                .unwrap()
                .is_some()
        );
    }
    tokio::time::sleep(AGE).await;
    let lazy = TokenStore::from_arc(Arc::new(VaultStore::open(&base).await.unwrap()));
    let mut purges = 0;
    while listed(quiet.clone()).await > 0 {
        assert_eq!(lazy.purge_expired_states().await.unwrap(), 0);
        purges += 1;
        assert!(purges <= 3, "listings do not reclaim");
    }
    println!("40 old tombstones were reclaimed by {purges} purges (16 per listing at most)");
    assert_eq!(purges, 3);
}

/// A reclaimer that died after its marker: writers wait while the marker is fresh (a call
/// with a time limit fails `Unavailable`, retryable), and write over it once the lease ran
/// out, giving the key back the `cas_required` it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_reclamation_is_taken_over_after_the_lease() {
    let prefix = unique_prefix("token-store-reclaim-abandoned");
    let Some(config) = config(&prefix, AGE) else {
        return;
    };
    let e = env().unwrap();
    let store = VaultStore::open(&config).await.unwrap();
    let key = token_key("abandoned", 0);
    store
        .write(&key, b"v", &PutOptions::new(Precondition::Any))
        .await
        .unwrap();
    assert!(store.remove(&key, &Precondition::Any).await.unwrap());
    // Plant what a reclaimer leaves when it dies between steps 3 and 5: the key's
    // cas_required set and a marker over the tombstone (version 3: write, tombstone).
    let http = reqwest::Client::new();
    let path = format!(
        "{}/v1/secret/%s/{prefix}/token/abandoned/https%253A%252F%252Fr0.example::",
        e.addr
    );
    let send = |method: reqwest::Method, what: &str, body: Option<serde_json::Value>| {
        let request = http
            .request(method, path.replace("%s", what))
            .header("X-Vault-Token", &e.token);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
    };
    let r = send(
        reqwest::Method::POST,
        "metadata",
        Some(serde_json::json!({"cas_required": true})),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = send(
        reqwest::Method::POST,
        "data",
        Some(
            serde_json::json!({"options": {"cas": 2}, "data": {"tombstone": true, "reclaim": true,
            "restore_cas_required": true, "generation": "dead"}}),
        ),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let planted = Instant::now();

    // Under the usual time limit: the write waits, then fails retryably.
    let limited = token_store_vault::open(config.clone().with_timeout(Duration::from_secs(2)))
        .await
        .unwrap();
    match limited
        .raw()
        .write(&key, b"early", &PutOptions::new(Precondition::IfAbsent))
        .await
    {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("a write over a fresh marker gave {other:?}"),
    }
    assert!(store.read(&key).await.unwrap().is_none());

    // Without one: it waits out the lease, then writes over the marker.
    let version = store
        .write(&key, b"late", &PutOptions::new(Precondition::IfAbsent))
        .await
        .unwrap();
    let waited = planted.elapsed();
    assert!(
        waited >= RECLAIM_LEASE - Duration::from_secs(2),
        "{waited:?}"
    );
    let got = store.read(&key).await.unwrap().unwrap();
    assert_eq!(
        (got.value.to_vec(), got.version),
        (b"late".to_vec(), version)
    );
    let meta: serde_json::Value = send(reqwest::Method::GET, "metadata", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["data"]["cas_required"], false, "{meta}");
    println!(
        "an abandoned marker was written over {waited:?} after it was left (lease {RECLAIM_LEASE:?})"
    );
}

/// Under a policy without `update` and `delete` on the metadata (the least-privilege policy of
/// before), listings still list, leaving old tombstones in place; the explicit sweep says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_reclaim_policy_listings_still_list() {
    let Some(bao) = common::OwnBao::start().await else {
        return;
    };
    let prefix = "token-store-noreclaim";
    let policy = format!(
        r#"path "secret/data/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["list", "read"] }}
path "secret/destroy/{prefix}/*" {{ capabilities = ["update"] }}"#
    );
    for (path, body) in [
        ("sys/auth/approle", serde_json::json!({"type": "approle"})),
        (
            "sys/policies/acl/noreclaim",
            serde_json::json!({ "policy": policy }),
        ),
        (
            "auth/approle/role/nr",
            serde_json::json!({"token_policies": ["noreclaim"], "secret_id_ttl": "0"}),
        ),
        (
            "auth/approle/role/nr/role-id",
            serde_json::json!({"role_id": "nr-role"}),
        ),
        (
            "auth/approle/role/nr/custom-secret-id",
            serde_json::json!({"secret_id": "nr-secret"}),
        ),
    ] {
        let status = bao.post(path, body).await;
        assert!(status.is_success(), "{path}: {status}");
    }
    let config = |auth| {
        VaultConfig::new(&bao.addr(), auth)
            .unwrap()
            .with_prefix(prefix)
            .unwrap()
            .with_reclaim_after(AGE)
            .unwrap()
    };
    let limited = VaultStore::open(&config(Auth::approle("nr-role", "nr-secret")))
        .await
        .unwrap();
    let typed = TokenStore::from_arc(Arc::new(limited.clone()));
    for i in 0..5 {
        let state = format!("s{i}");
        typed
            .save_state(&state, &AuthState::new("v"), Duration::from_secs(600))
            .await
            .unwrap();
        assert!(typed.take_state(&state).await.unwrap().is_some());
    }
    tokio::time::sleep(AGE).await;
    // The listing (a purge) meets five old tombstones it may not reclaim: it lists anyway.
    assert_eq!(typed.purge_expired_states().await.unwrap(), 0);
    assert_eq!(typed.purge_expired_states().await.unwrap(), 0);
    match limited.reclaim_kind(KeyKind::State, Duration::ZERO).await {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("reclaiming without the policy gave {other:?}"),
    }
    let root = VaultStore::open(&config(Auth::token(bao.token.clone())))
        .await
        .unwrap();
    let left = root
        .reclaim_kind(KeyKind::State, Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(left.examined, 5, "{left:?}");
    // With the policy (here the root token's), they go.
    let swept = root
        .reclaim_kind(KeyKind::State, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((swept.examined, swept.reclaimed), (5, 5), "{swept:?}");
}
