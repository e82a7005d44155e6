//! The Redis backend of token-store: standalone Redis, Redis Cluster and Sentinel, over TCP or
//! TLS (custom CA, mutual TLS), sharing its data layout with the Python `mcp-agent`
//! `RedisTokenStore`.
//!
//! ```no_run
//! # async fn demo() -> token_store_core::Result<()> {
//! use token_store_core::{Precondition, StoreUrl, TokenKey, TokenRecord};
//!
//! let store = token_store_redis::open_url(&StoreUrl::parse("redis://127.0.0.1:6379/0")?).await?;
//! let key = TokenKey::for_server("https://mcp.example.com/mcp");
//! store.put(&key, &TokenRecord::new("access"), Precondition::Any).await?;
//! assert!(store.get(&key).await?.is_some());
//! # Ok(()) }
//! ```
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
//! With client-side encryption (`key_file=`, `passphrase_file=` or `passphrase_env=`: the core
//! `Encrypted` layer) values are ciphertext and **mcp-agent compatibility is off**: keys keep
//! the layout, but mcp-agent cannot read the values, and a plaintext record written by
//! mcp-agent reads as an integrity error. Opening an encrypted prefix without its key, or a
//! prefix holding plaintext records with a key, is refused with `Error::Config`.
//!
//! # URLs
//!
//! [`open_url`] (what `token_store::open` calls) takes
//!
//! | URL | store |
//! | --- | --- |
//! | `redis://[user:pass@]host[:port][/db]` | one server |
//! | `rediss://[user:pass@]host[:port][/db]` | one server over TLS (system roots unless `ca=`) |
//! | `redis+cluster://[user:pass@]host:port,host:port[,...]` (`rediss+cluster://`) | Redis Cluster, through these seed nodes |
//! | `redis+sentinel://[user:pass@]host:port,host:port/master-name[/db]` (`rediss+sentinel://`) | the master the sentinels name, followed across failovers; the user and password are the master's |
//!
//! and these query parameters. Every parameter is read by name and type: an unknown one
//! (`key_flie=`), one given twice or a malformed value is an `Error::Config` naming it, so a
//! typo can never silently store tokens in plaintext.
//!
//! | parameter | meaning | default |
//! | --- | --- | --- |
//! | `prefix=P` | key prefix (trailing `:` dropped, as mcp-agent does) | `mcp_agent:oauth_tokens` |
//! | `timeout_ms=N` | time limit of a whole call, reconnects included (the core `Timeout` layer); also caps the two below | 5000 |
//! | `connect_timeout_ms=N` | one TCP/TLS connect attempt | 2000 |
//! | `response_timeout_ms=N` | one server response | 2000 |
//! | `max_value_size=N` | largest value written or read, in bytes | 1048576 |
//! | `ca=PATH` | PEM CA bundle to trust instead of the system roots (`rediss` only) | |
//! | `cert=PATH`, `key=PATH` | PEM client certificate and key, for mutual TLS (`rediss` only) | |
//! | `key_file=PATH` | encrypt values; 32-byte key file, created 0600 if missing | |
//! | `passphrase_file=PATH` | encrypt values; key derived (Argon2id) from the passphrase in a 0600 file | |
//! | `passphrase_env=VAR` | encrypt values; key derived from the passphrase in `$VAR` | |
//!
//! `key=` is the TLS client key; the encryption key is `key_file=`.
//!
//! # Configuration in code
//!
//! [`RedisConfig`] holds the same settings: [`RedisConfig::standalone`],
//! [`RedisConfig::cluster`] (a list of seed node URLs) or [`RedisConfig::sentinel`], then
//! `with_prefix`, `with_tls` ([`TlsFiles`]), `with_timeout`, `with_connect_timeout`,
//! `with_response_timeout`, `with_max_value_size` and `with_key`. [`open`] returns the
//! `TokenStore` handle under the layers the config asks for; [`RedisStore::open`] returns the
//! raw backend alone.
//!
//! ```no_run
//! # async fn demo() -> token_store_core::Result<()> {
//! use std::time::Duration;
//! use token_store_core::KeySource;
//! use token_store_redis::{RedisConfig, TlsFiles};
//!
//! let config = RedisConfig::cluster(["rediss://:pw@10.0.0.1:7000", "rediss://:pw@10.0.0.2:7000"])
//!     .with_prefix("billing:oauth_tokens")
//!     .with_tls(TlsFiles::new().with_ca("/etc/redis/ca.pem"))
//!     .with_timeout(Duration::from_secs(2))
//!     .with_key(KeySource::KeyFile("/etc/billing/tokens.key".into()));
//! let store = token_store_redis::open(config).await?;
//! # Ok(()) }
//! ```
//!
//! # Timeouts
//!
//! One time limit bounds a whole call: the core `Timeout` layer [`open`] adds
//! (`timeout_ms`, 5 s by default); a call that takes longer fails with `Unavailable` and is
//! cancelled. It covers what the client's own limits do not: a call that waits for a
//! reconnect, or for the sentinels to name a new master. The `redis` client's connect and
//! response timeouts (2 s, never longer than the call limit) bound each attempt, so a retry
//! can happen within one call. [`RedisStore::open`] connects within the call limit too (the
//! clients retry connects); the raw [`RedisStore`] alone has only the client's limits.
//!
//! # TLS and the rustls crypto provider
//!
//! TLS uses rustls through the `redis` client, which takes no crypto provider of its own but
//! uses the process-wide default. So that `rediss://` works with no setup, opening a TLS store
//! installs rustls's default provider (aws-lc-rs) **only when the application has not
//! installed one**: an application that prefers another (ring, a FIPS build) installs it with
//! `CryptoProvider::install_default` before opening the store, and it is kept. Once a TLS
//! store is open, a later `install_default` of the application returns `Err` (rustls allows
//! one per process); ignore that error rather than unwrap it, or install first.
//!
//! # Capabilities and guarantees
//!
//! `shared_with: Hosts`, `cas: Hosts`, `ttl`, `persistent` (see below),
//! `max_value_size` 1 MiB by default, `encrypted_at_rest` under the encryption layer only.
//!
//! - **Compare-and-swap across hosts** (`cas: Hosts`): a conditional put or delete is one Lua
//!   script (loaded once, run with `EVALSHA`) that reads the key, checks the precondition and
//!   writes, atomically on the server, so it holds against every process on every host using
//!   the same Redis. A record's version is the hex SHA-1 of the stored bytes, computed by the
//!   script (`redis.sha1hex`) and by us on reads, so records written by mcp-agent or
//!   `redis-cli` take part in CAS like ours. Caveat (ABA): the same bytes give the same
//!   version, so a writer holding an old version can overwrite a record that was changed and
//!   then changed back to identical bytes. Token records carry `obtained_at`, so two writes of
//!   a token practically never produce the same bytes.
//! - **TTL**: a record's TTL becomes the key's expiry, set in the same atomic step as the value
//!   (`SET ... PX`). A record without a TTL never expires (as with mcp-agent); an
//!   unconditional write without TTL clears an earlier expiry. A read does not ask for the
//!   expiry, so `RawRecord::expires_at` is `None` on Redis: Redis enforces it itself.
//! - **Bounded reads**: a read is one `GETRANGE` of at most `max_value_size + 1` bytes, as
//!   cheap as a `GET` for a hit. A longer value at one of our keys (written by another
//!   application, or hostile) fails with `Error::TooLarge` after transferring at most that
//!   much, never the whole value. `GETRANGE` answers the same empty string for a missing key
//!   and an empty value, so a read that gets nothing takes a second round trip (a small Lua
//!   script that tells the two apart atomically): a miss costs two round trips, a hit one.
//!   The CAS scripts check the stored length (`STRLEN`, constant time) before reading the
//!   value, so a conditional put or delete over such a value fails with `TooLarge` too,
//!   without Redis copying or hashing it; an unconditional put or delete replaces or removes
//!   it.
//! - **Listing** uses `SCAN ... MATCH <prefix>:*` (never `KEYS`), on every master of a
//!   cluster. Keys under the prefix that are not ours or mcp-agent's are skipped; a key
//!   carrying one of our `#kind` markers that does not decode is reported as unreadable.
//!   A listing is not a snapshot: keys written or deleted during it may or may not appear, and
//!   during a cluster resharding or failover a listing may miss keys (retry it).
//! - **Persistence** is what the Redis server is configured for (`persistent` is reported
//!   `true`, since Redis is normally run with persistence): with neither RDB nor AOF a restart
//!   loses everything; with `appendfsync always` an acknowledged write survives a crash of the
//!   server.
//! - **Largest value**: 1 MiB by default. Redis itself accepts 512 MB strings, but tokens are
//!   a few KB and big values only slow Redis down.
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
//! A stopped, frozen or unreachable Redis gives `Error::Unavailable` within the call limit,
//! never a hang. The connection reconnects by itself, so the same store works again once Redis
//! is back. A call that failed with `Unavailable` may or may not have been applied (the server
//! can apply a write whose reply was lost); retry conditional writes by re-reading first.
//!
//! # Trust model of a shared prefix
//!
//! Everyone who can write keys under the prefix is trusted with every record under it. With
//! plaintext values (the default, as with mcp-agent) such a writer reads every user's tokens,
//! replaces them (a token of its choosing), deletes them, and can make a refresh fail. The
//! encryption layer keeps values confidential and unforgeable against writers without the
//! key, but not available: a writer can still delete records, or put back an earlier
//! ciphertext of the same record (a rollback to an older token). Redis itself grants no
//! isolation inside a database: so give each application its own prefix and its own Redis
//! user, limited to that prefix and to the commands this backend sends:
//!
//! ```text
//! ACL SETUSER billing on >PASSWORD resetkeys ~mcp_agent:oauth_tokens:* resetchannels -@all +get +getrange +strlen +exists +set +del +scan +evalsha +script|load +ping
//! ```
//!
//! and add `+cluster|slots` on a cluster, `+role` behind Sentinel (the client checks the
//! master's role), `+select` for a database other than 0. `GET`, `EXISTS` and `DEL` run
//! inside the scripts (which Redis checks against the same ACL); `STRLEN` only reports the size
//! of a too-large value. ACLs are per server: set the user on every cluster node and on the
//! Sentinel master and its replicas (a replica may be promoted), e.g. through each server's
//! ACL file. If the prefix contains `*`, `?`, `[` or `\`, escape them in the `~` pattern.
//! mcp-agent sharing the prefix needs a user with the same key pattern and the commands it
//! sends.
//!
//! This recipe is tested against the real servers (`tests/acl.rs`): a user limited by it
//! passes the whole conformance suite on one server, a cluster and behind Sentinel, loading the
//! scripts itself, and is refused (`PermissionDenied`, or `NOPERM` by hand) any read or write
//! outside its prefix, `KEYS`, `FLUSHDB` and `EVAL`. Do not grant `+@read +@write` instead: they
//! include `FLUSHALL`, `FLUSHDB` and `SWAPDB`, which take no key and so ignore the `~` pattern:
//! one application could wipe every other's tokens. Two limits remain: `SCAN` shows the names
//! of keys outside the prefix (key names are not secret here, but they name users and
//! servers), and `+select` reaches the prefix in every database (an ACL cannot limit database
//! numbers); use separate Redis servers where that matters.
//!
//! # Threat model
//!
//! Keys are not secret (they name users and servers). Values are tokens in plaintext unless the
//! encryption layer is used: protect Redis with TLS, ACLs (`user:pass@`, see above) and
//! network rules. Errors and `Debug` output name keys and hosts, never values or passwords.
#![warn(missing_docs)]

mod config;
mod conn;
mod errors;
mod scan;
mod scripts;
mod store;
mod tls;

use token_store_core::{Result, StoreUrl, TokenStore, layers};

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
    layers::assemble(store, &config.common, &config).await
}

/// Opens the store a `redis://`, `rediss://`, `redis+cluster://` or `redis+sentinel://` URL
/// names (the grammar is in the crate docs): `open(RedisConfig::from_url(url)?)`.
pub async fn open_url(url: &StoreUrl) -> Result<TokenStore> {
    open(RedisConfig::from_url(url)?).await
}
