//! [`VaultConfig`]: where the Vault is, where the records go and how to log in; built in code
//! or read from a `vault://` URL and the standard `VAULT_*` / `BAO_*` variables.

mod url_form;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use token_store_core::layers::CommonOptions;
use token_store_core::{Error, Result, StoreUrl};

/// The KV v2 mount used when the URL names none.
pub const DEFAULT_MOUNT: &str = "secret";
/// The path prefix under the mount used when the URL names none.
pub const DEFAULT_PREFIX: &str = "token-store";
/// The per-call time limit used when the URL names none (the core `Timeout` layer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The AppRole auth mount used when the URL names none.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";
/// How old a deleted key's tombstone must be before it may be reclaimed (see the crate docs,
/// "Reclaiming deleted keys").
pub const DEFAULT_RECLAIM_AFTER: Duration = Duration::from_secs(3600);

/// How the store authenticates.
///
/// `Debug` shows which method, never a token, role id or secret id.
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

impl Auth {
    /// A fixed token.
    pub fn token(token: impl Into<String>) -> Self {
        Auth::Token(SecretString::from(token.into()))
    }

    /// AppRole login at the default mount ([`DEFAULT_APPROLE_MOUNT`]).
    pub fn approle(role_id: impl Into<String>, secret_id: impl Into<String>) -> Self {
        Auth::AppRole {
            mount: DEFAULT_APPROLE_MOUNT.to_owned(),
            role_id: SecretString::from(role_id.into()),
            secret_id: SecretString::from(secret_id.into()),
        }
    }

    /// The token to send as is, for [`Auth::Token`].
    pub(crate) fn static_token(&self) -> Option<&SecretString> {
        match self {
            Auth::Token(t) => Some(t),
            Auth::AppRole { .. } => None,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token([REDACTED])"),
            Auth::AppRole { mount, .. } => write!(f, "AppRole {{ mount: {mount:?}, [REDACTED] }}"),
        }
    }
}

/// Everything needed to reach one KV v2 location: built in code, or read from a URL with
/// [`VaultConfig::from_url`].
///
/// `Debug` and `Display` never show a credential: `Display` is the location as a `vault://`
/// URL (`vault://127.0.0.1:8200/secret?prefix=token-store`), which is what errors and logs
/// name the store by.
///
/// ```
/// use std::time::Duration;
/// use token_store_core::KeySource;
/// use token_store_vault::{Auth, VaultConfig};
/// let config = VaultConfig::new("https://bao.internal:8200", Auth::approle("role", "S3CR3T"))?
///     .with_mount("kv/team-a")?
///     .with_prefix("apps/mcp")?
///     .with_timeout(Duration::from_secs(3))
///     .with_key(KeySource::KeyFile("/etc/app/token.key".into()));
/// assert_eq!(config.to_string(), "vaults://bao.internal:8200/kv/team-a?prefix=apps/mcp");
/// assert!(!format!("{config:?}").contains("S3CR3T"));
/// # Ok::<(), token_store_core::Error>(())
/// ```
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
    /// How to authenticate.
    pub auth: Auth,
    /// The options every backend shares, applied as layers by [`open`](crate::open): the
    /// encryption key, and the per-call time limit ([`DEFAULT_TIMEOUT`] unless changed).
    pub common: CommonOptions,
    /// The youngest tombstone any reclamation may remove ([`DEFAULT_RECLAIM_AFTER`]); also
    /// bounds how long a write may take between its read and its `cas` write (half of it).
    /// Every client of one prefix must use the same value, or a larger one (crate docs,
    /// "Reclaiming deleted keys").
    pub reclaim_after: Duration,
    /// Whether listings reclaim the old tombstones they come across (a few per listing; on by
    /// default). [`VaultStore::reclaim`](crate::VaultStore::reclaim) works either way.
    pub reclaim_in_listings: bool,
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand, so it stays safe whatever the fields gain. `Auth` and `KeySource` show
        // which method or file, never a secret.
        f.debug_struct("VaultConfig")
            .field("address", &self.address.as_str())
            .field("mount", &self.mount)
            .field("prefix", &self.prefix)
            .field("namespace", &self.namespace)
            .field("ca_cert", &self.ca_cert)
            .field("auth", &self.auth)
            .field("key", &self.common.key)
            .field("timeout", &self.common.timeout)
            .field("reclaim_after", &self.reclaim_after)
            .field("reclaim_in_listings", &self.reclaim_in_listings)
            .finish()
    }
}

