//! The synchronous side: the write connection ([`Db`], behind a mutex shared by the connection
//! thread and in-place writers), its setup, the schema migrations and every statement;
//! read-only connections ([`open_reader`]) share the statements that only read ([`read_row`], [`scan_rows`]).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, Precondition, RawRecord, Result, SecretBytes,
    StorageKey, Version, check_precondition,
};

use crate::config::SqliteConfig;

/// The backend name in errors and logs.
pub(crate) const BACKEND: &str = "sqlite";

/// `PRAGMA application_id` of our databases ("TkSt"), so a foreign SQLite file is recognised
/// before a migration writes into it.
pub(crate) const APPLICATION_ID: i32 = 0x546b_5374;

/// The newest schema this version knows; `PRAGMA user_version` holds the applied one.
pub const SCHEMA_VERSION: i32 = 1;

/// Migration `n + 1` is `MIGRATIONS[n]`; each runs inside the same `BEGIN IMMEDIATE`
/// transaction that bumps `user_version`, so a crash leaves the old schema or the new one.
const MIGRATIONS: &[&str] = &[
    // 1: one table for every kind. Key parts are columns (unused parts are ''), so listing
    // by kind + user_key uses the unique index's prefix and listing by resource has its own.
    // A rowid table, not WITHOUT ROWID: values up to 1 MiB are far above the row size where
    // WITHOUT ROWID pays off. `version_counter` is written only by versions of this crate
    // from before random versions; it stays for them (see the crate docs).
    "CREATE TABLE records (
        kind       TEXT    NOT NULL,
        p1         TEXT    NOT NULL,
        p2         TEXT    NOT NULL,
        p3         TEXT    NOT NULL,
        p4         TEXT    NOT NULL,
        value      BLOB    NOT NULL,
        version    INTEGER NOT NULL,
        expires_at INTEGER,
        updated_at INTEGER NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX records_key ON records(kind, p1, p2, p3, p4);
    CREATE INDEX records_resource ON records(kind, p2);
    CREATE INDEX records_expiry ON records(expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE version_counter (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        last_version INTEGER NOT NULL
    ) STRICT;
    INSERT INTO version_counter(id, last_version) VALUES (1, 0);",
];

const SELECT_ONE: &str = "SELECT value, version, expires_at FROM records
    WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
      AND (expires_at IS NULL OR expires_at > ?6)";

const SELECT_VERSION: &str = "SELECT version FROM records
    WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
      AND (expires_at IS NULL OR expires_at > ?6)";

const UPSERT: &str =
    "INSERT INTO records(kind, p1, p2, p3, p4, value, version, expires_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT(kind, p1, p2, p3, p4) DO UPDATE SET
        value = excluded.value, version = excluded.version,
        expires_at = excluded.expires_at, updated_at = excluded.updated_at";

// Creates, or replaces a row that has expired (expired = absent, for preconditions too).
const CREATE: &str =
    "INSERT INTO records(kind, p1, p2, p3, p4, value, version, expires_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT(kind, p1, p2, p3, p4) DO UPDATE SET
        value = excluded.value, version = excluded.version,
        expires_at = excluded.expires_at, updated_at = excluded.updated_at
    WHERE records.expires_at IS NOT NULL AND records.expires_at <= excluded.updated_at";

// Compare-and-swap in one statement: it changes a row only if the live row is at ?10.
const CAS: &str = "UPDATE records SET value = ?6, version = ?7, expires_at = ?8, updated_at = ?9
    WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
      AND version = ?10 AND (expires_at IS NULL OR expires_at > ?9)";

const DELETE: &str =
    "DELETE FROM records WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5";

// An unconditional delete that says whether the row it removed was live.
const DELETE_ANY: &str =
    "DELETE FROM records WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
    RETURNING expires_at IS NULL OR expires_at > ?6";

// A conditional delete in one statement: it removes the row only if it is live at ?7.
const DELETE_IF_VERSION: &str =
    "DELETE FROM records WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
      AND version = ?7 AND (expires_at IS NULL OR expires_at > ?6)";

const SWEEP: &str = "DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?1";

const SCAN_ALL: &str = "SELECT p1, p2, p3, p4, expires_at FROM records WHERE kind = ?1";
const SCAN_USER: &str =
    "SELECT p1, p2, p3, p4, expires_at FROM records WHERE kind = ?1 AND p1 = ?2";
const SCAN_RESOURCE: &str =
    "SELECT p1, p2, p3, p4, expires_at FROM records WHERE kind = ?1 AND p2 = ?2";
const SCAN_USER_RESOURCE: &str =
    "SELECT p1, p2, p3, p4, expires_at FROM records WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3";

/// A storage key as the row's key columns: `kind`, then the parts, `''` for unused ones.
fn cols(key: &StorageKey) -> (&'static str, [&str; 4]) {
    let mut parts = [""; 4];
    for (slot, part) in parts.iter_mut().zip(key.parts()) {
        *slot = part;
    }
    (key.kind().as_str(), parts)
}

/// The write connection and what it remembers between calls.
pub(crate) struct Db {
    conn: Connection,
    path: String,
    sweep_interval: Duration,
    last_sweep_ms: Option<i64>,
    busy_timeout: Duration,
}

/// Milliseconds since the Unix epoch, the unit of `expires_at` and `updated_at`.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn system_time(ms: i64) -> Option<SystemTime> {
    u64::try_from(ms)
        .ok()
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
}

