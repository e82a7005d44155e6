//! # token-store
//!
//! Safe OAuth token storage for MCP clients and servers: one store handle ([`TokenStore`]) over
//! the OS keychain, an encrypted file, SQLite, PostgreSQL, Redis and Vault, chosen by URL ([`open`]) or by
//! what the host offers ([`auto`]), with compare-and-swap so that rotating refresh tokens never
//! race each other into a logout.
//!
//! ```
//! # async fn demo() -> token_store::Result<()> {
//! use token_store::{Precondition, TokenKey, TokenRecord};
//!
//! let store = token_store::open("memory:").await?;
//! let key = TokenKey::for_server("https://mcp.example.com/mcp");
//! let fresh = TokenRecord::new("access-token").with_refresh_token("refresh-token");
//! let version = store.put(&key, &fresh, Precondition::IfAbsent).await?;
//!
//! // Refreshing: write only if nobody else refreshed since we read (compare-and-swap).
//! let current = store.get(&key).await?.expect("stored");
//! assert_eq!(current.version, version);
//! let rotated = TokenRecord::new("access-2").with_refresh_token("refresh-2");
//! store.put(&key, &rotated, Precondition::IfVersion(current.version)).await?;
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! The same handle goes to every other API: [`TokenManager`] (one refresh per expiry across
//! every process sharing the store), [`Lease`], and with the `rmcp` feature the rmcp
//! `CredentialStore` / `StateStore` adapters in `token_store::rmcp`.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `file` | yes | `file://` encrypted file store (`token_store::file`), the embedded default of [`auto`] |
//! | `sqlite` | yes | `sqlite://` (`token_store::sqlite`) |
//! | `redis` | yes | `redis://`, `rediss://`, `redis+cluster://`, `redis+sentinel://` (`token_store::redis`) |
//! | `vault` | yes | `vault://`, `vaults://` Vault / OpenBao KV v2 (`token_store::vault`) |
//! | `keychain` | yes | `keychain:` OS keychains (`token_store::keychain`) |
//! | `postgres` | no | `postgres://`, `postgresql://` (`token_store::postgres`): a server's database, not a client's default |
//! | `oauth2` | no | [`TokenRecord`] conversions to and from `oauth2` token responses |
//! | `rmcp` | no | rmcp adapters (`token_store::rmcp`); implies `oauth2` |
//! | `grants` | no | an authorization server's grant store for MCP servers that issue tokens (`token_store::grants`) |
//! | `metrics` | no | metrics through the `metrics` facade: `layers::Metrics`, refresh outcomes, lease waits and takeovers (`token_store::metrics`; names in `docs/metrics.md`) |
//!
//! Audit events, one per change of stored credentials (never a key or a secret in the
//! clear), are `tracing` events of the target `token_store::audit` in every build: see
//! [`audit`].
//!
//! A URL naming a backend whose feature is off fails with an [`Error::Config`] that says
//! which feature to enable. The command-line tool is the separate `token-store-cli` crate
//! (`cargo install token-store-cli` installs `tokenstore`).
#![warn(missing_docs)]

use std::fmt;
use std::path::PathBuf;

pub use token_store_core::*;

#[cfg(feature = "file")]
pub use token_store_file as file;
#[cfg(feature = "grants")]
pub use token_store_grants as grants;
#[cfg(feature = "keychain")]
pub use token_store_keychain as keychain;
#[cfg(feature = "postgres")]
pub use token_store_postgres as postgres;
#[cfg(feature = "redis")]
pub use token_store_redis as redis;
#[cfg(feature = "rmcp")]
pub use token_store_rmcp as rmcp;
#[cfg(feature = "sqlite")]
pub use token_store_sqlite as sqlite;
#[cfg(feature = "vault")]
pub use token_store_vault as vault;

/// The environment variable [`auto`] reads a store URL from.
pub const STORE_URL_VAR: &str = "TOKEN_STORE_URL";

/// The environment variable Python mcp-agent switches its token store to Redis with; [`auto`]
/// honours it the same way when [`STORE_URL_VAR`] is unset.
pub const MCP_AGENT_REDIS_VAR: &str = "OAUTH_REDIS_URL";

/// Opens the store a URL names.
///
/// See [`StoreUrl`] for the URL forms and each backend's crate docs for its parameters; an
/// unknown parameter is an [`Error::Config`] naming it. Every call on the store is traced (at
/// DEBUG, values never logged).
pub async fn open(url: &str) -> Result<TokenStore> {
    let url = StoreUrl::parse(url)?;
    open_parsed(&url).await
}

async fn open_parsed(url: &StoreUrl) -> Result<TokenStore> {
    let store: TokenStore = match url.kind() {
        BackendKind::Memory => {
            url.params()?.finish()?;
            TokenStore::in_memory()
        }
        #[cfg(feature = "file")]
        BackendKind::File => token_store_file::open_url(url).await?,
        #[cfg(feature = "sqlite")]
        BackendKind::Sqlite => token_store_sqlite::open_url(url).await?,
        #[cfg(feature = "redis")]
        BackendKind::Redis | BackendKind::RedisCluster | BackendKind::RedisSentinel => {
            token_store_redis::open_url(url).await?
        }
        #[cfg(feature = "vault")]
        BackendKind::Vault => token_store_vault::open_url(url).await?,
        #[cfg(feature = "keychain")]
        BackendKind::Keychain => token_store_keychain::open_url(url).await?,
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => token_store_postgres::open_url(url).await?,
        #[allow(unreachable_patterns)]
        other => {
            return Err(Error::config(format!(
                "{url} needs the `{}` feature of token-store, which this build does not have",
                other.feature()
            )));
        }
    };
    Ok(traced(store))
}

fn traced(store: TokenStore) -> TokenStore {
    TokenStore::new(layers::Traced::new(store.raw().clone()))
}

/// What [`auto`] chose, and why.
#[non_exhaustive]
pub struct Selection {
    /// The store.
    pub store: TokenStore,
    /// The URL of the chosen store, with secrets hidden.
    pub url: String,
    /// Whether records survive a restart of this process.
    pub persistent: bool,
    /// The reasoning, one line per candidate considered.
    pub reasons: Vec<String>,
}

impl fmt::Debug for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selection")
            .field("url", &self.url)
            .field("persistent", &self.persistent)
            .field("reasons", &self.reasons)
            .finish_non_exhaustive()
    }
}

