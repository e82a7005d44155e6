//! The OS keychain backend of token-store.
//!
//! | platform | URL | where records live | persistent | value limit |
//! | --- | --- | --- | --- | --- |
//! | Linux desktop | `keychain:` or `keychain:secret-service` | one Secret Service item each in the **default collection** (gnome-keyring's `login` keyring, KWallet, KeePassXC), through the async `secret-service` crate over one D-Bus connection per store, Diffie-Hellman session encryption | yes | 256 KiB |
//! | Linux headless | `keychain:keyutils` (only when asked for) | kernel `user` keys in the session keyring (also linked into the user's persistent keyring), via keyring-core | **no**: RAM only, lost on reboot | 64 KiB, chunked by 32 767 B |
//! | macOS | `keychain:` or `keychain:macos` | generic passwords in the login keychain (service = `token-store`, account = the item name), via keyring-core | yes | 64 KiB, chunked by 16 KiB |
//! | Windows | `keychain:` or `keychain:windows` | generic credentials in Credential Manager (target `<slot>.token-store`, comment = a readable label), via keyring-core | yes | 64 KiB, chunked by 2 560 B |
//!
//! # URL grammar and configuration
//!
//! [`open_url`] reads the URL into a [`KeychainConfig`] ([`KeychainConfig::from_url`]);
//! [`open`] opens a config built in code
//! (`KeychainConfig::new(Platform::SecretService).with_service("my-app")`). Unknown,
//! duplicated or malformed parameters are an [`Error::Config`] naming them.
//!
//! | parameter | meaning | default |
//! | --- | --- | --- |
//! | `service=NAME` | the service name / attribute; distinct names are distinct stores | `token-store` |
//! | `timeout_ms=N` | bound of every call, lock waits included (> 0) | 5000 |
//! | `bus=ADDRESS` | the Secret Service on another D-Bus bus than the session bus | session bus |
//! | `chunk_size=N` | keyring-core platforms: split items at N bytes (e.g. the Windows layout on keyutils) | the platform's item limit |
//! | `lock_dir=PATH` | an absolute path: where the cross-process lock files live ([Guarantees](#guarantees)) | per-user runtime dir |
//! | `key_file=PATH`, `passphrase_file=PATH`, `passphrase_env=VAR` | add token-store's own encryption layer on top of the keychain's | none |
//!
//! The per-call limit is the store's own, not core's `Timeout` layer: the host-lock waits
//! inside a call must end by the call's deadline, and keyring-core calls run on blocking
//! threads that hold the key's lock until they return, so the deadline has to be known
//! inside the store.
//!
//! # What is stored
//!
//! Each record is one keychain item holding an *envelope*: a random 128-bit version, the
//! write time, the expiry (if a TTL was given), the encoded [`StorageKey`] and the value.
//! Secret Service items also carry plaintext, searchable attributes: `service`, `kind`,
//! `key` (the encoded key), its parts (`user`, `resource`, `authorization_server`,
//! `scopes` for tokens; `authorization_server`, `application` for client registrations;
//! `name` otherwise), `expires` (ms since the epoch, only with a TTL) and
//! `xdg:schema = org.token-store.Record`, and a label such as
//! `MCP OAuth token for https://mcp.example.com/mcp`. Keys are not secret by design; no
//! token, client secret or PKCE verifier ever goes into an attribute or a label (PKCE
//! states are stored under the digest of the state value).
//!
//! On the keyring-core platforms an item is named `ts1-<digest of the key>` (keys can be
//! 16 KiB, item names cannot); values over the platform's item limit are split into chunks
//! plus a manifest, written chunks-first so a crash never leaves a half-written record.
//! These platforms cannot search by our attributes (keyutils cannot list at all), so an
//! index item `ts1-index` lists the keys. It is updated under the same host-wide lock as
//! the records (below), so processes creating keys at the same moment never drop one
//! another's entries. What the lock cannot cover: a writer that is not token-store (or one
//! using another lock directory) may still race an index update, and the record is then
//! stored but not listed until it is written again. Listing re-reads every indexed record
//! and prunes missing or expired ones.
//!
//! # Guarantees
//!
//! No keychain has compare-and-swap. Conditional writes and deletes are checked against
//! the version in the envelope under two locks per (keychain, service, key): a process-wide
//! async mutex shared by every store instance in the process, then an advisory lock file
//! (`flock`; `LockFileEx` on Windows) that every token-store process of the user on this
//! host takes. So compare-and-swap holds across the processes of this user on this host
//! that use token-store with the same lock directory (capabilities `cas = Scope::Host`,
//! `shared_with = Scope::Host`); **not** across hosts (a keychain is per host anyway),
//! and writers that are not token-store (a keychain GUI, another application, `keyctl`) are
//! not excluded. Unconditional writes and deletes, the index updates of the keyring-core
//! platforms, the sweeps of expired items that listing does and `clear` take the same locks,
//! so none of them lands in the middle of a compare-and-swap. Reads take no host lock: a
//! Secret Service item is replaced in one call (a write that changes the expiry creates the
//! new item before it deletes the old one, so a read that searched just before the create
//! and fetches the secret just after the delete reports the record absent once), and a
//! keyring-core read that finds a chunked record changing under it reads it again under the
//! lock.
//!
//! The lock files live in `$XDG_RUNTIME_DIR/token-store/locks` (Linux; without the variable,
//! `/run/user/<uid>/token-store/locks` when that exists, else
//! `<temp dir>/token-store-<uid>/locks`), `<temp dir>/token-store-<uid>/locks` on macOS
//! (the per-user `$TMPDIR`) and `%TEMP%\token-store\locks` on Windows, or in
//! [`KeychainConfig::with_lock_dir`] / `lock_dir=`. The directories token-store creates are 0700,
//! and opening a store refuses ([`Error::PermissionDenied`], naming the path) a lock
//! directory that is a symbolic link, belongs to another user or is open to other users;
//! lock files are 0600 and never followed through a symbolic link. There are at most 256 +
//! 64 of them (keys are spread over them by a hash), never deleted. A lock is waited for
//! within the call's timeout, then the call fails with [`Error::Unavailable`] ("another
//! process holds the keychain lock ..."); a holder that dies releases its locks at once
//! (the kernel drops them). TTLs are enforced on read (`ttl = true`); expired items are
//! deleted when listed.
//!
//! A call never hangs: every Secret Service call runs under `tokio::time::timeout` on an
//! async connection (cancelled for real), and keyring-core calls run on blocking threads
//! under a timeout (the thread may stay blocked, e.g. on a macOS prompt, but the caller
//! gets [`Error::Unavailable`]). token-store never asks for an unlock prompt: a locked
//! Secret Service collection, or a macOS/Windows access denial, is [`Error::Locked`].
//!
//! A Secret Service provider that dies and comes back (gnome-keyring restarted) does not
//! need a new store: while it is gone calls fail with [`Error::Unavailable`], and afterwards
//! the store opens a new session (a new connection only if the bus dropped it) and retries
//! the call that found the old session dead once — reads and listings always, writes and
//! deletes only when the failure proves nothing was changed.
//!
//! # Headless machines
//!
//! - No D-Bus session bus (SSH, containers, CI): [`probe`] fails at once saying so, and
//!   automatic selection (`token_store::auto`) moves on to another backend.
//! - A bus without a Secret Service provider: fails fast (`ServiceUnknown`).
//! - gnome-keyring started without `--unlock`: no default collection, so writes would need a
//!   prompt; this is [`Error::Locked`], within the timeout.
//! - keyutils always works in a proper session keyring, but is RAM only: records are gone
//!   after a reboot (and after the persistent keyring expires, 3 days by default), a key
//!   holds at most 32 767 bytes, and non-root users have a quota of 200 keys / 20 000 bytes
//!   in total (`/proc/sys/kernel/keys/maxkeys`, `maxbytes`). Outside a login session the
//!   default session keyring reads as empty but refuses writes ([`Error::PermissionDenied`]);
//!   run under `keyctl session -`. So [`probe`] never picks keyutils; ask for it by URL.
//!
//! # Testing
//!
//! `tests/secret_service.rs` runs the conformance suite and the model check against the
//! gnome-keyring on `DBUS_SESSION_BUS_ADDRESS` (with `TOKEN_STORE_TEST_SECRET_SERVICE=1`),
//! and starts private dbus-daemons (and gnome-keyrings) of its own for the locked, missing,
//! uninitialised and never-answering cases. `tests/keyutils.rs` needs
//! `TOKEN_STORE_TEST_KEYUTILS=1` and a fresh session keyring: the CI script wraps the run as
//! `keyctl session - cargo test -p token-store-keychain`. `tests/processes.rs` runs both
//! keychains from several processes at once (compare-and-swap increments, keys created
//! together, the concurrent model check, writers killed with SIGKILL), and
//! `tests/host_lock.rs` holds lock files from another process (killed holders, waits past
//! the timeout, the lock directory's checks). macOS and Windows are only compile-checked here (`cargo check --target aarch64-apple-darwin` /
//! `x86_64-pc-windows-gnu`); their shared chunking, index and locking code runs on Linux
//! against keyutils with `chunk_size=2560` and in unit tests.

