//! The schema: the migrations, and the checks that keep this crate from writing into a
//! database that is not its own or is newer than it knows.

use rusqlite::{Connection, TransactionBehavior};
use token_store_core::{Error, Result};

use crate::error::{at, map_err};

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

/// Brings the schema up to [`SCHEMA_VERSION`], once even when several processes open a
/// fresh database at the same moment.
pub(crate) fn migrate(conn: &mut Connection, path: &str) -> Result<()> {
    let (app_id, version) = schema_ids(conn, path)?;
    if app_id == APPLICATION_ID && version == SCHEMA_VERSION {
        return Ok(());
    }
    // Someone must migrate: take the write lock and look again, another process may have
    // done it meanwhile.
    let tx = conn
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
pub(crate) fn identify(conn: &Connection, path: &str) -> Result<usize> {
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
