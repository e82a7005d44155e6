//! Where the Vault is and how to log in: parsed from a `vault://` URL and the standard
//! `VAULT_*` / `BAO_*` variables.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use token_store_core::{Error, Result, StoreUrl};

/// The KV v2 mount used when the URL names none.
pub const DEFAULT_MOUNT: &str = "secret";
/// The path prefix under the mount used when the URL names none.
pub const DEFAULT_PREFIX: &str = "token-store";
/// The per-call time limit used when the URL names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The AppRole auth mount used when the URL names none.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";

const KNOWN_PARAMS: &str = "prefix, namespace, ca, timeout_ms, role_id, secret_id, secret_id_env, \
     token_env, approle_mount, key_file, passphrase_env";

/// How the store authenticates.
#[derive(Clone)]
#[non_exhaustive]
pub enum Auth {
    /// A fixed token, used as given (root, periodic or operator-managed tokens).
    Token(SecretString),
    /// AppRole login; the resulting token is renewed and, when that is no longer possible,
    /// replaced by a fresh login, lazily before a call needs it.
    AppRole {
        /// The auth mount (`approle`).
        mount: String,
        /// The role id (not secret on its own, but kept out of logs anyway).
        role_id: SecretString,
        /// The secret id.
        secret_id: SecretString,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token([REDACTED])"),
            Auth::AppRole { mount, .. } => write!(f, "AppRole {{ mount: {mount:?}, [REDACTED] }}"),
        }
    }
}

/// Everything needed to reach one KV v2 location.
#[derive(Clone)]
#[non_exhaustive]
pub struct VaultConfig {
    /// `http(s)://host:port` of the server.
    pub address: url::Url,
    /// The KV v2 mount, possibly nested (`secret`, `kv/team-a`).
    pub mount: String,
    /// The folder under the mount every record lives in; may be empty or nested.
    pub prefix: String,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// A PEM file with the CA certificate(s) to trust instead of the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Upper bound for each store call (all the HTTP requests it makes).
    pub timeout: Duration,
    /// How to authenticate.
    pub auth: Auth,
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultConfig")
            .field("address", &self.address.as_str())
            .field("mount", &self.mount)
            .field("prefix", &self.prefix)
            .field("namespace", &self.namespace)
            .field("ca_cert", &self.ca_cert)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .finish()
    }
}

impl VaultConfig {
    /// A configuration for `address` (`http(s)://host:port`) with a token and the defaults.
    pub fn new(address: &str, auth: Auth) -> Result<Self> {
        Ok(VaultConfig {
            address: parse_address(address)?,
            mount: DEFAULT_MOUNT.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            namespace: None,
            ca_cert: None,
            timeout: DEFAULT_TIMEOUT,
            auth,
        })
    }

    /// The same configuration with another mount.
    pub fn with_mount(mut self, mount: impl Into<String>) -> Result<Self> {
        self.mount = clean_path("mount", &mount.into(), false)?;
        Ok(self)
    }

