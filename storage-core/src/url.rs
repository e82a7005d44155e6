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
//! | `postgres://user@host[:port][/db][?schema=S&table=T]`, `postgresql://...` | PostgreSQL (TLS per `sslmode`) |
//! | `keychain:[secret-service\|keyutils]` | OS keychain |
//!
//! Query parameters follow one grammar on every backend ([`QueryParams`]): unknown,
//! duplicated or malformed parameters are refused. `Debug`, `Display` and
//! [`StoreUrl::redacted`] hide passwords and secret parameters.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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
    /// `postgres://`, `postgresql://`
    Postgres,
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
            BackendKind::Postgres => "postgres",
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
            "postgres" | "postgresql" => BackendKind::Postgres,
            other => {
                return Err(Error::config(format!(
                    "unknown store scheme `{other}`: use memory:, file://, sqlite://, redis://, rediss://, redis+cluster://, redis+sentinel://, vault://, vaults://, postgres://, postgresql:// or keychain:"
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

    /// The query parameters, for a backend's configuration to read by name (see
    /// [`QueryParams`]). Fails with [`Error::Config`] on a parameter given twice or
    /// malformed percent-encoding.
    pub fn params(&self) -> Result<QueryParams> {
        let query = self.raw.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let mut entries: Vec<Param> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode_query(s).ok_or_else(|| {
                    Error::config(format!(
                        "{}: malformed percent-encoding in the query parameter `{}`",
                        self.redacted(),
                        sanitize(name)
                    ))
                })
            };
            let name = decode(name)?;
            let value = decode(value)?;
            if name.is_empty() {
                return Err(Error::config(format!(
                    "{}: a query parameter without a name",
                    self.redacted()
                )));
            }
            if entries.iter().any(|p| p.name == name) {
                return Err(Error::config(format!(
                    "{}: the parameter `{}` is given twice",
                    self.redacted(),
                    sanitize(&name)
                )));
            }
            entries.push(Param {
                name,
                value,
                read: false,
            });
        }
        Ok(QueryParams {
            url: self.redacted(),
            entries,
            known: Vec::new(),
        })
    }

    /// One query parameter, as given (for messages and tools; backends read their
    /// configuration through [`StoreUrl::params`], which rejects unknown names).
    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .ok()?
            .entries
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| p.value)
    }

    /// The URL with every secret hidden, for messages: the password of the authority's
    /// userinfo (the part before the *last* `@` of the authority, so a password containing
    /// `@` is hidden whole), and the value of every query parameter whose name says it holds a
    /// secret ([`is_secret_param`]).
    pub fn redacted(&self) -> String {
        redact(&self.raw, self.scheme.len())
    }
}

/// Whether a query parameter of this name holds a secret, so [`StoreUrl::redacted`] hides its
/// value: names containing `secret`, `token`, `password`, `passwd`, `passphrase` or
/// `credential`, and `pass`/`pw`/`auth` — but not `…_env` / `…_file` indirections, which
/// name where a secret is.
pub fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    // These name where a secret is (a variable, a file), not the secret.
    if n.ends_with("_env") || n.ends_with("_file") {
        return false;
    }
    [
        "secret",
        "token",
        "password",
        "passwd",
        "passphrase",
        "credential",
    ]
    .iter()
    .any(|s| n.contains(s))
        || n == "pass"
        || n == "pw"
        || n == "auth"
}

