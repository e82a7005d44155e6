//! Every statement the store runs, built once per store for its (quoted) table, and the
//! parameters they bind: key columns, ids, versions, values.

use std::fmt;

use sha2::{Digest, Sha256};
use token_store_core::{Result, StorageKey};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::error::BACKEND;

/// Rows fetched per page of a listing.
pub(crate) const PAGE: i64 = 1000;

/// Rows deleted per sweep statement.
pub(crate) const SWEEP_BATCH: i64 = 1000;

/// A row is live (not expired) by the server's clock: every host agrees on expiry, whatever
/// its own clock says.
const LIVE: &str = "(expires_at IS NULL OR expires_at > now())";

/// The statements of one table.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) read: String,
    pub(crate) version: String,
    pub(crate) upsert: String,
    pub(crate) create: String,
    pub(crate) cas: String,
    pub(crate) delete_any: String,
    pub(crate) delete_if_version: String,
    pub(crate) delete_expired: String,
    pub(crate) sweep: String,
    pub(crate) scan_all: String,
    pub(crate) scan_user: String,
    pub(crate) scan_resource: String,
    pub(crate) scan_user_resource: String,
}

impl Statements {
    /// The statements for `table` (already quoted and schema-qualified).
    pub(crate) fn new(table: &str) -> Statements {
        let key = "kind = $1 AND id = $2";
        let insert = format!(
            "INSERT INTO {table} AS t (kind, id, p1, p2, p3, p4, value, version, expires_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9::bigint * interval '1 millisecond', now())
             ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value, version = excluded.version,
                 expires_at = excluded.expires_at, updated_at = excluded.updated_at"
        );
        let scan = |filter: &str| {
            format!(
                "SELECT id, p1, p2, p3, p4 FROM {table} WHERE {filter} AND {LIVE} ORDER BY id LIMIT {PAGE}"
            )
        };
        Statements {
            // A value over the limit (a foreign writer's) is not transferred: its length says
            // enough for `TooLarge`.
            read: format!(
                "SELECT CASE WHEN octet_length(value) <= $3 THEN value END, octet_length(value), version, expires_at
                 FROM {table} WHERE {key} AND {LIVE}"
            ),
            version: format!("SELECT version FROM {table} WHERE {key} AND {LIVE}"),
            upsert: insert.clone(),
            // Creates, or replaces a row that has expired (expired = absent, for
            // preconditions too), in one statement.
            create: format!("{insert} WHERE t.expires_at IS NOT NULL AND t.expires_at <= now()"),
            // Compare-and-swap in one statement: it changes the row only if the live row is
            // at $6. Concurrent ones serialize on the row lock; the loser re-reads the
            // winner's version and matches nothing.
            cas: format!(
                "UPDATE {table} SET value = $3, version = $4,
                     expires_at = now() + $5::bigint * interval '1 millisecond', updated_at = now()
                 WHERE {key} AND version = $6 AND {LIVE}"
            ),
            delete_any: format!("DELETE FROM {table} WHERE {key} RETURNING {LIVE}"),
            delete_if_version: format!("DELETE FROM {table} WHERE {key} AND version = $3 AND {LIVE}"),
            delete_expired: format!(
                "DELETE FROM {table} WHERE {key} AND expires_at IS NOT NULL AND expires_at <= now()"
            ),
            sweep: format!(
                "DELETE FROM {table} WHERE (kind, id) IN (
                     SELECT kind, id FROM {table} WHERE expires_at <= now() LIMIT {SWEEP_BATCH})"
            ),
            // Keyset pagination: each page starts after the last id of the one before, on
            // an index whose order is (…, id), so a page costs the same at any depth and a
            // record present throughout is listed exactly once.
            scan_all: scan("kind = $1 AND id > $2"),
            scan_user: scan("kind = $1 AND left(p1, 200) = left($3, 200) AND p1 = $3 AND id > $2"),
            // Literal `'token'`: the resource index is partial, for token rows only.
            scan_resource: scan("kind = 'token' AND left(p2, 200) = left($3, 200) AND p2 = $3 AND id > $2 AND kind = $1"),
            scan_user_resource: scan(
                "kind = $1 AND left(p1, 200) = left($3, 200) AND p1 = $3 AND p2 = $4 AND id > $2",
            ),
        }
    }
}

/// The key's columns: `kind`, its id, then its parts (`''` for unused ones).
pub(crate) struct KeyCols<'a> {
    pub(crate) kind: &'static str,
    pub(crate) id: [u8; 32],
    pub(crate) parts: [&'a str; 4],
}

impl<'a> KeyCols<'a> {
    /// The columns of `key`, once it passes the shared key checks (encoded once for both).
    pub(crate) fn of(key: &'a StorageKey) -> Result<Self> {
        let mut parts = [""; 4];
        for (slot, part) in parts.iter_mut().zip(key.parts()) {
            *slot = part;
        }
        Ok(KeyCols {
            kind: key.kind().as_str(),
            id: key_id(key)?,
            parts,
        })
    }
}

/// A row's id: SHA-256 of the key's canonical encoding, once the key passes the shared
/// checks. The primary key is `(kind, id)` rather than the parts themselves because a B-tree
/// entry holds at most ~2.7 KB and keys may be 16 KiB.
pub(crate) fn key_id(key: &StorageKey) -> Result<[u8; 32]> {
    Ok(Sha256::digest(key.encode_valid()?.as_bytes()).into())
}

/// [`key_id`] of a key [`StorageKey::new`] already checked, encoded into `scratch` (a
/// listing hashes every row's key with one buffer).
pub(crate) fn key_id_of_valid(key: &StorageKey, scratch: &mut String) -> [u8; 32] {
    scratch.clear();
    key.encode_into(scratch);
    Sha256::digest(scratch.as_bytes()).into()
}

/// A new version that is never `not` (core's [`random_version_number`]).
///
/// [`random_version_number`]: token_store_core::backend::random_version_number
pub(crate) fn new_version(not: Option<i64>) -> Result<i64> {
    token_store_core::backend::random_version_number(BACKEND, not)
}

/// A TTL in milliseconds, for `now() + $n * interval '1 millisecond'`.
pub(crate) fn ttl_ms(ttl: Option<std::time::Duration>) -> Option<i64> {
    ttl.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX).max(1))
}

/// A value as a statement parameter. Its `Debug` shows only its length: tokio-postgres logs
/// every statement's parameters with `Debug` at the debug level.
pub(crate) struct Value<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} bytes]", self.0.len())
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&[u8] as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}