impl fmt::Display for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.address.scheme() == "https" {
            "vaults"
        } else {
            "vault"
        };
        // The port always: a URL without one means 8200, not the scheme's 80 / 443.
        let port = self
            .address
            .port_or_known_default()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let host = self.address.host_str().unwrap_or_default();
        let prefix = if self.prefix.is_empty() {
            "/"
        } else {
            &self.prefix
        };
        write!(f, "{scheme}://{host}{port}/{}?prefix={prefix}", self.mount)?;
        if let Some(ns) = &self.namespace {
            write!(
                f,
                "&namespace={}",
                token_store_core::backend::percent_encode(ns)
            )?;
        }
        Ok(())
    }
}

impl VaultConfig {
    /// A configuration for `address` (`http(s)://host:port`) with `auth` and the defaults:
    /// mount [`DEFAULT_MOUNT`], prefix [`DEFAULT_PREFIX`], a [`DEFAULT_TIMEOUT`] per call, no
    /// encryption layer.
    pub fn new(address: &str, auth: Auth) -> Result<Self> {
        Ok(VaultConfig {
            address: parse_address(address)?,
            mount: DEFAULT_MOUNT.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            namespace: None,
            ca_cert: None,
            auth,
            common: CommonOptions::new().with_timeout(DEFAULT_TIMEOUT),
            reclaim_after: DEFAULT_RECLAIM_AFTER,
            reclaim_in_listings: true,
        })
    }

    /// The same configuration with another mount.
    pub fn with_mount(mut self, mount: impl Into<String>) -> Result<Self> {
        self.mount = clean_path("mount", &mount.into(), false)?;
        Ok(self)
    }

    /// The same configuration with another path prefix (`""` for the mount's root).
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

    /// The same configuration with another minimum age for reclaiming tombstones (more than
    /// zero; every client of the prefix must agree, see the crate docs).
    pub fn with_reclaim_after(mut self, age: Duration) -> Result<Self> {
        if age.is_zero() {
            return Err(Error::config("reclaim_after must be more than zero"));
        }
        self.reclaim_after = age;
        Ok(self)
    }

    /// The same configuration with listings reclaiming old tombstones, or not.
    pub fn with_reclaim_in_listings(mut self, on: bool) -> Self {
        self.reclaim_in_listings = on;
        self
    }

    /// Reads a `vault://` / `vaults://` URL (the grammar is in the crate docs), taking what it
    /// leaves out from the process environment (`VAULT_ADDR`, `VAULT_TOKEN`,
    /// `VAULT_NAMESPACE`, `VAULT_CACERT`, `VAULT_ROLE_ID`, `VAULT_SECRET_ID`, or the `BAO_*`
    /// names). An unknown, duplicated or malformed parameter is an [`Error::Config`] naming
    /// it.
    ///
    /// ```
    /// use token_store_core::StoreUrl;
    /// use token_store_vault::VaultConfig;
    /// let url = StoreUrl::parse("vault://127.0.0.1:8200/secret?prefix=app&role_id=R&secret_id=S").unwrap();
    /// let config = VaultConfig::from_url(&url).unwrap();
    /// assert_eq!(config.to_string(), "vault://127.0.0.1:8200/secret?prefix=app");
    /// let typo = StoreUrl::parse("vault://127.0.0.1:8200/?role_id=R&secret_id=S&prefx=app").unwrap();
    /// assert!(VaultConfig::from_url(&typo).unwrap_err().to_string().contains("prefx"));
    /// ```
    pub fn from_url(url: &StoreUrl) -> Result<Self> {
        Self::from_url_with_env(url, |name| std::env::var(name).ok())
    }

    /// [`VaultConfig::from_url`] with an explicit environment for the `VAULT_*` / `BAO_*`
    /// variables and the variables `token_env=` / `secret_id_env=` name, for tests and
    /// embedders. (`passphrase_env=` is read by core from the process environment.)
    pub fn from_url_with_env(url: &StoreUrl, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        url_form::read(url, &url_form::Env(&env))
    }

    /// Checks the fields a caller may have set directly, before anything is sent: they go
    /// into request paths unescaped.
    pub(crate) fn validate(&self) -> Result<()> {
        if clean_path("mount", &self.mount, false)? != self.mount
            || clean_path("prefix", &self.prefix, true)? != self.prefix
        {
            return Err(Error::config(
                "the Vault mount and prefix have no leading or trailing `/`",
            ));
        }
        if let Auth::AppRole { mount, .. } = &self.auth
            && clean_path("approle_mount", mount, false)? != *mount
        {
            return Err(Error::config(
                "the AppRole mount has no leading or trailing `/`",
            ));
        }
        Ok(())
    }
}

/// Validates a server address before anything uses it. The message never quotes the
/// address: one from `VAULT_ADDR` may carry credentials.
fn parse_address(raw: &str) -> Result<url::Url> {
    let parsed = url::Url::parse(raw.trim()).map_err(|e| Error::Config {
        message: format!("not a valid Vault address (http(s)://host:port): {e}"),
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
mod tests;

token_store_core::common_option_builders!(VaultConfig);