impl Selection {
    fn new(store: TokenStore, url: String, reasons: Vec<String>) -> Self {
        Selection {
            persistent: store.capabilities().persistent,
            store,
            url,
            reasons,
        }
    }
}

/// The directory the embedded default keeps its records in: the platform data directory
/// (`$XDG_DATA_HOME/token-store` on Linux, `~/Library/Application Support/token-store` on
/// macOS, `%APPDATA%\token-store` on Windows).
pub fn default_data_dir() -> Result<PathBuf> {
    dirs::data_dir()
        .map(|d| d.join("token-store"))
        .ok_or_else(|| Error::config("no platform data directory (is HOME set?)"))
}

/// The key file the embedded default uses when neither `TOKEN_STORE_PASSPHRASE` nor
/// `TOKEN_STORE_KEY_FILE` is set: in the platform *config* directory, apart from the data,
/// so that a copy of the data directory alone (a backup, a synced folder) reveals nothing.
pub fn default_key_file() -> Result<PathBuf> {
    dirs::config_dir()
        .map(|d| d.join("token-store").join("store.key"))
        .ok_or_else(|| Error::config("no platform config directory (is HOME set?)"))
}

/// The key source of the embedded default: `TOKEN_STORE_PASSPHRASE`, else
/// `TOKEN_STORE_KEY_FILE`, else [`default_key_file`].
pub fn default_key_source() -> Result<KeySource> {
    match KeySource::from_env() {
        Some(key) => Ok(key),
        None => default_key_file().map(KeySource::KeyFile),
    }
}

/// Picks the best store this host offers and says why.
///
/// 1. `TOKEN_STORE_URL`, when set: that store, and an error if it fails. An explicit choice
///    never falls back silently to another backend.
/// 2. `OAUTH_REDIS_URL`, when set (Python mcp-agent's switch to Redis): that Redis with
///    mcp-agent's key prefix, so a Rust port of an mcp-agent deployment shares its tokens.
/// 3. A working OS keychain (macOS Keychain, Windows Credential Manager, the Secret Service on
///    a Linux desktop), proven by writing, reading and deleting a sentinel under a short time
///    limit.
/// 4. Otherwise the encrypted file store in [`default_data_dir`], keyed by
///    [`default_key_source`]. The file store is the embedded default rather than SQLite
///    because it is encrypted at rest without configuration and needs no native library.
/// 5. Without either backend compiled in: the memory store, with a warning that nothing
///    persists.
pub async fn auto() -> Result<Selection> {
    let mut reasons = Vec::new();
    for var in [STORE_URL_VAR, MCP_AGENT_REDIS_VAR] {
        if let Ok(url) = std::env::var(var)
            && !url.trim().is_empty()
        {
            let parsed = StoreUrl::parse(&url)?;
            if var == MCP_AGENT_REDIS_VAR && parsed.kind() != BackendKind::Redis {
                return Err(Error::config(format!(
                    "{MCP_AGENT_REDIS_VAR} is set to {parsed}, which is not a redis:// or rediss:// URL"
                )));
            }
            let store = open_parsed(&parsed).await?;
            reasons.push(format!("{var} is set to {parsed}"));
            return Ok(Selection::new(store, parsed.redacted(), reasons));
        }
        reasons.push(format!("{var} is not set"));
    }

    #[cfg(feature = "keychain")]
    {
        match token_store_keychain::probe(std::time::Duration::from_secs(3)).await {
            Ok(store) => {
                reasons.push("the OS keychain passed a write/read/delete probe".to_owned());
                return Ok(Selection::new(
                    traced(store),
                    "keychain:".to_owned(),
                    reasons,
                ));
            }
            Err(why) => reasons.push(format!("OS keychain not used: {why}")),
        }
    }

    #[cfg(feature = "file")]
    {
        let dir = default_data_dir()?;
        let key = default_key_source()?;
        match &key {
            KeySource::KeyFile(path) => reasons.push(format!(
                "key file {} (created 0600 if missing)",
                path.display()
            )),
            _ => reasons.push("key from TOKEN_STORE_PASSPHRASE".to_owned()),
        }
        let store = token_store_file::open(token_store_file::FileConfig::new(&dir, key)).await?;
        reasons.push(format!("encrypted file store in {}", dir.display()));
        return Ok(Selection::new(
            traced(store),
            format!("file://{}", dir.display()),
            reasons,
        ));
    }

    #[allow(unreachable_code)]
    {
        tracing::warn!(
            "token-store: no persistent backend compiled in; tokens will be lost on exit"
        );
        reasons.push("no persistent backend compiled in: MEMORY ONLY, NOTHING PERSISTS".to_owned());
        Ok(Selection::new(
            TokenStore::in_memory(),
            "memory:".to_owned(),
            reasons,
        ))
    }
}

/// The README's examples, compiled and run as doctests so they stay true (they use the rmcp
/// adapter and the grant store: `cargo test -p token-store --doc --features rmcp,grants`, as
/// CI runs it).
#[doc = include_str!("../../README.md")]
#[cfg(all(doctest, feature = "rmcp", feature = "grants"))]
pub struct ReadmeDoctests;
