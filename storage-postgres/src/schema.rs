//! The schema: versioned migrations, the metadata row that marks a table as ours, and the
//! checks that keep this crate from writing into a table that is not its own or is newer
//! than it knows.

use token_store_core::{Error, Result};
use tokio_postgres::GenericClient;

use crate::error::pg;

/// The newest schema this version knows; the metadata table holds the applied one.
pub const SCHEMA_VERSION: i32 = 2;

/// What the metadata row says the table belongs to.
pub(crate) const APPLICATION: &str = "token-store";

/// The transaction-level advisory lock every migration takes ("TkSt" + 1), so concurrent
/// openers of a fresh database migrate once.
const MIGRATION_LOCK: i64 = 0x546b_5374_0000_0001;

/// The columns of the records table, in order, as `format_type` names them, and whether each
/// is `NOT NULL`. A table that differs is not ours.
const COLUMNS: [(&str, &str, bool); 10] = [
    ("kind", "text", true),
    ("id", "bytea", true),
    ("p1", "text", true),
    ("p2", "text", true),
    ("p3", "text", true),
    ("p4", "text", true),
    ("value", "bytea", true),
    ("version", "bigint", true),
    ("expires_at", "timestamp with time zone", false),
    ("updated_at", "timestamp with time zone", true),
];

/// The quoted names of one store's objects.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) schema: String,
    /// `"schema"."table"`
    pub(crate) table: String,
    /// `"schema"."table_meta"`
    pub(crate) meta: String,
    /// The bare table name, for index names.
    bare: String,
}

impl Names {
    /// Names from identifiers already checked by `PostgresConfig::validate`.
    pub(crate) fn new(schema: &str, table: &str) -> Names {
        Names {
            schema: schema.to_owned(),
            table: format!("\"{schema}\".\"{table}\""),
            meta: format!("\"{schema}\".\"{table}_meta\""),
            bare: table.to_owned(),
        }
    }

    /// Migration `n + 1` is element `n`; each runs in the same transaction that records it.
    fn migrations(&self) -> Vec<String> {
        let (t, m, b) = (&self.table, &self.meta, &self.bare);
        vec![
            // 1: one table for every kind. `(kind, id)` is the key (id = SHA-256 of the
            // encoded key: parts may be too long for a B-tree entry); listing by user and by
            // resource have indexes ending in `id`, for keyset pagination. Fill factor 80
            // leaves room for HOT updates: a refresh rewrites a row in place.
            format!(
                "CREATE TABLE {m} (
                     id             integer     PRIMARY KEY CHECK (id = 1),
                     application    text        NOT NULL,
                     schema_version integer     NOT NULL,
                     created_at     timestamptz NOT NULL DEFAULT now(),
                     migrated_at    timestamptz NOT NULL DEFAULT now()
                 );
                 CREATE TABLE {t} (
                     kind       text        NOT NULL,
                     id         bytea       NOT NULL,
                     p1         text        NOT NULL,
                     p2         text        NOT NULL,
                     p3         text        NOT NULL,
                     p4         text        NOT NULL,
                     value      bytea       NOT NULL,
                     version    bigint      NOT NULL,
                     expires_at timestamptz,
                     updated_at timestamptz NOT NULL,
                     PRIMARY KEY (kind, id)
                 ) WITH (fillfactor = 80);
                 CREATE INDEX \"{b}_user_idx\" ON {t} (kind, left(p1, 200), id);
                 CREATE INDEX \"{b}_resource_idx\" ON {t} (left(p2, 200), id) WHERE kind = 'token';
                 CREATE INDEX \"{b}_expiry_idx\" ON {t} (expires_at) WHERE expires_at IS NOT NULL;"
            ),
            // 2: the user index led with `kind`, so a lookup by `(kind, id)` could use it
            // too, scanning every row of the kind for the id. A connection that planned its
            // statements while the table was small cached that plan (the costs tie on a few
            // rows) and kept it as the table grew: 3.6 ms per read at 100 000 rows instead of
            // 0.1 ms, until autovacuum's next ANALYZE. Led by the user, the index cannot serve
            // a key lookup; listings by user use it as before.
            format!(
                "DROP INDEX \"{s}\".\"{b}_user_idx\";
                 CREATE INDEX \"{b}_user_idx\" ON {t} (left(p1, 200), kind, id);",
                s = self.schema
            ),
        ]
    }
}

/// Brings the tables up to [`SCHEMA_VERSION`] (creating them on a fresh database), once
/// even when several processes open at the same moment, and checks they are ours.
pub(crate) async fn ensure(
    client: &mut tokio_postgres::Client,
    names: &Names,
    store: &str,
) -> Result<()> {
    let version = identify(&*client, names, store).await?;
    if version < SCHEMA_VERSION {
        migrate(client, names, store).await?;
    }
    check_columns(&*client, names, store).await
}

/// Migrates under a session-level advisory lock taken *before* the transaction begins: a
/// transaction that began before another opener committed the tables may still see them
/// missing in its catalog caches (they are refreshed at transaction start, not when an
/// advisory lock is granted), and would try to create them a second time.
async fn migrate(client: &mut tokio_postgres::Client, names: &Names, store: &str) -> Result<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| pg(store, "cannot take the migration lock", e))?;
    let outcome = migrate_locked(client, names, store).await;
    // A session lock outlives the transaction: release it whatever happened (a connection
    // that cannot is broken, and its session, lock included, ends with it).
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    outcome?;
    unlocked.map_err(|e| pg(store, "cannot release the migration lock", e))?;
    Ok(())
}