impl Db {
    /// Creates the file privately if needed, opens it, sets the connection up and migrates.
    pub(crate) fn open(config: &SqliteConfig) -> Result<Db> {
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
        let mut db = Db {
            conn,
            path: shown,
            sweep_interval: config.sweep_interval,
            last_sweep_ms: None,
            busy_timeout: config.busy_timeout,
        };
        db.setup(config)?;
        db.migrate()?;
        Ok(db)
    }

    fn err(&self, what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
        let what = what.to_owned();
        move |e| map_err(&self.path, &what, e)
    }

    fn setup(&mut self, config: &SqliteConfig) -> Result<()> {
        self.conn
            .busy_timeout(config.busy_timeout)
            .map_err(self.err("cannot set the busy timeout"))?;
        self.conn.set_prepared_statement_cache_capacity(32);
        // Defensive mode: no writable_schema tricks, no direct shadow-table writes, so a bug
        // or a hostile statement cannot corrupt the file through this connection.
        self.conn
            .set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
            .map_err(self.err("cannot enable defensive mode"))?;
        // Freed pages are overwritten, so deleted tokens do not linger in the main file.
        self.conn
            .pragma_update(None, "secure_delete", "ON")
            .map_err(self.err("cannot enable secure_delete"))?;
        identify(&self.conn, &self.path)?;
        let mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(self.err("cannot switch to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::config(format!(
                "{}: SQLite refused WAL mode (journal_mode is {mode}); is the file on a network or read-only file system?",
                self.path
            )));
        }
        self.conn
            .pragma_update(None, "synchronous", config.synchronous.pragma())
            .map_err(self.err("cannot set synchronous"))?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let (app_id, version) = schema_ids(&self.conn, &self.path)?;
        if app_id == APPLICATION_ID && version == SCHEMA_VERSION {
            return Ok(());
        }
        // Someone must migrate: take the write lock and look again, another process may have
        // done it meanwhile.
        let path = self.path.as_str();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(at(path, "cannot begin the migration"))?;
        let version = identify(&tx, path)?;
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)
                .map_err(|e| map_err(path, &format!("migration {} failed", n + 1), e))?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(at(path, "cannot set application_id"))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(at(path, "cannot set user_version"))?;
        tx.commit()
            .map_err(at(path, "cannot commit the migration"))?;
        if version < MIGRATIONS.len() {
            tracing::info!(
                path,
                from = version,
                to = SCHEMA_VERSION,
                "migrated the token-store schema"
            );
        }
        Ok(())
    }

    pub(crate) fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        read_row(&self.conn, &self.path, key)
    }

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
        let expires_at = ttl.map(|t| now.saturating_add(duration_ms(t)));
        let swept = if self
            .last_sweep_ms
            .is_none_or(|last| now.saturating_sub(last) >= duration_ms(self.sweep_interval))
        {
            Some(
                tx.prepare_cached(SWEEP)
                    .and_then(|mut s| s.execute([now]))
                    .map_err(e("cannot sweep expired records before writing"))?,
            )
        } else {
            None
        };
        let (kind, [p1, p2, p3, p4]) = cols(key);
        let row = params![kind, p1, p2, p3, p4, value, version, expires_at, now];
        let changed = match precondition {
            Precondition::Any => tx.prepare_cached(UPSERT).and_then(|mut s| s.execute(row)),
            Precondition::IfAbsent => tx.prepare_cached(CREATE).and_then(|mut s| s.execute(row)),
            Precondition::IfVersion(_) => match expected {
                Some(expected) => tx.prepare_cached(CAS).and_then(|mut s| {
                    s.execute(params![
                        kind, p1, p2, p3, p4, value, version, expires_at, now, expected
                    ])
                }),
                None => Ok(0),
            },
            other => {
                return Err(Error::invalid_input(format!(
                    "the sqlite backend does not support the precondition {other:?}"
                )));
            }
        }
        .map_err(e("cannot write"))?;
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
                tracing::debug!(path = %self.path, swept = n, "removed expired records");
            }
        }
        Ok(Version::new(version.to_string()))
    }

    pub(crate) fn remove(&mut self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        let path = self.path.as_str();
        let e =
            |what: &'static str| move |err| map_err(path, &format!("{what} {}", key.encode()), err);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e("cannot begin a delete of"))?;
        let now = now_ms();
        let (kind, [p1, p2, p3, p4]) = cols(key);
        // The usual deletes are one statement each, judged at `now` under the write lock.
        let fast = match precondition {
            Precondition::Any => Some(
                tx.prepare_cached(DELETE_ANY)
                    .and_then(|mut s| {
                        s.query_row(params![kind, p1, p2, p3, p4, now], |r| r.get::<_, bool>(0))
                            .optional()
                    })
                    .map(|live| live == Some(true)),
            ),
            Precondition::IfVersion(expected) => match expected.as_str().parse::<i64>() {
                Ok(expected) => match tx
                    .prepare_cached(DELETE_IF_VERSION)
                    .and_then(|mut s| s.execute(params![kind, p1, p2, p3, p4, now, expected]))
                {
                    // Nothing deleted: the general path below reports the conflict.
                    Ok(0) => None,
                    other => Some(other.map(|_| true)),
                },
                Err(_) => None,
            },
            _ => None,
        };
        let existed = match fast {
            Some(existed) => existed.map_err(e("cannot delete"))?,
            None => {
                let current =
                    current_version(&tx, key, now).map_err(e("cannot read the version of"))?;
                check_precondition(BACKEND, key, precondition, current.as_ref())?;
                // Deletes an expired row too: it was absent already, now it is gone.
                tx.prepare_cached(DELETE)
                    .and_then(|mut s| s.execute(params![kind, p1, p2, p3, p4]))
                    .map_err(e("cannot delete"))?;
                current.is_some()
            }
        };
        tx.commit().map_err(e("cannot commit a delete of"))?;
        Ok(existed)
    }

    pub(crate) fn scan(&mut self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let (out, expired_at) = scan_rows(&self.conn, &self.path, kind, filter)?;
        if let Some(now) = expired_at {
            self.sweep_opportunistically(now);
        }
        Ok(out)
    }

    /// Deletes expired rows if the write lock is free right now; a listing must not wait
    /// for a busy writer just to tidy up, and the next write sweeps anyway.
    pub(crate) fn sweep_opportunistically(&mut self, now: i64) {
        let result = (|| -> rusqlite::Result<usize> {
            self.conn.busy_timeout(Duration::ZERO)?;
            let outcome = (|| {
                let tx = self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?;
                let n = tx.prepare_cached(SWEEP)?.execute([now])?;
                tx.commit()?;
                Ok(n)
            })();
            self.conn.busy_timeout(self.busy_timeout)?;
            outcome
        })();
        match result {
            Ok(n) => {
                self.last_sweep_ms = Some(now);
                tracing::debug!(path = %self.path, swept = n, "removed expired records");
            }
            Err(e) => {
                tracing::debug!(path = %self.path, error = %e, "skipped sweeping expired records")
            }
        }
    }
}

