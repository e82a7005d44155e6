use std::sync::atomic::{AtomicI64, Ordering};

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, QueueMode, RecyclingMethod, Runtime,
};
use sha2::{Digest, Sha256};
use token_store_core::{StorageKey, async_trait};
use tokio_postgres::{Client, NoTls, Statement};

use super::Payload;
use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// The kind column of token rows.
const KIND: &str = "token";
/// The value limit the backend binds to its read (its default `max_value_size`).
const MAX_VALUE: i32 = 1024 * 1024;
/// No TTL: `now() + NULL * interval` is a NULL expiry, as the backend binds it.
const NO_TTL: Option<i64> = None;

/// One key as the store's table holds it: its id (SHA-256 of the encoded key, computed by the
/// server at setup) and its four parts.
struct Row {
    id: Vec<u8>,
    parts: [String; 4],
}

/// The backend's statements, in [`Which`] order.
const STATEMENTS: usize = 5;

/// One of the floor's statements.
#[derive(Clone, Copy)]
enum Which {
    Get,
    Put,
    Cas,
    Delete,
    List,
}

/// How the floor reaches the server.
enum Clients {
    /// A `deadpool-postgres` pool (LIFO, `Fast` recycling, as the backend's) and
    /// `prepare_cached`: what a server that must replace a killed connection needs.
    Pool(Pool),
    /// One connection, its statements prepared once (the attribution variant): the least
    /// work, but a killed connection would stay dead.
    One(Client, [Statement; STATEMENTS]),
}

/// A connection for one call.
// On the stack for one call, as the backend holds its pooled connection: boxing it would add
// an allocation per call the backend does not make.
#[allow(clippy::large_enum_variant)]
enum Lease<'a> {
    /// A pooled connection, which prepares (and caches) the statement text it is given.
    Pooled(Object, &'a [String; STATEMENTS]),
    /// The one connection and its statements, prepared when it was made.
    One(&'a Client, &'a [Statement; STATEMENTS]),
}

impl Lease<'_> {
    fn client(&self) -> &Client {
        match self {
            Lease::Pooled(object, _) => object,
            Lease::One(client, _) => client,
        }
    }

    async fn statement(&self, which: Which) -> BResult<Statement> {
        Ok(match self {
            Lease::Pooled(object, sql) => object.prepare_cached(&sql[which as usize]).await?,
            Lease::One(_, prepared) => prepared[which as usize].clone(),
        })
    }
}

/// `tokio-postgres` on the store's own table, one prepared statement per operation, each an
/// autocommit statement, **the same statements the backend runs**
/// (`storage-postgres/src/sql.rs`): the read bounded by the value limit and judged live by
/// the server's clock, the upsert and the compare-and-swap setting the expiry, the delete
/// returning whether a live row went, the keyset listing of live rows on the user index.
/// Connections come from a pool as the backend's do (a store must survive a killed
/// connection); [`RawPostgres::one_connection`] is the same on one connection.
/// What the backend adds around them is left out: the key's id computed per call, the
/// conflict report, the layers.
pub struct RawPostgres {
    clients: Clients,
    sql: [String; STATEMENTS],
    user: String,
    hit: Vec<Row>,
    miss: Vec<Row>,
    del: Vec<Row>,
    versions: Vec<AtomicI64>,
    counter: AtomicI64,
    payload: Payload,
}

impl RawPostgres {
    /// A pool of connections to `url` (a libpq-style URL `tokio_postgres` parses, without
    /// the store's own parameters), without TLS, on `schema.table`, a table the store
    /// created. Keys belong to users named after `run_id`.
    pub async fn connect(url: &str, schema: &str, table: &str, run_id: &str) -> BResult<Self> {
        let config = url.parse::<tokio_postgres::Config>()?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .build()?;
        let keys = Keys::new(&**pool.get().await?, run_id).await?;
        Ok(Self::with(
            Clients::Pool(pool),
            keys,
            statements(schema, table),
        ))
    }

    /// The same floor on one connection, its statements prepared once (no pool).
    pub async fn one_connection(
        url: &str,
        schema: &str,
        table: &str,
        run_id: &str,
    ) -> BResult<Self> {
        let (client, connection) = url
            .parse::<tokio_postgres::Config>()?
            .connect(NoTls)
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let sql = statements(schema, table);
        let mut prepared = Vec::with_capacity(STATEMENTS);
        for s in &sql {
            prepared.push(client.prepare(s).await?);
        }
        let prepared: [Statement; STATEMENTS] = prepared
            .try_into()
            .map_err(|_| fail("not every statement prepared"))?;
        let keys = Keys::new(&client, run_id).await?;
        Ok(Self::with(Clients::One(client, prepared), keys, sql))
    }

