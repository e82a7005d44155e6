//! The encrypted file backend of token-store: one encrypted file per record in a private
//! directory, safe to share between processes on one host, and the embedded default for
//! headless hosts.
//!
//! ```no_run
//! # async fn demo() -> token_store_core::Result<()> {
//! use token_store_core::crypto::KeySource;
//! use token_store_core::{Precondition, TokenKey, TokenRecord, TokenStore};
//! use token_store_file::FileStore;
//!
//! let store = FileStore::open("/var/lib/my-agent/tokens", KeySource::KeyFile("/etc/my-agent/token.key".into())).await?;
//! let key = TokenKey::for_server("https://mcp.example.com/mcp");
//! store.put(&key, &TokenRecord::new("access"), Precondition::Any).await?;
//! # Ok(()) }
//! ```
//!
//! # URLs
//!
//! [`open_url`] takes `file://PATH` (`file:///abs/dir`, `file://relative/dir`, `file://~/dir`)
//! and the key from, in order:
//! - `?key_file=PATH`: a file of 32 raw bytes, created (0600, random) when missing;
//! - `?passphrase_env=VAR`: a passphrase in the environment variable `VAR`;
//! - else `TOKEN_STORE_PASSPHRASE`, else `TOKEN_STORE_KEY_FILE` ([`KeySource::from_env`]);
//! - else a [`Error::Config`] saying how to give one. There is no unencrypted mode.
//!
//! # Layout
//!
//! ```text
//! DIR/                    0700; refused if another user can write it
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
//! (64 ASCII hex digits). A file moved or copied to another name (another key), or with a
//! changed format byte, fails authentication: [`Error::Integrity`]. The plaintext (format 1)
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
//! - **Atomic, durable writes.** A record is written to a temporary file, fsynced, renamed
//!   over the old one and the directory fsynced (core [`fs::write_atomic`]). A crash leaves
//!   the old or the new record, never a mix, and a put that returned survives power loss.
//! - **Compare-and-swap across processes.** Conditional writes and deletes run under an
//!   exclusive `flock` on `DIR/.lock` plus an in-process mutex (flock does not exclude the
//!   same open file), around read-check-write, so `IfVersion`/`IfAbsent` are atomic against
//!   every process sharing the directory. Reads take no lock: a rename is atomic.
//! - **Versions** are random 128-bit write ids kept inside the encrypted record, so deleting
//!   and re-creating a key never repeats a version.
//! - **TTL.** The expiry is inside the record; an expired record is absent for reads and
//!   preconditions, and `scan` removes expired files (under the lock).
//! - **Damaged files stay local.** A truncated, empty, bit-flipped, moved or foreign file
//!   gives [`Error::Corrupt`] or [`Error::Integrity`] for its key only; `scan` reports it as
//!   [`ListEntry::Unreadable`] (by file name) and lists the rest. An unconditional put or
//!   delete of that key replaces or removes it; conditional ones fail until then.
//! - **Modes.** Directories are created 0700 and files 0600 from the start (no window with
//!   wider permissions), and a directory other users can write is refused.
//! - **Re-keying** ([`FileStore::rekey`]) writes every record re-encrypted into a new
//!   `d-...` directory, fsyncs it, then atomically replaces `store.json`, which names both
//!   the new key and the new directory: that rename is the commit. A crash before it leaves
//!   the old store intact (old key), after it the complete new one (new key); the next open
//!   deletes whichever directory is not current. Record versions are kept.
//!
//! Capabilities: `atomic_cas`, `ttl`, `encrypted_at_rest`, `shared_across_processes`,
//! `persistent`; values up to 1 MiB.
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
//!   p = 1), recorded in `store.json`; [`FileStore::open_with_params`] takes others but
//!   refuses anything below [`KdfParams::MINIMUM`] (m = 19 MiB, t = 2). The cost is paid once
//!   per open (not per operation), so prefer long-lived handles. A key file skips Argon2id.
//!   Raising the parameters of an existing store is a re-key with a passphrase. Tests can
//!   enable the `insecure-test-kdf` feature for `FileStore::open_insecure_for_tests`, which
//!   accepts any parameters; it adds that constructor and changes nothing else.
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
#![warn(missing_docs)]

mod format;
mod store;

use std::sync::Arc;

use token_store_core::crypto::KeySource;
#[cfg(doc)]
use token_store_core::crypto::{Cipher, KdfParams, KeyHeader};
use token_store_core::{BackendKind, Error, RawStore, Result, StoreUrl};
#[cfg(doc)]
use token_store_core::{ListEntry, fs};

pub use store::FileStore;

/// The backend name in errors and logs.
pub const BACKEND: &str = "file";

const KEY_HELP: &str = "add ?key_file=PATH (32 raw bytes, created when missing) or \
?passphrase_env=VAR to the URL, or set TOKEN_STORE_PASSPHRASE or TOKEN_STORE_KEY_FILE";

/// Opens the store a `file://` URL names (see [the crate docs](crate#urls)).
pub async fn open_url(url: &StoreUrl) -> Result<Arc<dyn RawStore>> {
    Ok(Arc::new(open_file_url(url).await?))
}

/// Like [`open_url`], returning the concrete [`FileStore`] (for [`FileStore::rekey`]).
pub async fn open_file_url(url: &StoreUrl) -> Result<FileStore> {
    if url.kind() != BackendKind::File {
        return Err(Error::config(format!(
            "the file backend opens file:// URLs, not {}",
            url.scheme()
        )));
    }
    let dir = url.path()?;
    if let Some((unknown, _)) = url
        .query()
        .into_iter()
        .find(|(k, _)| k != "key_file" && k != "passphrase_env")
    {
        return Err(Error::config(format!(
            "unknown file:// parameter `{unknown}`: use key_file or passphrase_env"
        )));
    }
    let key = key_source(url)?;
    FileStore::open(dir, key).await
}

fn key_source(url: &StoreUrl) -> Result<KeySource> {
    // The file store is always encrypted: without a key in the URL, the environment's.
    match url.key_source()? {
        Some(key) => Ok(key),
        None => KeySource::from_env().ok_or_else(|| {
            Error::config(format!(
                "the encrypted file store {} needs a key: {KEY_HELP}",
                url.redacted()
            ))
        }),
    }
}
