//! [`RedisStore`]: the `RawStore` over Redis.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{RedisResult, Script, Value, cmd};
use sha1::Digest;
use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, SecretBytes, StorageKey, Version, check_size, percent_encode,
};

use crate::config::RedisConfig;
use crate::conn::Connection;
use crate::errors::{BACKEND, map_err, timed_out};

/// Conditional write. ARGV: mode (`n` = only if absent, `v` = only if the stored value's
/// SHA-1 is ARGV[2]), expected version, value, TTL in ms (0 = none). Returns 1 when written,
/// else the current version (`''` when absent). The version is computed from the stored bytes
/// here, so records written by anyone (mcp-agent, redis-cli) take part in CAS.
const WRITE: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'n' then
  if cur then return redis.sha1hex(cur) end
else
  if not cur then return '' end
  local ver = redis.sha1hex(cur)
  if ver ~= ARGV[2] then return ver end
end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
";

/// Conditional delete, same modes as [`WRITE`]. Returns 1 deleted / 0 nothing there (mode
/// `n`), else the current version (`''` when absent).
const REMOVE: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'n' then
  if cur then return redis.sha1hex(cur) end
  return 0
end
if not cur then return '' end
local ver = redis.sha1hex(cur)
if ver ~= ARGV[2] then return ver end
redis.call('DEL', KEYS[1])
return 1
";

/// The version of stored bytes: the hex SHA-1 Redis's `redis.sha1hex` computes in the scripts.
pub fn version_of(bytes: &[u8]) -> Version {
    Version::new(token_store_core::crypto::hex(&sha1::Sha1::digest(bytes)))
}

/// A token store in Redis (standalone, Cluster or Sentinel), key-compatible with mcp-agent.
/// See the crate docs for the layout and guarantees.
pub struct RedisStore {
    conn: Connection,
    config: RedisConfig,
    write: Script,
    remove: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects (within the configured operation timeout) and returns the store.
    pub async fn open(mut config: RedisConfig) -> Result<Self> {
        // mcp-agent strips trailing colons from its prefix; so do we, to land on its keys.
        config.prefix = config.prefix.trim_end_matches(':').to_owned();
        if config.prefix.is_empty() {
            return Err(Error::config("the Redis key prefix must not be empty"));
        }
        let limit = config.operation_timeout.max(config.connect_timeout);
        let conn = match tokio::time::timeout(limit, Connection::open(&config)).await {
            Ok(conn) => conn?,
            Err(_) => return Err(timed_out("connect", limit, None)),
        };
        Ok(RedisStore {
            conn,
            config,
            write: Script::new(WRITE),
            remove: Script::new(REMOVE),
        })
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The Redis key a storage key is kept under: `prefix + ":" + key.encode()`.
    pub fn redis_key(&self, key: &StorageKey) -> String {
        let mut out = String::with_capacity(self.config.prefix.len() + 1 + key.encoded_len());
        out.push_str(&self.config.prefix);
        out.push(':');
        key.encode_into(&mut out);
        out
    }

    async fn guarded<T>(
        &self,
        op: &str,
        key: Option<&StorageKey>,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.config.operation_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.conn.observe(&e);
                Err(map_err(e, key))
            }
            Err(_) => Err(timed_out(op, self.config.operation_timeout, key)),
        }
    }

    fn conflict(&self, key: &StorageKey, current: Value) -> Result<Error> {
        let current = match current {
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

    /// Every key matching `pattern` on this store's Redis: one SCAN walk, or one per master
    /// on a cluster (SCAN only sees the node it runs on).
    async fn scan_keys(&self, pattern: &str) -> RedisResult<Vec<Vec<u8>>> {
        let mut handle = self.conn.handle().await?;
        let mut keys = Vec::new();
        if !self.conn.is_cluster() {
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<Vec<u8>>) = cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut handle)
                    .await?;
                keys.extend(batch);
                if next == 0 {
                    return Ok(keys);
                }
                cursor = next;
            }
        }
        let crate::conn::Handle::Cluster(mut cluster) = handle else {
            return Ok(keys);
        };
        let slots = cluster
            .route_command(
                cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await?;
        // Routing by a slot each master owns (not by address) keeps working when a replica
        // has taken over that slot range since.
        for slot in one_slot_per_master(&slots) {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                slot,
                SlotAddr::Master,
            )));
            let mut cursor = 0u64;
            loop {
                let reply = cluster
                    .route_command(
                        cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .clone(),
                        route.clone(),
                    )
                    .await?;
                let (next, batch): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }
}

