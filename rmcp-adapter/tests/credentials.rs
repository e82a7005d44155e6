//! The adapters one call at a time: lossless round trips through a reopened store, the
//! client secret, rejection handling, the refresh guard, and rmcp's own view of expiry after
//! a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use oauth2::basic::BasicTokenType;
use oauth2::{AccessToken, CsrfToken, PkceCodeVerifier, RefreshToken, Scope, TokenResponse};
use rmcp::transport::auth::{
    AuthError, AuthorizationManager, AuthorizationMetadata, CredentialStore, OAuthClientConfig,
    OAuthTokenResponse, StateStore, StoredAuthorizationState, StoredCredentials,
    VendorExtraTokenFields,
};
use serde_json::{Value, json};
use token_store_core::backend::unix_now;
use token_store_core::{
    AuthState, ClientRegistration, KeyKind, LeaseOptions, ListFilter, Precondition, TokenKey,
    TokenManager, TokenRecord, TokenStore,
};
use token_store_rmcp::{RmcpCredentialStore, RmcpStateStore};

fn key() -> TokenKey {
    TokenKey::for_server("https://mcp.example.com/mcp")
}

fn response(access: &str, refresh: Option<&str>, expires_in: Option<u64>) -> OAuthTokenResponse {
    let mut r = OAuthTokenResponse::new(
        AccessToken::new(access.into()),
        BasicTokenType::Bearer,
        VendorExtraTokenFields::default(),
    );
    r.set_refresh_token(refresh.map(|t| RefreshToken::new(t.into())));
    if let Some(secs) = expires_in {
        r.set_expires_in(Some(&Duration::from_secs(secs)));
    }
    r
}

/// Every field rmcp stores, with values that differ from their defaults.
fn full_credentials(received_at: u64) -> StoredCredentials {
    let mut r = response("AT-secret-value", Some("RT-secret-value"), Some(3600));
    r.set_scopes(Some(vec![
        Scope::new("read".into()),
        Scope::new("write".into()),
    ]));
    let mut extra = VendorExtraTokenFields::default();
    extra.0.insert("id_token".into(), json!("ID-secret-value"));
    extra
        .0
        .insert("refresh_token_expires_in".into(), json!(86_400));
    extra
        .0
        .insert("vendor".into(), json!({"nested": [1, 2, {"x": "y"}]}));
    let mut with_extra =
        OAuthTokenResponse::new(r.access_token().clone(), r.token_type().clone(), extra);
    with_extra.set_refresh_token(r.refresh_token().cloned());
    with_extra.set_expires_in(r.expires_in().as_ref());
    with_extra.set_scopes(r.scopes().cloned());
    StoredCredentials::new(
        "client-123".into(),
        Some(with_extra),
        vec!["read".into(), "write".into(), "offline_access".into()],
        Some(received_at),
    )
    .with_issuer(Some("https://auth.example.com/".into()))
}

fn json_of(c: &StoredCredentials) -> Value {
    serde_json::to_value(c).unwrap()
}

async fn sqlite(dir: &std::path::Path) -> TokenStore {
    common::open_store(&format!("sqlite://{}", dir.join("t.db").display())).await
}

