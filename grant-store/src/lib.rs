//! An OAuth 2.1 authorization server's grant store on any token-store backend, for MCP
//! servers that issue their own tokens: dynamic client registration (RFC 7591/7592),
//! authorization codes with PKCE, access tokens, rotating refresh tokens with reuse
//! detection, introspection (RFC 7662) and revocation (RFC 7009).
//!
//! It runs on every store a [`TokenStore`] opens (memory, encrypted file, SQLite, Redis
//! standalone or Cluster, Vault/OpenBao, the OS keychain): one store shared by several server
//! replicas shares their grants.
//!
//! # Use it in an MCP server
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use token_store_grants::{AuthorizationRequest, ClientMetadata, GrantStore, pkce_challenge};
//! # let (redirect, verifier) = ("http://127.0.0.1:8765/callback", "a-pkce-verifier-of-at-least-43-characters-long");
//! // Any store: token_store::open("sqlite:///var/lib/mcp/grants.db"), "redis://...", ...
//! let grants = GrantStore::new(token_store_core::TokenStore::in_memory())?;
//! // POST /register (RFC 7591), /authorize after the user logged in, POST /token:
//! let client = grants.register_client(ClientMetadata::new([redirect]).public()).await?;
//! let code = grants.authorize(AuthorizationRequest::new(client.client_id(), redirect, "alice", pkce_challenge(verifier))).await?;
//! let tokens = grants.exchange_code(&grants.authenticate_client(client.client_id(), None).await?, code.expose(), redirect, verifier, None).await?;
//! // Every MCP request: the bearer check, one store read.
//! let grant = grants.verify(tokens.access_token.expose()).await?.expect("a valid token");
//! assert_eq!(grant.user_id, "alice");
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! `examples/mcp_auth_server/` is a complete MCP server that is its own authorization
//! server (metadata, `/register`, `/authorize` with a login form, `/token`, `/revoke`,
//! `/introspect`, one protected tool), on SQLite by default or on a Redis shared by replicas.
//!
//! # What is stored, and what a dump of the store reveals
//!
//! Tokens, codes, client secrets and registration tokens are 256-bit random values; the
//! store keeps only a SHA-256 digest of each (domain-separated per kind), under which their
//! record is found, so the bearer check is one read and a dump holds no usable secret.
//! Properties a server attaches to a grant (say, the user's upstream API tokens) are sealed
//! with XChaCha20-Poly1305 under a random key per grant, bound to the grant id; that key is
//! stored only wrapped under keys derived from each live token, so only a holder of a valid
//! access or refresh token can read them ([`AccessGrant::props`]).
//!
//! # Rotation and reuse
//!
//! Every change of a token family goes through a compare-and-swap of its grant record (see
//! the `grants` module source for the argument): of several requests presenting one refresh
//! token, at most one rotates it, and any other presentation of an already-rotated refresh
//! token revokes the whole family, as OAuth 2.1 asks. A second redemption of an
//! authorization code fails and revokes what the first one issued. [`GrantStore::new`]
//! therefore refuses a store whose compare-and-swap reaches less far than the processes
//! sharing it.
//!
//! A process killed in the middle of an operation never leaves two valid refresh tokens in
//! a family (the grant names the one current token). It can leave records nobody holds (a
//! token written but never committed or handed out, which [`GrantStore::purge_expired`]
//! removes). Killed inside a revocation, it leaves the grant in place with some of its tokens
//! (a revocation deletes the tokens first and the grant last): the revocation did not happen
//! yet, and repeating it finishes it.
#![warn(missing_docs)]

mod client;
mod error;
mod grants;
mod records;
mod secret;

use std::time::Duration;

use token_store_core::{Error, TokenStore};

pub use client::{
    AUTH_BASIC, AUTH_NONE, AUTH_POST, AuthenticatedClient, Client, ClientMetadata, RegisteredClient,
};
pub use error::GrantError;
pub use grants::{
    AccessGrant, AuthorizationRequest, GrantInfo, Introspection, IssuedTokens, PurgeReport,
    RefreshOptions,
};
pub use secret::pkce_challenge;

/// Lifetimes and policies of a [`GrantStore`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GrantConfig {
    /// How long an access token lives (default 1 hour).
    pub access_token_ttl: Duration,
    /// How long an authorization code lives (default 10 minutes, RFC 6749's maximum).
    pub code_ttl: Duration,
    /// How long a refresh token lives unused (default 30 days); `None` until revoked.
    pub refresh_token_ttl: Option<Duration>,
    /// The absolute lifetime of a grant from consent, across rotations (default none).
    pub refresh_absolute_lifetime: Option<Duration>,
    /// How long a client secret lives (default: forever, `client_secret_expires_at: 0`).
    pub client_secret_ttl: Option<Duration>,
    /// Whether clients registered for the `refresh_token` grant get refresh tokens
    /// (default true).
    pub issue_refresh_tokens: bool,
}

impl Default for GrantConfig {
    fn default() -> Self {
        GrantConfig {
            access_token_ttl: Duration::from_secs(3600),
            code_ttl: Duration::from_secs(600),
            refresh_token_ttl: Some(Duration::from_secs(30 * 24 * 3600)),
            refresh_absolute_lifetime: None,
            client_secret_ttl: None,
            issue_refresh_tokens: true,
        }
    }
}

impl GrantConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Access tokens live `ttl`.
    pub fn with_access_token_ttl(mut self, ttl: Duration) -> Self {
        self.access_token_ttl = ttl;
        self
    }

    /// Authorization codes live `ttl`.
    pub fn with_code_ttl(mut self, ttl: Duration) -> Self {
        self.code_ttl = ttl;
        self
    }

    /// Refresh tokens live `ttl` unused (`None`: until revoked).
    pub fn with_refresh_token_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.refresh_token_ttl = ttl;
        self
    }

    /// A grant ends `lifetime` after consent, however often it is refreshed.
    pub fn with_refresh_absolute_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.refresh_absolute_lifetime = lifetime;
        self
    }

    /// Client secrets expire `ttl` after registration.
    pub fn with_client_secret_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.client_secret_ttl = ttl;
        self
    }

    /// Whether refresh tokens are issued at all.
    pub fn with_refresh_tokens(mut self, issue: bool) -> Self {
        self.issue_refresh_tokens = issue;
        self
    }
}

/// The grant store: cheap to clone; clones share the backend.
#[derive(Clone, Debug)]
pub struct GrantStore {
    io: records::Io,
    config: GrantConfig,
}

impl GrantStore {
    /// A grant store on `store` with the default [`GrantConfig`].
    ///
    /// Fails with [`Error::Config`] when the store's compare-and-swap reaches less far than
    /// the processes sharing it: rotation and single-use codes rely on it.
    pub fn new(store: TokenStore) -> Result<Self, Error> {
        Self::with_config(store, GrantConfig::default())
    }

    /// A grant store with explicit lifetimes and policies.
    pub fn with_config(store: TokenStore, config: GrantConfig) -> Result<Self, Error> {
        let caps = store.capabilities();
        if !caps.cas_covers_sharing() {
            return Err(Error::config(format!(
                "a grant store needs compare-and-swap {}, but the {} store's holds only {}",
                caps.shared_with,
                store.backend(),
                caps.cas
            )));
        }
        Ok(GrantStore {
            io: records::Io {
                raw: store.raw().clone(),
            },
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GrantConfig {
        &self.config
    }

    /// The store underneath.
    pub fn store(&self) -> TokenStore {
        TokenStore::from_arc(self.io.raw.clone())
    }
}
