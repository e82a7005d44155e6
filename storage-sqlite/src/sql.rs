//! Every statement, and the reads any connection (the writer or a reader) can run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, RawRecord, Result, SecretBytes, StorageKey, Version,
};

use crate::error::{BACKEND, map_err};

pub(crate) const SELECT_ONE: &str = "SELECT value, version, expires_at FROM records
    WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
      AND (expires_at IS NULL OR expires_at > ?6)";

pub(crate) const SELECT_VERSION: &str = "SELECT version FROM records
    WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
      AND (expires_at IS NULL OR expires_at > ?6)";

pub(crate) const UPSERT: &str =
    "INSERT INTO records(kind, p1, p2, p3, p4, value, version, expires_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT(kind, p1, p2, p3, p4) DO UPDATE SET
        value = excluded.value, version = excluded.version,
        expires_at = excluded.expires_at, updated_at = excluded.updated_at";

// Creates, or replaces a row that has expired (expired = absent, for preconditions too).
pub(crate) const CREATE: &str =
    "INSERT INTO records(kind, p1, p2, p3, p4, value, version, expires_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT(kind, p1, p2, p3, p4) DO UPDATE SET
        value = excluded.value, version = excluded.version,
        expires_at = excluded.expires_at, updated_at = excluded.updated_at
    WHERE records.expires_at IS NOT NULL AND records.expires_at <= excluded.updated_at";

// Compare-and-swap in one statement: it changes a row only if the live row is at ?10.
pub(crate) const CAS: &str =
    "UPDATE records SET value = ?6, version = ?7, expires_at = ?8, updated_at = ?9
    WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
      AND version = ?10 AND (expires_at IS NULL OR expires_at > ?9)";

pub(crate) const DELETE: &str =
    "DELETE FROM records WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5";

// An unconditional delete that says whether the row it removed was live.
pub(crate) const DELETE_ANY: &str =
    "DELETE FROM records WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
    RETURNING expires_at IS NULL OR expires_at > ?6";

// A conditional delete in one statement: it removes the row only if it is live at ?7.
pub(crate) const DELETE_IF_VERSION: &str =
    "DELETE FROM records WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
      AND version = ?7 AND (expires_at IS NULL OR expires_at > ?6)";

pub(crate) const SWEEP: &str =
    "DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?1";

// A listing reads only the key columns, which the key index covers: reading `expires_at`
// as well would visit every row's table page (about an eighth of a listing's cost). The
// last column says whether any row of the table has expired (one probe of the partial
// expiry index, evaluated once, in the same snapshot). Only when it is set is the listing
// run again with each row's own verdict (`SCAN_EXPIRY`), and the expired rows swept.
// Both forms from one list of filters (a `ListFilter` shape each, indexed as in
// `scan_rows`): they must list the same rows.
macro_rules! scans {
    ($last:literal) => {
        scans!($last; "", " AND p1 = ?3", " AND p2 = ?3", " AND p1 = ?3 AND p2 = ?4")
    };
    ($last:literal; $($filter:literal),*) => {
        [$(concat!("SELECT p1, p2, p3, p4, ", $last, " FROM records WHERE kind = ?2", $filter)),*]
    };
}
const SCAN_FAST: [&str; 4] =
    scans!("EXISTS(SELECT 1 FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?1)");
const SCAN_EXPIRY: [&str; 4] = scans!("expires_at <= ?1");

/// A storage key as the row's key columns: `kind`, then the parts, `''` for unused ones.
pub(crate) fn cols(key: &StorageKey) -> (&'static str, [&str; 4]) {
    let mut parts = [""; 4];
    for (slot, part) in parts.iter_mut().zip(key.parts()) {
        *slot = part;
    }
    (key.kind().as_str(), parts)
}

/// Milliseconds since the Unix epoch, the unit of `expires_at` and `updated_at`.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn system_time(ms: i64) -> Option<SystemTime> {
    u64::try_from(ms)
        .ok()
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
}

/// A new version that is never `not` (core's [`random_version_number`]).
///
/// [`random_version_number`]: token_store_core::backend::random_version_number
pub(crate) fn new_version(not: Option<i64>) -> Result<i64> {
    token_store_core::backend::random_version_number(BACKEND, not)
}