#[tokio::test]
async fn every_field_survives_a_restart_and_secrets_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let received_at = unix_now() as u64 - 100;
    let original = full_credentials(received_at);
    {
        let store = sqlite(dir.path()).await;
        RmcpCredentialStore::new(store, key())
            .unwrap()
            .save(original.clone())
            .await
            .unwrap();
    }
    // A restart: a new process opens the same database.
    let store = sqlite(dir.path()).await;
    let loaded = RmcpCredentialStore::new(store.clone(), key())
        .unwrap()
        .load()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(json_of(&loaded), json_of(&original));
    assert_eq!(loaded.token_received_at, Some(received_at));
    assert_eq!(
        loaded.token_response.as_ref().unwrap().expires_in(),
        Some(Duration::from_secs(3600))
    );

    // Other tools see a plain token record.
    let record = store.get(&key()).await.unwrap().unwrap().value;
    assert_eq!(record.access_token.expose(), "AT-secret-value");
    assert_eq!(
        record.refresh_token.as_ref().unwrap().expose(),
        "RT-secret-value"
    );
    assert_eq!(record.expires_at, Some(received_at as f64 + 3600.0));
    assert_eq!(record.obtained_at, received_at as f64);
    assert_eq!(
        record.refresh_expires_at,
        Some(received_at as f64 + 86_400.0)
    );
    assert_eq!(record.scopes, ["read", "write", "offline_access"]);
    assert_eq!(
        record.authorization_server.as_deref(),
        Some("https://auth.example.com/")
    );
    assert_eq!(record.client_id.as_deref(), Some("client-123"));
    assert_eq!(
        record.id_token.as_ref().unwrap().expose(),
        "ID-secret-value"
    );
    assert_eq!(
        record.resource.as_deref(),
        Some("https://mcp.example.com/mcp")
    );
    assert_eq!(record.token_type, "Bearer");
    assert!(!record.is_expired(Duration::from_secs(60)));

    // Each secret is stored exactly once.
    let raw = store
        .raw()
        .read(&key().storage_key())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(raw.value.to_vec()).unwrap();
    for secret in ["AT-secret-value", "RT-secret-value", "ID-secret-value"] {
        assert_eq!(text.matches(secret).count(), 1, "{secret} in {text}");
    }
}

#[tokio::test]
async fn absent_optional_fields_round_trip_too() {
    let store = TokenStore::in_memory();
    let adapter = RmcpCredentialStore::new(store.clone(), key()).unwrap();
    let cases = [
        // Legacy credentials without token_received_at: rmcp does not check their expiry.
        StoredCredentials::new(
            "c".into(),
            Some(response("at", Some("rt"), Some(60))),
            vec![],
            None,
        ),
        // No expiry, no refresh token, no issuer.
        StoredCredentials::new(
            "c".into(),
            Some(response("at", None, None)),
            vec![],
            Some(1_700_000_000),
        ),
        // Expiry, already past.
        StoredCredentials::new(
            "c".into(),
            Some(response("at", Some("rt"), Some(1))),
            vec!["a".into()],
            Some(1_000),
        ),
    ];
    for case in cases {
        adapter.save(case.clone()).await.unwrap();
        let loaded = RmcpCredentialStore::new(store.clone(), key())
            .unwrap()
            .load()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(json_of(&loaded), json_of(&case));
    }
}

#[tokio::test]
async fn tokenless_credentials_and_clear() {
    let store = TokenStore::in_memory();
    let adapter = RmcpCredentialStore::new(store.clone(), key()).unwrap();
    assert!(adapter.load().await.unwrap().is_none());
    // What rmcp saves when a portable (CIMD) client id outlives an issuer change.
    let tokenless =
        StoredCredentials::new("https://app.example/client.json".into(), None, vec![], None)
            .with_issuer(Some("https://new-as.example".into()));
    adapter
        .save(full_credentials(unix_now() as u64 - 100))
        .await
        .unwrap();
    adapter.save(tokenless.clone()).await.unwrap();
    assert!(
        store.get(&key()).await.unwrap().is_none(),
        "old tokens must go"
    );
    let loaded = RmcpCredentialStore::new(store.clone(), key())
        .unwrap()
        .load()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(json_of(&loaded), json_of(&tokenless));
    // Tokens again, then clear: nothing left.
    adapter
        .save(full_credentials(unix_now() as u64 - 100))
        .await
        .unwrap();
    assert!(
        adapter
            .load()
            .await
            .unwrap()
            .unwrap()
            .token_response
            .is_some()
    );
    adapter.clear().await.unwrap();
    assert!(adapter.load().await.unwrap().is_none());
}