    /// The typed floor (`Payload`): the record serialized on a write, parsed on a read.
    pub fn typed(mut self) -> Self {
        self.payload = self.payload.typed();
        self
    }

    fn with(clients: Clients, keys: Keys, sql: [String; STATEMENTS]) -> Self {
        RawPostgres {
            clients,
            sql,
            user: keys.user,
            hit: keys.hit,
            miss: keys.miss,
            del: keys.del,
            versions: (0..LIST_SIZE).map(|_| AtomicI64::new(0)).collect(),
            // Raw rows have keys of their own; their versions need only differ among them.
            counter: AtomicI64::new(1 << 40),
            payload: Payload::bytes(),
        }
    }

    async fn lease(&self) -> BResult<Lease<'_>> {
        Ok(match &self.clients {
            Clients::Pool(pool) => Lease::Pooled(pool.get().await?, &self.sql),
            Clients::One(client, prepared) => Lease::One(client, prepared),
        })
    }

    async fn put(&self, row: &Row) -> BResult<i64> {
        let v = self.counter.fetch_add(1, Ordering::Relaxed);
        let p = &row.parts;
        let value = self.payload.value();
        let lease = self.lease().await?;
        let stmt = lease.statement(Which::Put).await?;
        lease
            .client()
            .execute(
                &stmt,
                &[
                    &KIND, &row.id, &p[0], &p[1], &p[2], &p[3], &&*value, &v, &NO_TTL,
                ],
            )
            .await?;
        Ok(v)
    }
}

/// The floor's keys: the user whose records are read, written and listed, and the rows of
/// its hits, misses and deletes.
struct Keys {
    user: String,
    hit: Vec<Row>,
    miss: Vec<Row>,
    del: Vec<Row>,
}

impl Keys {
    async fn new(client: &Client, run_id: &str) -> BResult<Keys> {
        let user = format!("{run_id}-rawhit");
        let keys = |u: &str, n: usize| (0..n).map(|i| fixture::key(u, i).storage_key()).collect();
        Ok(Keys {
            hit: rows(client, keys(&user, LIST_SIZE)).await?,
            miss: rows(client, keys(&format!("{run_id}-rawmiss"), SIDE_KEYS)).await?,
            del: rows(client, keys(&format!("{run_id}-rawdel"), SIDE_KEYS)).await?,
            user,
        })
    }
}

/// The backend's statements on `schema.table`, parameters as it binds them ($1 the kind,
/// $2 the id), in [`Which`] order.
fn statements(schema: &str, table: &str) -> [String; STATEMENTS] {
    let t = format!("\"{schema}\".\"{table}\"");
    let live = "(expires_at IS NULL OR expires_at > now())";
    [
        format!(
            "SELECT CASE WHEN octet_length(value) <= $3 THEN value END, octet_length(value), version, expires_at
             FROM {t} WHERE kind = $1 AND id = $2 AND {live}"
        ),
        format!(
            "INSERT INTO {t} AS t (kind, id, p1, p2, p3, p4, value, version, expires_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9::bigint * interval '1 millisecond', now())
             ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value, version = excluded.version,
                 expires_at = excluded.expires_at, updated_at = excluded.updated_at"
        ),
        format!(
            "UPDATE {t} SET value = $3, version = $4,
                 expires_at = now() + $5::bigint * interval '1 millisecond', updated_at = now()
             WHERE kind = $1 AND id = $2 AND version = $6 AND {live}"
        ),
        format!("DELETE FROM {t} WHERE kind = $1 AND id = $2 RETURNING {live}"),
        format!(
            "SELECT id, p1, p2, p3, p4 FROM {t}
             WHERE kind = $1 AND left(p1, 200) = left($3, 200) AND p1 = $3 AND id > $2 AND {live}
             ORDER BY id LIMIT 1000"
        ),
    ]
}