/// A new version: a random positive `i64` (63 bits), never `not` (the version a CAS
/// replaces). Versions are not counted: a counter row would be a second page written by
/// every commit. A record deleted and created again gets an old version back only by a
/// 2^-63 chance, so a stale CAS fails (no ABA).
fn new_version(not: Option<i64>) -> Result<i64> {
    loop {
        let bits = getrandom::u64().map_err(|e| {
            Error::backend(
                BACKEND,
                "the system random number generator failed",
                Some(Box::new(e)),
            )
        })?;
        let v = i64::try_from(bits >> 1).unwrap_or(i64::MAX);
        if v != 0 && Some(v) != not {
            return Ok(v);
        }
    }
}

/// Opens a read-only connection to a database [`Db::open`] has already checked and migrated.
/// WAL readers never wait for the writer, nor the writer for them.
pub(crate) fn open_reader(config: &SqliteConfig) -> Result<Connection> {
    let path = config.path.as_path();
    let shown = path.display().to_string();
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_EXRESCODE;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| map_err(&shown, "cannot open a read connection to the database", e))?;
    // A reader can meet a lock too (a WAL being reset or recovered): the same busy timeout.
    conn.busy_timeout(config.busy_timeout)
        .map_err(at(&shown, "cannot set the busy timeout"))?;
    conn.set_prepared_statement_cache_capacity(8);
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(at(&shown, "cannot enable defensive mode"))?;
    Ok(conn)
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
    Ok(Some(RawRecord {
        value,
        version: Version::new(version.to_string()),
        expires_at: expires_at.and_then(system_time),
    }))
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
    // The resource filter applies to tokens only (see `ListFilter::matches`).
    let resource = filter
        .resource
        .as_deref()
        .filter(|_| kind == KeyKind::Token);
    let user = filter.user_key.as_deref();
    type Row = (String, String, String, String, Option<i64>);
    let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Row> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    };
    let collect = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<Vec<Row>> {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(args, map)?;
        rows.collect()
    };
    let rows = match (user, resource) {
        (None, None) => collect(SCAN_ALL, &[&kind_name]),
        (Some(u), None) => collect(SCAN_USER, &[&kind_name, &u]),
        (None, Some(r)) => collect(SCAN_RESOURCE, &[&kind_name, &r]),
        (Some(u), Some(r)) => collect(SCAN_USER_RESOURCE, &[&kind_name, &u, &r]),
    }
    .map_err(|e| map_err(path, &format!("cannot list {kind_name} keys"), e))?;
    let mut expired = false;
    let mut out = Vec::with_capacity(rows.len());
    for (p1, p2, p3, p4, expires_at) in rows {
        if expires_at.is_some_and(|at| at <= now) {
            expired = true;
            continue;
        }
        let mut parts = vec![p1, p2, p3, p4];
        parts.truncate(kind.arity());
        match StorageKey::new(kind, parts) {
            Ok(key) => out.push(ListEntry::Key(key)),
            Err(e) => out.push(ListEntry::Unreadable {
                location: format!("{path}: a {kind_name} row"),
                reason: e.to_string(),
            }),
        }
    }
    Ok((out, expired.then_some(now)))
}

