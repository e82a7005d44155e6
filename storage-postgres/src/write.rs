//! Writes and deletes, each one conditional statement, and the background sweep of expired
//! rows.

use std::sync::atomic::Ordering;

use deadpool_postgres::ClientWrapper;
use token_store_core::{Error, Precondition, PutOptions, Result, StorageKey, Version};
use tokio_postgres::types::ToSql;

use crate::sql::{KeyCols, SWEEP_BATCH, Value, new_version, ttl_ms};
use crate::store::PostgresStore;

impl PostgresStore {
    /// Writes one record under its precondition: an upsert, a create (that also replaces an
    /// expired row) or a compare-and-swap, each one statement; a statement that changed no
    /// row is a conflict.
    pub(crate) async fn write_on(
        &self,
        client: &ClientWrapper,
        key: &StorageKey,
        cols: &KeyCols<'_>,
        value: &[u8],
        options: &PutOptions,
    ) -> Result<Version> {
        let sql = &self.inner.sql;
        let (statement, expected) = match &options.precondition {
            Precondition::Any => (&sql.upsert, None),
            Precondition::IfAbsent => (&sql.create, None),
            Precondition::IfVersion(v) => match v.as_str().parse::<i64>() {
                Ok(expected) => (&sql.cas, Some(expected)),
                // Not one of ours: it cannot be the current version.
                Err(_) => return Err(self.conflict(client, key, cols).await),
            },
            other => {
                return Err(Error::invalid_input(format!(
                    "the postgres backend does not support the precondition {other:?}"
                )));
            }
        };
        let version = new_version(expected)?;
        let ttl = ttl_ms(options.ttl);
        let (id, value) = (&cols.id[..], Value(value));
        let [p1, p2, p3, p4] = &cols.parts;
        let stmt = client
            .prepare_cached(statement)
            .await
            .map_err(|e| self.err("cannot prepare a write of", key, e))?;
        let changed = match expected {
            None => {
                let row: [&(dyn ToSql + Sync); 9] =
                    [&cols.kind, &id, p1, p2, p3, p4, &value, &version, &ttl];
                client.execute(&stmt, &row).await
            }
            Some(expected) => {
                let row: [&(dyn ToSql + Sync); 6] =
                    [&cols.kind, &id, &value, &version, &ttl, &expected];
                client.execute(&stmt, &row).await
            }
        }
        .map_err(|e| self.err("cannot write", key, e))?;
        if changed == 0 {
            return Err(self.conflict(client, key, cols).await);
        }
        Ok(Version::new(version.to_string()))
    }

    /// Deletes one record under a precondition; whether a live one was there.
    pub(crate) async fn remove_on(
        &self,
        client: &ClientWrapper,
        key: &StorageKey,
        cols: &KeyCols<'_>,
        precondition: &Precondition,
    ) -> Result<bool> {
        let sql = &self.inner.sql;
        let id = &cols.id[..];
        let (statement, expected) = match precondition {
            Precondition::Any => (&sql.delete_any, None),
            Precondition::IfVersion(v) => match v.as_str().parse::<i64>() {
                Ok(expected) => (&sql.delete_if_version, Some(expected)),
                Err(_) => return Err(self.conflict(client, key, cols).await),
            },
            Precondition::IfAbsent => {
                if self.current(client, key, cols).await?.is_some() {
                    return Err(self.conflict(client, key, cols).await);
                }
                // Absent, or expired: an expired row goes now.
                (&sql.delete_expired, None)
            }
            other => {
                return Err(Error::invalid_input(format!(
                    "the postgres backend does not support the precondition {other:?}"
                )));
            }
        };
        let stmt = client
            .prepare_cached(statement)
            .await
            .map_err(|e| self.err("cannot prepare a delete of", key, e))?;
        let e = |err| self.err("cannot delete", key, err);
        match (precondition, expected) {
            // RETURNING whether the row it deleted was live.
            (Precondition::Any, _) => {
                let row = client
                    .query_opt(&stmt, &[&cols.kind, &id])
                    .await
                    .map_err(e)?;
                Ok(row.is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true)))
            }
            (_, Some(expected)) => match client
                .execute(&stmt, &[&cols.kind, &id, &expected])
                .await
                .map_err(e)?
            {
                0 => Err(self.conflict(client, key, cols).await),
                _ => Ok(true),
            },
            _ => {
                client.execute(&stmt, &[&cols.kind, &id]).await.map_err(e)?;
                Ok(false)
            }
        }
    }

    /// Deletes expired rows in the background, at most once per sweep interval per store.
    pub(crate) fn maybe_sweep(&self) {
        let inner = &self.inner;
        let now = u64::try_from(inner.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = inner.last_sweep.load(Ordering::Relaxed);
        let interval = u64::try_from(inner.config.sweep_interval.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last) >= interval;
        // One sweep per interval even with many writers: the one that moves the mark.
        if !due
            || inner
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            match store.sweep().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(store = store.name(), swept = n, "removed expired records")
                }
                Err(e) => {
                    tracing::debug!(store = store.name(), error = %e, "skipped sweeping expired records")
                }
            }
        });
    }

    /// Deletes every expired row, a batch per statement; how many.
    async fn sweep(&self) -> Result<u64> {
        let conn = self.inner.connections.get().await?;
        let outcome = async {
            let client = conn.client()?;
            let e = |err| crate::error::pg(self.name(), "cannot sweep expired records", err);
            let stmt = client
                .prepare_cached(&self.inner.sql.sweep)
                .await
                .map_err(e)?;
            let mut total = 0;
            loop {
                let n = client.execute(&stmt, &[]).await.map_err(e)?;
                total += n;
                if n < u64::try_from(SWEEP_BATCH).unwrap_or(u64::MAX) {
                    return Ok(total);
                }
            }
        }
        .await;
        conn.settled();
        outcome
    }
}