#![warn(missing_docs)]

mod config;
mod envelope;
mod host_lock;
mod keyring;
mod lock;
#[cfg(target_os = "linux")]
mod secret_service;
mod slots;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, StorageKey, StoreUrl, TokenStore, Version, async_trait,
};

pub use config::{KeychainConfig, Platform};
#[cfg(target_os = "linux")]
pub use secret_service::{SECRET_SERVICE_MAX_VALUE, SecretServiceStore};

/// Backend name of the Secret Service store.
pub const SECRET_SERVICE: &str = "secret-service";
/// Backend name of the kernel keyutils store.
pub const KEYUTILS: &str = "keyutils";
/// Backend name of the macOS Keychain store.
pub const MACOS: &str = "macos-keychain";
/// Backend name of the Windows Credential Manager store.
pub const WINDOWS: &str = "windows-credential-manager";

/// The default service name (Secret Service attribute, keychain service, credential suffix).
pub const DEFAULT_SERVICE: &str = "token-store";

/// The largest value the keyring-core platforms take (after chunking).
pub const KEYRING_MAX_VALUE: usize = 64 * 1024;

/// Windows Credential Manager's blob limit (`CRED_MAX_CREDENTIAL_BLOB_SIZE`).
pub const WINDOWS_ITEM_LIMIT: usize = 2560;
/// The kernel's limit on a `user` key's payload.
pub const KEYUTILS_ITEM_LIMIT: usize = 32_767;