/// The live row at `key`, read in one statement (its own read transaction).
pub(crate) fn read_row(
    conn: &Connection,
    path: &str,
    key: &StorageKey,
) -> Result<Option<RawRecord>> {
    let now = now_ms();
    let mut stmt = conn
        .prepare_cached(SELECT_ONE)
        .map_err(|e| map_err(path, "cannot prepare a read", e))?;
    let (kind, [p1, p2, p3, p4]) = cols(key);
    let row = stmt
        .query_row(params![kind, p1, p2, p3, p4, now], |r| {
            let value = match r.get_ref(0)?.as_blob() {
                Ok(b) => Some(SecretBytes::new(b.to_vec())),
                Err(_) => None,
            };
            let version: i64 = r.get(1)?;
            let expires_at: Option<i64> = r.get(2)?;
            Ok((value, version, expires_at))
        })
        .optional()
        .map_err(|e| map_err(path, &format!("cannot read {}", key.encode()), e))?;
    let Some((value, version, expires_at)) = row else {
        return Ok(None);
    };
    let value = value.ok_or_else(|| Error::Corrupt {
        backend: BACKEND,
        key: key.encode(),
        message: "the stored value is not a BLOB".into(),
        source: None,
    })?;
    Ok(Some(
        RawRecord::new(value, Version::new(version.to_string()))
            .with_expiry(expires_at.and_then(system_time)),
    ))
}

/// The version of the live row at `key`, inside a write transaction.
pub(crate) fn current_version(
    conn: &Connection,
    key: &StorageKey,
    now: i64,
) -> rusqlite::Result<Option<Version>> {
    let (kind, [p1, p2, p3, p4]) = cols(key);
    let v: Option<i64> = conn
        .prepare_cached(SELECT_VERSION)?
        .query_row(params![kind, p1, p2, p3, p4, now], |r| r.get(0))
        .optional()?;
    Ok(v.map(|v| Version::new(v.to_string())))
}

/// The live keys of `kind` that match `filter`, and, if it met expired rows, the time they
/// were judged at (for a sweep, which needs the write connection).
pub(crate) fn scan_rows(
    conn: &Connection,
    path: &str,
    kind: KeyKind,
    filter: &ListFilter,
) -> Result<(Vec<ListEntry>, Option<i64>)> {
    let now = now_ms();
    let kind_name = kind.as_str();
    let resource = filter.resource_for(kind);
    let user = filter.user_key.as_deref();
    let (which, args): (usize, Vec<&dyn rusqlite::ToSql>) = match (&user, &resource) {
        (None, None) => (0, vec![&now, &kind_name]),
        (Some(u), None) => (1, vec![&now, &kind_name, u]),
        (None, Some(r)) => (2, vec![&now, &kind_name, r]),
        (Some(u), Some(r)) => (3, vec![&now, &kind_name, u, r]),
    };
    let scan = |sql: &str, stop_if_expired: bool| {
        scan_keys(conn, path, kind, sql, &args, stop_if_expired)
            .map_err(|e| map_err(path, &format!("cannot list {kind_name} keys"), e))
    };
    if let Some(out) = scan(SCAN_FAST[which], true)? {
        return Ok((out, None));
    }
    let out = scan(SCAN_EXPIRY[which], false)?.unwrap_or_default();
    Ok((out, Some(now)))
}

/// The keys `sql` lists, leaving out rows whose last column is true; `None` at the first
/// such row if `stop_if_expired`.
fn scan_keys(
    conn: &Connection,
    path: &str,
    kind: KeyKind,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    stop_if_expired: bool,
) -> rusqlite::Result<Option<Vec<ListEntry>>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        // NULL: the row has no expiry.
        if row.get::<_, Option<bool>>(4)?.unwrap_or(false) {
            if stop_if_expired {
                return Ok(None);
            }
            continue;
        }
        let mut parts = Vec::with_capacity(kind.arity());
        for i in 0..kind.arity() {
            parts.push(row.get::<_, String>(i)?);
        }
        out.push(match StorageKey::new(kind, parts) {
            Ok(key) => ListEntry::Key(key),
            Err(e) => ListEntry::Unreadable {
                location: format!("{path}: a {} row", kind.as_str()),
                reason: e.to_string(),
            },
        });
    }
    Ok(Some(out))
}
