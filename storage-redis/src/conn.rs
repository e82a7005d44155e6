//! One connection handle for the three topologies, so the store's commands and scripts are
//! written once.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};
use token_store_core::{Error, Result};

use crate::config::{RedisConfig, Topology, redact};
use crate::errors::map_err;
use crate::tls;

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
        if config.topology.uses_tls() {
            tls::ensure_crypto_provider();
        }
        let certs = tls::load_certs(config.tls.as_ref())?;
        match &config.topology {
            Topology::Standalone { url } => open_standalone(config, url, certs).await,
            Topology::Cluster { nodes } => open_cluster(config, nodes, certs).await,
            Topology::Sentinel { .. } => {
                open_sentinel(config, sentinel_client(&config.topology, certs)?).await
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
}

async fn open_standalone(
    config: &RedisConfig,
    url: &str,
    certs: Option<TlsCertificates>,
) -> Result<Connection> {
    let bad_url = |e| bad_config(&format!("bad Redis URL {}", redact(url)), e);
    let info = url.into_connection_info().map_err(bad_url)?;
    let client = match certs {
        Some(certs) => Client::build_with_tls(info, certs),
        None => Client::open(info),
    }
    .map_err(bad_url)?;
    // Few quick retries: the per-call time limit, not the reconnect loop, decides when a call
    // gives up, and a failed attempt is retried by the next call.
    let cfg = ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout));
    let manager = ConnectionManager::new_with_config(client, cfg)
        .await
        .map_err(|e| map_err(e, None))?;
    Ok(Connection::Single(manager))
}

async fn open_cluster(
    config: &RedisConfig,
    nodes: &[String],
    certs: Option<TlsCertificates>,
) -> Result<Connection> {
    let mut builder = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout)
        .retries(6)
        .min_retry_wait(50)
        .max_retry_wait(1000);
    if let Some(certs) = certs {
        builder = builder.certs(certs);
    }
    let client = builder
        .build()
        .map_err(|e| bad_config("bad Redis Cluster seed nodes", e))?;
    let conn = client
        .get_async_connection()
        .await
        .map_err(|e| map_err(e, None))?;
    Ok(Connection::Cluster(conn))
}

/// The client that asks the sentinels for the master.
fn sentinel_client(topology: &Topology, certs: Option<TlsCertificates>) -> Result<SentinelClient> {
    let Topology::Sentinel {
        sentinels,
        master,
        tls,
        db,
        username,
        password,
    } = topology
    else {
        return Err(Error::config("not a Sentinel configuration"));
    };
    let mut builder = SentinelClientBuilder::new(
        sentinel_addrs(sentinels, *tls)?,
        master,
        SentinelServerType::Master,
    )
    .map_err(|e| bad_config("bad sentinel configuration", e))?
    .set_client_to_redis_db(*db);
    if *tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        // The sentinels are TLS servers too, with the same private CA (and client
        // certificate, for mutual TLS) as the master they name.
        if let Some(certs) = &certs {
            builder = builder.set_client_to_sentinel_certificates(certs.clone());
        }
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
    builder
        .build()
        .map_err(|e| bad_config("bad sentinel configuration", e))
}

async fn open_sentinel(config: &RedisConfig, client: SentinelClient) -> Result<Connection> {
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

/// The sentinels' `host:port` addresses; TLS ones for `rediss+sentinel://` (the client
/// refuses a TLS mode on a plain TCP address).
fn sentinel_addrs(sentinels: &[String], tls: bool) -> Result<Vec<ConnectionAddr>> {
    sentinels
        .iter()
        .map(|s| {
            let info = s
                .as_str()
                .into_connection_info()
                .map_err(|e| bad_config(&format!("bad sentinel address {}", redact(s)), e))?;
            match info.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. }
                    if tls =>
                {
                    Ok(ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port: *port,
                        insecure: false,
                        tls_params: None,
                    })
                }
                ConnectionAddr::Tcp(host, port) => Ok(ConnectionAddr::Tcp(host.clone(), *port)),
                _ => Err(Error::config(format!(
                    "sentinel address {} is not host:port",
                    redact(s)
                ))),
            }
        })
        .collect()
}

fn bad_config(message: &str, e: RedisError) -> Error {
    Error::Config {
        message: message.to_owned(),
        source: Some(Box::new(e)),
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded value is a plain Option that no panic can leave half-written.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
