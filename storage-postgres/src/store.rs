//! [`PostgresStore`]: the `RawStore` over a pool of connections. Reads and listings are in
//! `read.rs`, writes, deletes and the sweep in `write.rs`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use async_trait::async_trait;
use deadpool_postgres::ClientWrapper;
use token_store_core::backend::check_size;
use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, Scope, StorageKey, Version,
};

use crate::config::PostgresConfig;
use crate::error::{BACKEND, pg};
use crate::pool::Connections;
use crate::schema::{self, Names};
use crate::sql::{KeyCols, Statements};

/// A PostgreSQL token store: one table, shared by every process on every host that reaches
/// the database, with compare-and-swap in single statements. Cloning is cheap and shares the
/// pool.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) connections: Connections,
    pub(crate) sql: Statements,
    pub(crate) names: Names,
    pub(crate) config: PostgresConfig,
    /// `max_value_size` as the read statement binds it.
    pub(crate) max_value: i32,
    /// Milliseconds since `epoch` of the last sweep's start (0: never).
    pub(crate) last_sweep: AtomicU64,
    pub(crate) epoch: Instant,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("store", &self.name())
            .field("pool_size", &self.inner.config.pool_size)
            .field("ssl_mode", &self.inner.config.ssl_mode)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects (one connection, to check the server, the credentials and TLS now), then
    /// creates or migrates the tables, refusing tables that are not token-store's. The raw
    /// backend, without layers: `config.common` (key, timeout) is applied by
    /// [`open`](crate::open).
    ///
    /// Errors: an unreachable server is [`Error::Unavailable`]; a refused login
    /// [`Error::PermissionDenied`]; a foreign or newer table, a missing database or a bad
    /// certificate [`Error::Config`].
    pub async fn open(config: &PostgresConfig) -> Result<Self> {
        config.validate()?;
        let connections = Connections::new(config, config.to_string())?;
        let names = Names::new(&config.schema, &config.table);
        let mut conn = connections.get().await?;
        let outcome = schema::ensure(conn.client_mut()?, &names, connections.name()).await;
        conn.settled();
        outcome?;
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                sql: Statements::new(&names.table),
                names,
                max_value: i32::try_from(config.max_value_size).unwrap_or(i32::MAX),
                config: config.clone(),
                connections,
                last_sweep: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        })
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// The store's name in errors (a URL without password).
    pub(crate) fn name(&self) -> &str {
        self.inner.connections.name()
    }

    /// Maps a client error of an operation on `key`.
    pub(crate) fn err(&self, what: &str, key: &StorageKey, e: tokio_postgres::Error) -> Error {
        pg(self.name(), &format!("{what} {}", key.encode()), e)
    }

    /// The version of the live row at `key`, for a conflict's report.
    pub(crate) async fn current(
        &self,
        client: &ClientWrapper,
        key: &StorageKey,
        cols: &KeyCols<'_>,
    ) -> Result<Option<Version>> {
        let stmt = client
            .prepare_cached(&self.inner.sql.version)
            .await
            .map_err(|e| self.err("cannot prepare a version read of", key, e))?;
        let row = client
            .query_opt(&stmt, &[&cols.kind, &&cols.id[..]])
            .await
            .map_err(|e| self.err("cannot read the version of", key, e))?;
        Ok(row.map(|r| Version::new(r.get::<_, i64>(0).to_string())))
    }

    /// A failed precondition at `key`, naming the version now there.
    pub(crate) async fn conflict(
        &self,
        client: &ClientWrapper,
        key: &StorageKey,
        cols: &KeyCols<'_>,
    ) -> Error {
        match self.current(client, key, cols).await {
            Ok(current) => Error::Conflict {
                backend: BACKEND,
                key: key.encode(),
                current,
            },
            Err(e) => e,
        }
    }
}

#[async_trait]
impl RawStore for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.inner.config.max_value_size)
            .with_sharing(Scope::Hosts)
            .with_cas(Scope::Hosts)
            .with_ttl()
            .with_persistence(true)
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        let cols = KeyCols::of(key)?;
        let conn = self.inner.connections.get().await?;
        let outcome = self.read_on(conn.client()?, key, &cols).await;
        conn.settled();
        outcome
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        let cols = KeyCols::of(key)?;
        check_size(BACKEND, key, value.len(), self.inner.config.max_value_size)?;
        let conn = self.inner.connections.get().await?;
        let outcome = self
            .write_on(conn.client()?, key, &cols, value, options)
            .await;
        conn.settled();
        let version = outcome?;
        self.maybe_sweep();
        Ok(version)
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        let cols = KeyCols::of(key)?;
        let conn = self.inner.connections.get().await?;
        let outcome = self
            .remove_on(conn.client()?, key, &cols, precondition)
            .await;
        conn.settled();
        outcome
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let conn = self.inner.connections.get().await?;
        let outcome = self.scan_on(conn.client()?, kind, filter).await;
        conn.settled();
        outcome
    }
}
