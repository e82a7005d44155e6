//! The write connection ([`Writer`]): its setup, and every statement that changes the
//! database, each in one `BEGIN IMMEDIATE` transaction. Only the connection thread
//! ([`crate::thread`]) holds it.

use std::time::Duration;

use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use token_store_core::backend::check_precondition;
use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, Precondition, RawRecord, Result, StorageKey, Version,
};

use crate::config::SqliteConfig;
use crate::error::{BACKEND, at, map_err};
use crate::file::prepare_file;
use crate::schema::{identify, migrate};
use crate::sql::{
    self, CAS, CREATE, DELETE, DELETE_ANY, DELETE_IF_VERSION, SWEEP, UPSERT, cols, current_version,
    duration_ms, new_version, now_ms,
};

/// The write connection and what it remembers between calls.
pub(crate) struct Writer {
    conn: Connection,
    path: String,
    sweep_interval: Duration,
    last_sweep_ms: Option<i64>,
    busy_timeout: Duration,
    /// A row was deleted since the last scrub: its bytes may still be in the WAL.
    deleted: bool,
}

impl Writer {
    /// Creates the file privately if needed, opens it, sets the connection up and migrates.
    pub(crate) fn open(config: &SqliteConfig) -> Result<Writer> {
        let path = config.path.as_path();
        let shown = path.display().to_string();
        prepare_file(path)?;
        // No CREATE flag: the file exists by now, with our permissions. No URI flag: the path
        // is a path, never parsed as `file:` URI parameters.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_EXRESCODE;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| map_err(&shown, "cannot open the database", e))?;
        let mut writer = Writer {
            conn,
            path: shown,
            sweep_interval: config.sweep_interval,
            last_sweep_ms: None,
            busy_timeout: config.busy_timeout,
            deleted: false,
        };
        writer.setup(config)?;
        migrate(&mut writer.conn, &writer.path)?;
        Ok(writer)
    }

