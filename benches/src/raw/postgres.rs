use std::sync::atomic::{AtomicI64, Ordering};

use token_store_core::{StorageKey, async_trait};
use tokio_postgres::{Client, NoTls, Statement};

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

/// One `tokio-postgres` connection (no pool) to the store's own table, one prepared
/// statement per operation, each an autocommit statement, **the same statements the backend
/// runs** (`storage-postgres/src/sql.rs`): the read bounded by the value limit and judged live
/// by the server's clock, the upsert and the compare-and-swap setting the expiry, the delete
/// returning whether a live row went, the keyset listing of live rows on the user index.
/// What the backend adds around them is left out: the pool checkout, the key's id computed
/// per call, the conflict report, the typed layer's JSON.
pub struct RawPostgres {
    client: Client,
    get: Statement,
    put: Statement,
    cas: Statement,
    delete: Statement,
    list: Statement,
    user: String,
    hit: Vec<Row>,
    miss: Vec<Row>,
    del: Vec<Row>,
    versions: Vec<AtomicI64>,
    counter: AtomicI64,
    value: Vec<u8>,
}

impl RawPostgres {
    /// Connects to `url` (a libpq-style URL `tokio_postgres` parses, without the store's
    /// own parameters) without TLS, and prepares the statements on `schema.table`, a table the
    /// store created. Keys belong to users named after `run_id`.
    pub async fn connect(url: &str, schema: &str, table: &str, run_id: &str) -> BResult<Self> {
        let (client, connection) = url
            .parse::<tokio_postgres::Config>()?
            .connect(NoTls)
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let t = format!("\"{schema}\".\"{table}\"");
        // Parameters as the backend binds them ($1 the kind, $2 the id), with `LIVE`.
        let live = "(expires_at IS NULL OR expires_at > now())";
        let get = client
            .prepare(&format!(
                "SELECT CASE WHEN octet_length(value) <= $3 THEN value END, octet_length(value), version, expires_at
                 FROM {t} WHERE kind = $1 AND id = $2 AND {live}"
            ))
            .await?;
        let put = client
            .prepare(&format!(
                "INSERT INTO {t} AS t (kind, id, p1, p2, p3, p4, value, version, expires_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9::bigint * interval '1 millisecond', now())
                 ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value, version = excluded.version,
                     expires_at = excluded.expires_at, updated_at = excluded.updated_at"
            ))
            .await?;
        let cas = client
            .prepare(&format!(
                "UPDATE {t} SET value = $3, version = $4,
                     expires_at = now() + $5::bigint * interval '1 millisecond', updated_at = now()
                 WHERE kind = $1 AND id = $2 AND version = $6 AND {live}"
            ))
            .await?;
        let delete = client
            .prepare(&format!(
                "DELETE FROM {t} WHERE kind = $1 AND id = $2 RETURNING {live}"
            ))
            .await?;
        let list = client
            .prepare(&format!(
                "SELECT id, p1, p2, p3, p4 FROM {t}
                 WHERE kind = $1 AND left(p1, 200) = left($3, 200) AND p1 = $3 AND id > $2 AND {live}
                 ORDER BY id LIMIT 1000"
            ))
            .await?;
        let user = format!("{run_id}-rawhit");
        let keys = |u: &str, n: usize| (0..n).map(|i| fixture::key(u, i).storage_key()).collect();
        let hit = rows(&client, keys(&user, LIST_SIZE)).await?;
        let miss = rows(&client, keys(&format!("{run_id}-rawmiss"), SIDE_KEYS)).await?;
        let del = rows(&client, keys(&format!("{run_id}-rawdel"), SIDE_KEYS)).await?;
        Ok(RawPostgres {
            client,
            get,
            put,
            cas,
            delete,
            list,
            user,
            hit,
            miss,
            del,
            versions: (0..LIST_SIZE).map(|_| AtomicI64::new(0)).collect(),
            // Raw rows have keys of their own; their versions need only differ among them.
            counter: AtomicI64::new(1 << 40),
            value: fixture::record_bytes(1),
        })
    }

    async fn put(&self, row: &Row) -> BResult<i64> {
        let v = self.counter.fetch_add(1, Ordering::Relaxed);
        let p = &row.parts;
        self.client
            .execute(
                &self.put,
                &[
                    &KIND,
                    &row.id,
                    &p[0],
                    &p[1],
                    &p[2],
                    &p[3],
                    &self.value,
                    &v,
                    &NO_TTL,
                ],
            )
            .await?;
        Ok(v)
    }
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
        "tokio-postgres, one connection, prepared statements".to_owned()
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
                let row = self
                    .client
                    .query_opt(&self.get, &[&KIND, &self.hit[k].id, &MAX_VALUE])
                    .await?
                    .ok_or_else(|| fail("missing"))?;
                let value: Option<Vec<u8>> = row.try_get(0)?;
                let (_, _, _): (i32, i64, Option<std::time::SystemTime>) =
                    (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
                value.ok_or_else(|| fail("too large"))?;
            }
            Op::GetMiss => {
                let id = &self.miss[i % SIDE_KEYS].id;
                if self
                    .client
                    .query_opt(&self.get, &[&KIND, id, &MAX_VALUE])
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
                let n = self
                    .client
                    .execute(
                        &self.cas,
                        &[&KIND, &self.hit[k].id, &self.value, &v, &NO_TTL, &expected],
                    )
                    .await?;
                if n != 1 {
                    return Err(fail("CAS mismatch"));
                }
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::Delete => {
                let id = &self.del[i % SIDE_KEYS].id;
                let row = self.client.query_opt(&self.delete, &[&KIND, id]).await?;
                if row.is_none_or(|r| r.get::<_, Option<bool>>(0) != Some(true)) {
                    return Err(fail("nothing deleted"));
                }
            }
            Op::List => {
                let rows = self
                    .client
                    .query(&self.list, &[&KIND, &Vec::<u8>::new(), &self.user])
                    .await?;
                let keys: Vec<(String, String, String, String)> = rows
                    .iter()
                    .map(|r| (r.get(1), r.get(2), r.get(3), r.get(4)))
                    .collect();
                if keys.len() != LIST_SIZE {
                    return Err(fail(format!("listed {}", keys.len())));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        for row in self.hit.iter().chain(&self.del) {
            self.client
                .query_opt(&self.delete, &[&KIND, &row.id])
                .await?;
        }
        Ok(())
    }
}
