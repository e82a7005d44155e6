//! [`RedisStore`]: the `RawStore` over Redis.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::{RedisResult, Script, Value, cmd};
use sha1::Digest;
use token_store_core::backend::{check_size, hex, percent_encode};
use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, Scope, SecretBytes, StorageKey, Version,
};

use crate::config::RedisConfig;
use crate::conn::Connection;
use crate::errors::{BACKEND, map_err};
use crate::scan::{escape_glob, scan_keys};
use crate::scripts;

/// The version of stored bytes: the hex SHA-1 Redis's `redis.sha1hex` computes in the scripts.
fn version_of(bytes: &[u8]) -> Version {
    Version::new(hex(&sha1::Sha1::digest(bytes)))
}

/// A token store in Redis (standalone, Cluster or Sentinel), key-compatible with mcp-agent:
/// the raw backend, without layers. See the crate docs for the layout and guarantees; most
/// applications call [`open`](crate::open) or [`open_url`](crate::open_url) instead, which
/// add the per-call time limit and the encryption layer the config asks for.
pub struct RedisStore {
    conn: Connection,
    config: RedisConfig,
    write: Script,
    remove: Script,
    read_empty: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects and returns the store. Connecting is bounded by the config's per-call time
    /// limit (`common.timeout`) when there is one, and by the client's connect timeout for
    /// each attempt.
    pub async fn open(config: &RedisConfig) -> Result<Self> {
        let mut config = config.clone();
        // mcp-agent strips trailing colons from its prefix; so do we, to land on its keys.
        config.prefix = config.prefix.trim_end_matches(':').to_owned();
        if config.prefix.is_empty() {
            return Err(Error::config("the Redis key prefix must not be empty"));
        }
        if config.max_value_size == 0 {
            return Err(Error::config("max_value_size must be more than 0"));
        }
        // The clients retry connects (the cluster client up to 6 times), so one attempt's
        // connect timeout does not bound the whole open; the call budget does.
        let conn = match config.common.timeout {
            Some(limit) => {
                let limit = limit.max(config.connect_timeout);
                tokio::time::timeout(limit, Connection::open(&config))
                    .await
                    .map_err(|_| {
                        Error::unavailable(
                            BACKEND,
                            format!("connecting to {config} timed out after {limit:?}"),
                            None,
                        )
                    })??
            }
            None => Connection::open(&config).await?,
        };
        Ok(RedisStore {
            conn,
            config,
            write: Script::new(scripts::WRITE),
            remove: Script::new(scripts::REMOVE),
            read_empty: Script::new(scripts::READ_EMPTY),
        })
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The Redis key a storage key is kept under: `prefix + ":" + key.encode()` (the layout
    /// the crate docs describe; for finding a record with `redis-cli` or writing ACLs).
    pub fn redis_key(&self, key: &StorageKey) -> String {
        let mut out = String::with_capacity(self.config.prefix.len() + 1 + key.encoded_len());
        out.push_str(&self.config.prefix);
        out.push(':');
        key.encode_into(&mut out);
        out
    }

    /// Runs one call's Redis work, mapping its error and telling the connection about it (a
    /// Sentinel master is looked up again when the error says it is gone).
    async fn call<T>(
        &self,
        key: Option<&StorageKey>,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        fut.await.map_err(|e| {
            self.conn.observe(&e);
            map_err(e, key)
        })
    }

    /// The GETRANGE end index (inclusive) that fetches one byte more than the largest
    /// accepted value, so a longer value is detected without being transferred.
    fn read_end(&self) -> i64 {
        i64::try_from(self.config.max_value_size).unwrap_or(i64::MAX)
    }

    /// The `TooLarge` error for a value longer than the limit, with its real length when
    /// Redis tells it.
    async fn too_large(&self, key: &StorageKey, rkey: &str) -> Error {
        let max = self.config.max_value_size;
        let size = async {
            let mut h = self.conn.handle().await?;
            cmd("STRLEN").arg(rkey).query_async::<usize>(&mut h).await
        }
        .await
        .unwrap_or(max.saturating_add(1));
        Error::TooLarge {
            backend: BACKEND,
            key: key.to_string(),
            size,
            max,
        }
    }

    /// The error a script's refusal stands for: `TooLarge` for a stored value over the limit
    /// (a negative length), else `Conflict` with the current version.
    fn refusal(&self, key: &StorageKey, reply: Value) -> Result<Error> {
        let current = match reply {
            Value::Int(n) if n < 0 => {
                return Ok(Error::TooLarge {
                    backend: BACKEND,
                    key: key.to_string(),
                    size: usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX),
                    max: self.config.max_value_size,
                });
            }
            Value::BulkString(b) if b.is_empty() => None,
            Value::BulkString(b) => Some(Version::new(String::from_utf8_lossy(&b).into_owned())),
            Value::SimpleString(s) if s.is_empty() => None,
            Value::SimpleString(s) => Some(Version::new(s)),
            other => return Err(unexpected(key, &other)),
        };
        Ok(Error::Conflict {
            backend: BACKEND,
            key: key.to_string(),
            current,
        })
    }

    /// The scripts' mode and expected version for a conditional write or delete.
    fn condition<'a>(&self, precondition: &'a Precondition) -> Result<(&'static str, &'a str)> {
        match precondition {
            Precondition::IfAbsent => Ok(("n", "")),
            Precondition::IfVersion(v) => Ok(("v", v.as_str())),
            // Precondition is non_exhaustive: refuse what we cannot honour rather than write
            // unconditionally.
            _ => Err(Error::invalid_input("unsupported precondition")),
        }
    }
}

