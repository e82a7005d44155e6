//! The SQLite backend of token-store: one database file on the local disk, shared safely by
//! every process of the host that opens it.
//!
//! ```
//! # async fn demo() -> token_store_core::Result<()> {
//! use token_store_core::{Precondition, StoreUrl, TokenKey, TokenRecord};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("tokens.db");
//! // sqlite://~/.local/share/app/tokens.db, say
//! let url = StoreUrl::parse(&format!("sqlite://{}", path.display()))?;
//! let store = token_store_sqlite::open_url(&url).await?;
//! let key = TokenKey::for_server("https://mcp.example.com/mcp");
//! store.put(&key, &TokenRecord::new("access"), Precondition::Any).await?;
//! assert!(store.get(&key).await?.is_some());
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # URLs
//!
//! [`open_url`] (what `token_store::open` calls) takes `sqlite://PATH`: `sqlite:///abs/tokens.db`,
//! `sqlite://relative.db` or `sqlite://~/dir/tokens.db` (the path percent-decoded, `~/` the
//! home directory), and these query parameters. Every parameter is read by name and type: an
//! unknown one (`key_flie=`), one given twice or a malformed value is an
//! [`Error::Config`](token_store_core::Error::Config) naming it, so a typo can never silently
//! store tokens in clear.
//!
//! | parameter | meaning | default |
//! | --- | --- | --- |
//! | `key_file=PATH` | encrypt values (the core `Encrypted` layer); 32-byte key file, created 0600 if missing | |
//! | `passphrase_file=PATH` | encrypt values; key derived (Argon2id) from the passphrase in a 0600 file | |
//! | `passphrase_env=VAR` | encrypt values; key derived (Argon2id) from the passphrase in `$VAR` | |
//! | `timeout_ms=N` | time limit of a whole call (the core `Timeout` layer) | none |
//! | `busy_timeout_ms=N` | how long a call waits for another connection's lock (SQLite's busy timeout) | 5000 |
//! | `synchronous=full\|normal` | `PRAGMA synchronous` ([`Synchronous`]) | `full` |
//! | `max_value_size=N` | largest value accepted, in bytes | 1048576 |
//! | `sweep_interval_ms=N` | how often (at most) a write also deletes expired rows | 60000 |
//!
//! At most one of the three key parameters. Opening an encrypted database without a key, or
//! turning a key on over a database that already holds plaintext records, is an
//! `Error::Config`.
//!
//! # Configuration in code
//!
//! [`SqliteConfig`] holds the same settings: [`SqliteConfig::new`] (a path), then
//! `with_key`, `with_timeout`, `with_busy_timeout`, `with_synchronous`,
//! `with_max_value_size` and `with_sweep_interval`; [`SqliteConfig::from_url`] reads a URL.
//! [`open`] returns the `TokenStore` handle under the layers the config asks for (timeout,
//! then encryption); [`SqliteStore::open`] returns the raw backend alone (`config.common` is
//! not applied).
//!
//! ```no_run
//! # async fn demo() -> token_store_core::Result<()> {
//! use std::time::Duration;
//! use token_store_core::KeySource;
//! use token_store_sqlite::{SqliteConfig, Synchronous};
//!
//! let config = SqliteConfig::new("/var/lib/app/tokens.db")
//!     .with_key(KeySource::KeyFile("/etc/app/tokens.key".into()))
//!     .with_busy_timeout(Duration::from_secs(10))
//!     .with_synchronous(Synchronous::Full);
//! let store = token_store_sqlite::open(config).await?;
//! assert!(store.capabilities().encrypted_at_rest);
//! # Ok(()) }
//! ```
//!
//! # Timeouts
//!
//! There is no per-call time limit unless `timeout_ms` / [`SqliteConfig::with_timeout`] asks
//! for the core `Timeout` layer: every wait a call can make is already bounded by the busy
//! timeout (SQLite's own wait for another connection's lock, 5 s by default, after which the
//! call fails with the retryable `Error::Unavailable`), except a stalled disk. A call the
//! `Timeout` layer gives up on still runs to its end on the connection thread (a transaction
//! is never cut in half), so a timed-out write may have happened; read it back to know.
//!
//! # Schema and format
//! Migration 1 (schema version 1, kept in `PRAGMA user_version`; `PRAGMA application_id` is
//! `0x546b5374`, "TkSt"):
//!
//! ```sql
//! CREATE TABLE records (
//!     kind TEXT NOT NULL,                        -- 'token', 'client', 'state', 'lease', 'meta'
//!     p1 TEXT NOT NULL, p2 TEXT NOT NULL,        -- the key's parts, raw (not percent-encoded);
//!     p3 TEXT NOT NULL, p4 TEXT NOT NULL,        -- unused parts are ''
//!     value BLOB NOT NULL,                       -- the record's bytes (JSON, or sealed by Encrypted)
//!     version INTEGER NOT NULL,                  -- random, positive (63 bits)
//!     expires_at INTEGER,                        -- unix ms, NULL = no TTL
//!     updated_at INTEGER NOT NULL                -- unix ms
//! ) STRICT;
//! CREATE UNIQUE INDEX records_key ON records(kind, p1, p2, p3, p4);   -- get, and list by user
//! CREATE INDEX records_resource ON records(kind, p2);                 -- list by resource
//! CREATE INDEX records_expiry ON records(expires_at) WHERE expires_at IS NOT NULL;
//! CREATE TABLE version_counter (id INTEGER PRIMARY KEY CHECK (id = 1), last_version INTEGER NOT NULL) STRICT;
//! ```
//!
//! `version_counter` is no longer written: versions used to be taken from it, which made
//! every commit write a second page. It stays in the schema (no migration) so that an older
//! version of this crate sharing the file keeps working; its small counted versions and the
//! random ones cannot meet in practice.
//!
//! For tokens `p1..p4` are `user_key`, `resource`, `authorization_server` (`''` for none) and
//! `scope_fingerprint`; for clients `p1, p2` are the issuer and the application; the other
//! kinds use `p1`.
//!
//! A database with a newer `user_version` than this crate knows is refused with a clear
//! `Config` error instead of being misread; an SQLite file of another application is refused
//! before anything is written to it. Migrations run in a `BEGIN IMMEDIATE` transaction
//! together with the `user_version` bump, so concurrent openers migrate once.
//!
//! # Capabilities and guarantees
//!
//! `shared_with: Host`, `cas: Host`, `ttl`, `persistent`, `max_value_size` 1 MiB by default,
//! `encrypted_at_rest` under the `Encrypted` layer only.
//!
//! - **Compare-and-swap across processes** (`cas: Host`). Every write is one `BEGIN
//!   IMMEDIATE` transaction (the database write lock is taken up front, so no deferred
//!   transaction can fail to upgrade) that writes with a single conditional statement
//!   (`UPDATE … WHERE version = ?` for `IfVersion`, an upsert that only replaces an expired
//!   row for `IfAbsent`, `DELETE … WHERE version = ?` for a conditional delete). A failed
//!   precondition rolls back and returns `Conflict` with the current version. Every process
//!   that opens the file takes part (`shared_with: Host`), so leases and the refresh manager
//!   are safe on it.
//! - **No ABA.** Every write gives the record a new random 63-bit version (from the OS
//!   random number generator, never the version a CAS replaces), so a record deleted and
//!   created again gets an old version back only by a 2⁻⁶³ chance, and a stale CAS fails.
//! - **TTL.** `expires_at` is checked on every read and precondition (an expired row is
//!   absent), and expired rows are deleted by a write at most every
//!   [`SqliteConfig::sweep_interval`] and by a listing that meets one (if the lock is free).
//!   A listing reads the key index alone while the table holds no expired row (one probe of
//!   `records_expiry` tells), and each row's expiry only when it does.
//!   Expiry uses the wall clock of the process that reads.
//! - **Crashes** (`persistent`). WAL journaling: a process killed at any moment leaves every
//!   record at its old or its new value, and a write that returned is kept (tested with
//!   SIGKILL in a loop). With `synchronous=FULL` (the default) it is also kept across power
//!   loss.
//! - **Busy database.** A writer waits up to the busy timeout (5 s by default) for another
//!   process's write lock; only after that does it fail, with the retryable
//!   `Error::Unavailable`, never with SQLite's "database is locked".
//! - A file that is not an SQLite database gives `Error::Corrupt`, never a panic.
//!
//! # Deleted tokens leave no plaintext behind
//!
//! A delete must not leave the token readable in the files (issue 20, finding 6). SQLite
//! keeps old page images in the `-wal` file until a checkpoint, and removes the file only
//! when the last connection of the host closes cleanly; so:
//!
//! - `secure_delete` is on (checked at open): freed cells and pages are zeroed in every page
//!   image written, so the newest image of a page holds no deleted value.
//! - After a delete (or a sweep that removed expired rows) the connection thread **scrubs**:
//!   `PRAGMA wal_checkpoint(TRUNCATE)` copies the newest page images into the main file and
//!   truncates the `-wal` to zero bytes, so the older images that held the value are gone
//!   from both files. It runs once the thread has been idle for 5 ms (a burst of deletes is
//!   scrubbed once) but at most once a second, and at the latest a second after the delete
//!   however busy the thread is: 5 ms after a delete when the last scrub is older than a
//!   second, within a second in any case (unless another process keeps the WAL busy).
//! - Dropping the store (its last clone) waits until the connection thread has run what was
//!   queued, scrubbed once more and closed the connection (bounded by the busy timeout plus
//!   2 s; normally milliseconds). A process that drops its store and exits at once leaves
//!   nothing behind (a test exits a child process right after the delete).
//! - Opening a database scrubs before `open` returns, so what a killed process left goes at
//!   the next open.
//!
//! Why not inside the delete: a TRUNCATE checkpoint costs milliseconds (it syncs the main
//! file; medians of 1–3 ms on the development machine, where a delete takes about 0.3 ms
//! with `synchronous=FULL` and 0.04 ms with `NORMAL`), so deletes would be 3 to 70 times
//! slower. Deletes keep their latency. Why the one-second spacing: a scrub
//! empties the WAL file, and until it has grown back to its working size (1000 pages) every
//! commit extends the file, which makes its fsync dearer; with `synchronous=FULL` a loop of
//! puts and deletes scrubbed every 100 ms ran at about half speed, scrubbed at most once a
//! second at the speed of no scrubbing (within the noise). The first write after a scrub also
//! writes and syncs a new WAL header.
//!
//! Limits: a process that exits *without* dropping the store (`std::process::exit` with a
//! live handle, a store in a `static`) or is killed can leave a value deleted within the last
//! second in the `-wal` until the database is next opened. Another process reading the
//! database at the moment of a scrub makes it wait (it is retried with backoff, never
//! stalling calls); values *replaced* by a newer write stay in the `-wal` until the next
//! scrub, automatic checkpoint or close. File-system journals, snapshots and SSD remnants are
//! out of any program's reach: use the `Encrypted` layer where that matters.
//!
//! # Tuning
//!
//! - `busy_timeout` ([`SqliteConfig::with_busy_timeout`], `?busy_timeout_ms=`): raise it if
//!   many processes write at once on a slow disk; write transactions here last well under
//!   a millisecond plus one fsync, so 5 s is a generous default.
//! - `synchronous` ([`Synchronous`], `?synchronous=`): `FULL` (default) fsyncs the WAL at every
//!   commit. A lost token write is costly (a rotated refresh token cannot be recovered: the
//!   user must log in again), and token writes are rare, so durability wins by default.
//!   `NORMAL` is still crash-safe for the process and never corrupts, but the last commits
//!   may be lost on power loss; choose it only for write-heavy, re-creatable data.
//! - One write connection per [`SqliteStore`], owned by a dedicated thread: every write
//!   goes there, so the runtime never blocks on an fsync or a busy lock. Reads and listings
//!   run on the caller's thread on up to `min(cores, 8)` (at least 2) read-only connections,
//!   each used by one thread at a time, and go to the connection thread when all are in use.
//!   A read holds its thread for the few microseconds of an indexed lookup (longer only if
//!   the pages must come from disk, or if another process is resetting the WAL, up to the
//!   busy timeout). Handing a call to another thread and back costs 5–50 µs, more than the
//!   read itself. Clones share all of it. Open one store per process and share it.
//!
//! # Threat model and limits
//!
//! - **Tokens are in clear in the file** unless the `Encrypted` layer is on (`key_file` /
//!   `passphrase_file` / `passphrase_env`, or [`SqliteConfig::with_key`]). Protection then
//!   rests on file permissions: the directory is created 0700 (an existing one must not be
//!   group- or world-writable, and must be ours), the database file is created 0600 before
//!   SQLite opens it, so the `-wal` and `-shm` files SQLite creates next to it get 0600 too.
//!   An existing database file readable by others is refused.
//! - Keys (user keys, resource URLs, issuers, scopes) are never encrypted: they are indexed
//!   columns. Put nothing secret in a key.
//! - With the `Encrypted` layer, each value is sealed (XChaCha20-Poly1305) and bound to its
//!   key, so rows swapped between keys fail as `Integrity`; versions, expiry and keys are not
//!   authenticated (someone who can write the file can delete records or roll them back).
//! - WAL needs shared memory between processes: the database must be on a local file system,
//!   not NFS/SMB, and the directory must be writable.
//! - Anyone who can run code as the same user can read the file; this backend is no defence
//!   against that.