/// One slot of each distinct master in a `CLUSTER SLOTS` reply.
fn one_slot_per_master(reply: &Value) -> Vec<u16> {
    let mut by_master: BTreeMap<String, u16> = BTreeMap::new();
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    for range in ranges {
        let Value::Array(items) = range else { continue };
        let (Some(Value::Int(start)), Some(Value::Array(master))) = (items.first(), items.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let port = match master.get(1) {
            Some(Value::Int(p)) => *p,
            _ => continue,
        };
        if let Ok(slot) = u16::try_from(*start) {
            by_master.entry(format!("{host}:{port}")).or_insert(slot);
        }
    }
    by_master.into_values().collect()
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

/// `*`, `?`, `[`, `]` and `\` in a prefix must not act as glob patterns in SCAN MATCH.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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

    fn raw_capabilities(&self) -> Capabilities {
        Capabilities::new(self.config.max_value_size)
            .with_atomic_cas()
            .with_ttl()
            .with_sharing_across_hosts()
            .with_persistence(true)
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        key.validate()?;
        let rkey = self.redis_key(key);
        // A plain GET: what a raw client does. Neither a script (GET + PTTL in Lua costs
        // Redis ~9 µs more per read) nor a pipelined PTTL (a second command: a quarter of
        // the read throughput at 64 tasks on one connection, measured) is worth it for
        // `expires_at`, which the typed API never reads: Redis enforces the TTL itself.
        let value: Option<Vec<u8>> = self
            .guarded("get", Some(key), async {
                let mut h = self.conn.handle().await?;
                cmd("GET").arg(&rkey).query_async(&mut h).await
            })
            .await?;
        Ok(value.map(|value| RawRecord {
            version: version_of(&value),
            value: SecretBytes::new(value),
            expires_at: None,
        }))
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(BACKEND, key, value.len(), self.config.max_value_size)?;
        let rkey = self.redis_key(key);
        let ttl = ttl_millis(options.ttl);
        let (mode, expected) = match &options.precondition {
            Precondition::Any => {
                self.guarded("put", Some(key), async {
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
            Precondition::IfAbsent => ("n", ""),
            Precondition::IfVersion(v) => ("v", v.as_str()),
            // Precondition is non_exhaustive: refuse what we cannot honour rather than
            // write unconditionally.
            #[allow(unreachable_patterns)]
            _ => return Err(Error::invalid_input("unsupported precondition")),
        };
        let reply: Value = self
            .guarded("put", Some(key), async {
                let mut h = self.conn.handle().await?;
                self.write
                    .key(&rkey)
                    .arg(mode)
                    .arg(expected)
                    .arg(value)
                    .arg(ttl)
                    .invoke_async(&mut h)
                    .await
            })
            .await?;
        match reply {
            Value::Int(1) => Ok(version_of(value)),
            other => Err(self.conflict(key, other)?),
        }
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        let rkey = self.redis_key(key);
        let (mode, expected) = match precondition {
            Precondition::Any => {
                let n: u64 = self
                    .guarded("delete", Some(key), async {
                        let mut h = self.conn.handle().await?;
                        cmd("DEL").arg(&rkey).query_async(&mut h).await
                    })
                    .await?;
                return Ok(n > 0);
            }
            Precondition::IfAbsent => ("n", ""),
            Precondition::IfVersion(v) => ("v", v.as_str()),
            #[allow(unreachable_patterns)]
            _ => return Err(Error::invalid_input("unsupported precondition")),
        };
        let reply: Value = self
            .guarded("delete", Some(key), async {
                let mut h = self.conn.handle().await?;
                self.remove
                    .key(&rkey)
                    .arg(mode)
                    .arg(expected)
                    .invoke_async(&mut h)
                    .await
            })
            .await?;
        match reply {
            Value::Int(n) => Ok(n > 0),
            other => Err(self.conflict(key, other)?),
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
        let raw = self.guarded("list", None, self.scan_keys(&pattern)).await?;
        let mut entries = Vec::new();
        for rk in raw {
            // Keys that are not UTF-8 or do not parse are someone else's under a shared
            // prefix (mcp-agent's own keys always parse): skip them.
            let Ok(rk) = String::from_utf8(rk) else {
                continue;
            };
            let Some(rest) = rk.strip_prefix(&head) else {
                continue;
            };
            match StorageKey::decode(rest) {
                Some(k) if k.kind() == kind && filter.matches(&k) => {
                    entries.push(ListEntry::Key(k))
                }
                Some(_) => {}
                None => {
                    // Our marker but not our shape: damaged, worth reporting.
                    let ours = kind
                        .marker()
                        .is_some_and(|m| rest.split(':').next() == Some(m));
                    if ours {
                        entries.push(ListEntry::Unreadable {
                            location: rk.clone(),
                            reason: "key under our marker does not decode".to_owned(),
                        });
                    }
                }
            }
        }
        Ok(entries)
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

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
