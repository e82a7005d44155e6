//! [`PostgresConfig::from_url`]: the URL grammar (the table is in the crate docs).

use token_store_core::layers::CommonOptions;
use token_store_core::{BackendKind, Error, QueryParams, Result, Secret, StoreUrl};

use super::authority;
use super::{DEFAULT_TIMEOUT, Password, PostgresConfig, SslMode, TargetSession};

impl PostgresConfig {
    /// Reads a `postgres://` or `postgresql://` URL (the grammar is in the crate docs).
    /// Every parameter is read by name and type, so an unknown, duplicated or malformed one
    /// is an [`Error::Config`] naming it; no error quotes the password.
    ///
    /// ```
    /// use token_store_core::StoreUrl;
    /// use token_store_postgres::{PostgresConfig, SslMode};
    /// let url = StoreUrl::parse(
    ///     "postgres://mcp:s3cret@db.internal/tokens?sslmode=verify-full&table=mcp_tokens",
    /// )
    /// .unwrap();
    /// let config = PostgresConfig::from_url(&url).unwrap();
    /// assert_eq!(config.ssl_mode, SslMode::VerifyFull);
    /// assert!(!format!("{config} {config:?}").contains("s3cret"));
    /// let typo = StoreUrl::parse("postgres://mcp@db/tokens?key_flie=/k").unwrap();
    /// assert!(PostgresConfig::from_url(&typo).unwrap_err().to_string().contains("key_flie"));
    /// ```
    pub fn from_url(url: &StoreUrl) -> Result<Self> {
        if url.kind() != BackendKind::Postgres {
            return Err(Error::config(format!("{url} is not a postgres:// URL")));
        }
        let parts = authority::parse(url)?;
        let user = parts.user.ok_or_else(|| {
            Error::config(format!(
                "{url}: name the role to connect as (postgres://USER@host/db)"
            ))
        })?;
        let mut config = PostgresConfig::new(user);
        config.hosts = parts.hosts;
        config.dbname = parts.dbname;
        let mut params = url.params()?;
        config.common = CommonOptions::from_params(&mut params)?;
        if config.common.timeout.is_none() {
            config.common.timeout = Some(DEFAULT_TIMEOUT);
        }
        config.password = password(url, parts.password, &mut params)?;
        read_names(&mut config, &mut params)?;
        read_tls(&mut config, &mut params)?;
        read_limits(&mut config, url, &mut params)?;
        params.finish()?;
        config.validate()?;
        Ok(config)
    }
}

fn password(
    url: &StoreUrl,
    given: Option<Secret>,
    params: &mut QueryParams,
) -> Result<Option<Password>> {
    let env = params.string("password_env")?;
    let file = params.path("password_file")?;
    match (given, env, file) {
        (None, None, None) => Ok(None),
        (Some(p), None, None) => Ok(Some(Password::Given(p))),
        (None, Some(var), None) => Ok(Some(Password::Env(var))),
        (None, None, Some(path)) => Ok(Some(Password::File(path))),
        _ => Err(Error::config(format!(
            "{url}: give the password one way: in the URL, password_env or password_file"
        ))),
    }
}

fn read_names(config: &mut PostgresConfig, params: &mut QueryParams) -> Result<()> {
    if let Some(schema) = params.string("schema")? {
        config.schema = schema;
    }
    if let Some(table) = params.string("table")? {
        config.table = table;
    }
    if let Some(name) = params.string("application_name")? {
        config.application_name = name;
    }
    if let Some(t) = params.choice("target_session_attrs", &["any", "read-write"])? {
        config.target_session = match t {
            "any" => TargetSession::Any,
            _ => TargetSession::ReadWrite,
        };
    }
    Ok(())
}

fn read_tls(config: &mut PostgresConfig, params: &mut QueryParams) -> Result<()> {
    if let Some(mode) = params.choice("sslmode", &SslMode::NAMES)? {
        config.ssl_mode = SslMode::from_name(mode);
    }
    // libpq's `sslrootcert=system` names the system trust store, which is also our default.
    config.ssl_root_cert = match params.string("sslrootcert")? {
        Some(s) if s == "system" => None,
        // Read again as a path, for `~/`; it was marked read by the first reader.
        Some(_) => params.path("sslrootcert")?,
        None => None,
    };
    let cert = params.path("sslcert")?;
    let key = params.path("sslkey")?;
    config.ssl_client_cert = match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c, k)),
        _ => {
            return Err(Error::config(
                "a client certificate needs both sslcert= and sslkey= (PEM files)",
            ));
        }
    };
    Ok(())
}

fn read_limits(
    config: &mut PostgresConfig,
    url: &StoreUrl,
    params: &mut QueryParams,
) -> Result<()> {
    if let Some(t) = params.millis("connect_timeout_ms")? {
        config.connect_timeout = t;
    }
    if let Some(t) = params.millis("statement_timeout_ms")? {
        config.statement_timeout = t;
    }
    if let Some(t) = params.millis("pool_timeout_ms")? {
        config.pool_timeout = t;
    }
    if let Some(t) = params.millis("sweep_interval_ms")? {
        config.sweep_interval = t;
    }
    if let Some(n) = params.parse::<usize>("pool_size", "a number of connections")? {
        config.pool_size = n;
    }
    if let Some(n) = params.parse::<usize>("max_value_size", "a number of bytes")? {
        config.max_value_size = n;
    }
    if config.pool_size == 0 || config.max_value_size == 0 {
        return Err(Error::config(format!(
            "{url}: `pool_size` and `max_value_size` must be more than 0"
        )));
    }
    Ok(())
}
