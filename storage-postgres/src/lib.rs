//! The PostgreSQL backend of token-store: one table in the database a team already runs,
//! shared by every process on every host that reaches it, with compare-and-swap in single
//! statements, server-clock TTLs, TLS through rustls and a connection pool.
//!
//! ```no_run
//! # async fn demo() -> token_store_core::Result<()> {
//! use token_store_core::{Precondition, StoreUrl, TokenKey, TokenRecord};
//!
//! let url = StoreUrl::parse(
//!     "postgres://mcp@db.internal/tokens?password_file=/run/secrets/pg&sslmode=verify-full",
//! )?;
//! let store = token_store_postgres::open_url(&url).await?;
//! let key = TokenKey::for_server("https://mcp.example.com/mcp");
//! store.put(&key, &TokenRecord::new("access"), Precondition::Any).await?;
//! # Ok(()) }
//! ```
//!
//! # URLs
//!
//! [`open_url`] (what `token_store::open` calls) takes
//! `postgres://USER[:PASSWORD]@HOST[:PORT][,HOST[:PORT]...][/DATABASE][?PARAMETERS]`
//! (`postgresql://` alike). Hosts are tried in order; `[v6]:port` for IPv6; a percent-encoded
//! absolute path (`%2Fvar%2Frun%2Fpostgresql`) is a Unix-socket directory. The user is
//! required; the database defaults to the user's name, the port to 5432. `/`, `?` and `@`
//! in a user name or password must be percent-encoded (`%2F`, `%3F`, `%40`); a URL where
//! they are not is refused without being quoted.
//!
//! | parameter | meaning | default |
//! | --- | --- | --- |
//! | `schema=S` | schema of the tables, created if missing | `public` |
//! | `table=T` | table of records; `T_meta` holds the schema version | `token_store` |
//! | `password_env=VAR` | the password is in `$VAR` (read at open) | password from the URL, or none |
//! | `password_file=PATH` | the password is in a private file (0600, ours, not a link; read at open) | |
//! | `sslmode=` | `disable`, `prefer`, `require`, `verify-ca`, `verify-full` (as libpq; see [`SslMode`]) | `prefer` |
//! | `sslrootcert=PATH` | CA certificates (PEM); `system` for the system trust store | system trust store |
//! | `sslcert=PATH&sslkey=PATH` | client certificate and its key (PEM; the key a private file) | none |
//! | `target_session_attrs=` | `any` or `read-write` (with several hosts: the primary) | `read-write` |
//! | `application_name=N` | shown in `pg_stat_activity` | `token-store` |
//! | `connect_timeout_ms=N` | connecting to one host (TCP, TLS, login) | 2000 |
//! | `statement_timeout_ms=N` | server-side `statement_timeout` of every connection | 4000 |
//! | `pool_size=N` | connections kept at most | 8 |
//! | `pool_timeout_ms=N` | wait for a free connection of a full pool | 4000 |
//! | `max_value_size=N` | largest value, bytes | 1048576 |
//! | `sweep_interval_ms=N` | how often (at most) writes also delete expired rows | 60000 |
//! | `timeout_ms=N` | per call, the core `Timeout` layer | 5000 |
//! | `key_file=PATH`, `passphrase_file=PATH`, `passphrase_env=VAR` | values sealed by the core `Encrypted` layer before they leave the process | none |
//!
//! Unknown, duplicated and malformed parameters are an
//! [`Error::Config`](token_store_core::Error::Config) naming them, so a mistyped `key_file`
//! cannot silently store tokens in clear. Passwords never appear in `Debug`, `Display`,
//! errors or logs ([`PostgresConfig`]'s formatting, core's `StoreUrl::redacted`); values never
//! appear in errors or logs either (tokio-postgres logs statement parameters at the debug
//! level: values are bound through a wrapper that shows only their length). `PGPASSWORD` is
//! not read implicitly: `password_env=PGPASSWORD` says so.
//!
//! # Config builder
//!
//! [`PostgresConfig::new`]`(user)` and its `with_*` methods build the same configuration in
//! code; [`PostgresStore::open`] opens the raw backend and [`open`] the handle with the
//! shared layers:
//!
//! ```no_run
//! # async fn demo() -> token_store_core::Result<()> {
//! use token_store_postgres::{PostgresConfig, SslMode};
//! let store = token_store_postgres::open(
//!     PostgresConfig::new("mcp")
//!         .with_host("db-a.internal", 5432)
//!         .with_host("db-b.internal", 5432)
//!         .with_dbname("tokens")
//!         .with_password_env("PGPASSWORD")
//!         .with_ssl_mode(SslMode::VerifyFull),
//! )
//! .await?;
//! assert!(store.capabilities().cas_covers_sharing());
//! # Ok(()) }
//! ```
//!
//! # Schema
//!
//! Created by [`PostgresStore::open`] in one transaction under an advisory lock (concurrent
//! openers migrate once), schema version 2 ([`SCHEMA_VERSION`]):
//!
//! ```sql
//! CREATE TABLE t_meta (id integer PRIMARY KEY CHECK (id = 1), application text NOT NULL,
//!                      schema_version integer NOT NULL, created_at timestamptz, migrated_at timestamptz);
//! CREATE TABLE t (
//!     kind text NOT NULL,            -- 'token', 'client', 'state', 'lease', 'meta'
//!     id bytea NOT NULL,             -- SHA-256 of the key's canonical encoding
//!     p1 text NOT NULL, p2 text NOT NULL, p3 text NOT NULL, p4 text NOT NULL,
//!                                    -- the key's parts, raw; unused parts are ''
//!     value bytea NOT NULL,          -- the record's bytes (JSON, or sealed by Encrypted)
//!     version bigint NOT NULL,       -- random, positive (63 bits)
//!     expires_at timestamptz,        -- NULL: no TTL
//!     updated_at timestamptz NOT NULL,
//!     PRIMARY KEY (kind, id)
//! ) WITH (fillfactor = 80);
//! CREATE INDEX t_user_idx ON t (left(p1, 200), kind, id);  -- list by user (never a key lookup's)
//! CREATE INDEX t_resource_idx ON t (left(p2, 200), id) WHERE kind = 'token';       -- list by resource
//! CREATE INDEX t_expiry_idx ON t (expires_at) WHERE expires_at IS NOT NULL;  -- the sweep
//! ```
//!
//! Version 1 had `t_user_idx` on `(kind, left(p1, 200), id)`: a statement planned while the
//! table was small could look a key up through it, scanning every row of the kind; version 2
//! reorders it (the migration runs when a newer store opens the table).
//!
//! For tokens `p1..p4` are `user_key`, `resource`, `authorization_server` (`''` for none)
//! and `scope_fingerprint`; for clients `p1, p2` are the issuer and the application; the other
//! kinds use `p1` (as in the SQLite backend). The key is `(kind, id)` with `id` a digest
//! rather than the parts because a B-tree entry holds at most ~2.7 KB and a key may be
//! 16 KiB; the user and resource indexes hold the first 200 characters of the part for the
//! same reason (the query checks the whole part too; `md5` would do, but is refused by
//! servers in FIPS mode). Listing by id also lets every row's id be checked
//! against its key: a row another writer put there with a wrong id is reported unreadable.
//!
//! `t_meta` marks the table as token-store's: a table of that name without it (another
//! application's), metadata naming another application, columns that differ from the ones
//! above, and a newer schema version are all refused with a clear
//! [`Error::Config`](token_store_core::Error::Config) before anything is written. The role
//! needs `CREATE` on the schema for the first open (or the tables created by an
//! administrator beforehand), then `SELECT, INSERT, UPDATE, DELETE` on both tables.
//!
//! # Guarantees
//!
//! Capabilities: shared with [`Scope::Hosts`](token_store_core::Scope::Hosts),
//! compare-and-swap across [`Scope::Hosts`](token_store_core::Scope::Hosts), `ttl`,
//! `persistent`, `max_value_size` 1 MiB by default (so a `TokenManager` and its refresh lease
//! work across hosts).
//!
//! - **Compare-and-swap in one statement.** Every write is one autocommit statement: an
//!   upsert for `Any`; `INSERT … ON CONFLICT DO UPDATE … WHERE` the existing row has expired
//!   for `IfAbsent` (a create, or the replacement of an expired row); `UPDATE … WHERE
//!   version = $n` and the row is live for `IfVersion`; `DELETE … WHERE version = $n` for a
//!   conditional delete. Concurrent writers serialize on the row lock and the loser matches
//!   nothing, then reads the current version for its `Conflict` (a second statement, only on
//!   conflicts).
//! - **No ABA.** Every write gives the record a new random 63-bit version (OS random number
//!   generator, never the version it replaces), so a record deleted and created again gets
//!   an old version back only by a 2⁻⁶³ chance, and a stale CAS fails.
//! - **TTL by the server's clock.** `expires_at` is `now() + ttl` on the server and every
//!   read, write precondition and listing treats an expired row as absent, so hosts with
//!   skewed clocks agree. Expired rows are deleted in the background at most every
//!   [`PostgresConfig::sweep_interval`] per store (batches of 1000, on the expiry index).
//! - **Durability** is the server's: a write that returned was committed (with the server's
//!   default `synchronous_commit=on` it is in the WAL on disk, and a killed server replays
//!   it; tested by killing the server with SIGKILL under writing clients).
//! - **Failures are typed and bounded.** A stopped or restarted server, a killed connection,
//!   a full pool and a statement timeout give the retryable
//!   [`Error::Unavailable`](token_store_core::Error::Unavailable), each within its limit
//!   (connect, pool, statement timeouts; the per-call `timeout_ms` above all), and the same
//!   store works again once the server does: dead connections are dropped at checkout. A
//!   call abandoned by its timeout never returns its connection to the pool: the connection
//!   is closed and a cancel request stops its statement on the server. Wrong credentials are
//!   `PermissionDenied`; an untrusted certificate, a missing database and a foreign table are
//!   `Config`.
//! - **Listings** page by keyset (`id > last ORDER BY id LIMIT 1000` on an index), never by
//!   `OFFSET`: each page costs the same, and a record present during the whole listing is
//!   listed exactly once even while others are written.
//! - **Bounded values.** Writes over `max_value_size` are `TooLarge` before anything is
//!   sent; a larger value another writer stored is `TooLarge` on read without being
//!   transferred.
//!
//! # Tuning and deployment
//!
//! - One [`PostgresStore`] per process, shared (clones share the pool). Each connection
//!   prepares each statement once (`prepare_cached`), so a call is one round trip. The pool
//!   holds up to `pool_size` connections; size it for the concurrent calls of one process,
//!   not the hosts: `max_connections` on the server must cover every process's pool.
//! - Behind PgBouncer, use session pooling: connections carry `statement_timeout` as a
//!   startup option and cache prepared statements.
//! - Every connection sets `statement_timeout` (and `idle_in_transaction_session_timeout`,
//!   twice that) from `statement_timeout_ms`, below the per-call `timeout_ms`, so the server
//!   stops working on a statement about when the caller stops waiting for it.
//!
//! # Threat model and limits
//!
//! - **Tokens are in clear in the database** (and in its backups, WAL archives and
//!   replicas) unless the `Encrypted` layer is on (`key_file` / `passphrase_file` /
//!   `passphrase_env`): then only sealed values leave the process, bound to their key, so a
//!   value moved to another row fails as `Integrity`. Anyone with `SELECT` on the table reads
//!   plaintext tokens otherwise; grant it to the token-store role only.
//! - Keys (user keys, resource URLs, issuers, scope fingerprints) are stored in clear
//!   either way: they are indexed columns. Put nothing secret in a key.
//! - `sslmode=prefer` (libpq's default, kept so a `DATABASE_URL` means what it means to
//!   `psql`) and `require` without a CA file encrypt but do not authenticate the server:
//!   anyone who can intercept the connection can read tokens and the password. Use
//!   `verify-full` wherever the network is not yours.
//! - The TLS code uses rustls with the aws-lc-rs provider handed to each connection's
//!   configuration; no process-wide provider is installed or required.