/// The backend name of `platform`.
fn backend_name(platform: Platform) -> &'static str {
    match platform {
        Platform::SecretService => SECRET_SERVICE,
        Platform::Keyutils => KEYUTILS,
        Platform::MacOs => MACOS,
        Platform::Windows => WINDOWS,
    }
}

/// One key's host-wide lock, taken and released through the stores' own code: for tests
/// that hold it from another process, benchmarks that time it, and finding a stuck holder
/// (`fuser` its [`path`](Self::path)). Not a stable API.
#[doc(hidden)]
#[derive(Debug)]
pub struct KeyLock {
    locks: host_lock::HostLocks,
    key: String,
    timeout: Duration,
}

/// A held [`KeyLock`], released when dropped.
#[doc(hidden)]
#[derive(Debug)]
pub struct KeyLockGuard {
    _guard: host_lock::HostGuard,
}

impl KeyLock {
    /// The lock of `key` in the keychain of `platform` with `config` (creating and checking
    /// the lock directory, as opening a store does).
    pub fn new(platform: Platform, config: &KeychainConfig, key: &StorageKey) -> Result<Self> {
        Ok(KeyLock {
            locks: host_lock::HostLocks::open(
                backend_name(platform),
                &config.service,
                config.lock_dir.as_deref(),
            )?,
            key: key.encode(),
            timeout: config.timeout,
        })
    }

