use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, TlsCertificates, Value, cmd};
use token_store_core::async_trait;

use super::{Payload, RawKeys};
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// The smallest atomic compare-and-set Redis offers without server-side versions: compare
/// the stored value's SHA-1 (what the token-store backend compares too) and SET.
const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and redis.sha1hex(cur) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// The atomic second step of a read that got nothing: absent, or an empty value? (One more
/// round trip only when `GETRANGE` answered `""`; the same check the backend makes.)
const READ_EMPTY: &str = r"
local v = redis.call('GETRANGE', KEYS[1], 0, ARGV[1])
if v == '' and redis.call('EXISTS', KEYS[1]) == 0 then return false end
return v
";

/// The backend's default bound on a value (1 MiB): a read fetches at most one byte more.
const READ_END: i64 = 1024 * 1024;

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, c: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(x) => x.req_packed_command(c),
            Conn::Cluster(x) => x.req_packed_command(c),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(x) => x.req_packed_commands(p, offset, count),
            Conn::Cluster(x) => x.req_packed_commands(p, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(x) => x.get_db(),
            Conn::Cluster(x) => x.get_db(),
        }
    }
}

/// The `redis` crate on one multiplexed connection (a cluster connection for a cluster),
/// doing what the backend must for the same guarantees: a bounded read (`GETRANGE` of at most
/// the size limit + 1 byte, so a huge foreign value costs neither memory nor time; on `""`
/// one atomic step tells absent from empty) returning the value's SHA-1 version, `SET`,
/// `DEL`, `SCAN MATCH`, and a minimal Lua compare(SHA-1)-and-set.
pub struct RawRedis {
    conn: Conn,
    keys: RawKeys,
    prefix: String,
    payload: Payload,
    value_sha1: String,
    cas: Script,
    read_empty: Script,
    /// Attribution variant: every read also computes the SHA-1 version of the value, as
    /// the backend must (its CAS compares `redis.sha1hex` of the stored bytes).
    hash_read: bool,
}

impl RawRedis {
    /// One multiplexed connection to `url` (`redis://` or `rediss://`), with `ca` as the
    /// TLS root when given. Keys go under `prefix`.
    pub async fn connect(url: &str, ca: Option<&str>, prefix: &str, run_id: &str) -> BResult<Self> {
        let client = match ca {
            Some(ca) => redis::Client::build_with_tls(
                url,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca)?),
                },
            )?,
            None => redis::Client::open(url)?,
        };
        let conn = Conn::Single(client.get_multiplexed_async_connection().await?);
        Self::with(conn, prefix, run_id).await
    }

    /// A cluster connection from seed node URLs.
    pub async fn connect_cluster(nodes: &[String], prefix: &str, run_id: &str) -> BResult<Self> {
        let client = redis::cluster::ClusterClient::new(nodes.to_vec())?;
        let conn = Conn::Cluster(client.get_async_connection().await?);
        Self::with(conn, prefix, run_id).await
    }

    async fn with(mut conn: Conn, prefix: &str, run_id: &str) -> BResult<Self> {
        let payload = Payload::bytes();
        let value_sha1: String = cmd("EVAL")
            .arg("return redis.sha1hex(ARGV[1])")
            .arg(0)
            .arg(&*payload.value())
            .query_async(&mut conn)
            .await?;
        Ok(RawRedis {
            conn,
            keys: RawKeys::new(run_id),
            prefix: prefix.to_owned(),
            payload,
            value_sha1,
            cas: Script::new(CAS),
            read_empty: Script::new(READ_EMPTY),
            hash_read: false,
        })
    }

    /// The typed floor (`Payload`): the record serialized on a write, parsed on a read.
    pub fn typed(mut self) -> Self {
        self.payload = self.payload.typed();
        self
    }

    /// The attribution variant: a GET plus the SHA-1 version of the value; only gets.
    pub fn with_hashed_read(mut self) -> Self {
        self.hash_read = true;
        self
    }

    async fn read(&self, key: String) -> BResult<Option<Vec<u8>>> {
        let mut c = self.conn.clone();
        let head: Vec<u8> = cmd("GETRANGE")
            .arg(&key)
            .arg(0)
            .arg(READ_END)
            .query_async(&mut c)
            .await?;
        let value = if head.is_empty() {
            self.read_empty
                .key(&key)
                .arg(READ_END)
                .invoke_async::<Option<Vec<u8>>>(&mut c)
                .await?
        } else {
            Some(head)
        };
        // A read returns the version a later CAS compares (SHA-1 of the bytes, so records
        // other tools wrote take part): the backend's guarantee, so the floor pays it too.
        if let Some(v) = &value {
            std::hint::black_box(version_of(v));
        }
        Ok(value)
    }

    fn key(&self, encoded: &str) -> String {
        format!("{}:{encoded}", self.prefix)
    }

    fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }
}