#[tokio::test]
async fn records_of_other_tools_load_with_their_expiry_and_the_registered_client() {
    let store = TokenStore::in_memory();
    let adapter = RmcpCredentialStore::new(store.clone(), key()).unwrap();
    adapter
        .save_client_secret("registered-client", "s3cret")
        .await
        .unwrap();
    // E.g. the tokenstore CLI, mcp-agent, or a TokenManager refresh: no rmcp fields.
    let mut record = TokenRecord::new("foreign-at")
        .with_refresh_token("foreign-rt")
        .expires_in(Duration::from_secs(100));
    record.obtained_at = unix_now() - 50.0;
    store.put(&key(), &record, Precondition::Any).await.unwrap();
    let loaded = adapter.load().await.unwrap().unwrap();
    assert_eq!(loaded.client_id, "registered-client");
    let response = loaded.token_response.unwrap();
    assert_eq!(response.access_token().secret(), "foreign-at");
    // rmcp's remaining time = expires_in - (now - token_received_at) = about 100 s.
    let remaining = response.expires_in().unwrap().as_secs() as f64
        - (unix_now() - loaded.token_received_at.unwrap() as f64);
    assert!((98.0..=101.0).contains(&remaining), "{remaining}");

    // An rmcp record refreshed by another tool that kept the old metadata: the stale rmcp
    // fields are ignored and the new expiry wins.
    adapter
        .save(full_credentials(unix_now() as u64 - 100))
        .await
        .unwrap();
    let mut refreshed = store.get(&key()).await.unwrap().unwrap().value;
    refreshed.access_token = "refreshed-at".into();
    refreshed.obtained_at = unix_now();
    refreshed.expires_at = Some(unix_now() + 3600.0);
    store
        .put(&key(), &refreshed, Precondition::Any)
        .await
        .unwrap();
    let loaded = adapter.load().await.unwrap().unwrap();
    let response = loaded.token_response.unwrap();
    assert_eq!(response.access_token().secret(), "refreshed-at");
    assert!(response.expires_in().unwrap().as_secs() >= 3599);
}

#[tokio::test]
async fn the_client_secret_is_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let adapter = RmcpCredentialStore::new(sqlite(dir.path()).await, key()).unwrap();
        let config = OAuthClientConfig::new("dcr-client", "http://127.0.0.1:8765/callback")
            .with_client_secret("dcr-secret")
            .with_scopes(vec!["read".into(), "write".into()]);
        adapter.save_client_config(&config).await.unwrap();
        adapter
            .save(full_credentials(unix_now() as u64 - 100))
            .await
            .unwrap();
        assert!(!format!("{adapter:?}").contains("secret-value"));
    }
    let adapter = RmcpCredentialStore::new(sqlite(dir.path()).await, key()).unwrap();
    let config = adapter
        .client_config("http://127.0.0.1:1/cb")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(config.client_id, "dcr-client");
    assert_eq!(config.client_secret.as_deref(), Some("dcr-secret"));
    assert_eq!(config.scopes, ["read", "write"]);
    assert_eq!(config.redirect_uri, "http://127.0.0.1:1/cb");
    let registration: ClientRegistration = adapter.client_registration().await.unwrap().unwrap();
    assert_eq!(
        registration.redirect_uris,
        ["http://127.0.0.1:8765/callback"]
    );
    // A new secret for the same client replaces the old one; the credentials are untouched.
    adapter
        .save_client_secret("dcr-client", "rotated")
        .await
        .unwrap();
    let config = adapter.client_config("x").await.unwrap().unwrap();
    assert_eq!(config.client_secret.as_deref(), Some("rotated"));
    assert!(adapter.load().await.unwrap().is_some());
    assert!(adapter.forget_client_registration().await.unwrap());
    assert!(adapter.client_config("x").await.unwrap().is_none());
}

#[tokio::test]
async fn a_rejected_refresh_token_deletes_only_its_own_version() {
    let store = TokenStore::in_memory();
    let adapter = RmcpCredentialStore::new(store.clone(), key()).unwrap();
    let loser = StoredCredentials::new(
        "c".into(),
        Some(response("at-0", Some("rt-0"), Some(3600))),
        vec![],
        Some(1_000),
    );
    let winner = StoredCredentials::new(
        "c".into(),
        Some(response("at-1", Some("rt-1"), Some(3600))),
        vec![],
        Some(2_000),
    );

    // The winner stored newer tokens before the loser's rejection arrived: they stay.
    adapter.save(winner.clone()).await.unwrap();
    adapter.on_refresh_token_rejected(&loser).await.unwrap();
    let kept = adapter.load().await.unwrap().unwrap();
    assert_eq!(kept.token_response.unwrap().access_token().secret(), "at-1");

    // Credentials without a refresh token change nothing.
    let no_rt =
        StoredCredentials::new("c".into(), Some(response("at-1", None, None)), vec![], None);
    adapter.on_refresh_token_rejected(&no_rt).await.unwrap();
    assert!(adapter.load().await.unwrap().is_some());

    // The stored refresh token itself was rejected: the record goes.
    adapter.on_refresh_token_rejected(&winner).await.unwrap();
    assert!(adapter.load().await.unwrap().is_none());
    // Nothing stored: nothing to do, no error.
    adapter.on_refresh_token_rejected(&winner).await.unwrap();
}

