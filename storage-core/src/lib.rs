//! Core of token-store: the [`TokenStore`] handle, the byte-level [`RawStore`] contract that
//! backends implement, the one [`Error`] type, keys and records compatible with the Python
//! `mcp-agent` token store, layers (encryption, timeout, tracing), the in-memory reference
//! store, store URLs, and the refresh layer ([`TokenManager`], [`Lease`]).
//!
//! # Architecture
//!
//! A backend implements only [`RawStore`]: `read` / conditional `write` / conditional
//! `remove` / `scan` of opaque bytes under a structured [`StorageKey`]. [`TokenStore`] is the
//! one handle over any `RawStore` (JSON records, versions, client registrations, one-time
//! PKCE states, paging), and [`layers`] add encryption, timeouts and tracing to any backend.
//! So no logic is written twice across backends, and the shared conformance suite
//! (`token-store-conformance`) checks each backend at the byte level and the typed level.
//! Backend authors find their helpers in [`backend`].
//!
//! ```
//! # async fn demo() -> token_store_core::Result<()> {
//! use token_store_core::{Precondition, TokenKey, TokenRecord, TokenStore};
//!
//! let store = TokenStore::in_memory();
//! let key = TokenKey::for_server("https://mcp.example.com/mcp");
//! store.put(&key, &TokenRecord::new("access").with_refresh_token("refresh"), Precondition::Any).await?;
//! let record = store.get(&key).await?.expect("stored");
//! assert_eq!(record.value.access_token.expose(), "access");
//! assert_eq!(format!("{:?}", record.value.access_token), "[REDACTED]");
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # Features
//!
//! - `oauth2`: conversions between [`TokenRecord`] and the `oauth2` crate's token responses.
//! - `metrics`: counts and latencies through the `metrics` facade ([`metrics`],
//!   `layers::Metrics`); off by default, and then nothing of it is compiled in.
//!
//! Audit events (one per change of stored credentials, never a key or secret in the clear)
//! are `tracing` events of the target `token_store::audit`: see [`audit`].
#![warn(missing_docs)]

pub mod audit;
pub mod backend;
pub mod cache;
mod crypto;
mod error;
mod fs;
mod json;
mod key;
pub mod layers;
mod lease;
mod manager;
mod memory;
pub mod metrics;
mod raw;
mod record;
mod store;
#[cfg(test)]
mod test_store;
mod url;

pub use cache::{CacheOptions, CacheStats};
pub use crypto::{KdfParams, KeySource};
pub use error::{BoxError, Error, Result};
pub use key::{
    ClientKey, DEFAULT_USER_KEY, KeyKind, MAX_ENCODED_KEY_LEN, StorageKey, TokenKey, canonical_url,
    scope_fingerprint,
};
pub use lease::{Lease, LeaseOptions, MAX_LEASE_TTL};
pub use manager::{ManagerError, RefreshError, TokenManager};
pub use memory::MemoryStore;
pub use raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore, Scope,
    SecretBytes, Version,
};
pub use record::{AuthState, ClientRegistration, RECORD_SCHEMA, Secret, TokenRecord, Versioned};
pub use store::{Page, Query, TokenStore, Unreadable};
pub use url::{BackendKind, QueryParams, StoreUrl, is_secret_param};

/// Re-exported so backends and users name the same `async_trait`.
pub use async_trait::async_trait;
