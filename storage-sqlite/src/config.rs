//! [`SqliteConfig`]: how to open an SQLite token store, built in code or read from a
//! `sqlite://` URL.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use token_store_core::layers::CommonOptions;
use token_store_core::{BackendKind, Error, Result, StoreUrl};

/// The default busy timeout: how long a write waits for another connection's write lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default largest value: 1 MiB (tokens are a few KiB; SQLite itself allows ~1 GB).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;

/// How often a write also deletes expired rows, by default.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// `PRAGMA synchronous`: when SQLite waits for the disk.
///
/// In WAL mode both settings survive a crash of the process (a commit is in the `-wal` file
/// once `put` returns) and neither can corrupt the database. They differ on power loss or an
/// OS crash: `Full` fsyncs the WAL at every commit, so a returned `put` is on disk; `Normal`
/// fsyncs only at checkpoints, so the last commits may be lost (rolled back, never torn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// fsync at every commit (the default). A refreshed token whose old refresh token the
    /// authorization server has already revoked must not vanish on power loss, and token
    /// writes are rare enough that one fsync each costs nothing noticeable.
    #[default]
    Full,
    /// fsync at checkpoints only: faster writes, the last commits may be lost on power loss.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// How to open an SQLite token store: built in code, or read from a URL with
/// [`SqliteConfig::from_url`].
///
/// ```
/// use std::time::Duration;
/// use token_store_core::KeySource;
/// use token_store_sqlite::{SqliteConfig, Synchronous};
/// let config = SqliteConfig::new("/var/lib/app/tokens.db")
///     .with_busy_timeout(Duration::from_secs(10))
///     .with_synchronous(Synchronous::Normal)
///     .with_key(KeySource::KeyFile("/var/lib/app/tokens.key".into()));
/// assert_eq!(config.busy_timeout, Duration::from_secs(10));
/// assert!(config.common.key.is_some());
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file. Its directory is created 0700 if missing (an existing one must not
    /// be writable by others), the file 0600.
    pub path: PathBuf,
    /// How long a statement waits for another connection's lock before failing with
    /// `Error::Unavailable`.
    pub busy_timeout: Duration,
    /// `PRAGMA synchronous`.
    pub synchronous: Synchronous,
    /// The largest value accepted, in bytes.
    pub max_value_size: usize,
    /// How often (at most) a write also deletes expired rows.
    pub sweep_interval: Duration,
    /// The options every backend shares: the encryption key and the per-call time limit,
    /// applied as layers by [`open`](crate::open).
    pub common: CommonOptions,
}

impl fmt::Debug for SqliteConfig {
    // By hand, so it stays safe whatever `common` gains: the key source shows only where the
    // key comes from (a path or "passphrase"), never a key or passphrase.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConfig")
            .field("path", &self.path)
            .field("busy_timeout", &self.busy_timeout)
            .field("synchronous", &self.synchronous)
            .field("max_value_size", &self.max_value_size)
            .field("sweep_interval", &self.sweep_interval)
            .field("key", &self.common.key)
            .field("timeout", &self.common.timeout)
            .finish()
    }
}

impl SqliteConfig {
    /// The defaults for a database file at `path`: no encryption layer, no per-call time limit.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            synchronous: Synchronous::default(),
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            common: CommonOptions::new(),
        }
    }

    /// Reads a `sqlite://PATH?...` URL (the grammar is in the crate docs). Every parameter is
    /// read by name and type, so an unknown, duplicated or malformed one is an
    /// [`Error::Config`] naming it: a mistyped `key_file` cannot silently store tokens in
    /// clear.
    ///
    /// ```
    /// use token_store_core::StoreUrl;
    /// use token_store_sqlite::{SqliteConfig, Synchronous};
    /// let url = StoreUrl::parse("sqlite:///tmp/t.db?synchronous=normal&busy_timeout_ms=250").unwrap();
    /// let config = SqliteConfig::from_url(&url).unwrap();
    /// assert_eq!(config.synchronous, Synchronous::Normal);
    /// let typo = StoreUrl::parse("sqlite:///tmp/t.db?key_flie=/k").unwrap();
    /// assert!(SqliteConfig::from_url(&typo).unwrap_err().to_string().contains("key_flie"));
    /// ```
    pub fn from_url(url: &StoreUrl) -> Result<Self> {
        if url.kind() != BackendKind::Sqlite {
            return Err(Error::config(format!("{url} is not an sqlite:// URL")));
        }
        let mut config = SqliteConfig::new(url.path()?);
        let mut params = url.params()?;
        config.common = CommonOptions::from_params(&mut params)?;
        if let Some(busy) = params.millis("busy_timeout_ms")? {
            config.busy_timeout = busy;
        }
        if let Some(sync) = params.choice("synchronous", &["full", "normal"])? {
            config.synchronous = match sync {
                "normal" => Synchronous::Normal,
                _ => Synchronous::Full,
            };
        }
        if let Some(max) = params.parse::<usize>("max_value_size", "a number of bytes")? {
            if max == 0 {
                return Err(Error::config(format!(
                    "{url}: `max_value_size` must be more than 0"
                )));
            }
            config.max_value_size = max;
        }
        if let Some(interval) = params.millis("sweep_interval_ms")? {
            config.sweep_interval = interval;
        }
        params.finish()?;
        Ok(config)
    }

    /// The same configuration with another busy timeout.
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The same configuration with another `synchronous` setting.
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The same configuration with another value size limit.
    pub fn with_max_value_size(mut self, max: usize) -> Self {
        self.max_value_size = max;
        self
    }

    /// The same configuration with another sweep interval.
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }
}

#[cfg(test)]
mod tests;

token_store_core::common_option_builders!(SqliteConfig);
