//! The Redis backend of token-store: standalone Redis, Redis Cluster and Sentinel, over TCP or
//! TLS (custom CA, mutual TLS), sharing its data layout with the Python `mcp-agent`
//! `RedisTokenStore`.
//!
//! # Layout (compatible with mcp-agent)
//!
//! Every record is one Redis string key:
//!
//! ```text
//! <prefix>:<StorageKey::encode()>
//! mcp_agent:oauth_tokens:mcp-agent%3Apreconfigured-tokens:https%3A%2F%2Fapi.example.com%2Fmcp:https%3A%2F%2Fauth.example.com:read%20write
//! ```
//!
//! The default prefix is `mcp_agent:oauth_tokens` (mcp-agent's). A token key's four parts
//! (user, resource, authorization server, scope fingerprint) are each percent-encoded as
//! Python's `quote(part, safe="")` does and joined with `:`, exactly as mcp-agent builds them.
//! Other records (client registrations, PKCE states, leases, metadata) get a `#kind` marker
//! segment (`<prefix>:#client:...`) that mcp-agent can never produce or parse as a token key.
//!
//! The value is the record's JSON as the typed layer wrote it, with no envelope, so mcp-agent
//! reads our tokens and we read its (fields we do not know survive a read-modify-write).
//! No hash tags are added on a cluster either: the keys stay mcp-agent's.
//!
//! With client-side encryption (`?key_file=PATH` or `?passphrase_env=VAR`, the core
//! [`Encrypted`] layer) values are ciphertext and
//! **mcp-agent compatibility is off**: keys keep the layout, but mcp-agent cannot read the
//! values, and a plaintext record written by mcp-agent reads as an integrity error.
//!
//! # URLs
//!
//! | URL | meaning |
//! | --- | --- |
//! | `redis://[user:pass@]host[:port][/db]` | one server |
//! | `rediss://host:port/?ca=/ca.pem[&cert=/c.pem&key=/k.pem]` | TLS, private CA, mutual TLS |
//! | `redis+cluster://[user:pass@]host:port,host:port[,...]` (`rediss+cluster://`) | Redis Cluster seed nodes |
//! | `redis+sentinel://host:port,host:port/master-name[/db]` (`rediss+sentinel://`) | the master Sentinel names, followed across failovers |
//!
//! Parameters: `prefix=` (default `mcp_agent:oauth_tokens`), `ca=`/`cert=`/`key=` (PEM files),
//! `timeout_ms=` (whole call, default 5000), `connect_timeout_ms=`/`response_timeout_ms=`
//! (default 2000), `key_file=`/`passphrase_env=` (encryption). [`RedisConfig::cluster`] takes a
//! list of seed node URLs directly.
//!
//! TLS uses rustls. This crate does not choose a rustls crypto provider: an application that
//! links both `ring` and `aws-lc-rs` must install one
//! (`rustls::crypto::aws_lc_rs::default_provider().install_default()`) before opening a
//! `rediss://` store.
//!
//! # Capabilities and guarantees
//!
//! - **Compare-and-swap** (`atomic_cas`): a conditional put or delete is one Lua script
//!   (loaded once, run with `EVALSHA`) that reads the key, checks the precondition and writes,
//!   atomically on the server. A record's [`Version`](token_store_core::Version) is the hex
//!   SHA-1 of the stored bytes, computed by the script (`redis.sha1hex`) and by us on reads, so
//!   records written by mcp-agent or `redis-cli` take part in CAS like ours. Caveat (ABA):
//!   the same bytes give the same version, so a writer holding an old version can overwrite a
//!   record that was changed and then changed back to identical bytes. Token records carry
//!   `obtained_at`, so two writes of a token practically never produce the same bytes.
//! - **TTL**: a record's TTL becomes the key's expiry, set in the same atomic step as the value
//!   (`SET ... PX`). A record without a TTL never expires (as with mcp-agent); an
//!   unconditional write without TTL clears an earlier expiry. A read is one plain `GET`,
//!   so [`RawRecord::expires_at`](token_store_core::RawRecord) is `None` on Redis: Redis
//!   enforces the expiry itself, and asking for it costs a second command per read.
//! - **Listing** uses `SCAN ... MATCH <prefix>:*` (never `KEYS`), on every master of a
//!   cluster. Keys under the prefix that are not ours or mcp-agent's are skipped; a key
//!   carrying one of our `#kind` markers that does not decode is reported as unreadable.
//!   A listing is not a snapshot: keys written or deleted during it may or may not appear, and
//!   during a cluster resharding or failover a listing may miss keys (retry it).
//! - **Persistence** (`persistent`) is what the Redis server is configured for: with neither
//!   RDB nor AOF a restart loses everything; with `appendfsync always` an acknowledged write
//!   survives a crash of the server.
//! - **Largest value**: 1 MiB by default ([`RedisConfig::max_value_size`]). Redis itself
//!   accepts 512 MB strings, but tokens are a few KB and big values only slow Redis down.
//!
//! ## Cluster
//!
//! Each script touches one key, so it runs on the master that owns the key's slot; CAS there
//! is as atomic as on one server. MOVED/ASK redirects and slot map changes are handled by the
//! cluster client, which retries.
//!
//! ## Failover and replication (cluster and Sentinel)
//!
//! Redis replicates asynchronously. A write acknowledged by a master that dies before its
//! replica received it is **lost** when the replica is promoted, and a CAS that succeeded on the
//! old master may be invisible to the new one (a later CAS against the lost version then
//! conflicts, which is safe; a lost record may also reappear in its previous version). A token
//! store tolerates this (a lost refresh means a new login or refresh), but do not rely on a
//! token write surviving a master crash unless replicas are forced to acknowledge (`WAIT`,
//! `min-replicas-to-write`). After a failover the client reaches the new master on its own:
//! the cluster client through its slot refresh, the Sentinel mode by asking the sentinels again
//! when the old master is gone or read-only. Calls during the switch fail with `Unavailable`.
//!
//! # Faults
//!
//! Every call is bounded by `operation_timeout` (default 5 s): a stopped or unreachable Redis
//! gives [`Error::Unavailable`], never a hang. The
//! connection reconnects by itself, so the same store object works again once Redis is back.
//! A call that failed with `Unavailable` may or may not have been applied (the server can apply
//! a write whose reply was lost); retry conditional writes by re-reading first.
//!
//! # Threat model
//!
//! Keys are not secret (they name users and servers). Values are tokens in plaintext unless the
//! encryption layer is used: protect Redis with TLS, ACLs (`user:pass@`) and network rules.
//! Errors and `Debug` output name keys and hosts, never values or passwords.
#![warn(missing_docs)]

mod config;
mod conn;
mod errors;
mod layered;
mod scan;
mod scripts;
mod store;
mod tls;

use token_store_core::{Result, StoreUrl, TokenStore};

pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_VALUE_SIZE, DEFAULT_PREFIX, DEFAULT_TIMEOUT, RedisConfig,
    TlsFiles, Topology,
};
pub use store::RedisStore;

/// Opens the store `config` describes, under the layers it asks for: the per-call time limit
/// (`common.timeout`, [`DEFAULT_TIMEOUT`] by default) and the encryption layer when
/// `common.key` is set.
pub async fn open(config: RedisConfig) -> Result<TokenStore> {
    let store = RedisStore::open(&config).await?;
    layered::assemble(store, &config.common, config.name()).await
}

/// Opens the store a `redis://`, `rediss://`, `redis+cluster://` or `redis+sentinel://` URL
/// names (the grammar is in the crate docs): `open(RedisConfig::from_url(url)?)`.
pub async fn open_url(url: &StoreUrl) -> Result<TokenStore> {
    open(RedisConfig::from_url(url)?).await
}
