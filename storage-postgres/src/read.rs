//! Reads and listings: one statement per read, keyset-paginated listings whose rows are
//! checked against their keys.

use std::time::SystemTime;

use deadpool_postgres::ClientWrapper;
use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, RawRecord, Result, SecretBytes, StorageKey, Version,
};
use tokio_postgres::Row;

use crate::error::{BACKEND, pg};
use crate::sql::{KeyCols, PAGE, key_id_of_valid};
use crate::store::PostgresStore;

impl PostgresStore {
    /// The live record at `key`.
    pub(crate) async fn read_on(
        &self,
        client: &ClientWrapper,
        key: &StorageKey,
        cols: &KeyCols<'_>,
    ) -> Result<Option<RawRecord>> {
        let stmt = client
            .prepare_cached(&self.inner.sql.read)
            .await
            .map_err(|e| self.err("cannot prepare a read of", key, e))?;
        let row = client
            .query_opt(&stmt, &[&cols.kind, &&cols.id[..], &self.inner.max_value])
            .await
            .map_err(|e| self.err("cannot read", key, e))?;
        row.map(|row| self.record(key, &row)).transpose()
    }

    fn record(&self, key: &StorageKey, row: &Row) -> Result<RawRecord> {
        let corrupt = |what: &str, e: tokio_postgres::Error| Error::Corrupt {
            backend: BACKEND,
            key: key.encode(),
            message: format!("{what}: {e}"),
            source: None,
        };
        let value: Option<Vec<u8>> = row.try_get(0).map_err(|e| corrupt("the value", e))?;
        let size: i32 = row
            .try_get(1)
            .map_err(|e| corrupt("the value's length", e))?;
        let version: i64 = row.try_get(2).map_err(|e| corrupt("the version", e))?;
        let expires_at: Option<SystemTime> =
            row.try_get(3).map_err(|e| corrupt("the expiry", e))?;
        // NULL: the value is over the limit and was not sent.
        let Some(value) = value else {
            return Err(Error::TooLarge {
                backend: BACKEND,
                key: key.encode(),
                size: usize::try_from(size).unwrap_or(usize::MAX),
                max: self.inner.config.max_value_size,
            });
        };
        Ok(
            RawRecord::new(SecretBytes::new(value), Version::new(version.to_string()))
                .with_expiry(expires_at),
        )
    }

    /// The live keys of `kind` matching `filter`, a page of [`PAGE`] rows at a time, each
    /// page after the last id of the one before.
    pub(crate) async fn scan_on(
        &self,
        client: &ClientWrapper,
        kind: KeyKind,
        filter: &ListFilter,
    ) -> Result<Vec<ListEntry>> {
        let kind_name = kind.as_str();
        let resource = filter.resource_for(kind);
        let user = filter.user_key.as_deref();
        let sql = &self.inner.sql;
        let e = |err| pg(self.name(), &format!("cannot list {kind_name} keys"), err);
        let statement = match (user, resource) {
            (None, None) => &sql.scan_all,
            (Some(_), None) => &sql.scan_user,
            (None, Some(_)) => &sql.scan_resource,
            (Some(_), Some(_)) => &sql.scan_user_resource,
        };
        let stmt = client.prepare_cached(statement).await.map_err(e)?;
        let mut out = Vec::new();
        let mut after: Vec<u8> = Vec::new();
        // One buffer for every row's encoded key (hashed to check the row's id).
        let mut scratch = String::new();
        loop {
            let rows = match (user, resource) {
                (None, None) => client.query(&stmt, &[&kind_name, &after]).await,
                (Some(u), None) => client.query(&stmt, &[&kind_name, &after, &u]).await,
                (None, Some(r)) => client.query(&stmt, &[&kind_name, &after, &r]).await,
                (Some(u), Some(r)) => client.query(&stmt, &[&kind_name, &after, &u, &r]).await,
            }
            .map_err(e)?;
            out.extend(rows.iter().map(|row| self.entry(kind, row, &mut scratch)));
            let full = rows.len() >= usize::try_from(PAGE).unwrap_or(usize::MAX);
            match rows.last() {
                Some(last) if full => after = last.try_get(0).map_err(e)?,
                _ => return Ok(out),
            }
        }
    }

    /// One listed row as a key, or as unreadable: a row another writer put there whose parts
    /// do not form a key of `kind`, or whose id is not its key's digest.
    fn entry(&self, kind: KeyKind, row: &Row, scratch: &mut String) -> ListEntry {
        let unreadable = |reason: String| ListEntry::Unreadable {
            location: format!("{}: a {} row", self.inner.names.table, kind.as_str()),
            reason,
        };
        let columns = (|| -> std::result::Result<(&[u8], Vec<String>), tokio_postgres::Error> {
            let parts = (1..=kind.arity())
                .map(|i| row.try_get(i))
                .collect::<std::result::Result<_, _>>()?;
            Ok((row.try_get(0)?, parts))
        })();
        let (id, parts) = match columns {
            Ok(c) => c,
            Err(e) => return unreadable(e.to_string()),
        };
        match StorageKey::new(kind, parts) {
            Ok(key) if key_id_of_valid(&key, scratch)[..] == id[..] => ListEntry::Key(key),
            Ok(_) => unreadable("its id is not the SHA-256 of its key".into()),
            Err(e) => unreadable(e.to_string()),
        }
    }
}
