//! Where the store's Redis is and how to reach it, from a store URL or built by hand.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use token_store_core::{Error, Result, StoreUrl};

/// The key prefix mcp-agent's `RedisTokenStore` uses by default.
pub const DEFAULT_PREFIX: &str = "mcp_agent:oauth_tokens";

/// The largest value this backend accepts (see the crate docs for why it is far below Redis's
/// own 512 MB limit).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;

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

/// PEM files for TLS: a private CA, and a client certificate for mutual TLS.
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
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// Everything needed to open a [`crate::RedisStore`].
///
/// `Debug` hides passwords.
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
    /// Time allowed for one TCP/TLS connect.
    pub connect_timeout: Duration,
    /// Time allowed for one server response.
    pub response_timeout: Duration,
    /// Time allowed for a whole store call, reconnect attempts included. A call that takes
    /// longer fails with `Unavailable`.
    pub operation_timeout: Duration,
    /// Largest value accepted.
    pub max_value_size: usize,
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
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(5),
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
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

    /// The same config with a per-call time limit (and connect/response timeouts no longer
    /// than it).
    pub fn with_operation_timeout(mut self, limit: Duration) -> Self {
        self.operation_timeout = limit;
        self.connect_timeout = self.connect_timeout.min(limit);
        self.response_timeout = self.response_timeout.min(limit);
        self
    }

    /// Reads a store URL of kind `redis`, `redis+cluster` or `redis+sentinel`.
    ///
    /// Parameters: `prefix`, `ca`, `cert`, `key` (PEM files), `timeout_ms` (per call),
    /// `connect_timeout_ms`, `response_timeout_ms`. `key_file`/`passphrase_env` are read by
    /// [`crate::open_url`], not here.
    pub fn from_url(url: &StoreUrl) -> Result<Self> {
        let scheme = url.scheme();
        let tls = scheme.starts_with("rediss");
        let node_scheme = if tls { "rediss" } else { "redis" };
        let body = url.body();
        let mut config = match scheme {
            "redis" | "rediss" => {
                if body.is_empty() {
                    return Err(Error::config(format!("{scheme}:// needs a host")));
                }
                Self::standalone(format!("{node_scheme}://{body}"))
            }
            "redis+cluster" | "rediss+cluster" => {
                let (userinfo, hosts) = split_userinfo(body);
                let hosts = hosts.split('/').next().unwrap_or_default();
                let nodes: Vec<String> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{node_scheme}://{userinfo}{h}/"))
                    .collect();
                if nodes.is_empty() {
                    return Err(Error::config(format!(
                        "{scheme}:// needs seed nodes: {scheme}://host:port,host:port"
                    )));
                }
                Self::cluster(nodes)
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let (userinfo, rest) = split_userinfo(body);
                let mut segments = rest.split('/');
                let hosts = segments.next().unwrap_or_default();
                let master = segments.next().unwrap_or_default();
                let db = match segments.next().filter(|s| !s.is_empty()) {
                    Some(d) => d.parse::<i64>().map_err(|_| {
                        Error::config(format!("{scheme}://: database `{d}` is not a number"))
                    })?,
                    None => 0,
                };
                if master.is_empty() {
                    return Err(Error::config(format!(
                        "{scheme}:// needs a master name: {scheme}://host:port,host:port/master"
                    )));
                }
                let sentinels: Vec<String> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("redis://{h}/"))
                    .collect();
                if sentinels.is_empty() {
                    return Err(Error::config(format!(
                        "{scheme}:// needs sentinel addresses"
                    )));
                }
                let (username, password) = parse_userinfo(userinfo);
                Self::with_topology(Topology::Sentinel {
                    sentinels,
                    master: decode(master)?,
                    tls,
                    db,
                    username,
                    password,
                })
            }
            other => {
                return Err(Error::config(format!(
                    "`{other}:` is not a Redis store URL"
                )));
            }
        };
        if let Some(prefix) = url.param("prefix") {
            config.prefix = prefix;
        }
        let files = TlsFiles {
            ca: url.param("ca").map(PathBuf::from),
            cert: url.param("cert").map(PathBuf::from),
            key: url.param("key").map(PathBuf::from),
        };
        if !files.is_empty() {
            if !tls {
                return Err(Error::config(
                    "ca=/cert=/key= are TLS options: use a rediss:// URL",
                ));
            }
            config.tls = Some(files);
        }
        if let Some(ms) = millis(url, "timeout_ms")? {
            config = config.with_operation_timeout(ms);
        }
        if let Some(ms) = millis(url, "connect_timeout_ms")? {
            config.connect_timeout = ms;
        }
        if let Some(ms) = millis(url, "response_timeout_ms")? {
            config.response_timeout = ms;
        }
        Ok(config)
    }
}

