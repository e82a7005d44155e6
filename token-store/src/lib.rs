//! # token-store
//!
//! Safe OAuth token storage for MCP clients and servers: one async API ([`TokenStore`]) over
//! the OS keychain, an encrypted file, SQLite, Redis and Vault, chosen by URL ([`open`]) or by
//! what the host offers ([`auto`]).
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
//! Cargo features select backends: `file`, `sqlite`, `redis`, `vault`, `keychain` (all on by
//! default); `rmcp` adds the rmcp `CredentialStore` / `StateStore` adapters (`token_store::rmcp`). A URL naming a backend whose feature is off fails with a [`Error::Config`] that
//! says which feature to enable.
#![warn(missing_docs)]

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use token_store_core::*;

#[cfg(feature = "file")]
pub use token_store_file as file;
#[cfg(feature = "keychain")]
pub use token_store_keychain as keychain;
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

/// Opens the store a URL names, as a byte-level store (which is also a [`TokenStore`]).
///
/// See [`StoreUrl`] for the URL forms. Every call is traced (at DEBUG, values never logged).
pub async fn open_raw(url: &str) -> Result<Arc<dyn RawStore>> {
    let url = StoreUrl::parse(url)?;
    let store: Arc<dyn RawStore> = match url.kind() {
        BackendKind::Memory => Arc::new(MemoryStore::new()),
        #[cfg(feature = "file")]
        BackendKind::File => token_store_file::open_url(&url).await?,
        #[cfg(feature = "sqlite")]
        BackendKind::Sqlite => token_store_sqlite::open_url(&url).await?,
        #[cfg(feature = "redis")]
        BackendKind::Redis | BackendKind::RedisCluster | BackendKind::RedisSentinel => {
            token_store_redis::open_url(&url).await?
        }
        #[cfg(feature = "vault")]
        BackendKind::Vault => token_store_vault::open_url(&url).await?,
        #[cfg(feature = "keychain")]
        BackendKind::Keychain => token_store_keychain::open_url(&url).await?,
        #[allow(unreachable_patterns)]
        other => {
            return Err(Error::config(format!(
                "{url} needs the `{}` feature of token-store, which this build does not have",
                other.feature()
            )));
        }
    };
    Ok(Arc::new(layers::Traced::new(store)))
}

/// Opens the store a URL names.
pub async fn open(url: &str) -> Result<Arc<dyn TokenStore>> {
    Ok(Arc::new(open_raw(url).await?))
}

/// What [`auto`] chose, and why.
pub struct Selection {
    /// The store.
    pub store: Arc<dyn RawStore>,
    /// The URL of the chosen store (passwords hidden).
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
    /// The chosen store as a [`TokenStore`].
    pub fn token_store(&self) -> Arc<dyn TokenStore> {
        Arc::new(self.store.clone())
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

/// Picks the best store this host offers and says why.
///
/// 1. `TOKEN_STORE_URL`, when set: that store, and an error if it fails. An explicit choice
///    never falls back silently to another backend.
/// 2. A working OS keychain (macOS Keychain, Windows Credential Manager, the Secret Service on
///    a Linux desktop), proven by writing, reading and deleting a sentinel under a short time
///    limit.
/// 3. Otherwise the encrypted file store in [`default_data_dir`], keyed by
///    `TOKEN_STORE_PASSPHRASE`, `TOKEN_STORE_KEY_FILE`, or a key file created in
///    [`default_key_file`]. The file store is the embedded default rather than SQLite because
///    it is encrypted at rest without configuration and needs no native library.
/// 4. Without either backend compiled in: the memory store, with a warning that nothing
///    persists.
pub async fn auto() -> Result<Selection> {
    let mut reasons = Vec::new();
    if let Ok(url) = std::env::var(STORE_URL_VAR)
        && !url.trim().is_empty()
    {
        let parsed = StoreUrl::parse(&url)?;
        let store = open_raw(&url).await?;
        reasons.push(format!("{STORE_URL_VAR} is set to {parsed}"));
        return Ok(Selection {
            persistent: store.raw_capabilities().persistent,
            store,
            url: parsed.redacted(),
            reasons,
        });
    }
    reasons.push(format!("{STORE_URL_VAR} is not set"));

    #[cfg(feature = "keychain")]
    {
        match token_store_keychain::probe(std::time::Duration::from_secs(3)).await {
            Ok(store) => {
                reasons.push("the OS keychain passed a write/read/delete probe".to_owned());
                let store: Arc<dyn RawStore> = Arc::new(layers::Traced::new(store));
                return Ok(Selection {
                    persistent: store.raw_capabilities().persistent,
                    store,
                    url: "keychain:".to_owned(),
                    reasons,
                });
            }
            Err(why) => reasons.push(format!("OS keychain not used: {why}")),
        }
    }

    #[cfg(feature = "file")]
    {
        let dir = default_data_dir()?;
        let key = match KeySource::from_env() {
            Some(k) => {
                reasons.push("key from TOKEN_STORE_PASSPHRASE / TOKEN_STORE_KEY_FILE".to_owned());
                k
            }
            None => {
                let path = default_key_file()?;
                reasons.push(format!(
                    "key file {} (created 0600 if missing)",
                    path.display()
                ));
                KeySource::KeyFile(path)
            }
        };
        let store = token_store_file::FileStore::open(&dir, key).await?;
        reasons.push(format!("encrypted file store in {}", dir.display()));
        let store: Arc<dyn RawStore> = Arc::new(layers::Traced::new(store));
        return Ok(Selection {
            persistent: true,
            store,
            url: format!("file://{}", dir.display()),
            reasons,
        });
    }

    #[allow(unreachable_code)]
    {
        tracing::warn!(
            "token-store: no persistent backend compiled in; tokens will be lost on exit"
        );
        reasons.push("no persistent backend compiled in: MEMORY ONLY, NOTHING PERSISTS".to_owned());
        Ok(Selection {
            store: Arc::new(MemoryStore::new()),
            url: "memory:".to_owned(),
            persistent: false,
            reasons,
        })
    }
}

pub use token_store_core::crypto::KeySource;

/// The README's example, compiled and run as a doctest so it stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
