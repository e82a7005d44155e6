//! [`PostgresConfig`]: how to reach the database and which table to use, built in code or
//! read from a `postgres://` URL.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use token_store_core::layers::CommonOptions;
use token_store_core::{Error, Result, Secret};

mod authority;
mod parts;
mod url;

pub use parts::{Host, Password, SslMode, TargetSession};

/// The port a host without one is reached on.
pub const DEFAULT_PORT: u16 = 5432;
/// The schema the tables live in by default.
pub const DEFAULT_SCHEMA: &str = "public";
/// The table by default (its metadata table is `token_store_meta`).
pub const DEFAULT_TABLE: &str = "token_store";
/// The per-call time limit by default (the core `Timeout` layer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to one host may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The server-side `statement_timeout` of every connection by default: under the per-call
/// limit, so the server gives up on a statement before the caller does.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(4);
/// How many connections a store keeps at most, by default.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// How long a call waits for a free connection of a full pool by default: under the
/// per-call limit, so a saturated pool is reported as such rather than as a timeout, yet long
/// enough for a burst of callers to wait while the pool opens its connections.
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(4);
/// The largest value accepted by default: 1 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;
/// How often (at most) writes of one store also delete expired rows, by default.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// The `application_name` connections report (`pg_stat_activity`) by default.
pub const DEFAULT_APPLICATION_NAME: &str = "token-store";

/// The longest table name: the index names add up to 13 characters to it, within
/// PostgreSQL's 63.
const MAX_TABLE_LEN: usize = 48;

