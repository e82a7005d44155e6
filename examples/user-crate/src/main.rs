//! What a user of `token-store` writes: open a store by URL, keep tokens valid with
//! `TokenManager`, and hand the same store to rmcp's `AuthorizationManager`. Run by CI with a
//! temporary directory as its only argument.

use std::time::Duration;

use rmcp::transport::auth::CredentialStore;
use token_store::rmcp::{RmcpCredentialStore, RmcpStateStore};
use token_store::{Precondition, RefreshError, TokenKey, TokenManager, TokenRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: token-store-user-example DIR")?;
    let url = format!("sqlite://{dir}/tokens.db");

    // 1. A store by URL: the one handle every API takes.
    let store = token_store::open(&url).await?;
    let key = TokenKey::for_server("https://mcp.example.com/mcp");
    let expired = TokenRecord::new("at-1")
        .with_refresh_token("rt-1")
        .expires_in(Duration::ZERO);
    store.put(&key, &expired, Precondition::Any).await?;

    // 2. TokenManager: one refresh per expiry across every process sharing the store.
    let manager = TokenManager::new(store.clone())?;
    let token = manager
        .valid_token(&key, |old| async move {
            let rt = old.refresh_token.ok_or(RefreshError::Rejected("no refresh token".into()))?;
            assert_eq!(rt.expose(), "rt-1");
            Ok(TokenRecord::new("at-2")
                .with_refresh_token("rt-2")
                .expires_in(Duration::from_secs(3600)))
        })
        .await?;
    assert_eq!(token.access_token.expose(), "at-2");

    // 3. rmcp: the same store behind rmcp's CredentialStore and StateStore.
    let credentials = RmcpCredentialStore::new(store.clone(), key)?;
    let _states = RmcpStateStore::new(store.clone());
    let loaded = credentials.load().await?.ok_or("no credentials")?;
    let response = loaded.token_response.ok_or("no token response")?;
    assert_eq!(
        oauth2_secret(&response),
        "at-2",
        "rmcp sees the refreshed token"
    );
    println!("ok: {} store, refreshed once, visible to rmcp", store.backend());
    Ok(())
}

fn oauth2_secret(response: &rmcp::transport::auth::OAuthTokenResponse) -> String {
    use oauth2::TokenResponse;
    response.access_token().secret().clone()
}
