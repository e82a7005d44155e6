//! [`FileStore`]: the open store (its directory, lock file and current key) and opening it.

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, RwLock};

use token_store_core::backend::{Cipher, KeyHeader};
use token_store_core::{Error, KdfParams, KeySource, Result};

use crate::BACKEND;
use crate::config::FileConfig;
use crate::dir::Dir;
use crate::format::{LOCK_FILE, is_store_entry};
use crate::header::{self, HeaderCache, missing_header, read_header};

/// An encrypted store of one file per record in a private directory: the raw backend, a
/// [`RawStore`](token_store_core::RawStore) (wrap it in a
/// [`TokenStore`](token_store_core::TokenStore), or use [`crate::open`]).
///
/// See the [crate docs](crate) for the layout, the guarantees and the threat model. Clones
/// share one open store (one key, one lock).
#[derive(Clone)]
pub struct FileStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) dir: Dir,
    /// Held open for the life of the store: `flock` excludes other open file descriptions
    /// (other processes, other handles), never this one, hence `op` below.
    pub(crate) lock_file: File,
    /// One locked operation at a time through `lock_file` (see `FileStore::locked`).
    pub(crate) op: Arc<tokio::sync::Mutex<()>>,
    keyed: RwLock<Arc<Keyed>>,
    header: HeaderCache,
    /// Argon2id parameters for a passphrase given to [`FileStore::rekey`].
    pub(crate) params: KdfParams,
}

/// What the current key opens.
pub(crate) struct Keyed {
    pub(crate) cipher: Cipher,
    /// The record directory's name in the header (`d-...`).
    pub(crate) records: String,
    /// That directory, open.
    pub(crate) data: Dir,
}

impl Keyed {
    pub(crate) fn new(cipher: Cipher, records: String, data: Dir) -> Self {
        Keyed {
            cipher,
            records,
            data,
        }
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir.path())
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens the store `config` describes, creating it (directory 0700, a new key header)
    /// when it does not exist. The key is the config's, else the environment's
    /// ([`KeySource::from_env`]); without one this is [`Error::Config`]: there is no
    /// unencrypted file store.
    ///
    /// Argon2id runs once here, on a blocking thread. A key that does not open an existing
    /// store is [`Error::WrongKey`]. The directory is refused when it is a symbolic link,
    /// belongs to another user or others can write to it; when others can only read it, it
    /// is made 0700 if it holds nothing but the store, refused otherwise. Argon2id parameters that [`KdfParams::check`] refuses are refused.
    ///
    /// This is the raw store: the config's timeout is applied by [`crate::open`].
    pub async fn open(config: &FileConfig) -> Result<Self> {
        let key = config.key()?;
        let params = config.kdf_params;
        params.check()?;
        let dir = config.dir.clone();
        let inner = blocking(move || Inner::open(&dir, &key, params)).await?;
        Ok(FileStore {
            inner: Arc::new(inner),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    /// How the store's key is derived, as recorded in `store.json` now (KDF, Argon2id
    /// parameters, salt, key check): nothing secret.
    pub async fn key_header(&self) -> Result<KeyHeader> {
        let inner = self.inner.clone();
        let header = blocking(move || read_header(&inner.dir)?.ok_or_else(missing_header)).await?;
        Ok(header.key)
    }
}

impl Inner {
    fn open(path: &Path, key: &KeySource, params: KdfParams) -> Result<Self> {
        let dir = Dir::open_store(path, is_store_entry)?;
        let lock_file = dir.lock_file(LOCK_FILE)?;
        let keyed = header::unlock_or_create(&dir, &lock_file, key, params)?;
        Ok(Inner {
            dir,
            lock_file,
            op: Arc::new(tokio::sync::Mutex::new(())),
            keyed: RwLock::new(Arc::new(keyed)),
            header: HeaderCache::new(),
            params,
        })
    }

    /// The current key.
    pub(crate) fn keyed(&self) -> Arc<Keyed> {
        self.keyed
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes `keyed` the current key (after a re-key by this handle).
    pub(crate) fn set_keyed(&self, keyed: Keyed) {
        *self
            .keyed
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keyed);
    }

    /// Whether `keyed` is still the store's key (no re-key replaced it).
    pub(crate) fn is_current(&self, keyed: &Keyed) -> Result<bool> {
        self.header.still_names(&self.dir, &keyed.records)
    }
}

/// Runs blocking file work on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend(BACKEND, "file task failed", Some(Box::new(e))))?
}
