//! The adapter's read cache against a second store handle on the same SQLite file (what
//! another process is to this one: no shared memory, only the store).

use std::time::{Duration, Instant};

use oauth2::basic::BasicTokenType;
use oauth2::{AccessToken, RefreshToken, TokenResponse};
use rmcp::transport::auth::{
    CredentialStore, OAuthTokenResponse, StoredCredentials, VendorExtraTokenFields,
};
use token_store_core::backend::unix_now;
use token_store_core::{CacheOptions, StoreUrl, TokenKey, TokenStore};

use crate::RmcpCredentialStore;

fn key() -> TokenKey {
    TokenKey::for_server("https://mcp.example.com/mcp")
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

fn access_of(c: &StoredCredentials) -> String {
    c.token_response
        .as_ref()
        .map(|r| r.access_token().secret().clone())
        .unwrap_or_default()
}

async fn sqlite(dir: &std::path::Path) -> TokenStore {
    let url = StoreUrl::parse(&format!("sqlite://{}", dir.join("t.db").display())).unwrap();
    token_store_sqlite::open_url(&url).await.unwrap()
}

/// Ours and another process's handle on one SQLite file.
async fn pair(max_age: Duration) -> (tempfile::TempDir, RmcpCredentialStore, RmcpCredentialStore) {
    let dir = tempfile::tempdir().unwrap();
    let ours = RmcpCredentialStore::new(sqlite(dir.path()).await, key())
        .unwrap()
        .with_cache(CacheOptions::new().with_max_age(max_age));
    let theirs = RmcpCredentialStore::new(sqlite(dir.path()).await, key())
        .unwrap()
        .without_cache();
    (dir, ours, theirs)
}

async fn load(store: &RmcpCredentialStore) -> String {
    access_of(&store.load().await.unwrap().unwrap())
}

#[tokio::test]
async fn another_process_refresh_is_adopted_within_the_max_age() {
    let max_age = Duration::from_millis(300);
    let (_dir, ours, theirs) = pair(max_age).await;
    theirs
        .save(credentials("at-1", "rt-1", 3600))
        .await
        .unwrap();
    assert_eq!(load(&ours).await, "at-1");
    let hits_before = ours.store().cache_stats().unwrap().hits;
    assert_eq!(load(&ours).await, "at-1");
    assert_eq!(
        ours.store().cache_stats().unwrap().hits,
        hits_before + 1,
        "a load of a good token went to the store"
    );

    // The other process refreshes; ours adopts it no later than the max age.
    theirs
        .save(credentials("at-2", "rt-2", 3600))
        .await
        .unwrap();
    let refreshed = Instant::now();
    while load(&ours).await != "at-2" {
        assert!(
            refreshed.elapsed() <= max_age + Duration::from_millis(100),
            "still the old token {:?} after the refresh",
            refreshed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn near_expiry_every_load_reads_the_store_so_a_refresh_elsewhere_is_seen_at_once() {
    // A long max age: only the refresh margin can make ours read the store.
    let (_dir, ours, theirs) = pair(Duration::from_secs(3600)).await;
    // 50 s left: inside the 60 s margin, outside rmcp's 30 s refresh buffer, so rmcp would
    // still send this token, but the cache never holds it.
    theirs.save(credentials("at-1", "rt-1", 50)).await.unwrap();
    assert_eq!(load(&ours).await, "at-1");
    theirs.save(credentials("at-2", "rt-2", 50)).await.unwrap();
    assert_eq!(
        load(&ours).await,
        "at-2",
        "a near-expiry token came from the cache"
    );
}

#[tokio::test]
async fn save_clear_rejection_and_invalidate_drop_the_entry() {
    let (_dir, ours, theirs) = pair(Duration::from_secs(3600)).await;
    ours.save(credentials("at-1", "rt-1", 3600)).await.unwrap();
    assert_eq!(load(&ours).await, "at-1");

    // Our own save is seen at once.
    ours.save(credentials("at-2", "rt-2", 3600)).await.unwrap();
    assert_eq!(load(&ours).await, "at-2");

    // After a 401 the application invalidates: the next load reads the store.
    theirs
        .save(credentials("at-3", "rt-3", 3600))
        .await
        .unwrap();
    assert_eq!(load(&ours).await, "at-2", "max age 1 h: still cached");
    ours.invalidate();
    assert_eq!(load(&ours).await, "at-3");

    // A rejected refresh token: decided on the store's record, and nothing stays cached.
    theirs
        .save(credentials("at-4", "rt-4", 3600))
        .await
        .unwrap();
    ours.on_refresh_token_rejected(&credentials("at-3", "rt-3", 3600))
        .await
        .unwrap();
    assert_eq!(
        load(&ours).await,
        "at-4",
        "a newer record must survive and be seen"
    );
    ours.on_refresh_token_rejected(&credentials("at-4", "rt-4", 3600))
        .await
        .unwrap();
    assert!(ours.load().await.unwrap().is_none());

    // clear drops it too.
    ours.save(credentials("at-5", "rt-5", 3600)).await.unwrap();
    assert_eq!(load(&ours).await, "at-5");
    ours.clear().await.unwrap();
    assert!(ours.load().await.unwrap().is_none());
}

#[tokio::test]
async fn the_guarded_load_reads_the_store() {
    let (_dir, ours, theirs) = pair(Duration::from_secs(3600)).await;
    theirs
        .save(credentials("at-1", "rt-1", 3600))
        .await
        .unwrap();
    assert_eq!(load(&ours).await, "at-1");
    theirs
        .save(credentials("at-2", "rt-2", 3600))
        .await
        .unwrap();
    let guard = ours.acquire_refresh_guard().await.unwrap();
    assert_eq!(
        load(&ours).await,
        "at-2",
        "the load under the guard was cached"
    );
    drop(guard);
}