#[async_trait]
impl Target for RawRedis {
    fn label(&self) -> String {
        if self.hash_read {
            return "redis crate GETRANGE + the SHA-1 version of the value".to_owned();
        }
        self.payload.label(if self.is_cluster() {
            "redis crate, cluster connection"
        } else {
            "redis crate, one multiplexed connection"
        })
    }

    fn supports(&self, op: Op) -> bool {
        if self.hash_read {
            return matches!(op, Op::GetHit | Op::GetMiss);
        }
        // SCAN on a cluster needs one walk per master: that is the backend's work, not a
        // single raw command to compare with.
        !(op == Op::List && self.is_cluster())
    }

    async fn setup(&self) -> BResult<()> {
        let mut c = self.conn.clone();
        for k in &self.keys.hit {
            cmd("SET")
                .arg(self.key(k))
                .arg(&*self.payload.value())
                .query_async::<()>(&mut c)
                .await?;
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            let mut c = self.conn.clone();
            cmd("SET")
                .arg(self.key(&self.keys.del[i % SIDE_KEYS]))
                .arg(&*self.payload.value())
                .query_async::<()>(&mut c)
                .await?;
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let mut c = self.conn.clone();
        let k = i % LIST_SIZE;
        match op {
            Op::GetHit => {
                let value = self
                    .read(self.key(&self.keys.hit[k]))
                    .await?
                    .ok_or_else(|| fail("missing"))?;
                self.payload.take(value, 0)?;
            }
            Op::GetMiss => {
                if self
                    .read(self.key(&self.keys.miss[i % SIDE_KEYS]))
                    .await?
                    .is_some()
                {
                    return Err(fail("found"));
                }
            }
            Op::Put => {
                cmd("SET")
                    .arg(self.key(&self.keys.hit[k]))
                    .arg(&*self.payload.value())
                    .query_async::<()>(&mut c)
                    .await?;
            }
            Op::CasPut => {
                let ok: i64 = self
                    .cas
                    .key(self.key(&self.keys.hit[k]))
                    .arg(&self.value_sha1)
                    .arg(&*self.payload.value())
                    .invoke_async(&mut c)
                    .await?;
                if ok != 1 {
                    return Err(fail("CAS mismatch"));
                }
            }
            Op::Delete => {
                let n: i64 = cmd("DEL")
                    .arg(self.key(&self.keys.del[i % SIDE_KEYS]))
                    .query_async(&mut c)
                    .await?;
                if n != 1 {
                    return Err(fail("nothing deleted"));
                }
            }
            Op::List => {
                let pattern = format!("{}*", self.key(&self.keys.user_prefix()));
                let mut cursor = 0u64;
                let mut n = 0;
                loop {
                    let (next, batch): (u64, Vec<Vec<u8>>) = cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await?;
                    let head = self.prefix.len() + 1;
                    n += batch
                        .iter()
                        .filter(|k| {
                            k.get(head..)
                                .and_then(|e| std::str::from_utf8(e).ok())
                                .is_some_and(|e| self.payload.listed(e))
                        })
                        .count();
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                if n != LIST_SIZE {
                    return Err(fail(format!("listed {n}")));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        let mut c = self.conn.clone();
        for k in self.keys.hit.iter().chain(&self.keys.del) {
            cmd("DEL")
                .arg(self.key(k))
                .query_async::<()>(&mut c)
                .await?;
        }
        Ok(())
    }
}

/// The backend's version of a value: SHA-1 of the bytes, hex (the backend's own function is
/// private; this is the same computation, so the floor pays what the backend pays).
fn version_of(bytes: &[u8]) -> token_store_core::Version {
    use sha1::Digest;
    token_store_core::Version::new(token_store_core::backend::hex(&sha1::Sha1::digest(bytes)))
}
