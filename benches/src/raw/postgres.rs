use std::sync::atomic::{AtomicI64, Ordering};

use token_store_core::{StorageKey, async_trait};
use tokio_postgres::{Client, NoTls, Statement};

use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// One key as the store's table holds it: its id (SHA-256 of the encoded key, computed by the
/// server at setup) and its four parts.
struct Row {
    id: Vec<u8>,
    parts: [String; 4],
}

/// One `tokio-postgres` connection (no pool) to the store's own table, one prepared
/// statement per operation, each an autocommit statement: the same statements the backend
/// runs (upsert, `UPDATE … WHERE version = $n`, `DELETE`, the keyset listing on the user
/// index) without what the backend adds to them (the TTL condition, the size check, the
/// conflict report, the pool checkout, the redacted parameters, the typed layer's JSON).
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
        let get = client
            .prepare(&format!(
                "SELECT value, version FROM {t} WHERE kind = 'token' AND id = $1"
            ))
            .await?;
        let put = client
            .prepare(&format!(
                "INSERT INTO {t} (kind, id, p1, p2, p3, p4, value, version, updated_at)
                 VALUES ('token', $1, $2, $3, $4, $5, $6, $7, now())
                 ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value,
                     version = excluded.version, updated_at = excluded.updated_at"
            ))
            .await?;
        let cas = client
            .prepare(&format!(
                "UPDATE {t} SET value = $2, version = $3, updated_at = now()
                 WHERE kind = 'token' AND id = $1 AND version = $4"
            ))
            .await?;
        let delete = client
            .prepare(&format!("DELETE FROM {t} WHERE kind = 'token' AND id = $1"))
            .await?;
        let list = client
            .prepare(&format!(
                "SELECT id, p1, p2, p3, p4 FROM {t}
                 WHERE kind = 'token' AND left(p1, 200) = left($1, 200) AND p1 = $1 AND id > $2
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
                &[&row.id, &p[0], &p[1], &p[2], &p[3], &self.value, &v],
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
                let row = self.client.query_opt(&self.get, &[&self.hit[k].id]).await?;
                let (_, _): (Vec<u8>, i64) = row
                    .map(|r| (r.get(0), r.get(1)))
                    .ok_or_else(|| fail("missing"))?;
            }
            Op::GetMiss => {
                let id = &self.miss[i % SIDE_KEYS].id;
                if self.client.query_opt(&self.get, &[id]).await?.is_some() {
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
                    .execute(&self.cas, &[&self.hit[k].id, &self.value, &v, &expected])
                    .await?;
                if n != 1 {
                    return Err(fail("CAS mismatch"));
                }
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::Delete => {
                let id = &self.del[i % SIDE_KEYS].id;
                if self.client.execute(&self.delete, &[id]).await? != 1 {
                    return Err(fail("nothing deleted"));
                }
            }
            Op::List => {
                let rows = self
                    .client
                    .query(&self.list, &[&self.user, &Vec::<u8>::new()])
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
            self.client.execute(&self.delete, &[&row.id]).await?;
        }
        Ok(())
    }
}