fn millis(url: &StoreUrl, name: &str) -> Result<Option<Duration>> {
    url.param(name)
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| Error::config(format!("{name}={v} is not a positive number")))
        })
        .transpose()
}

/// Splits `user:pass@rest` into (`user:pass@`, `rest`); the `@` stays with the userinfo so
/// it can be pasted back in front of each host.
fn split_userinfo(body: &str) -> (&str, &str) {
    match body.rfind('@') {
        Some(i) => (&body[..=i], &body[i + 1..]),
        None => ("", body),
    }
}

fn parse_userinfo(userinfo: &str) -> (Option<String>, Option<String>) {
    let Some(info) = userinfo.strip_suffix('@') else {
        return (None, None);
    };
    let (user, pass) = match info.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (info, None),
    };
    let user = token_store_core::percent_decode(user)
        .unwrap_or_else(|| user.to_owned())
        .trim()
        .to_owned();
    let pass = pass.map(|p| token_store_core::percent_decode(p).unwrap_or_else(|| p.to_owned()));
    (Some(user).filter(|u| !u.is_empty()), pass)
}

fn decode(s: &str) -> Result<String> {
    token_store_core::percent_decode(s)
        .ok_or_else(|| Error::config("invalid percent-encoding in the store URL"))
}

/// A URL with its password (if any) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    match StoreUrl::parse(url) {
        Ok(u) => u.redacted(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("topology", &self.topology)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_value_size", &self.max_value_size)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(u: &str) -> RedisConfig {
        RedisConfig::from_url(&StoreUrl::parse(u).unwrap()).unwrap()
    }

    #[test]
    fn standalone_url_with_params() {
        let c = parse("rediss://:hunter2@localhost:6380/2?prefix=p:q&ca=/ca.pem&timeout_ms=700");
        assert_eq!(
            c.topology,
            Topology::Standalone {
                url: "rediss://:hunter2@localhost:6380/2".into()
            }
        );
        assert_eq!(c.prefix, "p:q");
        assert_eq!(c.tls.unwrap().ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.operation_timeout, Duration::from_millis(700));
        assert!(c.response_timeout <= Duration::from_millis(700));
        assert!(!format!("{:?}", parse("redis://u:hunter2@h/")).contains("hunter2"));
        assert_eq!(parse("redis://h:1").prefix, DEFAULT_PREFIX);
    }

    #[test]
    fn cluster_and_sentinel_urls() {
        let c = parse("redis+cluster://:pw@a:7000,b:7001/?prefix=x");
        assert_eq!(
            c.topology,
            Topology::Cluster {
                nodes: vec!["redis://:pw@a:7000/".into(), "redis://:pw@b:7001/".into()]
            }
        );
        let s = parse("redis+sentinel://user:s3cret@s1:26379,s2:26380/mymaster/3");
        match &s.topology {
            Topology::Sentinel {
                sentinels,
                master,
                db,
                username,
                password,
                tls,
            } => {
                assert_eq!(sentinels.len(), 2);
                assert_eq!(master, "mymaster");
                assert_eq!(*db, 3);
                assert_eq!(username.as_deref(), Some("user"));
                assert_eq!(password.as_deref(), Some("s3cret"));
                assert!(!tls);
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(RedisConfig::from_url(&StoreUrl::parse("redis+sentinel://s1:1").unwrap()).is_err());
        assert!(RedisConfig::from_url(&StoreUrl::parse("redis://h/?ca=/x").unwrap()).is_err());
    }
}
