//! Listing: `SCAN ... MATCH <prefix>:*`, on every master of a cluster.

use std::collections::BTreeMap;

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{RedisResult, Value, cmd};

use crate::conn::{Connection, Handle};

/// Keys per SCAN step: large enough that a walk over a big keyspace takes few round trips,
/// small enough that one step never blocks Redis noticeably.
const SCAN_COUNT: u32 = 1000;

/// Every key matching `pattern`: one SCAN walk, or one per master on a cluster (SCAN only
/// sees the node it runs on).
pub(crate) async fn scan_keys(conn: &Connection, pattern: &str) -> RedisResult<Vec<Vec<u8>>> {
    let handle = conn.handle().await?;
    match handle {
        Handle::Cluster(cluster) => scan_cluster(cluster, pattern).await,
        mut single => {
            let mut keys = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<Vec<u8>>) =
                    scan_step(cursor, pattern).query_async(&mut single).await?;
                keys.extend(batch);
                if next == 0 {
                    return Ok(keys);
                }
                cursor = next;
            }
        }
    }
}

fn scan_step(cursor: u64, pattern: &str) -> redis::Cmd {
    let mut c = cmd("SCAN");
    c.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    c
}

async fn scan_cluster(
    mut cluster: redis::cluster_async::ClusterConnection,
    pattern: &str,
) -> RedisResult<Vec<Vec<u8>>> {
    let slots = cluster
        .route_command(
            cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
        )
        .await?;
    let mut keys = Vec::new();
    // Routing by a slot each master owns (not by address) keeps working when a replica has
    // taken over that slot range since.
    for slot in one_slot_per_master(&slots) {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            slot,
            SlotAddr::Master,
        )));
        let mut cursor = 0u64;
        loop {
            let reply = cluster
                .route_command(scan_step(cursor, pattern), route.clone())
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

/// `*`, `?`, `[`, `]` and `\` in a prefix must not act as glob patterns in SCAN MATCH.
pub(crate) fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn one_slot_per_master_of_a_slots_reply() {
        let node = |port: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
            ])
        };
        let range = |start: i64, end: i64, port: i64| {
            Value::Array(vec![Value::Int(start), Value::Int(end), node(port)])
        };
        let reply = Value::Array(vec![
            range(0, 5460, 7000),
            range(5461, 10922, 7001),
            range(10923, 16383, 7000),
        ]);
        assert_eq!(one_slot_per_master(&reply), vec![0, 5461]);
        assert!(one_slot_per_master(&Value::Nil).is_empty());
    }
}