#![warn(missing_docs)]

mod config;
mod error;
mod pool;
mod read;
mod schema;
mod sql;
mod store;
mod tls;
mod write;

use token_store_core::{Result, StoreUrl, TokenStore, layers};

pub use config::{
    DEFAULT_APPLICATION_NAME, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_VALUE_SIZE, DEFAULT_POOL_SIZE,
    DEFAULT_POOL_TIMEOUT, DEFAULT_PORT, DEFAULT_SCHEMA, DEFAULT_STATEMENT_TIMEOUT,
    DEFAULT_SWEEP_INTERVAL, DEFAULT_TABLE, DEFAULT_TIMEOUT, Host, Password, PostgresConfig,
    SslMode, TargetSession,
};
pub use schema::SCHEMA_VERSION;
pub use store::PostgresStore;

/// Opens the store `config` describes, with the shared layers its `common` options ask for
/// (the `Timeout` layer, then the `Encrypted` layer), as the handle users hold.
///
/// ```no_run
/// # async fn demo() -> token_store_core::Result<()> {
/// use token_store_core::KeySource;
/// use token_store_postgres::PostgresConfig;
/// let store = token_store_postgres::open(
///     PostgresConfig::new("mcp")
///         .with_host("db.internal", 5432)
///         .with_key(KeySource::passphrase_file("/etc/mcp/token-passphrase".as_ref())?),
/// )
/// .await?;
/// assert!(store.capabilities().encrypted_at_rest);
/// # Ok(()) }
/// ```
pub async fn open(config: PostgresConfig) -> Result<TokenStore> {
    let store = PostgresStore::open(&config).await?;
    let name = config.to_string();
    layers::assemble(store, &config.common, &name).await
}

/// Opens the store a `postgres://` URL names ([`PostgresConfig::from_url`], then [`open`]):
/// what `token_store::open` calls.
pub async fn open_url(url: &StoreUrl) -> Result<TokenStore> {
    open(PostgresConfig::from_url(url)?).await
}
