//! Audit events (target `token_store::audit`): one per change of stored credentials, the
//! same number however many layers are stacked, carrying a key fingerprint and never a key
//! part or a token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use token_store_core::layers::{Encrypted, Timeout, Traced};
use token_store_core::{
    ClientKey, ClientRegistration, KeyKind, KeySource, Lease, LeaseOptions, MemoryStore,
    Precondition, PutOptions, RawStore, RefreshError, StorageKey, TokenKey, TokenManager,
    TokenRecord, TokenStore, Version, audit,
};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

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

/// Runs `body` with every event of every target at TRACE captured (so the audit target is
/// filtered by nothing); returns the audit lines.
fn audited<F: Future<Output = ()>>(body: impl FnOnce() -> F) -> Vec<String> {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        )
        .with(Targets::new().with_default(tracing::Level::TRACE));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || runtime.block_on(body()));
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter(|l| l.contains(audit::TARGET))
        .map(str::to_owned)
        .collect()
}

const USER: &str = "audit-user-bob";
const RESOURCE: &str = "https://audit-resource.example/mcp";
const ISSUER: &str = "https://audit-issuer.example";

fn key() -> TokenKey {
    TokenKey::new(USER, RESOURCE, Some(ISSUER), ["audit-scope"])
}

fn expiring(tag: &str) -> TokenRecord {
    TokenRecord::new(format!("at-SeCrEt-{tag}"))
        .with_refresh_token(format!("rt-SeCrEt-{tag}"))
        .expires_in(Duration::ZERO)
}

/// Every kind of change once: stored, refreshed, conflict_lost, revoked, deleted (token
/// and client), lease_taken_over.
async fn every_change(store: TokenStore) {
    let key = key();
    let manager = TokenManager::new(store.clone()).unwrap();
    let writes = manager.store().clone();
    writes
        .put(&key, &expiring("0"), Precondition::Any)
        .await
        .unwrap(); // stored
    manager
        .valid_token(&key, |_| async {
            Ok(TokenRecord::new("at-SeCrEt-1")
                .with_refresh_token("rt-SeCrEt-1")
                .expires_in(Duration::from_secs(3600)))
        })
        .await
        .unwrap(); // refreshed
    let stale = Precondition::IfVersion(Version::new("stale"));
    assert!(
        writes
            .put(&key, &expiring("x"), stale)
            .await
            .unwrap_err()
            .is_conflict()
    ); // conflict_lost
    writes
        .put(&key, &expiring("2"), Precondition::Any)
        .await
        .unwrap(); // stored
    manager
        .valid_token(&key, |_| async {
            Err(RefreshError::Rejected("invalid_grant".into()))
        })
        .await
        .unwrap_err(); // revoked
    assert!(!writes.delete(&key, Precondition::Any).await.unwrap()); // nothing: no record
    let client = ClientKey::new(ISSUER);
    writes
        .put_client(
            &client,
            &ClientRegistration::new("client-1"),
            Precondition::Any,
        )
        .await
        .unwrap(); // stored
    assert!(
        writes
            .delete_client(&client, Precondition::Any)
            .await
            .unwrap()
    ); // deleted
    // A dead holder's unreadable lease record.
    let lease_key = StorageKey::single(KeyKind::Lease, "refresh:audit").unwrap();
    writes
        .raw()
        .write(&lease_key, b"garbage", &PutOptions::default())
        .await
        .unwrap(); // raw: not audited
    let options = LeaseOptions::new(Duration::from_secs(5), Duration::from_secs(1));
    Lease::acquire(&writes, "refresh:audit", &options)
        .await
        .unwrap()
        .release()
        .await
        .unwrap(); // lease_taken_over (taking and releasing are not audited)
}

fn actions(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let at = l.find("action=").expect("an action field") + "action=".len();
            l[at..]
                .split_whitespace()
                .next()
                .unwrap()
                .trim_matches('"')
                .to_owned()
        })
        .collect()
}

const EXPECTED: [&str; 8] = [
    "stored",
    "refreshed",
    "conflict_lost",
    "stored",
    "revoked",
    "stored",
    "deleted",
    "lease_taken_over",
];

fn assert_clean(lines: &[String]) {
    for line in lines {
        for part in [
            USER,
            RESOURCE,
            ISSUER,
            "audit-scope",
            "audit-user",
            "audit-resource",
            "audit-issuer",
            "refresh:audit",
            "SeCrEt",
            "client-1",
        ] {
            assert!(!line.contains(part), "{part} in the audit line {line}");
        }
        assert!(line.contains("token store state change"), "{line}");
        assert!(line.contains("key_fp="), "{line}");
        assert!(line.contains("backend=\"memory\""), "{line}");
    }
}

#[test]
fn every_change_is_audited_once_on_a_bare_store() {
    let lines = audited(|| every_change(TokenStore::in_memory()));
    assert_eq!(actions(&lines), EXPECTED, "{lines:#?}");
    assert_clean(&lines);
    // The fingerprint is the documented one, and the same for every event of the key.
    let fp = audit::fingerprint(key().as_storage_key());
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(&format!("key_fp={fp}")))
            .count(),
        5,
        "{lines:#?}"
    );
    // A refresh carries the version written; a revocation the version removed.
    assert!(lines[1].contains("kind=\"token\"") && lines[1].contains("version="));
    assert!(lines[6].contains("kind=\"client\""), "{}", lines[6]);
    assert!(lines[7].contains("kind=\"lease\""), "{}", lines[7]);
}

#[test]
fn stacked_layers_and_a_read_cache_audit_each_change_once() {
    let lines = audited(|| async {
        let raw = Timeout::new(
            Traced::new(Traced::new(MemoryStore::new())),
            Duration::from_secs(5),
        );
        let encrypted = Encrypted::open(raw, KeySource::raw([7; 32])).await.unwrap();
        let store: Arc<dyn RawStore> = Arc::new(Traced::new(encrypted));
        #[cfg(feature = "metrics")]
        let store = token_store_core::layers::Metrics::wrap(TokenStore::from_arc(store))
            .raw()
            .clone();
        every_change(TokenStore::from_arc(store)).await
    });
    assert_eq!(actions(&lines), EXPECTED, "{lines:#?}");
    assert_clean(&lines);
}
