//! Store URLs: which backend, where, with which options.
//!
//! | URL | backend |
//! | --- | --- |
//! | `memory:` | in-memory (nothing persists) |
//! | `file://PATH[?key_file=F]` | encrypted file store in directory PATH |
//! | `sqlite://PATH[?key_file=F]` | SQLite database file PATH |
//! | `redis://[user:pass@]host[:port][/db][?prefix=P]`, `rediss://...` | Redis (TLS with `rediss`) |
//! | `redis+cluster://host:port[,host:port...]` | Redis Cluster seed nodes |
//! | `redis+sentinel://host:port[,...]/master-name` | Redis behind Sentinel |
//! | `vault://host:port[/mount][?prefix=P]`, `vaults://...` | Vault / OpenBao KV v2 (TLS with `vaults`) |
//! | `keychain:[secret-service\|keyutils]` | OS keychain |
//!
//! `Debug` and `Display` hide passwords in the URL.

use std::fmt;
use std::path::PathBuf;

use crate::crypto::KeySource;
use crate::error::{Error, Result};

/// Which backend a URL selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// `memory:`
    Memory,
    /// `file://`
    File,
    /// `sqlite://`
    Sqlite,
    /// `redis://`, `rediss://`
    Redis,
    /// `redis+cluster://`, `rediss+cluster://`
    RedisCluster,
    /// `redis+sentinel://`
    RedisSentinel,
    /// `vault://`, `vaults://`
    Vault,
    /// `keychain:`
    Keychain,
}

impl BackendKind {
    /// The cargo feature of the `token-store` facade that provides this backend.
    pub fn feature(self) -> &'static str {
        match self {
            BackendKind::Memory => "(always built in)",
            BackendKind::File => "file",
            BackendKind::Sqlite => "sqlite",
            BackendKind::Redis | BackendKind::RedisCluster | BackendKind::RedisSentinel => "redis",
            BackendKind::Vault => "vault",
            BackendKind::Keychain => "keychain",
        }
    }
}

/// A parsed store URL.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    kind: BackendKind,
    scheme: String,
    raw: String,
}

impl StoreUrl {
    /// Parses a store URL; an unknown scheme is a [`Error::Config`] listing the known ones.
    pub fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        let scheme = raw
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::config("a store URL starts with a scheme, e.g. file:// or redis://")
            })?;
        let kind = match scheme.as_str() {
            "memory" => BackendKind::Memory,
            "file" => BackendKind::File,
            "sqlite" => BackendKind::Sqlite,
            "redis" | "rediss" => BackendKind::Redis,
            "redis+cluster" | "rediss+cluster" => BackendKind::RedisCluster,
            "redis+sentinel" | "rediss+sentinel" => BackendKind::RedisSentinel,
            "vault" | "vaults" => BackendKind::Vault,
            "keychain" => BackendKind::Keychain,
            other => {
                return Err(Error::config(format!(
                    "unknown store scheme `{other}`: use memory:, file://, sqlite://, redis://, rediss://, redis+cluster://, redis+sentinel://, vault://, vaults:// or keychain:"
                )));
            }
        };
        Ok(StoreUrl {
            kind,
            scheme,
            raw: raw.to_owned(),
        })
    }

    /// The selected backend.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The scheme, lower-cased.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Whether the scheme asks for TLS (`rediss`, `vaults`).
    pub fn is_tls(&self) -> bool {
        self.scheme.starts_with("rediss") || self.scheme == "vaults"
    }

    /// The URL as given, password included: for handing to a client library only.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Everything between `scheme:` (and `//`) and `?`.
    pub fn body(&self) -> &str {
        let rest = &self.raw[self.scheme.len() + 1..];
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        rest.split('?').next().unwrap_or_default()
    }

    /// The path of a `file://` or `sqlite://` URL, with `~/` expanded to the home directory.
    pub fn path(&self) -> Result<PathBuf> {
        let body = crate::key::percent_decode(self.body()).ok_or_else(|| {
            Error::config("the path in the store URL is not valid percent-encoding")
        })?;
        if body.is_empty() {
            return Err(Error::config(format!("{}:// needs a path", self.scheme)));
        }
        expand_home(&body)
    }

    /// The encryption key the URL asks for: `key_file=PATH` or `passphrase_env=VAR` (the
    /// passphrase itself never goes in a URL: URLs end up in logs and shell history).
    /// `None` when the URL names neither.
    pub fn key_source(&self) -> Result<Option<KeySource>> {
        match (self.param("key_file"), self.param("passphrase_env")) {
            (Some(_), Some(_)) => Err(Error::config(
                "a store URL takes key_file or passphrase_env, not both",
            )),
            (Some(path), None) if path.is_empty() => Err(Error::config("key_file needs a path")),
            (Some(path), None) => Ok(Some(KeySource::KeyFile(expand_home(&path)?))),
            (None, Some(var)) => match std::env::var(&var) {
                Ok(p) if !p.is_empty() => Ok(Some(KeySource::passphrase(p))),
                _ => Err(Error::config(format!(
                    "passphrase_env={var}, but the variable {var} is unset or empty"
                ))),
            },
            (None, None) => Ok(None),
        }
    }

    /// The query parameters, decoded.
    pub fn query(&self) -> Vec<(String, String)> {
        match self.raw.split_once('?') {
            Some((_, q)) => url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// One query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn redacted(&self) -> String {
        let Some((before_at, after_at)) = self.raw.split_once('@') else {
            return self.raw.clone();
        };
        let start = self.scheme.len() + 3;
        match before_at
            .get(start..)
            .and_then(|userinfo| userinfo.split_once(':'))
        {
            Some((user, _)) => format!("{}{}:***@{}", &self.raw[..start], user, after_at),
            None if before_at.len() > start => format!("{}***@{}", &self.raw[..start], after_at),
            None => self.raw.clone(),
        }
    }
}

fn expand_home(path: &str) -> Result<PathBuf> {
    match path.strip_prefix("~/") {
        Some(rest) => {
            let home = std::env::var_os("HOME")
                .ok_or_else(|| Error::config("`~` in a store URL but HOME is not set"))?;
            Ok(PathBuf::from(home).join(rest))
        }
        None => Ok(PathBuf::from(path)),
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({})", self.redacted())
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_and_redacts_passwords() {
        let u = StoreUrl::parse("rediss://user:hunter2@redis.example:6380/0?prefix=x").unwrap();
        assert_eq!(u.kind(), BackendKind::Redis);
        assert!(u.is_tls());
        assert_eq!(u.param("prefix").as_deref(), Some("x"));
        assert!(!format!("{u} {u:?}").contains("hunter2"));
        assert_eq!(
            u.redacted(),
            "rediss://user:***@redis.example:6380/0?prefix=x"
        );
        let f = StoreUrl::parse("file:///var/lib/tok?key_file=/k").unwrap();
        assert_eq!(f.path().unwrap(), PathBuf::from("/var/lib/tok"));
        assert_eq!(f.param("key_file").as_deref(), Some("/k"));
        assert_eq!(
            StoreUrl::parse("memory:").unwrap().kind(),
            BackendKind::Memory
        );
        assert!(matches!(
            StoreUrl::parse("ftp://x"),
            Err(Error::Config { .. })
        ));
        assert!(StoreUrl::parse("sqlite://").unwrap().path().is_err());
    }
}