    /// The lock file.
    pub fn path(&self) -> PathBuf {
        self.locks.key_path(&self.key)
    }

    /// Takes the lock, waiting (on this thread) at most the config's timeout.
    pub fn lock(&self) -> Result<KeyLockGuard> {
        let deadline = std::time::Instant::now() + self.timeout;
        Ok(KeyLockGuard {
            _guard: self.locks.lock_key_blocking(&self.key, deadline)?,
        })
    }
}

/// A keychain reached through keyring-core: kernel keyutils, macOS Keychain or Windows
/// Credential Manager.
pub struct KeyringStore {
    inner: slots::SlotStore<keyring::KeyringSlots>,
}

impl std::fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl KeyringStore {
    /// Opens the keychain of `platform` (not [`Platform::SecretService`], which is
    /// `SecretServiceStore`, Linux only). Nothing is read or written yet.
    pub fn open(platform: Platform, config: &KeychainConfig) -> Result<Self> {
        let (store, backend, limit, persistent) = native_store(platform)?;
        let limit = match config.chunk_size {
            Some(c) if !(64..=limit).contains(&c) => {
                return Err(Error::config(format!(
                    "chunk_size must be between 64 and {limit} bytes here"
                )));
            }
            Some(c) => c,
            None => limit,
        };
        if config.service.is_empty() {
            return Err(Error::config("the keychain service name must not be empty"));
        }
        let host =
            host_lock::HostLocks::open(backend, &config.service, config.lock_dir.as_deref())?;
        let slots = keyring::KeyringSlots::new(store, backend, &config.service, limit);
        Ok(KeyringStore {
            inner: slots::SlotStore::new(
                slots,
                host,
                KEYRING_MAX_VALUE,
                config.timeout,
                persistent,
            ),
        })
    }

    /// Deletes every record of this store's service, and its index; returns how many records
    /// were deleted. Records a writer outside the lock (see the crate docs) left out of the
    /// index are not found.
    pub async fn clear(&self) -> Result<usize> {
        self.inner.clear().await
    }

    /// The kernel keyutils store.
    #[cfg(target_os = "linux")]
    pub fn keyutils(config: &KeychainConfig) -> Result<Self> {
        Self::open(Platform::Keyutils, config)
    }
}

type NativeStore = (
    Arc<keyring_core::CredentialStore>,
    &'static str,
    usize,
    bool,
);

fn native_store(platform: Platform) -> Result<NativeStore> {
    let unsupported = || {
        Err(Error::config(format!(
            "the {platform:?} keychain is not available on this platform"
        )))
    };
    match platform {
        #[cfg(target_os = "linux")]
        Platform::Keyutils => {
            let store = linux_keyutils_keyring_store::Store::new()
                .map_err(|e| keyring::map_error(KEYUTILS, e))?;
            Ok((store, KEYUTILS, KEYUTILS_ITEM_LIMIT, false))
        }
        #[cfg(target_os = "macos")]
        Platform::MacOs => {
            let store = apple_native_keyring_store::keychain::Store::new()
                .map_err(|e| keyring::map_error(MACOS, e))?;
            // No small item limit is known; chunking at 16 KiB keeps items modest anyway.
            Ok((store, MACOS, 16 * 1024, true))
        }
        #[cfg(windows)]
        Platform::Windows => {
            let store = windows_native_keyring_store::Store::new()
                .map_err(|e| keyring::map_error(WINDOWS, e))?;
            Ok((store, WINDOWS, WINDOWS_ITEM_LIMIT, true))
        }
        _ => unsupported(),
    }
}

