use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use token_store_core::{StorageKey, async_trait};

use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

const GET: &str = "SELECT value, version FROM records
    WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5";
const PUT: &str = "INSERT INTO records(kind, p1, p2, p3, p4, value, version, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT(kind, p1, p2, p3, p4) DO UPDATE SET
        value = excluded.value, version = excluded.version, updated_at = excluded.updated_at";
const CAS: &str = "UPDATE records SET value = ?6, version = ?7, updated_at = ?8
    WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5 AND version = ?9";
const DELETE: &str =
    "DELETE FROM records WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5";
const LIST: &str = "SELECT p1, p2, p3, p4 FROM records WHERE kind = 'token' AND p1 = ?1";

pub(crate) type Cols = [String; 4];

/// Attribution variants: the raw client doing one more of the things the backend does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Writes in `BEGIN IMMEDIATE` ... `COMMIT` (the backend's transaction, which makes
    /// its CAS and conflict report one atomic step) instead of one autocommit statement.
    Transaction,
}

/// One `rusqlite` connection to the same database file as the store, same table and
/// settings (WAL, `synchronous=FULL`, `secure_delete`), one cached prepared statement per
/// operation, each in autocommit, run directly on the calling thread.
pub struct RawSqlite {
    conn: Mutex<Connection>,
    user: String,
    hit: Vec<Cols>,
    miss: Vec<Cols>,
    del: Vec<Cols>,
    versions: Vec<AtomicI64>,
    counter: AtomicI64,
    value: Vec<u8>,
    variant: Option<Variant>,
}

pub(crate) fn cols(key: &StorageKey) -> Cols {
    let p = key.parts();
    [p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone()]
}

impl RawSqlite {
    /// Opens `path` (a database the store created) with the store's settings.
    pub fn open(path: &Path, run_id: &str) -> BResult<Self> {
        let conn = connect(path)?;
        let key = |u: &str, i| cols(&fixture::key(u, i).storage_key());
        let user = format!("{run_id}-rawhit");
        Ok(RawSqlite {
            conn: Mutex::new(conn),
            hit: (0..LIST_SIZE).map(|i| key(&user, i)).collect(),
            miss: (0..SIDE_KEYS)
                .map(|i| key(&format!("{run_id}-rawmiss"), i))
                .collect(),
            del: (0..SIDE_KEYS)
                .map(|i| key(&format!("{run_id}-rawdel"), i))
                .collect(),
            user,
            versions: (0..LIST_SIZE).map(|_| AtomicI64::new(0)).collect(),
            // Raw rows have keys of their own; their versions need only differ among them.
            counter: AtomicI64::new(1 << 40),
            value: fixture::record_bytes(1),
            variant: None,
        })
    }

    /// The attribution variant `variant` on database `path`.
    pub fn variant(path: &Path, run_id: &str, variant: Variant) -> BResult<Self> {
        let mut me = Self::open(path, run_id)?;
        me.variant = Some(variant);
        Ok(me)
    }

    /// A write the way the backend makes it: BEGIN IMMEDIATE, the statement, COMMIT.
    fn write_in_transaction(
        &self,
        sql: &str,
        c: &Cols,
        expected: Option<i64>,
    ) -> BResult<(usize, i64)> {
        let v = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = match expected {
            Some(e) => tx.prepare_cached(sql)?.execute(params![
                "token", c[0], c[1], c[2], c[3], self.value, v, 0, e
            ])?,
            None => tx
                .prepare_cached(sql)?
                .execute(params!["token", c[0], c[1], c[2], c[3], self.value, v, 0])?,
        };
        tx.commit()?;
        Ok((n, v))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, c: &Cols) -> BResult<i64> {
        let v = self.counter.fetch_add(1, Ordering::Relaxed);
        let conn = self.conn();
        conn.prepare_cached(PUT)?
            .execute(params!["token", c[0], c[1], c[2], c[3], self.value, v, 0])?;
        Ok(v)
    }
}

/// A connection to `path` (a database the store created) with the store's settings.
pub(crate) fn connect(path: &Path) -> BResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(32);
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// The floor's get: the value and version of token row `c`.
pub(crate) fn get(conn: &Connection, c: &Cols) -> BResult<Option<(Vec<u8>, i64)>> {
    let mut stmt = conn.prepare_cached(GET)?;
    Ok(stmt
        .query_row(params!["token", c[0], c[1], c[2], c[3]], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

#[async_trait]
impl Target for RawSqlite {
    fn label(&self) -> String {
        match self.variant {
            None => "rusqlite, one prepared statement, autocommit".to_owned(),
            Some(Variant::Transaction) => {
                "rusqlite, BEGIN IMMEDIATE + statement + COMMIT".to_owned()
            }
        }
    }

    fn supports(&self, op: Op) -> bool {
        match self.variant {
            None => true,
            Some(Variant::Transaction) => matches!(op, Op::Put | Op::CasPut),
        }
    }

    async fn setup(&self) -> BResult<()> {
        for (k, c) in self.hit.iter().enumerate() {
            let v = self.put(c)?;
            self.versions[k].store(v, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            self.put(&self.del[i % SIDE_KEYS])?;
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let k = i % LIST_SIZE;
        if self.variant == Some(Variant::Transaction) {
            let c = &self.hit[k];
            let expected = (op == Op::CasPut).then(|| self.versions[k].load(Ordering::Relaxed));
            let sql = if expected.is_some() { CAS } else { PUT };
            let (n, v) = self.write_in_transaction(sql, c, expected)?;
            if n != 1 {
                return Err(fail("CAS mismatch"));
            }
            self.versions[k].store(v, Ordering::Relaxed);
            return Ok(());
        }
        let get = |c: &Cols| get(&self.conn(), c);
        match op {
            Op::GetHit => {
                get(&self.hit[k])?.ok_or_else(|| fail("missing"))?;
            }
            Op::GetMiss => {
                if get(&self.miss[i % SIDE_KEYS])?.is_some() {
                    return Err(fail("found"));
                }
            }
            Op::Put => {
                let v = self.put(&self.hit[k])?;
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::CasPut => {
                let c = &self.hit[k];
                let expected = self.versions[k].load(Ordering::Relaxed);
                let v = self.counter.fetch_add(1, Ordering::Relaxed);
                let n = self.conn().prepare_cached(CAS)?.execute(params![
                    "token", c[0], c[1], c[2], c[3], self.value, v, 0, expected
                ])?;
                if n != 1 {
                    return Err(fail("CAS mismatch"));
                }
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::Delete => {
                let c = &self.del[i % SIDE_KEYS];
                let n = self
                    .conn()
                    .prepare_cached(DELETE)?
                    .execute(params!["token", c[0], c[1], c[2], c[3]])?;
                if n != 1 {
                    return Err(fail("nothing deleted"));
                }
            }
            Op::List => {
                let conn = self.conn();
                let mut stmt = conn.prepare_cached(LIST)?;
                let rows = stmt.query_map([&self.user], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })?;
                let n = rows.collect::<Result<Vec<_>, _>>()?.len();
                if n != LIST_SIZE {
                    return Err(fail(format!("listed {n}")));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        let conn = self.conn();
        for c in self.hit.iter().chain(&self.del) {
            conn.prepare_cached(DELETE)?
                .execute(params!["token", c[0], c[1], c[2], c[3]])?;
        }
        Ok(())
    }
}
