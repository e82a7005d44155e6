//! Configuration of the SQLite backend and its `sqlite://` URL form.

use std::path::PathBuf;
use std::time::Duration;

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

    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Some(Synchronous::Full),
            "normal" => Some(Synchronous::Normal),
            _ => None,
        }
    }
}

/// How to open an SQLite token store.
///
/// ```
/// use std::time::Duration;
/// use token_store_sqlite::{SqliteConfig, Synchronous};
/// let config = SqliteConfig::new("/var/lib/app/tokens.db")
///     .with_busy_timeout(Duration::from_secs(10))
///     .with_synchronous(Synchronous::Normal);
/// assert_eq!(config.busy_timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

impl SqliteConfig {
    /// The defaults for a database file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            synchronous: Synchronous::default(),
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
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

const KNOWN_PARAMS: &str = "key_file, passphrase_env, busy_timeout_ms, synchronous";

/// Reads a `sqlite://PATH[?key_file=F|passphrase_env=VAR][&busy_timeout_ms=N][&synchronous=full|normal]`
/// URL: the configuration and, when it asks for encryption, where the key comes from.
///
/// Unknown parameters are an error: a mistyped `key_file` must not silently store tokens in
/// clear.
pub fn parse_url(url: &StoreUrl) -> Result<SqliteConfig> {
    if url.kind() != BackendKind::Sqlite {
        return Err(Error::config(format!("{url} is not an sqlite:// URL")));
    }
    let mut config = SqliteConfig::new(url.path()?);
    // Checked here so a bad key parameter fails before the database file is created; the
    // encryption layer itself is applied by the caller (`layers::encrypt_per_url`).
    url.key_source()?;
    for (name, value) in url.query() {
        match name.as_str() {
            "key_file" | "passphrase_env" => {}
            "busy_timeout_ms" => {
                let ms: u64 = value.parse().map_err(|_| {
                    Error::config(format!(
                        "busy_timeout_ms must be a number of milliseconds, not `{value}`"
                    ))
                })?;
                config.busy_timeout = Duration::from_millis(ms);
            }
            "synchronous" => {
                config.synchronous = Synchronous::parse(&value).ok_or_else(|| {
                    Error::config(format!(
                        "synchronous must be `full` or `normal`, not `{value}`"
                    ))
                })?;
            }
            other => {
                return Err(Error::config(format!(
                    "unknown sqlite:// URL parameter `{other}` (known: {KNOWN_PARAMS})"
                )));
            }
        }
    }
    Ok(config)
}