fn schema_ids(conn: &Connection, path: &str) -> Result<(i32, i32)> {
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(at(path, "cannot read application_id"))?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(at(path, "cannot read user_version"))?;
    Ok((app_id, version))
}

/// Refuses a file that is not ours or whose schema is newer than this crate knows, before
/// anything is written to it. Returns the applied schema version.
fn identify(conn: &Connection, path: &str) -> Result<usize> {
    // The first statements that read the file header: a non-database file fails here.
    let (app_id, version) = schema_ids(conn, path)?;
    if app_id != APPLICATION_ID {
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(at(path, "cannot read the schema"))?;
        if app_id != 0 || version != 0 || objects != 0 {
            return Err(Error::config(format!(
                "{path}: this SQLite database belongs to another application (application_id {app_id:#x}, {objects} schema objects); refusing to add token-store tables to it"
            )));
        }
    }
    if version > SCHEMA_VERSION {
        return Err(Error::config(format!(
            "{path}: the database has schema version {version}, but this token-store-sqlite knows only up to {SCHEMA_VERSION}; upgrade token-store"
        )));
    }
    usize::try_from(version)
        .map_err(|_| Error::config(format!("{path}: negative schema version {version}")))
}

fn current_version(
    tx: &rusqlite::Transaction<'_>,
    key: &StorageKey,
    now: i64,
) -> rusqlite::Result<Option<Version>> {
    let (kind, [p1, p2, p3, p4]) = cols(key);
    let v: Option<i64> = tx
        .prepare_cached(SELECT_VERSION)?
        .query_row(params![kind, p1, p2, p3, p4, now], |r| r.get(0))
        .optional()?;
    Ok(v.map(|v| Version::new(v.to_string())))
}

