//! The encrypted file backend of token-store: one encrypted file per record in a private
//! directory, safe to share between processes on one host, and the embedded default for
//! headless hosts.
//!
//! ```no_run
//! # async fn demo() -> token_store_core::Result<()> {
//! use token_store_core::{KeySource, Precondition, TokenKey, TokenRecord};
//! use token_store_file::FileConfig;
//!
//! let config = FileConfig::new("/var/lib/my-agent/tokens", KeySource::KeyFile("/etc/my-agent/token.key".into()));
//! let store = token_store_file::open(config).await?;
//! let key = TokenKey::for_server("https://mcp.example.com/mcp");
//! store.put(&key, &TokenRecord::new("access"), Precondition::Any).await?;
//! # Ok(()) }
//! ```
//!
//! - [`open`] / [`open_url`] give the [`TokenStore`] handle (with the time limit layer when
//!   the config has one);
//! - [`FileStore::open`] gives the raw backend (a [`RawStore`]), for
//!   [`FileStore::rekey`] and [`FileStore::key_header`].
//!
//! # URLs
//!
//! `file://PATH`: `file:///abs/dir`, `file://relative/dir`, `file://~/dir` (percent-encoded
//! where needed), with these query parameters ([`FileConfig::from_url`]); any other, one given
//! twice, or a malformed one is an [`Error::Config`] naming it:
//!
//! | parameter | value | meaning |
//! | --- | --- | --- |
//! | `key_file` | a path (`~/` expanded) | a file of 32 raw bytes, created (0600, random) when missing |
//! | `passphrase_file` | a path (`~/` expanded) | a file holding the passphrase (surrounding whitespace dropped) |
//! | `passphrase_env` | a variable name | the environment variable holding the passphrase |
//! | `timeout_ms` | milliseconds, > 0 | per-call time limit ([`Error::Unavailable`] past it); none by default |
//!
//! At most one of the three key parameters. Key and passphrase files are read like an ssh
//! private key: not through a symbolic link, a regular file owned by this user (root
//! included) with no group or other permission bits, of bounded length; anything else is
//! refused with [`Error::PermissionDenied`] or [`Error::Config`]. Without a key parameter the
//! key is `TOKEN_STORE_PASSPHRASE`, else `TOKEN_STORE_KEY_FILE` ([`KeySource::from_env`]),
//! else opening fails with [`Error::Config`] saying how to give one. There is no unencrypted
//! mode, and no encryption layer is stacked on this store: it encrypts itself.
//!
//! # Config
//!
//! [`FileConfig::new`]`(dir, key)` and the builders [`FileConfig::with_key`],
//! [`FileConfig::with_timeout`] and [`FileConfig::with_kdf_params`] build by hand what a URL
//! says; `FileStore::open(&FileConfig::new(dir, key))` opens the raw store.
//!
//! # Layout
//!
//! ```text
//! DIR/                    0700 (see Modes and ownership below)
//!   .lock                 0600, empty: the cross-process lock (flock), never replaced
//!   store.json            0600: format, key derivation, current record directory
//!   d-<32 hex>/           0700: the records under the current key
//!     <64 hex>            0600: one record; the name is HMAC-SHA-256(name key, encoded key)
//!     .tmp-<16 hex>       a write in flight (or left by a crash; removed at the next open)
//! ```
//!
//! A put or get touches one file whose name is computed from the key, so its cost does not
//! grow with the number of records; only `scan` (listing) reads every file. File names are
//! keyed hashes, so the directory does not reveal server URLs or user ids.
//!
//! `store.json` holds `{"magic": "token-store-file", "format": 1, "records": "d-...",
//! "key": KeyHeader}`, where the core [`KeyHeader`] records the KDF (`argon2id` or `raw`),
//! the Argon2id parameters and salt, and a key check value (so a wrong key is
//! [`Error::WrongKey`] at open, not garbage later). Nothing in it is secret.
//!
//! # Record file format (version 1)
//!
//! ```text
//! offset  size  content
//! 0       3     "TSF"                       file magic
//! 3       1     0x01                        file format version
//! 4       4     "TSE\x01"                   sealed-value magic (core Cipher)
//! 8       24    XChaCha20-Poly1305 nonce    random per write
//! 32      n+16  ciphertext and tag
//! ```
//!
//! The associated data is the first 4 bytes (`"TSF\x01"`) followed by the file's own name
//! (64 ASCII hex digits), after the store id of the core [`Cipher`] for stores whose key
//! header has one (format 2, every store created now). A file moved or copied to another
//! name (another key) or from another store sharing the key file, or with a changed format
//! byte, fails authentication: [`Error::Integrity`]. The plaintext (format 1)
//! is, with lengths as little-endian `u32`:
//!
//! ```text
//! u8 record format (1) | len, encoded StorageKey | len, version | u64 LE expiry (Unix ms, 0 = none) | len, value
//! ```
//!
//! After decrypting, the embedded key must equal the key asked for (and, when listing, hash
//! to the file name). A newer format byte is reported as [`Error::Corrupt`] naming it, so
//! the format can evolve without misreading.
//!
//! Encryption is the core [`Cipher`]: a 32-byte master key from a key file or from a
//! passphrase through Argon2id (derived once per open, on a blocking thread, kept zeroized),
//! with HMAC-SHA-256 subkeys for XChaCha20-Poly1305 and for the file names.
//!
//! # Guarantees
//!
//! - **Atomic, durable writes.** A record is written to a new temporary file, fsynced,
//!   renamed over the old one and the directory fsynced. A crash leaves the old or the new
//!   record, never a mix, and a put that returned survives power loss.
//! - **Compare-and-swap across processes** (`cas: Scope::Host`). Conditional writes and
//!   deletes run under an exclusive `flock` on `DIR/.lock` plus an in-process mutex (flock
//!   does not exclude the same open file), around read-check-write, so
//!   `IfVersion`/`IfAbsent` are atomic against every process sharing the directory. Reads
//!   take no lock: a rename is atomic.
//! - **Versions** are random 128-bit write ids kept inside the encrypted record, so deleting
//!   and re-creating a key never repeats a version.
//! - **TTL.** The expiry is inside the record; an expired record is absent for reads and
//!   preconditions, and `scan` removes expired files (under the lock).
//! - **Damaged files stay local.** A truncated, empty, bit-flipped, moved or foreign file
//!   gives [`Error::Corrupt`] or [`Error::Integrity`] for its key only; `scan` reports it as
//!   [`ListEntry::Unreadable`] (by file name, with a warning in the log) and lists the rest.
//!   An unconditional put or delete of that key replaces or removes it; conditional ones
//!   fail until then.
//! - **Nothing is followed, nothing blocks.** Every file is opened relative to the open store
//!   directory (`openat`), with `O_NOFOLLOW`, and read only after `fstat` says it is a regular
//!   file of bounded length; record files are also opened `O_NONBLOCK`. So a symbolic link,
//!   a FIFO, a socket or a device planted under a record's name is [`Error::Corrupt`] for
//!   that key (and an unreadable entry of a listing): it can neither hang a `get` or a
//!   `list` nor make the store read, create or lock a file elsewhere (as root too). A
//!   symbolic link as `.lock` is [`Error::PermissionDenied`], as `store.json` a corrupt store.
//! - **Modes and ownership.** Directories are created 0700 and files 0600 from the start (no
//!   window with wider permissions). The store directory (and each record directory) is
//!   refused when it is a symbolic link, belongs to another user (root included: root
//!   keeping tokens in another user's directory is exactly what to refuse) or others can
//!   write to it. One that others can only read or enter (0755, 0750: what `mkdir` makes
//!   under a usual umask) is narrowed to 0700, with a warning, when it holds nothing but
//!   the store (a fresh directory, or a store whose mode was loosened): it is ours, every
//!   file in it is 0600 already, so narrowing breaks nothing and keeps the number, sizes and
//!   times of records private, where refusing would only make users run the `chmod`
//!   themselves. When it holds anything else (say the home directory, given by mistake) it
//!   is refused instead: narrowing would change more than the store.
//! - **Re-keying** ([`FileStore::rekey`]) writes every record re-encrypted into a new
//!   `d-...` directory, fsyncs it, then atomically replaces `store.json`, which names both
//!   the new key and the new directory: that rename is the commit. A crash before it leaves
//!   the old store intact (old key), after it the complete new one (new key); the next open
//!   deletes whichever directory is not current. Record versions are kept.
//!
//! [`Capabilities`]: shared with every process of the user on this host
//! (`shared_with: Scope::Host`), compare-and-swap across them (`cas: Scope::Host`, so
//! [`TokenManager`](token_store_core::TokenManager) and leases accept it), `ttl`,
//! `encrypted_at_rest`, `persistent`; values up to [`MAX_VALUE_SIZE`] (1 MiB).
//!
//! # Threat model
//!
//! The encryption protects tokens at rest against someone who gets the files without the
//! key: a stolen disk or laptop, a backup or snapshot, a copied home directory, another
//! (non-root) user on the host (also kept out by the 0700/0600 modes). It also detects
//! tampering and moved or swapped records. File names reveal only the number of records and
//! their sizes and times.
//!
//! It does **not** protect against:
//! - a process running as the same user (or root): it can read the key file or the
//!   passphrase variable, or attach to this process;
//! - the memory of this process, which holds the derived key and decrypted tokens while in
//!   use (buffers are zeroized when dropped, not before);
//! - a key file stored next to the data (in the same backup): keep it elsewhere, or use a
//!   passphrase from a secret manager;
//! - rollback: someone with write access to the directory can put back an older, validly
//!   encrypted copy of a record or of the whole store, or delete records;
//! - a weak passphrase: Argon2id slows guessing, it does not make guessing impossible.
//!
//! # Tuning
//!
//! - **Argon2id**: new passphrase stores use [`KdfParams::DEFAULT`] (m = 64 MiB, t = 3,
//!   p = 1), recorded in `store.json`; [`FileConfig::with_kdf_params`] takes others but
//!   opening refuses anything below [`KdfParams::MINIMUM`] (m = 19 MiB, t = 2) or above
//!   [`KdfParams::MAXIMUM`]. The cost is paid once per open (not per operation), so prefer
//!   long-lived handles. A key file skips Argon2id. Raising the parameters of an existing
//!   store is a re-key with a passphrase.
//! - **Time limit**: none by default. A local file operation ends on its own (no network,
//!   nothing blocks on a planted FIFO); `timeout_ms` / [`FileConfig::with_timeout`] adds the
//!   core `Timeout` layer for slow network file systems. A call cut off by it may still
//!   complete (the blocking work is not interrupted, and keeps the lock until it ends).
//! - **fsync**: each put or delete costs two fsyncs (the file and the directory), from well
//!   under a millisecond on NVMe to tens of milliseconds on network or rotating disks; that,
//!   not the encryption, bounds the write rate. Reads cost no fsync and no lock.
//! - **Listing** decrypts every record: fine for thousands of records, not for millions.
//!   Opening lists the record directory once (to remove temporary files a crash left).
//! - **Threads**: a read (one small file, usually from the page cache) runs on the calling
//!   task's thread, because handing it to a blocking thread and back costs more than the
//!   read; writes, deletes, listing and re-keying run on tokio's blocking pool (they fsync
//!   or read every record).
//! - **Re-key detection**: every operation checks, after reading, that `store.json` still
//!   names this handle's record directory, so a handle left behind by a re-key in another
//!   process fails with [`Error::WrongKey`] instead of reading old data. The check is one
//!   `stat`: the header is read and parsed again only when its inode, size or times changed
//!   (a re-key replaces it by rename, so the inode always changes; the handle keeps the file
//!   it read open, so its inode number cannot be reused meanwhile). A removed header is
//!   [`Error::Corrupt`].

