use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use token_store_core::{StorageKey, async_trait};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::Payload;
use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

// The backend's read: a row is live until its expiry (a token store has TTLs).
const GET: &str = "SELECT value, version, expires_at FROM records
    WHERE kind = ?1 AND p1 = ?2 AND p2 = ?3 AND p3 = ?4 AND p4 = ?5
      AND (expires_at IS NULL OR expires_at > ?6)";
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
/// operation, each in autocommit. Reads run on the calling thread (the backend's do too);
/// writes on a thread of their own with a write connection (`write_thread`): an fsync, or
/// the busy timeout while another process writes, must not stall the caller's runtime.
pub struct RawSqlite {
    conn: Mutex<Connection>,
    writer: mpsc::Sender<Job>,
    user: String,
    hit: Vec<Cols>,
    miss: Vec<Cols>,
    del: Vec<Cols>,
    versions: Vec<AtomicI64>,
    counter: AtomicI64,
    payload: Payload,
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
            writer: write_thread(path)?,
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
            payload: Payload::bytes(),
            variant: None,
        })
    }

    /// The typed floor (`Payload`) on database `path`: the record serialized on a write,
    /// parsed on a read.
    pub fn typed(path: &Path, run_id: &str) -> BResult<Self> {
        let mut me = Self::open(path, run_id)?;
        me.payload = me.payload.typed();
        Ok(me)
    }

    /// The attribution variant `variant` on database `path`.
    pub fn variant(path: &Path, run_id: &str, variant: Variant) -> BResult<Self> {
        let mut me = Self::open(path, run_id)?;
        me.variant = Some(variant);
        Ok(me)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    fn put(&self, c: &Cols) -> BResult<i64> {
        let v = self.counter.fetch_add(1, Ordering::Relaxed);
        let conn = self.conn();
        conn.prepare_cached(PUT)?.execute(params![
            "token",
            c[0],
            c[1],
            c[2],
            c[3],
            &*self.payload.value(),
            v,
            0
        ])?;
        Ok(v)
    }

    /// One write statement (in `BEGIN IMMEDIATE` … `COMMIT` for the transaction variant) on
    /// the write thread: how many rows it changed, and the version written.
    async fn write(
        &self,
        sql: &'static str,
        c: &Cols,
        expected: Option<i64>,
        value: bool,
    ) -> BResult<(usize, i64)> {
        let v = self.counter.fetch_add(1, Ordering::Relaxed);
        let c = c.clone();
        // Copied for the thread, wiped after, as the backend's `SecretBytes` copy is.
        let value = value.then(|| Zeroizing::new(self.payload.value().to_vec()));
        let transaction = self.variant == Some(Variant::Transaction);
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &mut Connection| {
            let run = |conn: &Connection| -> rusqlite::Result<usize> {
                let mut stmt = conn.prepare_cached(sql)?;
                match (&value, expected) {
                    (Some(value), Some(e)) => stmt.execute(params![
                        "token",
                        c[0],
                        c[1],
                        c[2],
                        c[3],
                        &value[..],
                        v,
                        0,
                        e
                    ]),
                    (Some(value), None) => {
                        stmt.execute(params!["token", c[0], c[1], c[2], c[3], &value[..], v, 0])
                    }
                    (None, _) => stmt.execute(params!["token", c[0], c[1], c[2], c[3]]),
                }
            };
            let n = if transaction {
                conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .and_then(|t| {
                        let n = run(&t)?;
                        t.commit().map(|()| n)
                    })
            } else {
                run(conn)
            };
            let _ = tx.send(n);
        });
        self.writer
            .send(job)
            .map_err(|_| fail("the write thread is gone"))?;
        Ok((rx.await??, v))
    }
}

/// A write run on the write thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The thread that owns the floor's write connection, as the backend's connection thread
/// owns its own: the cheapest way to keep an fsync (or another process's lock) off every
/// kind of async runtime (`block_in_place` is cheaper but panics on a current-thread
/// runtime and in a `LocalSet`; `spawn_blocking` costs more). It ends when the floor is
/// dropped.
fn write_thread(path: &Path) -> BResult<mpsc::Sender<Job>> {
    let mut conn = connect(path)?;
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("raw-sqlite-writer".into())
        .spawn(move || {
            for job in queue {
                job(&mut conn);
            }
        })?;
    Ok(jobs)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut stmt = conn.prepare_cached(GET)?;
    Ok(stmt
        .query_row(params!["token", c[0], c[1], c[2], c[3], now], |r| {
            std::hint::black_box(r.get::<_, Option<i64>>(2)?);
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

#[async_trait]
impl Target for RawSqlite {
    fn label(&self) -> String {
        match self.variant {
            None => self
                .payload
                .label("rusqlite, one prepared statement, autocommit, writes on a write thread"),
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
        let get = |c: &Cols| get(&self.conn(), c);
        match op {
            Op::GetHit => {
                let (value, _) = get(&self.hit[k])?.ok_or_else(|| fail("missing"))?;
                self.payload.take(value, 0)?;
            }
            Op::GetMiss => {
                if get(&self.miss[i % SIDE_KEYS])?.is_some() {
                    return Err(fail("found"));
                }
            }
            Op::Put => {
                let (_, v) = self.write(PUT, &self.hit[k], None, true).await?;
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::CasPut => {
                let expected = self.versions[k].load(Ordering::Relaxed);
                let (n, v) = self.write(CAS, &self.hit[k], Some(expected), true).await?;
                if n != 1 {
                    return Err(fail("CAS mismatch"));
                }
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::Delete => {
                let (n, _) = self
                    .write(DELETE, &self.del[i % SIDE_KEYS], None, false)
                    .await?;
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
                let n = rows
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .filter_map(|(a, b, c, d)| self.payload.listed_parts([a, b, c, d]))
                    .count();
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