fn redact(raw: &str, scheme_len: usize) -> String {
    let (before_query, query) = match raw.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (raw, None),
    };
    let after_scheme = &before_query[scheme_len + 1..];
    let mut out = String::with_capacity(raw.len());
    out.push_str(&before_query[..scheme_len + 1]);
    match after_scheme.strip_prefix("//") {
        Some(rest) => {
            out.push_str("//");
            // The authority ends at the first `/`, unless a userinfo with an unencoded `/`
            // in its password comes first: over-hiding a host is safe, showing part of a
            // password is not, so anything up to the last `@` counts as userinfo.
            let end = match (rest.find('/'), rest.rfind('@')) {
                (Some(slash), Some(at)) if at > slash && slash > 0 => {
                    rest[at..].find('/').map_or(rest.len(), |i| at + i)
                }
                (Some(slash), _) => slash,
                (None, _) => rest.len(),
            };
            let (authority, path) = rest.split_at(end);
            // The userinfo ends at the last `@` of the authority: `@` may appear unescaped in
            // a password, never in a host.
            match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => {
                    match userinfo.split_once(':') {
                        Some((user, _)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str("***"),
                    }
                    out.push('@');
                    out.push_str(hosts);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(after_scheme),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_decode_query(name).unwrap_or_else(|| name.to_owned());
            if is_secret_param(&decoded) && !value.is_empty() {
                out.push_str(name);
                out.push_str("=***");
            } else {
                out.push_str(pair);
            }
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space); `None` on a `%` not
/// followed by two hex digits or on bytes that are not UTF-8.
fn percent_decode_query(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A parameter name as it may appear in a message: control characters escaped.
fn sanitize(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

struct Param {
    name: String,
    value: String,
    read: bool,
}

/// The query parameters of a [`StoreUrl`], read by name and type; what is left unread when
/// the backend calls [`QueryParams::finish`] is an unknown parameter and fails, naming the
/// parameters the backend knows. So a typo (`key_flie=`) can never silently turn an encrypted
/// store into a plaintext one, and every backend reads the shared names (`key_file`,
/// `passphrase_env`, `passphrase_file`, `timeout_ms`, `prefix`) alike.
///
/// ```
/// use std::time::Duration;
/// use token_store_core::StoreUrl;
/// let url = StoreUrl::parse("redis://127.0.0.1:6379/?prefix=app&timeout_ms=250").unwrap();
/// let mut params = url.params().unwrap();
/// assert_eq!(params.string("prefix").unwrap().as_deref(), Some("app"));
/// assert_eq!(params.timeout().unwrap(), Some(Duration::from_millis(250)));
/// params.finish().unwrap();
///
/// let typo = StoreUrl::parse("redis://127.0.0.1:6379/?key_flie=/k").unwrap();
/// let mut params = typo.params().unwrap();
/// assert!(params.key_source().unwrap().is_none());
/// let err = params.finish().unwrap_err().to_string();
/// assert!(err.contains("key_flie") && err.contains("key_file"), "{err}");
/// ```
pub struct QueryParams {
    url: String,
    entries: Vec<Param>,
    known: Vec<&'static str>,
}

impl fmt::Debug for QueryParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryParams")
            .field("url", &self.url)
            .field("known", &self.known)
            .finish_non_exhaustive()
    }
}

impl QueryParams {
    fn take(&mut self, name: &'static str) -> Option<String> {
        if !self.known.contains(&name) {
            self.known.push(name);
        }
        let p = self.entries.iter_mut().find(|p| p.name == name)?;
        p.read = true;
        Some(p.value.clone())
    }

    fn invalid(&self, name: &str, what: &str) -> Error {
        Error::config(format!("{}: `{name}` {what}", self.url))
    }

    /// A text parameter; an empty value is an error.
    pub fn string(&mut self, name: &'static str) -> Result<Option<String>> {
        match self.take(name) {
            Some(v) if v.is_empty() => Err(self.invalid(name, "needs a value")),
            other => Ok(other),
        }
    }

    /// A parameter parsed with [`FromStr`](std::str::FromStr); `what` describes the expected
    /// form in the error ("a number of bytes").
    pub fn parse<T: std::str::FromStr>(
        &mut self,
        name: &'static str,
        what: &str,
    ) -> Result<Option<T>> {
        match self.string(name)? {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(name, &format!("must be {what}"))),
        }
    }

    /// A duration in milliseconds; zero is refused (a zero timeout or interval is always a
    /// mistake).
    pub fn millis(&mut self, name: &'static str) -> Result<Option<Duration>> {
        match self.parse::<u64>(name, "a whole number of milliseconds")? {
            Some(0) => Err(self.invalid(name, "must be more than 0")),
            other => Ok(other.map(Duration::from_millis)),
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    pub fn bool(&mut self, name: &'static str) -> Result<Option<bool>> {
        match self.string(name)?.as_deref() {
            None => Ok(None),
            Some("true" | "1" | "yes" | "on") => Ok(Some(true)),
            Some("false" | "0" | "no" | "off") => Ok(Some(false)),
            Some(_) => Err(self.invalid(name, "must be true or false")),
        }
    }

    /// One of a fixed set of words.
    pub fn choice(
        &mut self,
        name: &'static str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>> {
        match self.string(name)? {
            None => Ok(None),
            Some(v) => choices
                .iter()
                .find(|c| **c == v)
                .copied()
                .map(Some)
                .ok_or_else(|| {
                    self.invalid(name, &format!("must be one of {}", choices.join(", ")))
                }),
        }
    }

    /// A file path, with `~/` expanded to the home directory.
    pub fn path(&mut self, name: &'static str) -> Result<Option<PathBuf>> {
        self.string(name)?.map(|p| expand_home(&p)).transpose()
    }

    /// The shared per-call time limit, `timeout_ms`.
    pub fn timeout(&mut self) -> Result<Option<Duration>> {
        self.millis("timeout_ms")
    }

    /// The shared key-name prefix, `prefix`.
    pub fn prefix(&mut self) -> Result<Option<String>> {
        self.string("prefix")
    }

    /// The encryption key the URL asks for: `key_file=PATH`, `passphrase_file=PATH` or
    /// `passphrase_env=VAR` (a passphrase itself never goes in a URL: URLs end up in logs and
    /// shell history). `None` when the URL names none of them.
    pub fn key_source(&mut self) -> Result<Option<KeySource>> {
        let key_file = self.path("key_file")?;
        let passphrase_file = self.path("passphrase_file")?;
        let passphrase_env = self.string("passphrase_env")?;
        match (key_file, passphrase_file, passphrase_env) {
            (None, None, None) => Ok(None),
            (Some(path), None, None) => Ok(Some(KeySource::KeyFile(path))),
            (None, Some(path), None) => KeySource::passphrase_file(&path).map(Some),
            (None, None, Some(var)) => match std::env::var(&var) {
                Ok(p) if !p.is_empty() => Ok(Some(KeySource::passphrase(p))),
                _ => Err(Error::config(format!(
                    "{}: passphrase_env={var}, but the variable {var} is unset or empty",
                    self.url
                ))),
            },
            _ => Err(Error::config(format!(
                "{}: give one of key_file, passphrase_file and passphrase_env",
                self.url
            ))),
        }
    }

    /// Fails with [`Error::Config`] naming every parameter the backend did not read, and the
    /// ones it knows.
    pub fn finish(self) -> Result<()> {
        let unknown: Vec<String> = self
            .entries
            .iter()
            .filter(|p| !p.read)
            .map(|p| format!("`{}`", sanitize(&p.name)))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut known = self.known.clone();
        known.sort_unstable();
        Err(Error::config(format!(
            "{}: unknown parameter{} {} (known: {})",
            self.url,
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", "),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )))
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

    #[test]
    fn parses_postgres_urls_and_hides_their_passwords() {
        for raw in [
            "postgres://app:s3cr3t@db.example:5432/tokens?schema=mcp&table=t",
            "POSTGRESQL://app:s3cr3t@db.example/tokens",
        ] {
            let u = StoreUrl::parse(raw).unwrap();
            assert_eq!(u.kind(), BackendKind::Postgres);
            assert_eq!(u.kind().feature(), "postgres");
            assert!(!format!("{u} {u:?} {}", u.redacted()).contains("s3cr3t"));
        }
        let u = StoreUrl::parse("postgresql://app:s3cr3t@db.example/tokens").unwrap();
        assert_eq!(u.scheme(), "postgresql");
        assert_eq!(u.redacted(), "postgresql://app:***@db.example/tokens");
        let err = StoreUrl::parse("postgre://h/db").unwrap_err().to_string();
        assert!(err.contains("postgres://"), "{err}");
    }

    #[test]
    fn redaction_hides_passwords_with_at_signs_and_secret_parameters() {
        for (raw, shown, hidden) in [
            (
                "redis://user:p@ss@word@h:6379/0?prefix=x",
                "redis://user:***@h:6379/0?prefix=x",
                "ss@word",
            ),
            ("redis://:only-pass@h/", "redis://:***@h/", "only-pass"),
            (
                "postgres://app:pa/ss@db:5432/tokens?password_file=/run/pw",
                "postgres://app:***@db:5432/tokens?password_file=/run/pw",
                "ss@",
            ),
            ("rediss://tok3n@h/", "rediss://***@h/", "tok3n"),
            (
                "vault://127.0.0.1:8200/secret?role_id=R&secret_id=S3CR3T",
                "vault://127.0.0.1:8200/secret?role_id=R&secret_id=***",
                "S3CR3T",
            ),
            (
                "vault://h/?token=hvs.ABC&prefix=p",
                "vault://h/?token=***&prefix=p",
                "hvs.ABC",
            ),
            (
                "redis://h/?password=pw1&passphrase_env=VAR",
                "redis://h/?password=***&passphrase_env=VAR",
                "pw1",
            ),
            (
                "file:///a@b/c?key_file=/k",
                "file:///a@b/c?key_file=/k",
                "\u{0}",
            ),
        ] {
            let u = StoreUrl::parse(raw).unwrap();
            assert_eq!(u.redacted(), shown, "{raw}");
            for text in [u.to_string(), format!("{u:?}")] {
                assert!(!text.contains(hidden), "{text}");
            }
        }
    }

    #[test]
    fn parameters_are_typed_and_strict() {
        let params = |raw: &str| StoreUrl::parse(raw).unwrap().params();
        let dup = params("redis://h/?prefix=a&prefix=b")
            .unwrap_err()
            .to_string();
        assert!(dup.contains("`prefix` is given twice"), "{dup}");
        let bad = params("redis://h/?prefix=%zz").unwrap_err().to_string();
        assert!(bad.contains("malformed percent-encoding"), "{bad}");
        let mut p = params("memory:?timeout_ms=0").unwrap();
        assert!(p.timeout().unwrap_err().to_string().contains("more than 0"));
        let mut p = params("redis://h/?flag=maybe&n=12x&mode=c&empty=").unwrap();
        assert!(p.bool("flag").is_err());
        assert!(
            p.parse::<u32>("n", "a number")
                .unwrap_err()
                .to_string()
                .contains("must be a number")
        );
        assert!(
            p.choice("mode", &["a", "b"])
                .unwrap_err()
                .to_string()
                .contains("one of a, b")
        );
        assert!(
            p.string("empty")
                .unwrap_err()
                .to_string()
                .contains("needs a value")
        );
        p.finish().unwrap();
        let mut p = params("redis://h/?prefix=p%20q&other=1&third=2").unwrap();
        assert_eq!(p.prefix().unwrap().as_deref(), Some("p q"));
        let err = p.finish().unwrap_err().to_string();
        assert!(
            err.contains("unknown parameters `other`, `third` (known: prefix)"),
            "{err}"
        );
        let mut both = params("redis://h/?key_file=/k&passphrase_env=V").unwrap();
        assert!(both.key_source().is_err());
    }
}