    /// The same configuration with another path prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        self.prefix = clean_path("prefix", &prefix.into(), true)?;
        Ok(self)
    }

    /// The same configuration in a namespace.
    pub fn with_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace.filter(|n| !n.is_empty());
        self
    }

    /// The same configuration trusting only the CA certificates in `pem_file`.
    pub fn with_ca_cert(mut self, pem_file: Option<PathBuf>) -> Self {
        self.ca_cert = pem_file;
        self
    }

    /// The same configuration with another per-call time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reads a `vault://` / `vaults://` URL, taking what it leaves out from the process
    /// environment (`VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_NAMESPACE`, `VAULT_CACERT`,
    /// `VAULT_ROLE_ID`, `VAULT_SECRET_ID`, or the `BAO_*` names).
    pub fn from_url(url: &StoreUrl) -> Result<Self> {
        Self::from_url_with_env(url, |name| std::env::var(name).ok())
    }

    /// [`VaultConfig::from_url`] with an explicit environment, for tests and embedders.
    pub fn from_url_with_env(url: &StoreUrl, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = |names: &[&str]| -> Option<String> {
            names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()))
        };
        let scheme = url.scheme();
        if scheme != "vault" && scheme != "vaults" {
            return Err(Error::config(format!(
                "the vault backend takes vault:// or vaults:// URLs, not {scheme}:"
            )));
        }
        let body = url.body();
        let (authority, path) = match body.find('/') {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (body, ""),
        };
        if authority.contains('@') {
            return Err(Error::config(
                "a vault:// URL carries no credentials before the host: use VAULT_TOKEN, token_env= or role_id=/secret_id=",
            ));
        }
        let address = if authority.is_empty() {
            let addr = env(&["VAULT_ADDR", "BAO_ADDR"]).ok_or_else(|| {
                Error::config(format!(
                    "{scheme}:// without a host needs VAULT_ADDR (or BAO_ADDR)"
                ))
            })?;
            let parsed = parse_address(&addr)?;
            if url.is_tls() && parsed.scheme() != "https" {
                return Err(Error::config(
                    "vaults:// asks for TLS but VAULT_ADDR is not an https:// address",
                ));
            }
            parsed
        } else {
            let http = if url.is_tls() { "https" } else { "http" };
            let with_port = if has_port(authority) {
                authority.to_owned()
            } else {
                format!("{authority}:8200")
            };
            parse_address(&format!("{http}://{with_port}"))?
        };

        let mut prefix = None;
        let mut namespace = None;
        let mut ca = None;
        let mut timeout = None;
        let mut role_id = None;
        let mut secret_id = None;
        let mut secret_id_env = None;
        let mut token_env = None;
        let mut approle_mount = None;
        for (k, v) in url.query() {
            match k.as_str() {
                "prefix" => prefix = Some(v),
                "namespace" => namespace = Some(v),
                "ca" => ca = Some(v),
                "timeout_ms" => {
                    let ms: u64 = v.parse().map_err(|_| {
                        Error::config("timeout_ms in a vault:// URL must be a whole number")
                    })?;
                    if ms == 0 {
                        return Err(Error::config("timeout_ms in a vault:// URL must be > 0"));
                    }
                    timeout = Some(Duration::from_millis(ms));
                }
                "role_id" => role_id = Some(v),
                "secret_id" => secret_id = Some(v),
                "secret_id_env" => secret_id_env = Some(v),
                "token_env" => token_env = Some(v),
                "approle_mount" => approle_mount = Some(v),
                // The encryption layer's parameters, read by `open_url`.
                "key_file" | "passphrase_env" => {}
                other => {
                    // A mistyped parameter must not silently change where tokens go.
                    return Err(Error::config(format!(
                        "unknown parameter `{other}` in a vault:// URL (known: {KNOWN_PARAMS})"
                    )));
                }
            }
        }

        let secret_id = match (secret_id, secret_id_env) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "a vault:// URL takes secret_id or secret_id_env, not both",
                ));
            }
            (Some(s), None) => Some(s),
            (None, Some(var)) => Some(env(&[var.as_str()]).ok_or_else(|| {
                Error::config(format!("secret_id_env names {var}, which is unset"))
            })?),
            (None, None) => None,
        };
        let role_id = role_id.or_else(|| env(&["VAULT_ROLE_ID", "BAO_ROLE_ID"]));
        let auth = if let Some(role_id) = role_id {
            let secret_id = secret_id
                .or_else(|| env(&["VAULT_SECRET_ID", "BAO_SECRET_ID"]))
                .ok_or_else(|| {
                    Error::config(
                        "AppRole login needs a secret id: secret_id=, secret_id_env= or VAULT_SECRET_ID",
                    )
                })?;
            Auth::AppRole {
                mount: clean_path(
                    "approle_mount",
                    approle_mount.as_deref().unwrap_or(DEFAULT_APPROLE_MOUNT),
                    false,
                )?,
                role_id: SecretString::from(role_id),
                secret_id: SecretString::from(secret_id),
            }
        } else {
            if secret_id.is_some() {
                return Err(Error::config(
                    "a secret id was given without a role id (role_id= or VAULT_ROLE_ID)",
                ));
            }
            let token = match token_env {
                Some(var) => env(&[var.as_str()]).ok_or_else(|| {
                    Error::config(format!("token_env names {var}, which is unset"))
                })?,
                None => env(&["VAULT_TOKEN", "BAO_TOKEN"]).ok_or_else(|| {
                    Error::config(
                        "no Vault credentials: set VAULT_TOKEN (or BAO_TOKEN), token_env=, or role_id=/secret_id=",
                    )
                })?,
            };
            Auth::Token(SecretString::from(token))
        };

        let mount = if path.is_empty() {
            DEFAULT_MOUNT.to_owned()
        } else {
            let decoded = token_store_core::percent_decode(path).ok_or_else(|| {
                Error::config("the mount in a vault:// URL is not valid percent-encoding")
            })?;
            clean_path("mount", &decoded, false)?
        };
        let prefix = clean_path("prefix", prefix.as_deref().unwrap_or(DEFAULT_PREFIX), true)?;
        let namespace = namespace
            .or_else(|| env(&["VAULT_NAMESPACE", "BAO_NAMESPACE"]))
            .filter(|n| !n.is_empty());
        let ca_cert = ca
            .or_else(|| env(&["VAULT_CACERT", "BAO_CACERT"]))
            .filter(|c| !c.is_empty())
            .map(PathBuf::from);
        Ok(VaultConfig {
            address,
            mount,
            prefix,
            namespace,
            ca_cert,
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            auth,
        })
    }

    /// Whether the configured token is a fixed one (no login, no renewal).
    pub fn uses_static_token(&self) -> bool {
        matches!(self.auth, Auth::Token(_))
    }

    pub(crate) fn static_token(&self) -> Option<&str> {
        match &self.auth {
            Auth::Token(t) => Some(t.expose_secret()),
            Auth::AppRole { .. } => None,
        }
    }
}