/// How to open a PostgreSQL token store: built in code, or read from a URL with
/// [`PostgresConfig::from_url`]. `Debug` and `Display` never show the password.
///
/// ```
/// use std::time::Duration;
/// use token_store_postgres::{PostgresConfig, SslMode};
/// let config = PostgresConfig::new("mcp")
///     .with_host("db.internal", 5432)
///     .with_dbname("tokens")
///     .with_password_file("/run/secrets/pg-password")
///     .with_ssl_mode(SslMode::VerifyFull)
///     .with_ssl_root_cert("/etc/ssl/internal-ca.pem")
///     .with_table("mcp_tokens")
///     .with_pool_size(16)
///     .with_timeout(Duration::from_secs(3));
/// assert_eq!(
///     config.to_string(),
///     "postgres://mcp@db.internal:5432/tokens?schema=public&table=mcp_tokens"
/// );
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// The servers, tried in order (`localhost:5432` when empty).
    pub hosts: Vec<Host>,
    /// The role to connect as.
    pub user: String,
    /// Where the password comes from; `None` for trust, peer or certificate authentication.
    pub password: Option<Password>,
    /// The database; `None` is the role's name (PostgreSQL's default).
    pub dbname: Option<String>,
    /// The schema of the tables; created if missing.
    pub schema: String,
    /// The table of records; its metadata table is `<table>_meta`.
    pub table: String,
    /// TLS: whether, and what is checked.
    pub ssl_mode: SslMode,
    /// CA certificates (PEM) that sign the server's certificate; `None` is the system's
    /// trust store.
    pub ssl_root_cert: Option<PathBuf>,
    /// A client certificate (PEM) and its private key (PEM, a private file), for servers
    /// that authenticate clients by certificate.
    pub ssl_client_cert: Option<(PathBuf, PathBuf)>,
    /// Which session a multi-host configuration must end up on.
    pub target_session: TargetSession,
    /// `application_name`, shown in `pg_stat_activity`.
    pub application_name: String,
    /// How long connecting to one host (TCP, TLS and authentication) may take.
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` of every connection.
    pub statement_timeout: Duration,
    /// How many connections the store keeps at most.
    pub pool_size: usize,
    /// How long a call waits for a free connection when all are in use.
    pub pool_timeout: Duration,
    /// The largest value accepted, in bytes.
    pub max_value_size: usize,
    /// How often (at most) a write also deletes expired rows.
    pub sweep_interval: Duration,
    /// The options every backend shares: the encryption key and the per-call time limit
    /// ([`DEFAULT_TIMEOUT`] unless changed), applied as layers by [`open`](crate::open).
    pub common: CommonOptions,
}

impl fmt::Debug for PostgresConfig {
    // By hand: the password shows only where it comes from, the key only what kind it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("hosts", &self.hosts)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("dbname", &self.dbname)
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("ssl_client_cert", &self.ssl_client_cert)
            .field("target_session", &self.target_session)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("pool_size", &self.pool_size)
            .field("pool_timeout", &self.pool_timeout)
            .field("max_value_size", &self.max_value_size)
            .field("sweep_interval", &self.sweep_interval)
            .field("key", &self.common.key)
            .field("timeout", &self.common.timeout)
            .finish()
    }
}

/// The store's name in errors and logs: a URL without password or secret parameters.
impl fmt::Display for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://{}@", self.user)?;
        for (i, host) in self.effective_hosts().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{host}")?;
        }
        write!(
            f,
            "/{}?schema={}&table={}",
            self.dbname.as_deref().unwrap_or(&self.user),
            self.schema,
            self.table
        )
    }
}

impl PostgresConfig {
    /// The defaults for connecting as `user` to `localhost:5432`, database `user`, table
    /// `public.token_store`, no password.
    pub fn new(user: impl Into<String>) -> Self {
        PostgresConfig {
            hosts: Vec::new(),
            user: user.into(),
            password: None,
            dbname: None,
            schema: DEFAULT_SCHEMA.to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            ssl_mode: SslMode::default(),
            ssl_root_cert: None,
            ssl_client_cert: None,
            target_session: TargetSession::default(),
            application_name: DEFAULT_APPLICATION_NAME.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            pool_timeout: DEFAULT_POOL_TIMEOUT,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            common: CommonOptions::new().with_timeout(DEFAULT_TIMEOUT),
        }
    }

    /// Checks what [`from_url`](Self::from_url) checks, for a configuration built in code:
    /// identifiers, a user, limits above zero. [`PostgresStore::open`](crate::PostgresStore::open)
    /// calls it.
    pub fn validate(&self) -> Result<()> {
        if self.user.is_empty() {
            return Err(Error::config(format!("{self}: the user name is empty")));
        }
        check_identifier("schema", &self.schema, 63)?;
        check_identifier("table", &self.table, MAX_TABLE_LEN)?;
        if self.pool_size == 0 || self.max_value_size == 0 {
            return Err(Error::config(format!(
                "{self}: pool_size and max_value_size must be more than 0"
            )));
        }
        let zero = [
            self.connect_timeout,
            self.statement_timeout,
            self.pool_timeout,
            self.sweep_interval,
        ]
        .contains(&Duration::ZERO);
        if zero {
            return Err(Error::config(format!(
                "{self}: connect, statement and pool timeouts and the sweep interval must be more than 0"
            )));
        }
        // A value travels as one bytea parameter; PostgreSQL's own limit is 1 GiB.
        if self.max_value_size > 256 * 1024 * 1024 {
            return Err(Error::config(format!(
                "{self}: max_value_size is at most 256 MiB"
            )));
        }
        Ok(())
    }

    /// The hosts to try: the configured ones, or `localhost:5432`.
    pub(crate) fn effective_hosts(&self) -> Vec<Host> {
        if self.hosts.is_empty() {
            vec![Host::Tcp {
                name: "localhost".to_owned(),
                port: DEFAULT_PORT,
            }]
        } else {
            self.hosts.clone()
        }
    }

    /// The same configuration with one more host to try (after the ones already given).
    pub fn with_host(mut self, name: impl Into<String>, port: u16) -> Self {
        self.hosts.push(Host::Tcp {
            name: name.into(),
            port,
        });
        self
    }

    /// The same configuration with one more host: a Unix socket in directory `dir`.
    pub fn with_socket_dir(mut self, dir: impl Into<PathBuf>, port: u16) -> Self {
        self.hosts.push(Host::Unix {
            dir: dir.into(),
            port,
        });
        self
    }

    /// The same configuration on database `dbname`.
    pub fn with_dbname(mut self, dbname: impl Into<String>) -> Self {
        self.dbname = Some(dbname.into());
        self
    }

    /// The same configuration with this password.
    pub fn with_password(mut self, password: Secret) -> Self {
        self.password = Some(Password::Given(password));
        self
    }

    /// The same configuration with the password in environment variable `var`.
    pub fn with_password_env(mut self, var: impl Into<String>) -> Self {
        self.password = Some(Password::Env(var.into()));
        self
    }

    /// The same configuration with the password in a private file.
    pub fn with_password_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.password = Some(Password::File(path.into()));
        self
    }

    /// The same configuration in another schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The same configuration on another table.
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The same configuration with another `sslmode`.
    pub fn with_ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = mode;
        self
    }

    /// The same configuration trusting the CA certificates (PEM) in `path`.
    pub fn with_ssl_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_root_cert = Some(path.into());
        self
    }

    /// The same configuration presenting a client certificate (PEM) and its key (PEM).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.ssl_client_cert = Some((cert.into(), key.into()));
        self
    }

    /// The same configuration with another `target_session_attrs`.
    pub fn with_target_session(mut self, target: TargetSession) -> Self {
        self.target_session = target;
        self
    }

    /// The same configuration with another `application_name`.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// The same configuration with another connect timeout (per host).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The same configuration with another server-side statement timeout.
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The same configuration with another pool size.
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// The same configuration with another wait for a free connection.
    pub fn with_pool_timeout(mut self, timeout: Duration) -> Self {
        self.pool_timeout = timeout;
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

/// Schema and table names are interpolated into statements (quoted): only lower-case ASCII
/// letters, digits and `_`, starting with a letter or `_`, so a name can neither break out
/// of its quotes nor differ from what `psql` users type unquoted.
fn check_identifier(what: &str, name: &str, max: usize) -> Result<()> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let ok_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok_first || !ok_rest || name.len() > max {
        return Err(Error::config(format!(
            "the {what} name `{}` must be 1 to {max} lower-case letters, digits or `_`, starting with a letter or `_`",
            name.escape_debug()
        )));
    }
    Ok(())
}

token_store_core::common_option_builders!(PostgresConfig);
