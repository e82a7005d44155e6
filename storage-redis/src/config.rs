//! [`RedisConfig`]: where the store's Redis is and how to reach it, built in code or read from
//! a store URL.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use token_store_core::layers::CommonOptions;
use token_store_core::{KeySource, Result, StoreUrl};

/// The key prefix mcp-agent's `RedisTokenStore` uses by default.
pub const DEFAULT_PREFIX: &str = "mcp_agent:oauth_tokens";

/// The largest value this backend writes or reads (see the crate docs for why it is far below
/// Redis's own 512 MB limit).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;

/// The default time limit of a whole call (the core `Timeout` layer), reconnects included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The default time allowed for one TCP/TLS connect and for one server response.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How the Redis deployment is laid out.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One server (or a proxy in front of several), e.g. `redis://:pw@host:6379/0`.
    Standalone {
        /// A `redis://` or `rediss://` URL, as the `redis` crate reads it (no query).
        url: String,
    },
    /// A Redis Cluster, reached through any of its seed nodes.
    Cluster {
        /// `redis://` or `rediss://` URLs of seed nodes.
        nodes: Vec<String>,
    },
    /// A master found through Sentinel, followed across failovers.
    Sentinel {
        /// `redis://` URLs of the sentinels.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
        /// TLS to the sentinels and the master.
        tls: bool,
        /// Database number on the master.
        db: i64,
        /// ACL user for the master.
        username: Option<String>,
        /// Password for the master (never printed).
        password: Option<String>,
    },
}

impl Topology {
    /// Whether connections use TLS (`rediss`), so a rustls crypto provider is needed.
    pub(crate) fn uses_tls(&self) -> bool {
        match self {
            Topology::Standalone { url } => is_tls_url(url),
            Topology::Cluster { nodes } => nodes.iter().any(|n| is_tls_url(n)),
            Topology::Sentinel { tls, .. } => *tls,
        }
    }
}

fn is_tls_url(url: &str) -> bool {
    url.get(..9)
        .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"))
}

/// PEM files for TLS: a private CA, and a client certificate for mutual TLS.
///
/// ```
/// use token_store_redis::TlsFiles;
/// let files = TlsFiles::new()
///     .with_ca("/etc/redis/ca.pem")
///     .with_client_cert("/etc/app/client.pem", "/etc/app/client.key");
/// assert!(files.cert.is_some() && files.key.is_some());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// CA certificate(s) to trust instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (mutual TLS); needs `key`.
    pub cert: Option<PathBuf>,
    /// Client private key (mutual TLS); needs `cert`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// No files: the system roots, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same files with a private CA to trust instead of the system roots.
    pub fn with_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ca = Some(ca.into());
        self
    }

    /// The same files with a client certificate chain and its private key (mutual TLS).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// Everything needed to open a [`RedisStore`](crate::RedisStore): built in code, or read from
/// a URL with [`RedisConfig::from_url`].
///
/// ```
/// use std::time::Duration;
/// use token_store_core::KeySource;
/// use token_store_redis::{RedisConfig, TlsFiles};
/// let config = RedisConfig::standalone("rediss://:secret@redis.internal:6380/0")
///     .with_prefix("app:tokens")
///     .with_tls(TlsFiles::new().with_ca("/etc/redis/ca.pem"))
///     .with_timeout(Duration::from_secs(2))
///     .with_key(KeySource::KeyFile("/etc/app/tokens.key".into()));
/// assert_eq!(config.common.timeout, Some(Duration::from_secs(2)));
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Standalone, cluster or sentinel.
    pub topology: Topology,
    /// Key prefix; token keys are `prefix + ":" + StorageKey::encode()`. Trailing `:` are
    /// dropped, as mcp-agent does.
    pub prefix: String,
    /// Custom CA and client certificates; `None` uses the system roots and no client cert.
    pub tls: Option<TlsFiles>,
    /// Time allowed for one TCP/TLS connect (the `redis` client's own limit).
    pub connect_timeout: Duration,
    /// Time allowed for one server response (the `redis` client's own limit).
    pub response_timeout: Duration,
    /// The largest value written, and read: a longer value another writer left at one of our
    /// keys is refused with `TooLarge` without being transferred.
    pub max_value_size: usize,
    /// The options every backend shares, applied as layers by [`open`](crate::open): the
    /// encryption key and the per-call time limit ([`DEFAULT_TIMEOUT`] unless changed).
    pub common: CommonOptions,
}

impl RedisConfig {
    /// A standalone server at `url` (`redis://` or `rediss://`), default prefix and timeouts.
    pub fn standalone(url: impl Into<String>) -> Self {
        Self::with_topology(Topology::Standalone { url: url.into() })
    }