/// The rows of `keys`, their ids computed by the server in one round trip (untimed).
async fn rows(client: &Client, keys: Vec<StorageKey>) -> BResult<Vec<Row>> {
    let encoded: Vec<String> = keys.iter().map(StorageKey::encode).collect();
    let ids = client
        .query(
            "SELECT sha256(convert_to(k, 'UTF8')) FROM unnest($1::text[]) WITH ORDINALITY AS u(k, n) ORDER BY n",
            &[&encoded],
        )
        .await?;
    Ok(keys
        .iter()
        .zip(ids)
        .map(|(key, id)| {
            let p = key.parts();
            Row {
                id: id.get(0),
                parts: [p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone()],
            }
        })
        .collect())
}

#[async_trait]
impl Target for RawPostgres {
    fn label(&self) -> String {
        self.payload.label(match self.clients {
            Clients::Pool(_) => {
                "tokio-postgres + deadpool-postgres pool, prepare_cached statements"
            }
            Clients::One(..) => "tokio-postgres, one connection (no pool), prepared statements",
        })
    }

    async fn setup(&self) -> BResult<()> {
        for (k, row) in self.hit.iter().enumerate() {
            let v = self.put(row).await?;
            self.versions[k].store(v, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            self.put(&self.del[i % SIDE_KEYS]).await?;
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let k = i % LIST_SIZE;
        match op {
            Op::GetHit => {
                let lease = self.lease().await?;
                let stmt = lease.statement(Which::Get).await?;
                let row = lease
                    .client()
                    .query_opt(&stmt, &[&KIND, &self.hit[k].id, &MAX_VALUE])
                    .await?
                    .ok_or_else(|| fail("missing"))?;
                drop(lease);
                let value: Option<Vec<u8>> = row.try_get(0)?;
                let (_, _, _): (i32, i64, Option<std::time::SystemTime>) =
                    (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
                self.payload
                    .take(value.ok_or_else(|| fail("too large"))?, 0)?;
            }
            Op::GetMiss => {
                let id = &self.miss[i % SIDE_KEYS].id;
                let lease = self.lease().await?;
                let stmt = lease.statement(Which::Get).await?;
                if lease
                    .client()
                    .query_opt(&stmt, &[&KIND, id, &MAX_VALUE])
                    .await?
                    .is_some()
                {
                    return Err(fail("found"));
                }
            }
            Op::Put => {
                let v = self.put(&self.hit[k]).await?;
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::CasPut => {
                let expected = self.versions[k].load(Ordering::Relaxed);
                let v = self.counter.fetch_add(1, Ordering::Relaxed);
                let value = self.payload.value();
                let lease = self.lease().await?;
                let stmt = lease.statement(Which::Cas).await?;
                let n = lease
                    .client()
                    .execute(
                        &stmt,
                        &[&KIND, &self.hit[k].id, &&*value, &v, &NO_TTL, &expected],
                    )
                    .await?;
                if n != 1 {
                    return Err(fail("CAS mismatch"));
                }
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::Delete => {
                let id = &self.del[i % SIDE_KEYS].id;
                let lease = self.lease().await?;
                let stmt = lease.statement(Which::Delete).await?;
                let row = lease.client().query_opt(&stmt, &[&KIND, id]).await?;
                if row.is_none_or(|r| r.get::<_, Option<bool>>(0) != Some(true)) {
                    return Err(fail("nothing deleted"));
                }
            }
            Op::List => {
                let lease = self.lease().await?;
                let stmt = lease.statement(Which::List).await?;
                let rows = lease
                    .client()
                    .query(&stmt, &[&KIND, &Vec::<u8>::new(), &self.user])
                    .await?;
                drop(lease);
                // A typed caller gets keys it can read: each row's parts as a token key whose
                // SHA-256 is the row's id (what the backend checks; one buffer for them all).
                let mut scratch = String::new();
                let mut n = 0;
                for r in &rows {
                    let id: &[u8] = r.try_get(0)?;
                    match self.payload.listed_parts([
                        r.try_get(1)?,
                        r.try_get(2)?,
                        r.try_get(3)?,
                        r.try_get(4)?,
                    ]) {
                        Some(None) => n += 1,
                        Some(Some(key)) => {
                            scratch.clear();
                            key.encode_into(&mut scratch);
                            n += usize::from(Sha256::digest(scratch.as_bytes())[..] == *id);
                        }
                        None => {}
                    }
                }
                if n != LIST_SIZE {
                    return Err(fail(format!("listed {n}")));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        let lease = self.lease().await?;
        let stmt = lease.statement(Which::Delete).await?;
        for row in self.hit.iter().chain(&self.del) {
            lease.client().query_opt(&stmt, &[&KIND, &row.id]).await?;
        }
        Ok(())
    }
}