#[async_trait]
impl RawStore for KeyringStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        self.inner.read(key).await
    }
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        self.inner.write(key, value, options).await
    }
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        self.inner.remove(key, precondition).await
    }
    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        self.inner.scan(kind, filter).await
    }
}

/// Opens the raw keychain store `config` names (its platform, else this platform's
/// default). The Secret Service store connects here (within the timeout); the others open
/// lazily. Most applications call [`open`] instead.
pub async fn open_raw(config: &KeychainConfig) -> Result<Arc<dyn RawStore>> {
    match config.platform()? {
        #[cfg(target_os = "linux")]
        Platform::SecretService => Ok(Arc::new(SecretServiceStore::connect(config).await?)),
        #[cfg(not(target_os = "linux"))]
        Platform::SecretService => Err(Error::config("the Secret Service is only used on Linux")),
        other => Ok(Arc::new(KeyringStore::open(other, config)?)),
    }
}

/// Opens the store `config` names, with token-store's encryption layer when it has a key.
pub async fn open(config: KeychainConfig) -> Result<TokenStore> {
    let store = open_raw(&config).await?;
    let name = format!("keychain:{}", backend_name(config.platform()?));
    token_store_core::layers::assemble(store, &config.common, &name).await
}

/// Opens a `keychain:` URL (see [`KeychainConfig::from_url`] and the crate docs).
pub async fn open_url(url: &StoreUrl) -> Result<TokenStore> {
    open(KeychainConfig::from_url(url)?).await
}

/// Checks that this platform's default keychain really works, for automatic backend
/// selection: connects, then writes, reads back and deletes a random sentinel, all within
/// `timeout` (a read alone looks healthy on a keyring that refuses writes). Returns the
/// ready store, or why it cannot be used as an [`Error`] (no D-Bus session bus, no Secret
/// Service on the bus, locked, timed out, ...). Never picks keyutils: it forgets everything
/// on reboot.
pub async fn probe(timeout: Duration) -> Result<TokenStore> {
    let platform =
        Platform::native().ok_or_else(|| Error::config("this platform has no OS keychain"))?;
    probe_with(&KeychainConfig::new(platform).with_timeout(timeout)).await
}

/// [`probe`] for a given configuration (another keychain, service name or D-Bus bus); the
/// whole probe stays within `config.timeout`.
pub async fn probe_with(config: &KeychainConfig) -> Result<TokenStore> {
    let timeout = config.timeout;
    let platform = config.platform()?;
    let backend = backend_name(platform);
    let work = async {
        let store = open(config.clone()).await?;
        sentinel(&**store.raw()).await?;
        Ok::<_, Error>(store)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::unavailable(
            backend,
            format!("the keychain did not answer the probe within {timeout:?}"),
            None,
        )),
    }
}

async fn sentinel(store: &dyn RawStore) -> Result<()> {
    let mut id = [0u8; 8];
    token_store_core::backend::fill_random(&mut id)?;
    let hex = token_store_core::backend::hex(&id);
    let key = StorageKey::single(KeyKind::Meta, format!("probe-{hex}"))?;
    let value = format!("token-store probe {hex}");
    store
        .write(
            &key,
            value.as_bytes(),
            &PutOptions::new(Precondition::IfAbsent),
        )
        .await?;
    let back = store.read(&key).await;
    let removed = store.remove(&key, &Precondition::Any).await;
    let back = back?;
    removed?;
    match back {
        Some(r) if r.value.as_slice() == value.as_bytes() => Ok(()),
        Some(_) => Err(Error::backend(
            store.backend(),
            "the probe read back different bytes than it wrote",
            None,
        )),
        None => Err(Error::backend(
            store.backend(),
            "the probe could not read back what it wrote",
            None,
        )),
    }
}
