//! Connections: the tokio-postgres configuration, the deadpool pool, and the guard that
//! takes a connection out of service when a call is abandoned midway.

use std::path::Path;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, QueueMode, RecyclingMethod, Runtime,
    TimeoutType, Timeouts,
};
use token_store_core::backend::fs::read_private_file;
use token_store_core::{Error, Result};
use tokio_postgres::NoTls;
use tokio_postgres::config::TargetSessionAttrs;
use zeroize::Zeroizing;

use crate::config::{Host, Password, PostgresConfig, TargetSession};
use crate::error;
use crate::tls::Tls;

/// The pool of one store and what is needed to cancel a statement on it.
pub(crate) struct Connections {
    pool: Pool,
    tls: Tls,
    name: String,
    size: usize,
    cancel_timeout: Duration,
}

impl Connections {
    /// The pool `config` describes (no connection is made yet). `name` names the store in
    /// errors.
    pub(crate) fn new(config: &PostgresConfig, name: String) -> Result<Connections> {
        let tls = Tls::new(config)?;
        let password = resolve_password(config.password.as_ref(), &name)?;
        let pg = pg_config(config, &tls, password.as_deref().map(Vec::as_slice));
        let manager_config = ManagerConfig {
            // `is_closed` only: a connection the server dropped is replaced at checkout; one
            // that died silently fails its next call with `Unavailable` and is replaced then.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls.connector {
            None => Manager::from_config(pg, NoTls, manager_config),
            Some(connector) => Manager::from_config(pg, connector.clone(), manager_config),
        };
        let hosts = u32::try_from(config.effective_hosts().len()).unwrap_or(u32::MAX);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            // The most recently used connection first: sequential callers keep one warm
            // connection (and one warm server process) instead of cycling through all.
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.pool_timeout))
            // tokio-postgres tries the hosts in turn, each for up to the connect timeout,
            // then asks a read-write candidate whether it is one.
            .create_timeout(Some(
                config.connect_timeout.saturating_mul(hosts) + config.statement_timeout,
            ))
            // `Fast` recycling is a flag check that never waits: no timer for it.
            .recycle_timeout(None)
            .build()
            .map_err(|e| Error::config(format!("{name}: cannot build the connection pool: {e}")))?;
        Ok(Connections {
            pool,
            tls,
            name,
            size: config.pool_size,
            cancel_timeout: config.connect_timeout,
        })
    }

    /// A connection: an idle one, or a new one while the pool has room, or the first to be
    /// freed within the pool timeout.
    pub(crate) async fn get(&self) -> Result<Conn> {
        // An idle connection first, without building the wait timer: with it (and the
        // recycle timer) a checkout counted ~2 400 instructions under callgrind, without
        // them ~1 380. Only a full pool waits (with the timer).
        let now = Timeouts {
            wait: Some(Duration::ZERO),
            ..self.pool.timeouts()
        };
        let object = match self.pool.timeout_get(&now).await {
            Err(PoolError::Timeout(TimeoutType::Wait)) => self.pool.get().await,
            other => other,
        }
        .map_err(|e| error::pool(&self.name, e, self.size))?;
        Ok(Conn {
            object: Some(object),
            settled: false,
            tls: self.tls.clone(),
            cancel_timeout: self.cancel_timeout,
        })
    }

    /// The store's name, for errors.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// A connection in use. Call [`Conn::settled`] once the statements it was taken for have
/// answered (with a result or an error). Dropped unsettled (the caller's future was dropped
/// by a timeout while a statement ran), the connection never returns to the pool: it closes,
/// and a cancel request stops the statement on the server, so neither a later caller nor the
/// server keeps waiting on an abandoned call.
pub(crate) struct Conn {
    object: Option<Object>,
    settled: bool,
    tls: Tls,
    cancel_timeout: Duration,
}

impl Conn {
    /// The client. The connection is held until this guard is dropped, so the error (a
    /// typed one rather than a panic in library code) cannot happen.
    pub(crate) fn client(&self) -> Result<&deadpool_postgres::ClientWrapper> {
        self.object.as_deref().ok_or_else(gone)
    }

    /// The client, mutably (for a transaction); see [`Conn::client`].
    pub(crate) fn client_mut(&mut self) -> Result<&mut tokio_postgres::Client> {
        match self.object.as_mut() {
            Some(object) => Ok(object),
            None => Err(gone()),
        }
    }

    /// The statements answered: the connection may return to the pool.
    pub(crate) fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Some(object) = self.object.take() else {
            return;
        };
        let token = object.cancel_token();
        // Out of the pool for good; dropping it closes the socket.
        drop(Object::take(object));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let tls = self.tls.clone();
        let limit = self.cancel_timeout;
        runtime.spawn(async move {
            let sent = tokio::time::timeout(limit, async {
                match tls.connector {
                    None => token.cancel_query(NoTls).await,
                    Some(connector) => token.cancel_query(connector).await,
                }
            })
            .await;
            tracing::debug!(target: "token_store_postgres", ok = matches!(sent, Ok(Ok(()))), "cancelled an abandoned statement");
        });
    }
}

fn gone() -> Error {
    Error::Backend {
        backend: error::BACKEND,
        message: "the connection was already given back to the pool".to_owned(),
        source: None,
    }
}

fn pg_config(
    config: &PostgresConfig,
    tls: &Tls,
    password: Option<&[u8]>,
) -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    pg.user(&config.user);
    if let Some(password) = password {
        pg.password(password);
    }
    pg.dbname(config.dbname.as_deref().unwrap_or(&config.user));
    for host in config.effective_hosts() {
        match host {
            Host::Tcp { name, port } => {
                pg.host(&name);
                pg.port(port);
            }
            Host::Unix { dir, port } => {
                pg.host_path(dir);
                pg.port(port);
            }
        }
    }
    pg.application_name(&config.application_name);
    pg.connect_timeout(config.connect_timeout);
    pg.ssl_mode(tls.mode);
    pg.target_session_attrs(match config.target_session {
        TargetSession::Any => TargetSessionAttrs::Any,
        TargetSession::ReadWrite => TargetSessionAttrs::ReadWrite,
    });
    // Server-side limits: a statement (a lock wait included) never outlives the caller's
    // interest in it by much, nor does a transaction left open by a dropped call.
    let statement_ms = config.statement_timeout.as_millis();
    pg.options(format!(
        "-c statement_timeout={statement_ms} -c idle_in_transaction_session_timeout={}",
        statement_ms.saturating_mul(2)
    ));
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(30));
    pg
}

/// The password, read now (so a rotated password file is read again on the next open).
fn resolve_password(password: Option<&Password>, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let bytes = match password {
        None => return Ok(None),
        Some(Password::Given(secret)) => Zeroizing::new(secret.expose().as_bytes().to_vec()),
        Some(Password::Env(var)) => match std::env::var(var) {
            Ok(p) if !p.is_empty() => Zeroizing::new(p.into_bytes()),
            _ => {
                return Err(Error::config(format!(
                    "{name}: password_env={var}, but the variable {var} is unset or empty"
                )));
            }
        },
        Some(Password::File(path)) => read_password_file(path)?,
    };
    Ok(Some(bytes))
}

fn read_password_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut bytes = read_private_file(path, 4096, "password file")?;
    // A trailing newline (`echo pw > file`) is not part of the password.
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(Error::config(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(bytes)
}
