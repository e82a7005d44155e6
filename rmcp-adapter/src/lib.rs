//! [rmcp](https://crates.io/crates/rmcp) (the official Rust MCP SDK) on token-store: OAuth
//! credentials and pending authorizations kept in any token-store backend (SQLite, encrypted
//! file, Redis, Vault, OS keychain), shared safely by every process and replica that opens it.
//!
//! - [`RmcpCredentialStore`] implements rmcp's `CredentialStore` for one
//!   [`TokenKey`](token_store_core::TokenKey): credentials survive a restart with their expiry,
//!   refreshes are serialised across processes and hosts by a store-held lease (a crashed
//!   holder's lease expires), the write-back is a compare-and-swap, and a rejected refresh
//!   token removes only the record that carried it. The record is a normal token-store
//!   `TokenRecord`, readable by the `tokenstore` CLI, mcp-agent and
//!   [`TokenManager`](token_store_core::TokenManager). It also keeps the client secret of a
//!   confidential client, which rmcp does not store.
//! - [`RmcpStateStore`] implements rmcp's `StateStore` (PKCE verifier per CSRF state) with
//!   expiry and an atomic one-time consume.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use oauth2::{AccessToken, RefreshToken, TokenResponse, basic::BasicTokenType};
//! use rmcp::transport::auth::{CredentialStore, OAuthTokenResponse, StoredCredentials, VendorExtraTokenFields};
//! use token_store_core::backend::unix_now;
//! use token_store_core::{TokenKey, TokenStore};
//! use token_store_rmcp::RmcpCredentialStore;
//!
//! // Any store: token_store::open("sqlite://..."), token_store::auto(), ...
//! let store = TokenStore::in_memory();
//! let key = TokenKey::for_server("https://mcp.example.com/mcp");
//!
//! // What rmcp's AuthorizationManager saves after a login:
//! let mut response = OAuthTokenResponse::new(
//!     AccessToken::new("at-1".into()),
//!     BasicTokenType::Bearer,
//!     VendorExtraTokenFields::default(),
//! );
//! response.set_refresh_token(Some(RefreshToken::new("rt-1".into())));
//! response.set_expires_in(Some(&std::time::Duration::from_secs(3600)));
//! let received_at = unix_now() as u64 - 600;
//! let credentials = StoredCredentials::new("client-1".into(), Some(response), vec!["read".into()], Some(received_at));
//! RmcpCredentialStore::new(store.clone(), key.clone())?.save(credentials).await?;
//!
//! // Another tool reads a plain token record with an absolute expiry ...
//! let record = store.get(&key).await?.expect("stored").value;
//! assert_eq!(record.expires_at, Some(received_at as f64 + 3600.0));
//!
//! // ... and after a restart rmcp sees the same credentials, expiry included.
//! let loaded = RmcpCredentialStore::new(store, key)?.load().await?.expect("stored");
//! assert_eq!(loaded.token_received_at, Some(received_at));
//! assert_eq!(loaded.token_response.unwrap().expires_in(), Some(std::time::Duration::from_secs(3600)));
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! Wiring into rmcp (see `examples/persistent_client.rs` for a complete client, and
//! `examples/loopback_mcp_server.rs` for an OAuth-protected MCP server to run it against):
//!
//! ```no_run
//! # async fn demo(store: token_store_core::TokenStore) -> Result<(), Box<dyn std::error::Error>> {
//! use rmcp::transport::auth::AuthorizationManager;
//! use token_store_core::TokenKey;
//! use token_store_rmcp::{RmcpCredentialStore, RmcpStateStore};
//!
//! let server = "https://mcp.example.com/mcp";
//! let credentials = RmcpCredentialStore::new(store.clone(), TokenKey::for_server(server))?;
//! let mut manager = AuthorizationManager::new(server).await?;
//! manager.set_credential_store(credentials.clone());
//! manager.set_state_store(RmcpStateStore::new(store));
//! if manager.initialize_from_store().await? {
//!     // rmcp configured the client id only; restore a confidential client's secret.
//!     if let Some(config) = credentials.client_config("http://127.0.0.1:8765/callback").await? {
//!         manager.configure_client(config)?;
//!     }
//!     // Logged in from the store: no browser needed.
//! }
//! # Ok(()) }
//! ```
//!
//! # How a refresh is coordinated
//!
//! rmcp calls `acquire_refresh_guard` → `load` → token request → `save` (or
//! `on_refresh_token_rejected` on `invalid_grant`). The guard is a
//! [`Lease`](token_store_core::Lease) named
//! [`TokenManager::lease_name`](token_store_core::TokenManager::lease_name), the same lease
//! `TokenManager::valid_token` takes, so rmcp clients and other token-store users of the
//! same key never refresh at once. rmcp 3.11 does not re-check after acquiring the guard
//! whether the token still needs a refresh: a process that waited refreshes again, with the
//! winner's (valid) refresh token. That costs extra token requests (measured: 8 processes,
//! 8 refreshes per expiry) but never an `invalid_grant` or a revoked token family. Build the
//! manager with [`RmcpCredentialStore::coalescing_http_client`] and those redundant
//! refreshes are answered from the store: one refresh per expiry across all processes.
//!
//! ```no_run
//! # async fn demo(store: token_store_core::TokenStore) -> Result<(), Box<dyn std::error::Error>> {
//! use rmcp::transport::auth::{AuthorizationManager, default_oauth_http_client};
//! use token_store_core::TokenKey;
//! use token_store_rmcp::RmcpCredentialStore;
//!
//! let server = "https://mcp.example.com/mcp";
//! let credentials = RmcpCredentialStore::new(store, TokenKey::for_server(server))?;
//! let http = credentials.coalescing_http_client(default_oauth_http_client()?);
//! let mut manager = AuthorizationManager::new_with_oauth_http_client(server, http).await?;
//! manager.set_credential_store(credentials);
//! # Ok(()) }
//! ```
//!
//! This crate makes no HTTP requests itself; it needs rmcp's `auth` and `client` features
//! only. An application talking to HTTPS authorization servers enables a TLS feature of
//! rmcp (e.g. `reqwest`, rustls) as usual.
//!
//! # The read cache
//!
//! rmcp calls `load` before every MCP request. The adapter reads through the store's read
//! cache ([`TokenStore::with_cache`](token_store_core::TokenStore::with_cache); the default
//! [`CacheOptions`](token_store_core::CacheOptions) unless the store brings its own), so
//! that call costs no I/O and no JSON while the access token has more than the refresh
//! margin (60 s, above rmcp's 30 s) left, and what it returns is at most the max age (5 s)
//! old. A token near expiry is always read from the store: a refresh done by another
//! process or host is adopted before rmcp would start its own. The guarded load of a
//! refresh and `on_refresh_token_rejected` read the store itself; `save`, `clear` and
//! `on_refresh_token_rejected` drop the entry. rmcp does not tell the credential store
//! about a 401 from the MCP server: call
//! [`RmcpCredentialStore::invalidate`] there. [`RmcpCredentialStore::without_cache`] reads
//! the store on every `load`.
//!
//! # Metrics and audit events
//!
//! With the feature `metrics` (token-store-core's, forwarded), each guarded refresh is
//! counted once in `token_store_refreshes_total` by outcome, as
//! [`TokenManager`](token_store_core::TokenManager) counts its own: `refreshed` (saved under
//! the guard), `adopted` (answered from the store by the coalescing client, or another
//! writer's newer record kept), `rejected` (`invalid_grant`), `transient` (rmcp dropped the
//! guard after loading a refresh token, without a save: its token request failed),
//! `login_required` (nothing to refresh with), `error` (the store failed, or the guard's
//! lease was not taken in time). Lease waits and takeovers are recorded by
//! [`Lease`](token_store_core::Lease). The guarded save is audited as `refreshed`, the
//! removal of a rejected refresh token's record as `revoked` (see
//! [`token_store_core::audit`]). Names and labels: `docs/metrics.md`.
//!
//! # What is stored
//!
//! One `TokenRecord` per key: access and refresh token, `expires_at = token_received_at +
//! expires_in` (absolute), `obtained_at = token_received_at`, `scopes` = rmcp's granted
//! scopes, `authorization_server` = rmcp's issuer, `client_id`, `resource` = the key's
//! resource, `id_token` when the response had one, `refresh_expires_at` when the server
//! gave a refresh token lifetime (`refresh_token_expires_in`/`refresh_expires_in`).
//! `metadata["rmcp"]` holds what only rmcp needs: `token_received_at` verbatim, the
//! response's own `scope`, and the remaining vendor fields. No secret is stored twice.
//! Records written by other tools load fine: rmcp then sees their expiry from
//! `obtained_at`/`expires_at`.
//!
//! The client registration (client id, secret, redirect URIs) is a `ClientRegistration`
//! under a [`ClientKey`](token_store_core::ClientKey). Pending authorizations are core
//! `AuthState`s under the CSRF value's digest.
#![warn(missing_docs)]

#[cfg(test)]
mod cache_tests;
mod coalesce;
mod convert;
mod credentials;
#[cfg(test)]
mod metrics_tests;
mod state;

pub use coalesce::CoalescingHttpClient;
pub use convert::METADATA_KEY;
pub use credentials::RmcpCredentialStore;
pub use state::{DEFAULT_STATE_TTL, RmcpStateStore};

/// Re-exported so users name the same rmcp types as this crate.
pub use rmcp;