    fn setup(&mut self, config: &SqliteConfig) -> Result<()> {
        let path = self.path.as_str();
        let conn = &mut self.conn;
        conn.busy_timeout(config.busy_timeout)
            .map_err(at(path, "cannot set the busy timeout"))?;
        conn.set_prepared_statement_cache_capacity(32);
        // Defensive mode: no writable_schema tricks, no direct shadow-table writes, so a bug
        // or a hostile statement cannot corrupt the file through this connection.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
            .map_err(at(path, "cannot enable defensive mode"))?;
        // Freed cells and pages are zeroed in every page written from now on, so a deleted
        // token is not in the page images that reach the WAL and, by checkpoint, the main
        // file. Checked, not assumed: the scrub relies on it.
        let secure: i64 = conn
            .pragma_update_and_check(None, "secure_delete", "ON", |r| r.get(0))
            .map_err(at(path, "cannot enable secure_delete"))?;
        if secure != 1 {
            return Err(Error::config(format!(
                "{path}: SQLite refused secure_delete (it is {secure}); deleted tokens would stay in the file"
            )));
        }
        identify(conn, path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(at(path, "cannot switch to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::config(format!(
                "{path}: SQLite refused WAL mode (journal_mode is {mode}); is the file on a network or read-only file system?"
            )));
        }
        conn.pragma_update(None, "synchronous", config.synchronous.pragma())
            .map_err(at(path, "cannot set synchronous"))?;
        Ok(())
    }

    pub(crate) fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        sql::read_row(&self.conn, &self.path, key)
    }

    /// Writes one record under `precondition`, deleting expired rows first when a sweep is
    /// due (in the same transaction, so a conflict rolls the sweep back too).
    pub(crate) fn write(
        &mut self,
        key: &StorageKey,
        value: &[u8],
        precondition: &Precondition,
        ttl: Option<Duration>,
    ) -> Result<Version> {
        let expected = match precondition {
            // Not one of ours if it does not parse: it cannot be the current one.
            Precondition::IfVersion(expected) => expected.as_str().parse::<i64>().ok(),
            _ => None,
        };
        // Drawn before the write lock is taken: it needs no lock, and the lock is shared
        // with every other process.
        let version = new_version(expected)?;
        let path = self.path.as_str();
        let e =
            |what: &'static str| move |err| map_err(path, &format!("{what} {}", key.encode()), err);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e("cannot begin a write of"))?;
        // The clock is read under the write lock, so expiry is judged at commit order.
        let now = now_ms();
        let swept = sweep_if_due(&tx, self.last_sweep_ms, self.sweep_interval, now)
            .map_err(e("cannot sweep expired records before writing"))?;
        let row = Row {
            key,
            value,
            version,
            expires_at: ttl.map(|t| now.saturating_add(duration_ms(t))),
            now,
        };
        let changed = row
            .execute(&tx, precondition, expected)
            .map_err(e("cannot write"))??;
        if changed == 0 {
            let current =
                current_version(&tx, key, now).map_err(e("cannot read the version of"))?;
            // Dropping the transaction rolls back the sweep.
            drop(tx);
            return Err(Error::Conflict {
                backend: BACKEND,
                key: key.encode(),
                current,
            });
        }
        tx.commit().map_err(e("cannot commit a write of"))?;
        if let Some(n) = swept {
            self.last_sweep_ms = Some(now);
            if n > 0 {
                self.deleted = true;
                tracing::debug!(path = %self.path, swept = n, "removed expired records");
            }
        }
        Ok(Version::new(version.to_string()))
    }

    /// Deletes one record under `precondition`; whether a live one was there.
    pub(crate) fn remove(&mut self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        let path = self.path.as_str();
        let e =
            |what: &'static str| move |err| map_err(path, &format!("{what} {}", key.encode()), err);
        let changes_before = self.conn.total_changes();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e("cannot begin a delete of"))?;
        let now = now_ms();
        let existed = match delete_in_one_statement(&tx, key, precondition, now) {
            Some(existed) => existed.map_err(e("cannot delete"))?,
            None => {
                let current =
                    current_version(&tx, key, now).map_err(e("cannot read the version of"))?;
                check_precondition(BACKEND, key, precondition, current.as_ref())?;
                // Deletes an expired row too: it was absent already, now it is gone.
                let (kind, [p1, p2, p3, p4]) = cols(key);
                tx.prepare_cached(DELETE)
                    .and_then(|mut s| s.execute(params![kind, p1, p2, p3, p4]))
                    .map_err(e("cannot delete"))?;
                current.is_some()
            }
        };
        tx.commit().map_err(e("cannot commit a delete of"))?;
        // Any row, live or expired: either way its value was in a page.
        if self.conn.total_changes() > changes_before {
            self.deleted = true;
        }
        Ok(existed)
    }

    /// Lists on the write connection (when every read connection is busy), sweeping the
    /// expired rows it met.
    pub(crate) fn scan(&mut self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let (out, expired_at) = sql::scan_rows(&self.conn, &self.path, kind, filter)?;
        if let Some(now) = expired_at {
            self.sweep_opportunistically(now);
        }
        Ok(out)
    }

    /// Deletes expired rows if the write lock is free right now; a listing must not wait
    /// for a busy writer just to tidy up, and the next write sweeps anyway.
    pub(crate) fn sweep_opportunistically(&mut self, now: i64) {
        let result = self.with_busy_timeout(Duration::ZERO, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.prepare_cached(SWEEP)?.execute([now])?;
            tx.commit()?;
            Ok(n)
        });
        match result {
            Ok(n) => {
                self.last_sweep_ms = Some(now);
                self.deleted |= n > 0;
                tracing::debug!(path = %self.path, swept = n, "removed expired records");
            }
            Err(e) => {
                tracing::debug!(path = %self.path, error = %e, "skipped sweeping expired records");
            }
        }
    }

    /// Whether a row was deleted since the last call: the connection thread then schedules
    /// a [`scrub`](Writer::scrub).
    pub(crate) fn take_deleted(&mut self) -> bool {
        std::mem::take(&mut self.deleted)
    }

    /// Empties the WAL: `PRAGMA wal_checkpoint(TRUNCATE)` copies the newest image of every
    /// page into the main file (where `secure_delete` has zeroed what was deleted) and
    /// truncates the `-wal` file to zero bytes, so the older page images that still held
    /// deleted values are gone from both files. Waits at most `wait` for other connections
    /// (a reader of another process pinning the WAL, a writer holding the lock); whether it
    /// got that far, `Ok(false)` meaning "try again later".
    pub(crate) fn scrub(&mut self, wait: Duration) -> Result<bool> {
        let result = self.with_busy_timeout(wait, |conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
        });
        match result {
            Ok(0) => Ok(true),
            Ok(_) => Ok(false),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(map_err(&self.path, "cannot checkpoint the WAL", e)),
        }
    }

    /// The database file, for logs.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Runs `f` with another busy timeout: a background chore must not stall the writes
    /// queued behind it for the full busy timeout.
    fn with_busy_timeout<T>(
        &mut self,
        wait: Duration,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.conn.busy_timeout(wait)?;
        let outcome = f(&mut self.conn);
        self.conn.busy_timeout(self.busy_timeout)?;
        outcome
    }
}

