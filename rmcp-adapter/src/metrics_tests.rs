//! The adapter counts each guarded refresh once, by outcome, and audits its writes as
//! refreshes and revocations. rmcp's sequence is driven by hand (acquire the guard, load,
//! then save, reject, or drop the guard), as `AuthorizationManager::refresh_token` does.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use oauth2::basic::BasicTokenType;
use oauth2::{AccessToken, RefreshToken};
use rmcp::transport::auth::{
    CredentialStore, OAuthTokenResponse, StoredCredentials, VendorExtraTokenFields,
};
use token_store_core::backend::unix_now;
use token_store_core::metrics::REFRESHES;
use token_store_core::{Precondition, TokenKey, TokenRecord, TokenStore};
use tracing_subscriber::prelude::*;

use crate::RmcpCredentialStore;

const USER: &str = "rmcp-metrics-user";
const RESOURCE: &str = "https://rmcp-metrics.example/mcp";

fn key() -> TokenKey {
    TokenKey::new(USER, RESOURCE, None, ["read"])
}

fn credentials(access: &str, refresh: &str, lifetime_secs: u64) -> StoredCredentials {
    let mut r = OAuthTokenResponse::new(
        AccessToken::new(access.into()),
        BasicTokenType::Bearer,
        VendorExtraTokenFields::default(),
    );
    r.set_refresh_token(Some(RefreshToken::new(refresh.into())));
    r.set_expires_in(Some(&Duration::from_secs(lifetime_secs)));
    StoredCredentials::new(
        "client-1".into(),
        Some(r),
        vec!["read".into()],
        Some(unix_now() as u64),
    )
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `body` on this thread with a local debugging recorder and an audit capture; returns
/// the refresh counts by outcome and the audit actions in order.
fn observed<F: Future<Output = ()>>(
    body: impl FnOnce() -> F,
) -> (BTreeMap<String, u64>, Vec<String>) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(token_store_core::audit::TARGET, tracing::Level::INFO),
            ),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || runtime.block_on(body()))
    });
    let mut counts = BTreeMap::new();
    for (k, _, _, value) in snapshotter.snapshot().into_vec() {
        if k.key().name() != REFRESHES {
            continue;
        }
        let labels: Vec<_> = k.key().labels().map(|l| (l.key(), l.value())).collect();
        assert_eq!(labels.len(), 2, "{labels:?}");
        assert!(labels.contains(&("backend", "memory")), "{labels:?}");
        let outcome = labels
            .iter()
            .find(|(k, _)| *k == "outcome")
            .map(|(_, v)| v.to_string())
            .unwrap();
        if let DebugValue::Counter(n) = value {
            *counts.entry(outcome).or_default() += n;
        }
    }
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    for part in [USER, RESOURCE, "rmcp-metrics", "at-", "rt-"] {
        assert!(!text.contains(part), "{part} in the audit events:\n{text}");
    }
    let actions = text
        .lines()
        .filter_map(|l| l.split("action=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    (counts, actions)
}

async fn expired(store: &TokenStore) {
    let record = TokenRecord::new("at-0")
        .with_refresh_token("rt-0")
        .expires_in(Duration::ZERO);
    store.put(&key(), &record, Precondition::Any).await.unwrap();
}

#[test]
fn guarded_refreshes_are_counted_by_outcome_and_audited() {
    let (counts, actions) = observed(|| async {
        let store = TokenStore::in_memory();
        let rmcp = RmcpCredentialStore::new(store.clone(), key())
            .unwrap()
            .without_cache();

        // refreshed: guard, load, save.
        expired(&store).await;
        let guard = rmcp.acquire_refresh_guard().await.unwrap();
        rmcp.load().await.unwrap().unwrap();
        rmcp.save(credentials("at-1", "rt-1", 3600)).await.unwrap();
        drop(guard);

        // transient: the token request failed, rmcp drops the guard without a save.
        expired(&store).await;
        let guard = rmcp.acquire_refresh_guard().await.unwrap();
        rmcp.load().await.unwrap().unwrap();
        drop(guard);

        // adopted: a writer that bypassed the guard wins the compare-and-swap.
        let guard = rmcp.acquire_refresh_guard().await.unwrap();
        rmcp.load().await.unwrap().unwrap();
        expired(&store).await;
        rmcp.save(credentials("at-2", "rt-2", 3600)).await.unwrap();
        drop(guard);

        // rejected: invalid_grant for the stored refresh token; the record goes.
        let guard = rmcp.acquire_refresh_guard().await.unwrap();
        let loaded = rmcp.load().await.unwrap().unwrap();
        rmcp.on_refresh_token_rejected(&loaded).await.unwrap();
        drop(guard);
        assert!(store.get(&key()).await.unwrap().is_none());

        // login_required: nothing stored to refresh with.
        let guard = rmcp.acquire_refresh_guard().await.unwrap();
        assert!(rmcp.load().await.unwrap().is_none());
        drop(guard);

        // An unguarded save (a login) is no refresh: not counted, audited as stored.
        rmcp.save(credentials("at-3", "rt-3", 3600)).await.unwrap();
    });
    let expected: BTreeMap<String, u64> = [
        ("refreshed", 1),
        ("transient", 1),
        ("adopted", 1),
        ("rejected", 1),
        ("login_required", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts, expected);
    assert_eq!(
        actions,
        [
            "stored",        // expired()
            "refreshed",     // the guarded save
            "stored",        // expired()
            "stored",        // the bypassing writer
            "conflict_lost", // the guarded save that lost to it
            "revoked",       // the rejected refresh token's record
            "stored",        // the login
        ]
    );
}

#[test]
fn a_coalesced_refresh_counts_as_adopted_and_writes_nothing() {
    let (counts, actions) = observed(|| async {
        let store = TokenStore::in_memory();
        let ours = RmcpCredentialStore::new(store.clone(), key())
            .unwrap()
            .without_cache();
        let theirs = RmcpCredentialStore::new(store.clone(), key())
            .unwrap()
            .without_cache();
        expired(&store).await;
        ours.load().await.unwrap().unwrap(); // what this process acts on
        // Another process refreshes while this one waits for the guard.
        let guard = theirs.acquire_refresh_guard().await.unwrap();
        theirs.load().await.unwrap().unwrap();
        theirs
            .save(credentials("at-1", "rt-1", 3600))
            .await
            .unwrap();
        drop(guard);
        let guard = ours.acquire_refresh_guard().await.unwrap();
        ours.load().await.unwrap().unwrap();
        let answer = ours.coalesce("rt-1");
        assert!(answer.is_some(), "the redundant refresh was sent");
        ours.save(credentials("at-1", "rt-1", 3600)).await.unwrap();
        drop(guard);
    });
    assert_eq!(counts.get("refreshed"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("adopted"), Some(&1), "{counts:?}");
    assert_eq!(counts.values().sum::<u64>(), 2, "{counts:?}");
    assert_eq!(actions, ["stored", "refreshed"]);
}