fn short_lease(ttl_ms: u64, wait_ms: u64) -> LeaseOptions {
    let mut o = LeaseOptions::default();
    o.ttl = Duration::from_millis(ttl_ms);
    o.wait = Duration::from_millis(wait_ms);
    o.poll = Duration::from_millis(5);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_guard_excludes_a_second_guard_until_released_or_expired() {
    let store = TokenStore::in_memory();
    let a = RmcpCredentialStore::new(store.clone(), key())
        .unwrap()
        .with_lease_options(short_lease(10_000, 200));
    let b = RmcpCredentialStore::new(store.clone(), key())
        .unwrap()
        .with_lease_options(short_lease(10_000, 200));

    let guard = a.acquire_refresh_guard().await.unwrap().unwrap();
    let started = Instant::now();
    let err = b.acquire_refresh_guard().await.err().unwrap();
    assert!(matches!(err, AuthError::CredentialStoreError(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(190));

    // The same lease TokenManager takes: a TokenManager user is excluded too.
    let lease = token_store_core::Lease::acquire(
        &store,
        &TokenManager::lease_name(&key()),
        &short_lease(1000, 50),
    )
    .await;
    assert!(lease.is_err());

    drop(guard); // released in the background
    let started = Instant::now();
    let again = b.acquire_refresh_guard().await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );

    // A holder that dies: its lease expires after the TTL.
    let dying = RmcpCredentialStore::new(store.clone(), key())
        .unwrap()
        .with_lease_options(short_lease(400, 2000));
    drop(again);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let held = dying.acquire_refresh_guard().await.unwrap().unwrap();
    std::mem::forget(held);
    let started = Instant::now();
    let taken = b.acquire_refresh_guard().await;
    let waited = started.elapsed();
    assert!(
        taken.is_err(),
        "a 200 ms wait must not outlast a 400 ms lease"
    );
    let c = RmcpCredentialStore::new(store, key())
        .unwrap()
        .with_lease_options(short_lease(400, 2000));
    let _taken = c.acquire_refresh_guard().await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_save_under_the_guard_never_overwrites_a_writer_that_bypassed_it() {
    let store = TokenStore::in_memory();
    let adapter = RmcpCredentialStore::new(store.clone(), key()).unwrap();
    let old = StoredCredentials::new(
        "c".into(),
        Some(response("at-0", Some("rt-0"), Some(1))),
        vec![],
        Some(1_000),
    );
    adapter.save(old).await.unwrap();

    // rmcp's refresh: guard, load, (token request), save.
    let guard = adapter.acquire_refresh_guard().await.unwrap();
    adapter.load().await.unwrap().unwrap();
    // Meanwhile a login in another process writes without the guard.
    let login = StoredCredentials::new(
        "c".into(),
        Some(response("at-login", Some("rt-login"), Some(3600))),
        vec![],
        Some(unix_now() as u64),
    );
    RmcpCredentialStore::new(store.clone(), key())
        .unwrap()
        .save(login)
        .await
        .unwrap();
    let refreshed = StoredCredentials::new(
        "c".into(),
        Some(response("at-refresh", Some("rt-refresh"), Some(3600))),
        vec![],
        Some(unix_now() as u64),
    );
    adapter.save(refreshed.clone()).await.unwrap();
    drop(guard);
    let now = adapter.load().await.unwrap().unwrap();
    assert_eq!(
        now.token_response.unwrap().access_token().secret(),
        "at-login"
    );

    // Outside the guard a save (a login, a code exchange) is unconditional.
    adapter.save(refreshed).await.unwrap();
    let now = adapter.load().await.unwrap().unwrap();
    assert_eq!(
        now.token_response.unwrap().access_token().secret(),
        "at-refresh"
    );

    // Under the guard with nobody interfering, the save lands (and a second one too).
    let guard = adapter.acquire_refresh_guard().await.unwrap();
    adapter.load().await.unwrap();
    for n in 0..2 {
        let next = StoredCredentials::new(
            "c".into(),
            Some(response(&format!("at-{n}"), Some("rt"), Some(3600))),
            vec![],
            Some(1),
        );
        adapter.save(next).await.unwrap();
    }
    drop(guard);
    let now = adapter.load().await.unwrap().unwrap();
    assert_eq!(now.token_response.unwrap().access_token().secret(), "at-1");
}

/// A manager as an application builds it, talking to the local token endpoint.
async fn manager(server: &common::OAuthServer, store: RmcpCredentialStore) -> AuthorizationManager {
    let mut manager = AuthorizationManager::new(format!("{}/mcp", server.base_url()))
        .await
        .unwrap();
    manager.with_client(reqwest::Client::new()).unwrap();
    let mut metadata = AuthorizationMetadata::default();
    metadata.authorization_endpoint = format!("{}/authorize", server.base_url());
    metadata.token_endpoint = server.token_url();
    metadata.issuer = Some(server.base_url());
    manager.set_metadata(metadata);
    manager.set_credential_store(store);
    manager
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_rmcp_sees_the_expiry_and_refreshes_instead_of_sending_a_stale_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::OAuthServer::start(
        Duration::ZERO,
        Some(("dcr-client".into(), "dcr-secret".into())),
    )
    .await;
    let (at, rt) = server.login();
    {
        // Before the restart: rmcp saved a token that lived 1 s, received 10 s ago, and the
        // secret of the (confidential, dynamically registered) client.
        let adapter = RmcpCredentialStore::new(sqlite(dir.path()).await, key()).unwrap();
        let creds = StoredCredentials::new(
            "dcr-client".into(),
            Some(response(&at, Some(&rt), Some(1))),
            vec!["read".into()],
            Some(unix_now() as u64 - 10),
        )
        .with_issuer(Some(server.base_url()));
        adapter.save(creds).await.unwrap();
        adapter
            .save_client_secret("dcr-client", "dcr-secret")
            .await
            .unwrap();
    }

    // After: a new process, a new adapter over the reopened store.
    let adapter = RmcpCredentialStore::new(sqlite(dir.path()).await, key()).unwrap();
    let loaded = adapter.load().await.unwrap().unwrap();
    let response = loaded.token_response.as_ref().unwrap();
    let elapsed = unix_now() as u64 - loaded.token_received_at.unwrap();
    assert!(
        response.expires_in().unwrap().as_secs() <= elapsed,
        "rmcp must see the token as expired"
    );

    let mut manager = manager(&server, adapter.clone()).await;
    assert!(
        manager.initialize_from_store().await.unwrap(),
        "logged in from the store"
    );
    let config = adapter
        .client_config("http://127.0.0.1:1/callback")
        .await
        .unwrap()
        .unwrap();
    manager.configure_client(config).unwrap();
    let token = manager.get_access_token().await.unwrap();
    assert_ne!(token, at, "a stale token was sent");
    let counters = server.counters();
    assert_eq!(counters.refreshed, 1, "{counters:?}");
    assert_eq!(
        counters.invalid_client, 0,
        "the client secret was not restored"
    );
    // The refreshed credentials were written back, readable by everyone.
    let record = adapter.store().get(&key()).await.unwrap().unwrap().value;
    assert_eq!(record.access_token.expose(), token);
    assert!(!record.is_expired(Duration::from_secs(60)));
    // And the next call uses them without refreshing.
    assert_eq!(manager.get_access_token().await.unwrap(), token);
    assert_eq!(server.counters().refreshed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rmcp_managers_refreshing_at_once_never_reuse_a_refresh_token() {
    // Two managers (two replicas) load the same credentials; A refreshes first; B then
    // refreshes with the now rotated token through rmcp's own flow. B's guard makes B load
    // A's tokens, so B refreshes with the valid token: no reuse, nothing deleted.
    let server = common::OAuthServer::start(Duration::from_millis(20), None).await;
    let store = TokenStore::in_memory();
    let (at, rt) = server.login();
    let creds = StoredCredentials::new(
        "pub".into(),
        Some(response(&at, Some(&rt), Some(1))),
        vec![],
        Some(1_000),
    );
    RmcpCredentialStore::new(store.clone(), key())
        .unwrap()
        .save(creds)
        .await
        .unwrap();
    let mut a = manager(
        &server,
        RmcpCredentialStore::new(store.clone(), key()).unwrap(),
    )
    .await;
    let mut b = manager(
        &server,
        RmcpCredentialStore::new(store.clone(), key()).unwrap(),
    )
    .await;
    a.configure_client(OAuthClientConfig::new("pub", "http://127.0.0.1/cb"))
        .unwrap();
    b.configure_client(OAuthClientConfig::new("pub", "http://127.0.0.1/cb"))
        .unwrap();
    let (ta, tb) = tokio::join!(a.get_access_token(), b.get_access_token());
    let (ta, tb) = (ta.unwrap(), tb.unwrap());
    let counters = server.counters();
    assert_eq!(counters.invalid_grant, 0, "{counters:?}");
    assert!(!server.revoked(&rt));
    // rmcp 3.11 re-refreshes after waiting for the guard: one or two refreshes, both valid.
    assert!((1..=2).contains(&counters.refreshed), "{counters:?}");
    let stored = RmcpCredentialStore::new(store, key())
        .unwrap()
        .load()
        .await
        .unwrap()
        .unwrap();
    let stored_at = stored
        .token_response
        .unwrap()
        .access_token()
        .secret()
        .clone();
    assert!(stored_at == ta || stored_at == tb);
}

#[tokio::test]
async fn states_are_one_time_expiring_shared_and_compatible_with_the_core() {
    let store = TokenStore::in_memory();
    let states = RmcpStateStore::new(store.clone());
    let verifier =
        PkceCodeVerifier::new("verifier-secret-0123456789-abcdefghijklmnopqrstuvwxyz".into());
    let csrf = CsrfToken::new("csrf-secret-value".into());
    let state = StoredAuthorizationState::new_with_expected_issuer(
        &verifier,
        &csrf,
        Some("https://as.example".into()),
        true,
    )
    .with_requested_scopes(vec!["read".into(), "write".into()]);
    states.save(csrf.secret(), state.clone()).await.unwrap();

    // Another replica loads it, twice: loading does not consume (issuer validation happens
    // between load and delete, and a forged callback must not burn the state).
    let other = RmcpStateStore::new(store.clone());
    for _ in 0..2 {
        let loaded = other.load(csrf.secret()).await.unwrap().unwrap();
        assert_eq!(
            serde_json::to_value(&loaded).unwrap(),
            serde_json::to_value(&state).unwrap()
        );
    }
    assert!(other.load("another-csrf").await.unwrap().is_none());

    // The CSRF value is stored only as a digest, never in clear.
    let raw_keys = store
        .raw()
        .scan(KeyKind::State, &ListFilter::all())
        .await
        .unwrap();
    assert_eq!(raw_keys.len(), 1);
    assert!(!format!("{raw_keys:?}").contains("csrf-secret-value"));

    // Consuming is one-time across replicas: the second delete fails.
    states.delete(csrf.secret()).await.unwrap();
    assert!(other.delete(csrf.secret()).await.is_err());
    assert!(other.load(csrf.secret()).await.unwrap().is_none());

    // Core interop both ways (the adapter's non-destructive read mirrors the core layout).
    let mut auth = AuthState::new("core-verifier");
    auth.expected_issuer = Some("https://as.example".into());
    store
        .save_state("core-csrf", &auth, Duration::from_secs(60))
        .await
        .unwrap();
    let loaded = states.load("core-csrf").await.unwrap().unwrap();
    assert_eq!(loaded.pkce_verifier, "core-verifier");
    assert_eq!(loaded.csrf_token, "core-csrf");
    states.save("rmcp-csrf", state.clone()).await.unwrap();
    let taken = store.take_state("rmcp-csrf").await.unwrap().unwrap();
    assert_eq!(taken.pkce_verifier.expose(), state.pkce_verifier);
    assert_eq!(taken.requested_scopes, ["read", "write"]);

    // Expired states are not handed out, and are swept.
    let short = RmcpStateStore::new(store.clone()).with_ttl(Duration::from_millis(300));
    short.save("old", state.clone()).await.unwrap();
    assert!(short.load("old").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(short.load("old").await.unwrap().is_none());
    assert!(short.delete("old").await.is_err());
    short.save("fresh", state).await.unwrap();
    short.purge_expired().await.unwrap();
    assert!(short.load("fresh").await.unwrap().is_some());
}

async fn coalescing_manager(
    server: &common::OAuthServer,
    store: &TokenStore,
) -> (AuthorizationManager, RmcpCredentialStore) {
    let adapter = RmcpCredentialStore::new(store.clone(), key()).unwrap();
    let http =
        adapter.coalescing_http_client(rmcp::transport::auth::default_oauth_http_client().unwrap());
    let mut m = AuthorizationManager::new_with_oauth_http_client(
        format!("{}/mcp", server.base_url()),
        http,
    )
    .await
    .unwrap();
    let mut metadata = AuthorizationMetadata::default();
    metadata.authorization_endpoint = format!("{}/authorize", server.base_url());
    metadata.token_endpoint = server.token_url();
    metadata.issuer = Some(server.base_url());
    m.set_metadata(metadata);
    m.set_credential_store(adapter.clone());
    m.configure_client(OAuthClientConfig::new("pub", "http://127.0.0.1/cb"))
        .unwrap();
    (m, adapter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coalescing_client_answers_only_redundant_refreshes() {
    let server = common::OAuthServer::start(Duration::from_millis(50), None).await;
    let store = TokenStore::in_memory();
    let (at, rt) = server.login();
    let expired = StoredCredentials::new(
        "pub".into(),
        Some(response(&at, Some(&rt), Some(1))),
        vec![],
        Some(1_000),
    );
    RmcpCredentialStore::new(store.clone(), key())
        .unwrap()
        .save(expired)
        .await
        .unwrap();
    let (a, _) = coalescing_manager(&server, &store).await;
    let (b, b_adapter) = coalescing_manager(&server, &store).await;

    // Both find the token expired at once: one refresh, the waiter adopts its result.
    let (ta, tb) = tokio::join!(a.get_access_token(), b.get_access_token());
    let (ta, tb) = (ta.unwrap(), tb.unwrap());
    assert_eq!(server.counters().refreshed, 1, "{:?}", server.counters());
    assert_eq!(ta, tb);
    assert!(!server.revoked(&rt) && server.counters().invalid_grant == 0);

    // A refresh asked for with nothing changed since this process last loaded (a forced
    // refresh, or after a 401 from the MCP server) goes to the authorization server.
    b.refresh_token().await.unwrap();
    assert_eq!(server.counters().refreshed, 2);
    let tb2 = b.get_access_token().await.unwrap();
    assert_ne!(tb2, tb);

    // Changed by another process but about to expire itself: refreshed for real.
    b_adapter.load().await.unwrap();
    let stored = store.get(&key()).await.unwrap().unwrap();
    let mut record = stored.value;
    record.expires_at = Some(unix_now() + 20.0);
    record.obtained_at += 1.0; // another writer
    store.put(&key(), &record, Precondition::Any).await.unwrap();
    b.refresh_token().await.unwrap();
    assert_eq!(server.counters().refreshed, 3);
    assert_eq!(server.counters().invalid_grant, 0);
}

/// rmcp loads the credentials before every MCP request: how long that takes per backend.
#[tokio::test]
async fn load_latency() {
    let dir = tempfile::tempdir().unwrap();
    for backend in ["sqlite", "file"] {
        let url = common::store_url(backend, dir.path()).unwrap();
        let adapter = RmcpCredentialStore::new(common::open_store(&url).await, key()).unwrap();
        adapter
            .save(full_credentials(unix_now() as u64))
            .await
            .unwrap();
        const N: u32 = 2000;
        let started = Instant::now();
        for _ in 0..N {
            adapter.load().await.unwrap().unwrap();
        }
        let each = started.elapsed() / N;
        println!("load latency [{backend}]: {each:?} per load() over {N} loads");
        assert!(each < Duration::from_millis(50), "{backend}: {each:?}");
    }
}