    /// A cluster reached through `nodes` (`redis://host:port` URLs), defaults otherwise.
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        Self::with_topology(Topology::Cluster {
            nodes: nodes.into_iter().map(Into::into).collect(),
        })
    }

    /// A Sentinel-monitored master, defaults otherwise.
    pub fn sentinel<S: Into<String>>(
        sentinels: impl IntoIterator<Item = S>,
        master: impl Into<String>,
    ) -> Self {
        Self::with_topology(Topology::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            master: master.into(),
            tls: false,
            db: 0,
            username: None,
            password: None,
        })
    }

    fn with_topology(topology: Topology) -> Self {
        RedisConfig {
            topology,
            prefix: DEFAULT_PREFIX.to_owned(),
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            common: CommonOptions::new().with_timeout(DEFAULT_TIMEOUT),
        }
    }

    /// The same config with another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same config with TLS files.
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same config with another connect timeout.
    pub fn with_connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// The same config with another response timeout.
    pub fn with_response_timeout(mut self, limit: Duration) -> Self {
        self.response_timeout = limit;
        self
    }

    /// The same config with another value size limit (for writes and reads).
    pub fn with_max_value_size(mut self, max: usize) -> Self {
        self.max_value_size = max;
        self
    }

    /// The same config with values encrypted under `key` (the core `Encrypted` layer; see
    /// the crate docs: mcp-agent can no longer read the values).
    pub fn with_key(mut self, key: KeySource) -> Self {
        self.common = self.common.with_key(key);
        self
    }

    /// The same config with another per-call time limit (the core `Timeout` layer), and
    /// connect/response timeouts no longer than it, so a reconnect attempt never outlives the
    /// call that started it.
    pub fn with_timeout(mut self, limit: Duration) -> Self {
        self.common = self.common.with_timeout(limit);
        self.connect_timeout = self.connect_timeout.min(limit);
        self.response_timeout = self.response_timeout.min(limit);
        self
    }

    /// Reads a `redis://`, `rediss://`, `redis+cluster://` or `redis+sentinel://` URL (the
    /// grammar is in the crate docs). Every parameter is read by name and type, so an unknown,
    /// duplicated or malformed one is an [`Error::Config`](token_store_core::Error::Config) naming it: a mistyped `key_file`
    /// cannot silently store tokens in clear.
    ///
    /// ```
    /// use std::time::Duration;
    /// use token_store_core::StoreUrl;
    /// use token_store_redis::RedisConfig;
    /// let url = StoreUrl::parse("redis://127.0.0.1:6379/0?prefix=app&timeout_ms=800").unwrap();
    /// let config = RedisConfig::from_url(&url).unwrap();
    /// assert_eq!((config.prefix.as_str(), config.common.timeout), ("app", Some(Duration::from_millis(800))));
    /// let typo = StoreUrl::parse("redis://127.0.0.1:6379/?key_flie=/path/key").unwrap();
    /// assert!(RedisConfig::from_url(&typo).unwrap_err().to_string().contains("key_flie"));
    /// ```
    pub fn from_url(url: &StoreUrl) -> Result<Self> {
        url::parse(url)
    }

    /// The store's name in errors: its URL without passwords or query.
    pub(crate) fn name(&self) -> String {
        match &self.topology {
            Topology::Standalone { url } => redact(url),
            Topology::Cluster { nodes } => {
                let hosts: Vec<String> = nodes.iter().map(|n| host_of(n)).collect();
                format!("redis+cluster://{}", hosts.join(","))
            }
            Topology::Sentinel {
                sentinels, master, ..
            } => {
                let hosts: Vec<String> = sentinels.iter().map(|n| host_of(n)).collect();
                format!("redis+sentinel://{}/{master}", hosts.join(","))
            }
        }
    }
}

impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A node URL with its password (if any) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    match StoreUrl::parse(url) {
        Ok(u) => u.redacted(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// `host:port` of a node URL, without scheme, userinfo or path.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or_default();
    rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_owned()
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Standalone { url } => f
                .debug_struct("Standalone")
                .field("url", &redact(url))
                .finish(),
            Topology::Cluster { nodes } => f
                .debug_struct("Cluster")
                .field(
                    "nodes",
                    &nodes.iter().map(|n| redact(n)).collect::<Vec<_>>(),
                )
                .finish(),
            Topology::Sentinel {
                sentinels,
                master,
                tls,
                db,
                username,
                password,
            } => f
                .debug_struct("Sentinel")
                .field(
                    "sentinels",
                    &sentinels.iter().map(|n| redact(n)).collect::<Vec<_>>(),
                )
                .field("master", master)
                .field("tls", tls)
                .field("db", db)
                .field("username", username)
                .field("password", &password.as_ref().map(|_| "***"))
                .finish(),
        }
    }
}

impl fmt::Debug for RedisConfig {
    // By hand, so it stays safe whatever `common` gains: passwords are hidden, and the key
    // source shows only where the key comes from, never a key or passphrase.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("topology", &self.topology)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("max_value_size", &self.max_value_size)
            .field("key", &self.common.key)
            .field("timeout", &self.common.timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests;
mod url;