fn has_port(authority: &str) -> bool {
    // `[::1]:8200` vs `[::1]`; `host:8200` vs `host`.
    match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    }
}

/// Validates a server address before anything uses it (vaultrs' builder panics on a bad
/// one; here it is a configuration error).
fn parse_address(raw: &str) -> Result<url::Url> {
    let parsed = url::Url::parse(raw.trim()).map_err(|e| Error::Config {
        message: format!("`{}` is not a valid Vault address", raw.trim()),
        source: Some(Box::new(e)),
    })?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(Error::config(format!(
            "a Vault address is http:// or https://, not {}://",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::config("a Vault address needs a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::config("a Vault address carries no credentials"));
    }
    Ok(parsed)
}

/// Mounts and prefixes are sent as raw path segments, so they are limited to characters
/// that need no escaping and are never `.`/`..` (which HTTP clients and servers collapse).
fn clean_path(what: &str, raw: &str, may_be_empty: bool) -> Result<String> {
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() {
        return if may_be_empty {
            Ok(String::new())
        } else {
            Err(Error::config(format!("the Vault {what} must not be empty")))
        };
    }
    for segment in trimmed.split('/') {
        let ok = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~'));
        if !ok {
            return Err(Error::config(format!(
                "the Vault {what} `{trimmed}` must be `/`-separated names of letters, digits, `_`, `-`, `.`, `~`"
            )));
        }
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, env: &[(&str, &str)]) -> Result<VaultConfig> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        VaultConfig::from_url_with_env(&StoreUrl::parse(url).unwrap(), move |n| {
            env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn url_forms() {
        let c = parse(
            "vault://bao.internal:8300/kv/team?prefix=apps/x",
            &[("VAULT_TOKEN", "t")],
        )
        .unwrap();
        assert_eq!(c.address.as_str(), "http://bao.internal:8300/");
        assert_eq!(c.mount, "kv/team");
        assert_eq!(c.prefix, "apps/x");
        assert!(c.uses_static_token());

        let c = parse(
            "vaults://bao.internal",
            &[("BAO_TOKEN", "t"), ("VAULT_CACERT", "/ca.pem")],
        )
        .unwrap();
        assert_eq!(c.address.as_str(), "https://bao.internal:8200/");
        assert_eq!(c.mount, DEFAULT_MOUNT);
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        assert_eq!(c.ca_cert, Some(PathBuf::from("/ca.pem")));

        let c = parse(
            "vault://",
            &[
                ("VAULT_ADDR", "https://v.example:8200"),
                ("VAULT_NAMESPACE", "team-a"),
                ("VAULT_ROLE_ID", "rid"),
                ("VAULT_SECRET_ID", "sid"),
            ],
        )
        .unwrap();
        assert_eq!(c.address.as_str(), "https://v.example:8200/");
        assert_eq!(c.namespace.as_deref(), Some("team-a"));
        assert!(matches!(c.auth, Auth::AppRole { .. }));

        let c = parse(
            "vault://[::1]:8200/?prefix=&timeout_ms=250",
            &[("VAULT_TOKEN", "t")],
        )
        .unwrap();
        assert_eq!(c.prefix, "");
        assert_eq!(c.timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_urls_are_config_errors_not_panics() {
        for (url, env) in [
            ("vault://bad host:99", vec![("VAULT_TOKEN", "t")]),
            ("vault://h:notaport", vec![("VAULT_TOKEN", "t")]),
            ("vault://h/../x", vec![("VAULT_TOKEN", "t")]),
            ("vault://h?prefx=a", vec![("VAULT_TOKEN", "t")]),
            ("vault://h", vec![]),
            ("vault://", vec![("VAULT_TOKEN", "t")]),
            (
                "vault://",
                vec![("VAULT_TOKEN", "t"), ("VAULT_ADDR", "not a url")],
            ),
            (
                "vaults://",
                vec![("VAULT_TOKEN", "t"), ("VAULT_ADDR", "http://h:1")],
            ),
            ("vault://u:pw@h", vec![("VAULT_TOKEN", "t")]),
            ("vault://h?secret_id=s", vec![("VAULT_TOKEN", "t")]),
            ("vault://h?role_id=r", vec![]),
        ] {
            assert!(
                matches!(parse(url, &env), Err(Error::Config { .. })),
                "{url} with {env:?}"
            );
        }
    }

    #[test]
    fn debug_redacts_credentials() {
        let c = parse("vault://h?role_id=ROLE-X&secret_id=SECRET-X", &[]).unwrap();
        let t = parse("vault://h", &[("VAULT_TOKEN", "TOKEN-X")]).unwrap();
        let text = format!("{c:?} {t:?}");
        for secret in ["ROLE-X", "SECRET-X", "TOKEN-X"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
