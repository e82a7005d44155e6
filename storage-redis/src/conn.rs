//! One connection handle for the three topologies, so the store's commands and scripts are
//! written once.

use std::sync::{Arc, Mutex as StdMutex};

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionAddr, IntoConnectionInfo,
    Pipeline, RedisError, RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};
use token_store_core::{Error, Result};

use crate::config::{RedisConfig, TlsFiles, Topology};
use crate::errors::map_err;

/// A cheap clone of the live connection for one call.
#[derive(Clone)]
pub(crate) enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Single(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
            Handle::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Single(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
            Handle::Sentinel(c) => c.get_db(),
        }
    }
}

/// The store's connection: reconnects by itself in every topology.
pub(crate) enum Connection {
    /// `ConnectionManager` reconnects after a dropped connection.
    Single(ConnectionManager),
    /// The cluster client follows MOVED/ASK, refreshes slots and reconnects per node.
    Cluster(ClusterConnection),
    /// Sentinel gives no self-healing connection: we keep the master's connection and ask the
    /// sentinels again when it breaks or turns read-only (a failover happened).
    Sentinel(Arc<SentinelState>),
}

pub(crate) struct SentinelState {
    client: tokio::sync::Mutex<SentinelClient>,
    current: StdMutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl Connection {
    pub(crate) async fn open(config: &RedisConfig) -> Result<Self> {
        let certs = load_certs(config.tls.as_ref())?;
        match &config.topology {
            Topology::Standalone { url } => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| Error::Config {
                        message: format!("bad Redis URL {}", crate::config::redact(url)),
                        source: Some(Box::new(e)),
                    })?;
                let client = match certs {
                    Some(certs) => Client::build_with_tls(info, certs),
                    None => Client::open(info),
                }
                .map_err(|e| Error::Config {
                    message: format!("bad Redis URL {}", crate::config::redact(url)),
                    source: Some(Box::new(e)),
                })?;
                // Few quick retries: the operation timeout, not the reconnect loop, decides
                // when a call gives up, and a failed attempt is retried by the next call.
                let cfg = ConnectionManagerConfig::new()
                    .set_number_of_retries(2)
                    .set_min_delay(std::time::Duration::from_millis(50))
                    .set_max_delay(std::time::Duration::from_millis(500))
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.response_timeout));
                let manager = ConnectionManager::new_with_config(client, cfg)
                    .await
                    .map_err(|e| map_err(e, None))?;
                Ok(Connection::Single(manager))
            }
            Topology::Cluster { nodes } => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.response_timeout)
                    .retries(6)
                    .min_retry_wait(50)
                    .max_retry_wait(1000);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(|e| Error::Config {
                    message: "bad Redis Cluster seed nodes".to_owned(),
                    source: Some(Box::new(e)),
                })?;
                let conn = client
                    .get_async_connection()
                    .await
                    .map_err(|e| map_err(e, None))?;
                Ok(Connection::Cluster(conn))
            }
            Topology::Sentinel {
                sentinels,
                master,
                tls,
                db,
                username,
                password,
            } => {
                let mut addrs = Vec::new();
                for s in sentinels {
                    let info = s
                        .as_str()
                        .into_connection_info()
                        .map_err(|e| Error::Config {
                            message: format!("bad sentinel address {}", crate::config::redact(s)),
                            source: Some(Box::new(e)),
                        })?;
                    match info.addr() {
                        ConnectionAddr::Tcp(host, port) => {
                            addrs.push(ConnectionAddr::Tcp(host.clone(), *port))
                        }
                        _ => {
                            return Err(Error::config(format!(
                                "sentinel address {} is not host:port",
                                crate::config::redact(s)
                            )));
                        }
                    }
                }
                let mut builder =
                    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
                        .map_err(|e| Error::Config {
                            message: "bad sentinel configuration".to_owned(),
                            source: Some(Box::new(e)),
                        })?
                        .set_client_to_redis_db(*db);
                if *tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                }
                if let Some(certs) = certs {
                    builder = builder.set_client_to_redis_certificates(certs);
                }
                if let Some(u) = username {
                    builder = builder.set_client_to_redis_username(u);
                }
                if let Some(p) = password {
                    builder = builder.set_client_to_redis_password(p);
                }
                let client = builder.build().map_err(|e| Error::Config {
                    message: "bad sentinel configuration".to_owned(),
                    source: Some(Box::new(e)),
                })?;
                let state = Arc::new(SentinelState {
                    client: tokio::sync::Mutex::new(client),
                    current: StdMutex::new(None),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(config.connect_timeout))
                        .set_response_timeout(Some(config.response_timeout)),
                });
                let conn = Connection::Sentinel(state);
                conn.handle().await.map_err(|e| map_err(e, None))?;
                Ok(conn)
            }
        }
    }

    /// A handle for one call.
    pub(crate) async fn handle(&self) -> RedisResult<Handle> {
        match self {
            Connection::Single(c) => Ok(Handle::Single(c.clone())),
            Connection::Cluster(c) => Ok(Handle::Cluster(c.clone())),
            Connection::Sentinel(state) => {
                if let Some(c) = lock(&state.current).clone() {
                    return Ok(Handle::Sentinel(c));
                }
                let mut client = state.client.lock().await;
                // Another call may have reconnected while we waited for the lock.
                if let Some(c) = lock(&state.current).clone() {
                    return Ok(Handle::Sentinel(c));
                }
                let master = client.async_get_client().await?;
                let conn = master
                    .get_multiplexed_async_connection_with_config(&state.config)
                    .await?;
                *lock(&state.current) = Some(conn.clone());
                Ok(Handle::Sentinel(conn))
            }
        }
    }

    /// Tells the connection a call failed, so a sentinel-found master is looked up again when
    /// the failure says it is gone or demoted.
    pub(crate) fn observe(&self, error: &RedisError) {
        if let Connection::Sentinel(state) = self {
            let demoted = matches!(
                error.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
                )
            );
            if demoted || error.is_io_error() || error.is_unrecoverable_error() {
                *lock(&state.current) = None;
            }
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded value is a plain Option that no panic can leave half-written.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn load_certs(files: Option<&TlsFiles>) -> Result<Option<TlsCertificates>> {
    let Some(files) = files else {
        return Ok(None);
    };
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).map_err(|e| Error::Config {
            message: format!("cannot read the TLS {what} {}", p.display()),
            source: Some(Box::new(e)),
        })
    };
    let root_cert = files
        .ca
        .as_deref()
        .map(|p| read(p, "CA file"))
        .transpose()?;
    let client_tls = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert, "client certificate")?,
            client_key: read(key, "client key")?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::config(
                "mutual TLS needs both cert= and key= (PEM files)",
            ));
        }
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}