#![warn(missing_docs)]

mod config;
mod error;
mod file;
mod readers;
mod schema;
mod sql;
mod store;
mod thread;
mod writer;

use token_store_core::{Result, StoreUrl, TokenStore, layers};

pub use config::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_MAX_VALUE_SIZE, DEFAULT_SWEEP_INTERVAL, SqliteConfig, Synchronous,
};
pub use schema::SCHEMA_VERSION;
pub use store::SqliteStore;

/// Opens the store `config` describes, with the shared layers its `common` options ask for
/// (the `Timeout` layer, then the `Encrypted` layer), as the handle users hold.
///
/// ```no_run
/// # async fn demo() -> token_store_core::Result<()> {
/// use token_store_core::KeySource;
/// use token_store_sqlite::SqliteConfig;
/// let store = token_store_sqlite::open(
///     SqliteConfig::new("/var/lib/app/tokens.db").with_key(KeySource::passphrase_file("/etc/app/pass".as_ref())?),
/// )
/// .await?;
/// assert!(store.capabilities().encrypted_at_rest);
/// # Ok(()) }
/// ```
pub async fn open(config: SqliteConfig) -> Result<TokenStore> {
    let store = SqliteStore::open(&config).await?;
    let name = format!("sqlite://{}", config.path.display());
    layers::assemble(store, &config.common, &name).await
}

/// Opens the store a `sqlite://` URL names ([`SqliteConfig::from_url`], then [`open`]): what
/// `token_store::open` calls.
pub async fn open_url(url: &StoreUrl) -> Result<TokenStore> {
    open(SqliteConfig::from_url(url)?).await
}
