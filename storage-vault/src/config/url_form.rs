//! The `vault://` URL grammar: the address and mount from the URL's body, the parameters
//! through core's typed readers (so every unknown one fails), then the credentials and TLS
//! settings from the URL or, where it names none, the environment.

use std::path::PathBuf;

use secrecy::SecretString;
use token_store_core::layers::CommonOptions;
use token_store_core::{BackendKind, Error, QueryParams, Result, StoreUrl};

use super::{
    Auth, DEFAULT_APPROLE_MOUNT, DEFAULT_MOUNT, DEFAULT_PREFIX, DEFAULT_RECLAIM_AFTER,
    DEFAULT_TIMEOUT, VaultConfig, clean_path, parse_address,
};

/// Vault's port, where the URL names none.
const DEFAULT_PORT: u16 = 8200;

/// Where the `VAULT_*` / `BAO_*` variables come from.
pub(super) struct Env<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The first of `names` that is set and not empty.
    fn first(&self, names: &[&str]) -> Option<String> {
        names
            .iter()
            .find_map(|n| (self.0)(n).filter(|v| !v.is_empty()))
    }
}

pub(super) fn read(url: &StoreUrl, env: &Env) -> Result<VaultConfig> {
    if url.kind() != BackendKind::Vault {
        return Err(Error::config(format!(
            "{url} is not a vault:// or vaults:// URL"
        )));
    }
    let (authority, mount) = split_body(url)?;
    // Every parameter is read (and an unknown one refused) before the environment is
    // consulted, so a typo is reported as such, not as missing credentials.
    let params = Params::read(url)?;
    let address = address(url, authority, env)?;
    let auth = params.credentials.resolve(url, env)?;
    let mut common = params.common;
    common.timeout.get_or_insert(DEFAULT_TIMEOUT);
    let prefix = params.prefix.as_deref().unwrap_or(DEFAULT_PREFIX);
    let reclaim_after = match params.reclaim_after {
        Some(d) if d.is_zero() => {
            return Err(Error::config(format!(
                "{url}: `reclaim_after_ms` must be more than 0"
            )));
        }
        Some(d) => d,
        None => DEFAULT_RECLAIM_AFTER,
    };
    Ok(VaultConfig {
        address,
        mount,
        prefix: clean_path("prefix", prefix, true).map_err(|e| named(url, e))?,
        namespace: params
            .namespace
            .or_else(|| env.first(&["VAULT_NAMESPACE", "BAO_NAMESPACE"])),
        ca_cert: params.ca.or_else(|| {
            env.first(&["VAULT_CACERT", "BAO_CACERT"])
                .map(PathBuf::from)
        }),
        auth,
        common,
        reclaim_after,
        reclaim_in_listings: params.reclaim_in_listings.unwrap_or(true),
    })
}

/// A configuration error from a helper, prefixed with the (redacted) URL it is about.
fn named(url: &StoreUrl, e: Error) -> Error {
    match e {
        Error::Config { message, source } => Error::Config {
            message: format!("{url}: {message}"),
            source,
        },
        other => other,
    }
}

/// The authority (`host[:port]`, may be empty) and the mount (the path, or the default).
fn split_body(url: &StoreUrl) -> Result<(&str, String)> {
    let body = url.body();
    let (authority, path) = body.split_once('/').unwrap_or((body, ""));
    if authority.contains('@') {
        return Err(Error::config(format!(
            "{url}: a vault:// URL carries no credentials before the host: use VAULT_TOKEN, token_env=, or role_id= with secret_id_env="
        )));
    }
    let mount = if path.is_empty() {
        DEFAULT_MOUNT.to_owned()
    } else {
        let decoded = token_store_core::backend::percent_decode(path).ok_or_else(|| {
            Error::config(format!("{url}: the mount is not valid percent-encoding"))
        })?;
        clean_path("mount", &decoded, false).map_err(|e| named(url, e))?
    };
    Ok((authority, mount))
}

fn address(url: &StoreUrl, authority: &str, env: &Env) -> Result<url::Url> {
    if !authority.is_empty() {
        let scheme = if url.is_tls() { "https" } else { "http" };
        let port = if has_port(authority) {
            String::new()
        } else {
            format!(":{DEFAULT_PORT}")
        };
        return parse_address(&format!("{scheme}://{authority}{port}")).map_err(|e| named(url, e));
    }
    let addr = env.first(&["VAULT_ADDR", "BAO_ADDR"]).ok_or_else(|| {
        Error::config(format!(
            "{url}: a URL without a host needs VAULT_ADDR (or BAO_ADDR)"
        ))
    })?;
    let parsed = parse_address(&addr).map_err(|e| named(url, e))?;
    if url.is_tls() && parsed.scheme() != "https" {
        return Err(Error::config(format!(
            "{url} asks for TLS but VAULT_ADDR is not an https:// address"
        )));
    }
    Ok(parsed)
}