fn unexpected(key: &StorageKey, value: &Value) -> Error {
    Error::backend(
        BACKEND,
        format!("unexpected script reply at {key}: {}", reply_kind(value)),
        None,
    )
}

fn reply_kind(value: &Value) -> &'static str {
    // Never the reply itself: it could hold a value.
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "simple string",
        Value::Okay => "OK",
        _ => "other",
    }
}

fn ttl_millis(ttl: Option<Duration>) -> u64 {
    match ttl {
        // PX must be positive; a sub-millisecond TTL still means "expire almost at once".
        Some(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
        None => 0,
    }
}

#[async_trait]
impl RawStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.config.max_value_size)
            .with_sharing(Scope::Hosts)
            .with_cas(Scope::Hosts)
            .with_ttl()
            .with_persistence(true)
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        key.validate()?;
        let rkey = self.redis_key(key);
        let end = self.read_end();
        // One GETRANGE, as cheap as a GET, never transfers more than one byte past the limit,
        // so a huge foreign value at our key costs neither memory nor time. It answers "" for
        // a missing key and an empty value alike: only then does a second, atomic step tell
        // them apart. Neither a script for every read (Lua costs Redis several µs per call)
        // nor a pipelined second command is worth it for the hit path: both cut its
        // throughput at 64 tasks on one connection (tests/read_cost.rs).
        let head: Vec<u8> = self
            .call(Some(key), async {
                let mut h = self.conn.handle().await?;
                cmd("GETRANGE")
                    .arg(&rkey)
                    .arg(0)
                    .arg(end)
                    .query_async(&mut h)
                    .await
            })
            .await?;
        let value = if head.is_empty() {
            self.call(Some(key), async {
                let mut h = self.conn.handle().await?;
                self.read_empty
                    .key(&rkey)
                    .arg(end)
                    .invoke_async::<Option<Vec<u8>>>(&mut h)
                    .await
            })
            .await?
        } else {
            Some(head)
        };
        // Wiped when dropped, on the error path too: it may hold a token.
        match value.map(SecretBytes::new) {
            Some(v) if v.len() > self.config.max_value_size => {
                Err(self.too_large(key, &rkey).await)
            }
            Some(v) => {
                let version = version_of(&v);
                Ok(Some(RawRecord::new(v, version)))
            }
            None => Ok(None),
        }
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(BACKEND, key, value.len(), self.config.max_value_size)?;
        let rkey = self.redis_key(key);
        let ttl = ttl_millis(options.ttl);
        if options.precondition == Precondition::Any {
            self.call(Some(key), async {
                let mut h = self.conn.handle().await?;
                let mut c = cmd("SET");
                c.arg(&rkey).arg(value);
                if ttl > 0 {
                    c.arg("PX").arg(ttl);
                }
                c.query_async::<()>(&mut h).await
            })
            .await?;
            return Ok(version_of(value));
        }
        let (mode, expected) = self.condition(&options.precondition)?;
        let reply: Value = self
            .call(Some(key), async {
                let mut h = self.conn.handle().await?;
                self.write
                    .key(&rkey)
                    .arg(mode)
                    .arg(expected)
                    .arg(value)
                    .arg(ttl)
                    .arg(self.config.max_value_size)
                    .invoke_async(&mut h)
                    .await
            })
            .await?;
        match reply {
            Value::Int(1) => Ok(version_of(value)),
            other => Err(self.refusal(key, other)?),
        }
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        let rkey = self.redis_key(key);
        if *precondition == Precondition::Any {
            let n: u64 = self
                .call(Some(key), async {
                    let mut h = self.conn.handle().await?;
                    cmd("DEL").arg(&rkey).query_async(&mut h).await
                })
                .await?;
            return Ok(n > 0);
        }
        let (mode, expected) = self.condition(precondition)?;
        let reply: Value = self
            .call(Some(key), async {
                let mut h = self.conn.handle().await?;
                self.remove
                    .key(&rkey)
                    .arg(mode)
                    .arg(expected)
                    .arg(self.config.max_value_size)
                    .invoke_async(&mut h)
                    .await
            })
            .await?;
        match reply {
            Value::Int(n) if n >= 0 => Ok(n > 0),
            other => Err(self.refusal(key, other)?),
        }
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let head = format!("{}:", self.config.prefix);
        // Narrow the walk server-side: encoded parts contain no glob characters.
        let mut pattern = escape_glob(&head);
        if let Some(marker) = kind.marker() {
            pattern.push_str(marker);
            pattern.push(':');
        }
        if let Some(user) = filter.user_key.as_ref().filter(|_| kind.arity() > 1) {
            pattern.push_str(&percent_encode(user));
            pattern.push(':');
        }
        pattern.push('*');
        let raw = self.call(None, scan_keys(&self.conn, &pattern)).await?;
        Ok(raw
            .into_iter()
            .filter_map(|rk| entry(&head, kind, filter, rk))
            .collect())
    }
}

/// The listing entry for one Redis key found under the prefix, if it is one of ours.
fn entry(head: &str, kind: KeyKind, filter: &ListFilter, rk: Vec<u8>) -> Option<ListEntry> {
    // Keys that are not UTF-8 or do not parse are someone else's under a shared prefix
    // (mcp-agent's own keys always parse): skip them.
    let rk = String::from_utf8(rk).ok()?;
    let rest = rk.strip_prefix(head)?;
    match StorageKey::decode(rest) {
        Some(k) if k.kind() == kind && filter.matches(&k) => Some(ListEntry::Key(k)),
        Some(_) => None,
        None => {
            // Our marker but not our shape: damaged, worth reporting.
            let ours = kind
                .marker()
                .is_some_and(|m| rest.split(':').next() == Some(m));
            ours.then(|| ListEntry::Unreadable {
                location: rk.clone(),
                reason: "key under our marker does not decode".to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_redis_sha1hex() {
        // redis-cli EVAL "return redis.sha1hex(ARGV[1])" 0 abc
        assert_eq!(
            version_of(b"abc").as_str(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
