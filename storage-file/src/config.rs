//! How to open a file store: [`FileConfig`], built by hand or read from a `file://` URL.

use std::path::PathBuf;

use token_store_core::layers::CommonOptions;
use token_store_core::{BackendKind, Error, KdfParams, KeySource, Result, StoreUrl};

const KEY_HELP: &str = "add ?key_file=PATH (32 raw bytes, created when missing), \
?passphrase_file=PATH or ?passphrase_env=VAR to the URL, or set TOKEN_STORE_PASSPHRASE or \
TOKEN_STORE_KEY_FILE";

/// Where a file store lives and how it is keyed.
///
/// ```
/// use std::time::Duration;
/// use token_store_core::KeySource;
/// use token_store_file::FileConfig;
///
/// let config = FileConfig::new("/var/lib/my-agent/tokens", KeySource::KeyFile("/etc/my-agent/token.key".into()))
///     .with_timeout(Duration::from_secs(5));
/// assert_eq!(config.dir, std::path::Path::new("/var/lib/my-agent/tokens"));
///
/// let url = token_store_core::StoreUrl::parse("file:///var/lib/my-agent/tokens?key_file=/etc/my-agent/token.key").unwrap();
/// let from_url = FileConfig::from_url(&url).unwrap();
/// assert_eq!(from_url.dir, config.dir);
/// ```
///
/// `Debug` shows the directory and where the key comes from, never a passphrase or key.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FileConfig {
    /// The store directory: created 0700 (with missing parents) when it does not exist.
    pub dir: PathBuf,
    /// The store's key (`key`; the file store always encrypts, with its own format: no
    /// encryption layer is added) and a per-call time limit (`timeout`, none by default).
    /// Without a key, [`KeySource::from_env`] gives it when the store opens.
    pub common: CommonOptions,
    /// Argon2id parameters of a new passphrase store, and of a passphrase given to
    /// [`FileStore::rekey`](crate::FileStore::rekey); an existing store keeps those recorded
    /// in its header. Between [`KdfParams::MINIMUM`] and [`KdfParams::MAXIMUM`];
    /// [`KdfParams::DEFAULT`] by default.
    pub kdf_params: KdfParams,
}

impl FileConfig {
    /// The store in `dir`, keyed by `key`, with the defaults: no time limit, Argon2id
    /// [`KdfParams::DEFAULT`] for a new passphrase store.
    pub fn new(dir: impl Into<PathBuf>, key: KeySource) -> Self {
        FileConfig {
            dir: dir.into(),
            common: CommonOptions::new().with_key(key),
            kdf_params: KdfParams::DEFAULT,
        }
    }

    /// Reads a `file://PATH` URL (see [the crate docs](crate#urls)). Unknown, duplicated
    /// and malformed parameters are [`Error::Config`] naming them; so is more than one key
    /// parameter.
    pub fn from_url(url: &StoreUrl) -> Result<Self> {
        if url.kind() != BackendKind::File {
            return Err(Error::config(format!(
                "the file backend opens file:// URLs, not {}",
                url.scheme()
            )));
        }
        let dir = url.path()?;
        let mut params = url.params()?;
        let common = CommonOptions::from_params(&mut params)?;
        params.finish()?;
        Ok(FileConfig {
            dir,
            common,
            kdf_params: KdfParams::DEFAULT,
        })
    }

    /// The same config with other Argon2id parameters for new passphrase keys (refused at
    /// open unless [`KdfParams::check`] accepts them).
    pub fn with_kdf_params(mut self, params: KdfParams) -> Self {
        self.kdf_params = params;
        self
    }

    /// The key: the config's, else the environment's.
    pub(crate) fn key(&self) -> Result<KeySource> {
        match &self.common.key {
            Some(key) => Ok(key.clone()),
            // The file store is always encrypted: without a key given, the environment's.
            None => KeySource::from_env().ok_or_else(|| {
                Error::config(format!(
                    "the encrypted file store {} needs a key: {KEY_HELP}",
                    self.name()
                ))
            }),
        }
    }

    /// The store's name in messages.
    pub(crate) fn name(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

token_store_core::common_option_builders!(FileConfig);