fn has_port(authority: &str) -> bool {
    // `[::1]:8200` vs `[::1]`; `host:8200` vs `host`.
    match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    }
}

/// The query parameters, as read; the environment fills the gaps later.
struct Params {
    common: CommonOptions,
    prefix: Option<String>,
    namespace: Option<String>,
    ca: Option<PathBuf>,
    credentials: Credentials,
    reclaim_after: Option<std::time::Duration>,
    reclaim_in_listings: Option<bool>,
}

impl Params {
    fn read(url: &StoreUrl) -> Result<Self> {
        let mut p = url.params()?;
        let params = Params {
            common: CommonOptions::from_params(&mut p)?,
            prefix: p.prefix()?,
            namespace: p.string("namespace")?,
            ca: p.path("ca")?,
            credentials: Credentials::read(&mut p)?,
            reclaim_after: p.millis("reclaim_after_ms")?,
            reclaim_in_listings: p.bool("reclaim_in_listings")?,
        };
        if url.param("token").is_some() {
            // Not an option that was forgotten: a token in a URL ends up in logs and shell
            // history. (`Display` of the URL hides its value all the same.)
            return Err(Error::config(format!(
                "{url}: a Vault token does not go in the URL: set VAULT_TOKEN, or name another variable with token_env="
            )));
        }
        p.finish()?;
        Ok(params)
    }
}

/// The credential parameters.
struct Credentials {
    token_env: Option<String>,
    role_id: Option<String>,
    secret_id: Option<SecretString>,
    secret_id_env: Option<String>,
    approle_mount: Option<String>,
}

impl Credentials {
    fn read(p: &mut QueryParams) -> Result<Self> {
        Ok(Credentials {
            token_env: p.string("token_env")?,
            role_id: p.string("role_id")?,
            secret_id: p.string("secret_id")?.map(SecretString::from),
            secret_id_env: p.string("secret_id_env")?,
            approle_mount: p.string("approle_mount")?,
        })
    }

    /// A token the URL names the variable of; else AppRole when a role id is given (URL, then
    /// `VAULT_ROLE_ID`); else `VAULT_TOKEN`.
    fn resolve(self, url: &StoreUrl, env: &Env) -> Result<Auth> {
        let fail = |what: &str| Err(Error::config(format!("{url}: {what}")));
        let approle_in_url = self.role_id.is_some()
            || self.secret_id.is_some()
            || self.secret_id_env.is_some()
            || self.approle_mount.is_some();
        if let Some(var) = &self.token_env {
            if approle_in_url {
                return fail("give token_env= or the AppRole parameters, not both");
            }
            return match env.first(&[var]) {
                Some(token) => Ok(Auth::token(token)),
                None => fail(&format!("token_env names {var}, which is unset or empty")),
            };
        }
        let secret_id = url_secret_id(self.secret_id, self.secret_id_env.as_deref(), url, env)?;
        let role_id = self
            .role_id
            .or_else(|| env.first(&["VAULT_ROLE_ID", "BAO_ROLE_ID"]));
        let Some(role_id) = role_id else {
            if approle_in_url {
                return fail("AppRole login needs a role id: role_id= or VAULT_ROLE_ID");
            }
            return match env.first(&["VAULT_TOKEN", "BAO_TOKEN"]) {
                Some(token) => Ok(Auth::token(token)),
                None => fail(
                    "no Vault credentials: set VAULT_TOKEN (or BAO_TOKEN), token_env=, or role_id= with secret_id_env=",
                ),
            };
        };
        let secret_id = match secret_id.or_else(|| {
            env.first(&["VAULT_SECRET_ID", "BAO_SECRET_ID"])
                .map(SecretString::from)
        }) {
            Some(s) => s,
            None => {
                return fail(
                    "AppRole login needs a secret id: secret_id_env=, VAULT_SECRET_ID or secret_id=",
                );
            }
        };
        let mount = self
            .approle_mount
            .as_deref()
            .unwrap_or(DEFAULT_APPROLE_MOUNT);
        Ok(Auth::AppRole {
            mount: clean_path("approle_mount", mount, false).map_err(|e| named(url, e))?,
            role_id: SecretString::from(role_id),
            secret_id,
        })
    }
}

/// The secret id the URL gives (`secret_id=`) or names the variable of (`secret_id_env=`).
fn url_secret_id(
    secret_id: Option<SecretString>,
    secret_id_env: Option<&str>,
    url: &StoreUrl,
    env: &Env,
) -> Result<Option<SecretString>> {
    match (secret_id, secret_id_env) {
        (Some(_), Some(_)) => Err(Error::config(format!(
            "{url}: give secret_id or secret_id_env, not both"
        ))),
        (Some(s), None) => Ok(Some(s)),
        (None, Some(var)) => match env.first(&[var]) {
            Some(s) => Ok(Some(SecretString::from(s))),
            None => Err(Error::config(format!(
                "{url}: secret_id_env names {var}, which is unset or empty"
            ))),
        },
        (None, None) => Ok(None),
    }
}