/// Creates the directory (0700) and the database file (0600) before SQLite opens it, so
/// SQLite never creates the file with the umask's mode, and `-wal`/`-shm` (which SQLite
/// creates with the database file's mode) are 0600 as well.
fn prepare_file(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    token_store_core::fs::create_private_dir(dir)?;
    match token_store_core::fs::create_private_file(path) {
        Ok(file) => {
            // An empty file is a valid empty database; make its directory entry durable.
            file.sync_all()
                .and_then(|()| token_store_core::fs::sync_dir(dir))
                .map_err(|e| io_error(path, "cannot create", e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(path, "cannot create", e)),
    }
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, "cannot stat", e))?;
    if !meta.is_file() {
        return Err(Error::config(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::PermissionDenied {
                backend: BACKEND,
                message: format!(
                    "{} is accessible by other users (mode {mode:o}); refusing to keep tokens in it (chmod 600 it)",
                    path.display()
                ),
                source: None,
            });
        }
    }
    Ok(())
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    let message = format!("{what} {}", path.display());
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        Error::PermissionDenied {
            backend: BACKEND,
            message,
            source: Some(Box::new(e)),
        }
    } else {
        Error::Config {
            message,
            source: Some(Box::new(e)),
        }
    }
}

fn at<'a>(path: &'a str, what: &'a str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |e| map_err(path, what, e)
}

/// Maps a rusqlite error to the one error enum. `what` says what failed, naming the key
/// where there is one; no value ever reaches a message (values are bound parameters, and
/// SQLite's messages name tables and columns only).
pub(crate) fn map_err(path: &str, what: &str, e: rusqlite::Error) -> Error {
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    let message = format!("{what} ({path})");
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "{message}: the database stayed locked by another connection for longer than the busy timeout"
            ),
            source: Some(Box::new(e)),
        },
        Some(ErrorCode::NotADatabase) => Error::Corrupt {
            backend: BACKEND,
            key: path.to_owned(),
            message: format!("{what}: the file is not an SQLite database"),
            source: Some(Box::new(e)),
        },
        Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt {
            backend: BACKEND,
            key: path.to_owned(),
            message: format!("{what}: the database file is corrupt"),
            source: Some(Box::new(e)),
        },
        Some(ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => Error::PermissionDenied {
            backend: BACKEND,
            message,
            source: Some(Box::new(e)),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::NotFound) => Error::Config {
            message: format!("{BACKEND}: {message}"),
            source: Some(Box::new(e)),
        },
        _ => Error::Backend {
            backend: BACKEND,
            message,
            source: Some(Box::new(e)),
        },
    }
}
