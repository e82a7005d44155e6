//! Core of token-store: the [`TokenStore`] API, the byte-level [`RawStore`] contract that
//! backends implement, the one [`Error`] type, keys and records compatible with the Python
//! `mcp-agent` token store, layers (encryption, timeout, tracing), the in-memory reference
//! store and store URLs.
//!
//! # Architecture
//!
//! A backend implements only [`RawStore`]: get / conditional put / conditional delete / list
//! of opaque bytes under a structured [`StorageKey`]. This crate implements [`TokenStore`]
//! once for every `RawStore` (JSON records, versions, client registrations, one-time PKCE
//! states, paging), and [`layers`] add encryption, timeouts and tracing to any backend. So
//! no logic is written twice across backends, and the shared conformance suite
//! (`token-store-conformance`) checks each backend at the byte level and the typed level.
//!
//! ```
//! # async fn demo() -> token_store_core::Result<()> {
//! use std::sync::Arc;
//! use token_store_core::{MemoryStore, Precondition, TokenKey, TokenRecord, TokenStore};
//!
//! let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
//! let key = TokenKey::for_server("https://mcp.example.com/mcp");
//! store.put(&key, &TokenRecord::new("access").with_refresh_token("refresh"), Precondition::Any).await?;
//! let record = store.get(&key).await?.expect("stored");
//! assert_eq!(record.value.access_token.expose(), "access");
//! assert_eq!(format!("{:?}", record.value.access_token), "[REDACTED]");
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```
#![warn(missing_docs)]

pub mod crypto;
mod error;
pub mod fs;
mod key;
pub mod layers;
mod lease;
mod manager;
mod memory;
mod raw;
mod record;
mod store;
mod url;

pub use error::{BoxError, Error, Result};
pub use key::{
    ClientKey, DEFAULT_USER_KEY, KeyKind, MAX_ENCODED_KEY_LEN, StorageKey, TokenKey, canonical_url,
    percent_decode, percent_encode, scope_fingerprint,
};
pub use lease::{Lease, LeaseOptions};
pub use manager::{ManagerError, RefreshError, TokenManager};
pub use memory::MemoryStore;
pub use raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore,
    SecretBytes, Version, check_precondition, check_size,
};
pub use record::{
    AuthState, ClientRegistration, RECORD_SCHEMA, Secret, TokenRecord, Versioned, to_unix, unix_now,
};
pub use store::{Page, Query, TokenStore, json_error_summary};
pub use url::{BackendKind, StoreUrl};

/// Re-exported so backends and users name the same `async_trait`.
pub use async_trait::async_trait;