/// Deletes the expired rows inside `tx` if the last sweep was `interval` ago or more; how
/// many, `None` when no sweep was due.
fn sweep_if_due(
    tx: &Transaction<'_>,
    last_sweep_ms: Option<i64>,
    interval: Duration,
    now: i64,
) -> rusqlite::Result<Option<usize>> {
    if last_sweep_ms.is_some_and(|last| now.saturating_sub(last) < duration_ms(interval)) {
        return Ok(None);
    }
    tx.prepare_cached(SWEEP)?.execute([now]).map(Some)
}

/// One row to write, with everything its statements bind.
struct Row<'a> {
    key: &'a StorageKey,
    value: &'a [u8],
    version: i64,
    expires_at: Option<i64>,
    now: i64,
}

impl Row<'_> {
    /// Runs the one statement that writes under `precondition`; how many rows it changed
    /// (0: the precondition failed).
    fn execute(
        &self,
        tx: &Transaction<'_>,
        precondition: &Precondition,
        expected: Option<i64>,
    ) -> rusqlite::Result<Result<usize>> {
        let (kind, [p1, p2, p3, p4]) = cols(self.key);
        let (value, version, expires_at, now) =
            (self.value, self.version, self.expires_at, self.now);
        let row = params![kind, p1, p2, p3, p4, value, version, expires_at, now];
        let changed = match precondition {
            Precondition::Any => tx.prepare_cached(UPSERT)?.execute(row)?,
            Precondition::IfAbsent => tx.prepare_cached(CREATE)?.execute(row)?,
            Precondition::IfVersion(_) => match expected {
                Some(expected) => tx.prepare_cached(CAS)?.execute(params![
                    kind, p1, p2, p3, p4, value, version, expires_at, now, expected
                ])?,
                None => 0,
            },
            other => {
                return Ok(Err(Error::invalid_input(format!(
                    "the sqlite backend does not support the precondition {other:?}"
                ))));
            }
        };
        Ok(Ok(changed))
    }
}

/// The usual deletes, one statement each, judged at `now` under the write lock: whether a
/// live row was deleted. `None` when the general path must decide (a conditional delete
/// that found nothing to delete reports its conflict there).
fn delete_in_one_statement(
    tx: &Transaction<'_>,
    key: &StorageKey,
    precondition: &Precondition,
    now: i64,
) -> Option<rusqlite::Result<bool>> {
    let (kind, [p1, p2, p3, p4]) = cols(key);
    match precondition {
        Precondition::Any => Some(
            tx.prepare_cached(DELETE_ANY)
                .and_then(|mut s| {
                    s.query_row(params![kind, p1, p2, p3, p4, now], |r| r.get::<_, bool>(0))
                        .optional()
                })
                .map(|live| live == Some(true)),
        ),
        Precondition::IfVersion(expected) => {
            let expected = expected.as_str().parse::<i64>().ok()?;
            match tx
                .prepare_cached(DELETE_IF_VERSION)
                .and_then(|mut s| s.execute(params![kind, p1, p2, p3, p4, now, expected]))
            {
                Ok(0) => None,
                other => Some(other.map(|_| true)),
            }
        }
        _ => None,
    }
}