async fn migrate_locked(
    client: &mut tokio_postgres::Client,
    names: &Names,
    store: &str,
) -> Result<()> {
    let e = |what: &'static str| move |err| pg(store, what, err);
    let tx = client
        .transaction()
        .await
        .map_err(e("cannot begin the migration"))?;
    // Under the lock, look again: another process may have migrated meanwhile.
    let from = identify(&tx, names, store).await?;
    if from == SCHEMA_VERSION {
        return Ok(());
    }
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&names.schema],
        )
        .await
        .map_err(e("cannot look for the schema"))?
        .get(0);
    if !exists {
        // Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the
        // database even when the schema is there.
        tx.batch_execute(&format!("CREATE SCHEMA \"{}\"", names.schema))
            .await
            .map_err(e("cannot create the schema"))?;
    }
    let migrations = names.migrations();
    let start = usize::try_from(from).unwrap_or(0);
    for (n, sql) in migrations.iter().enumerate().skip(start) {
        tx.batch_execute(sql)
            .await
            .map_err(|err| pg(store, &format!("migration {} failed", n + 1), err))?;
    }
    tx.execute(
        &format!(
            "INSERT INTO {} (id, application, schema_version) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET schema_version = excluded.schema_version, migrated_at = now()",
            names.meta
        ),
        &[&APPLICATION, &SCHEMA_VERSION],
    )
    .await
    .map_err(e("cannot record the schema version"))?;
    tx.commit()
        .await
        .map_err(e("cannot commit the migration"))?;
    if from < SCHEMA_VERSION {
        tracing::info!(
            store,
            from,
            to = SCHEMA_VERSION,
            "migrated the token-store schema"
        );
    }
    Ok(())
}

/// The applied schema version (0: nothing there yet). Refuses a table of the same name
/// without our metadata, metadata of another application, and a newer schema.
async fn identify(client: &(impl GenericClient + Sync), names: &Names, store: &str) -> Result<i32> {
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
            &[&names.table, &names.meta],
        )
        .await
        .map_err(|e| pg(store, "cannot look for the tables", e))?;
    let (has_table, has_meta): (bool, bool) = (row.get(0), row.get(1));
    if !has_meta {
        if has_table {
            return Err(Error::config(format!(
                "{store}: the table {} exists but is not a token-store table (it has no {} metadata table); refusing to use it: choose another table= or schema=",
                names.table, names.meta
            )));
        }
        return Ok(0);
    }
    let version = read_marker(client, names, store).await?;
    if version > SCHEMA_VERSION {
        return Err(Error::config(format!(
            "{store}: the tables have schema version {version}, but this token-store-postgres knows only up to {SCHEMA_VERSION}; upgrade token-store"
        )));
    }
    if !has_table {
        return Err(Error::config(format!(
            "{store}: {} says schema version {version} but {} is missing; restore it, or drop {} to start afresh",
            names.meta, names.table, names.meta
        )));
    }
    Ok(version)
}

/// The schema version the metadata row records; refuses metadata that is not ours (another
/// shape, no row, another application).
async fn read_marker(
    client: &(impl GenericClient + Sync),
    names: &Names,
    store: &str,
) -> Result<i32> {
    let not_ours = |why: String| {
        Error::config(format!(
            "{store}: {} is not token-store's metadata table ({why}); refusing to use {}: choose another table= or schema=",
            names.meta, names.table
        ))
    };
    let marker = client
        .query_opt(
            &format!(
                "SELECT application::text, schema_version::integer FROM {} WHERE id = 1",
                names.meta
            ),
            &[],
        )
        .await
        .map_err(|e| {
            // A table of that name with other columns or types is not ours; anything else
            // (a dropped connection) is what it is.
            let foreign = e
                .as_db_error()
                .is_some_and(|db| ["42", "22"].iter().any(|c| db.code().code().starts_with(c)));
            if foreign {
                not_ours(format!("reading it failed: {}", short(&e)))
            } else {
                pg(store, "cannot read the metadata table", e)
            }
        })?;
    let Some(marker) = marker else {
        return Err(not_ours("it has no row 1".into()));
    };
    let application: Option<String> = marker.get(0);
    if application.as_deref() != Some(APPLICATION) {
        return Err(not_ours(format!(
            "it belongs to {:?}",
            application.unwrap_or_default()
        )));
    }
    Ok(marker.get::<_, Option<i32>>(1).unwrap_or(0))
}

/// Refuses a records table whose columns are not exactly ours.
async fn check_columns(
    client: &(impl GenericClient + Sync),
    names: &Names,
    store: &str,
) -> Result<()> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
             FROM pg_attribute a
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&names.table],
        )
        .await
        .map_err(|e| pg(store, "cannot read the table's columns", e))?;
    let found: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: Vec<(String, String, bool)> = COLUMNS
        .iter()
        .map(|(n, t, nn)| ((*n).to_owned(), (*t).to_owned(), *nn))
        .collect();
    if found != expected {
        let shown: Vec<String> = found.iter().map(|(n, t, _)| format!("{n} {t}")).collect();
        return Err(Error::config(format!(
            "{store}: {} does not have token-store's columns (it has: {}); refusing to use it",
            names.table,
            shown.join(", ")
        )));
    }
    Ok(())
}

/// A database error's primary message, without its detail.
fn short(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