mod config;
mod dir;
mod format;
mod header;
mod lock;
mod raw;
mod records;
mod rekey;
mod store;

use token_store_core::layers::{self, CommonOptions};
#[cfg(doc)]
use token_store_core::{
    Capabilities, Error, KdfParams, KeySource, ListEntry, RawStore,
    backend::{Cipher, KeyHeader},
};
use token_store_core::{Result, StoreUrl, TokenStore};

pub use config::FileConfig;
pub use store::FileStore;

/// The backend name in errors and logs.
pub const BACKEND: &str = "file";

/// The largest value a record holds: 1 MiB.
pub const MAX_VALUE_SIZE: usize = 1024 * 1024;

/// Opens the store `config` describes and returns its handle: [`FileStore::open`], under the
/// time limit layer when the config has a timeout (no encryption layer: the store encrypts
/// itself with the config's key).
pub async fn open(config: FileConfig) -> Result<TokenStore> {
    let store = FileStore::open(&config).await?;
    // The key was the store's own: the shared layers get only the time limit.
    let mut outer = CommonOptions::new();
    if let Some(limit) = config.common.timeout {
        outer = outer.with_timeout(limit);
    }
    layers::assemble(store, &outer, &config.name()).await
}

/// Opens the store a `file://` URL names (see [the crate docs](crate#urls)).
pub async fn open_url(url: &StoreUrl) -> Result<TokenStore> {
    open(FileConfig::from_url(url)?).await
}
