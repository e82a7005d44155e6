//! What a bounded read costs, measured against the standalone test Redis: the raw `redis`
//! crate's GET (the floor), the bounded alternatives (GETRANGE, a Lua read, a pipelined
//! GETRANGE + EXISTS), and the store's own read and typed get, each for a hit and a miss, as
//! medians of sequential calls and as throughput of 64 tasks sharing one connection.
//!
//! A measurement, not a check: run it in release mode when the read path changes,
//! `cargo test --release -p token-store-redis --test read_cost -- --ignored --nocapture`.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{Script, cmd};
use token_store_conformance::services;
use token_store_core::{RawStore, TokenKey, TokenRecord, TokenStore};
use token_store_redis::{DEFAULT_MAX_VALUE_SIZE, RedisConfig, RedisStore};

const ROUNDS: usize = 10;
const SEQUENTIAL: usize = 10_000;
const TASKS: usize = 64;
const PER_TASK: usize = 500;

const LUA_READ: &str = r"
local v = redis.call('GETRANGE', KEYS[1], 0, ARGV[1])
if v == '' and redis.call('EXISTS', KEYS[1]) == 0 then return false end
return v
";

#[derive(Clone, Copy, Debug)]
enum Variant {
    Get,
    GetRange,
    Lua,
    PipelinedExists,
}

async fn raw_read(conn: &mut MultiplexedConnection, variant: Variant, key: &str, lua: &Script) {
    let end = DEFAULT_MAX_VALUE_SIZE;
    let got: Option<Vec<u8>> = match variant {
        Variant::Get => cmd("GET").arg(key).query_async(conn).await.unwrap(),
        Variant::GetRange => {
            let head: Vec<u8> = cmd("GETRANGE")
                .arg(key)
                .arg(0)
                .arg(end)
                .query_async(conn)
                .await
                .unwrap();
            if head.is_empty() {
                lua.key(key).arg(end).invoke_async(conn).await.unwrap()
            } else {
                Some(head)
            }
        }
        Variant::Lua => lua.key(key).arg(end).invoke_async(conn).await.unwrap(),
        Variant::PipelinedExists => {
            let (head, exists): (Vec<u8>, bool) = redis::pipe()
                .cmd("GETRANGE")
                .arg(key)
                .arg(0)
                .arg(end)
                .cmd("EXISTS")
                .arg(key)
                .query_async(conn)
                .await
                .unwrap();
            exists.then_some(head)
        }
    };
    std::hint::black_box(got);
}

fn median<T: PartialOrd + Copy>(mut samples: Vec<T>) -> T {
    samples.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    samples[samples.len() / 2]
}

type Op = Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Each op's median latency over sequential calls, and its median rate of 64 tasks at once,
/// with the ops interleaved round by round so load from elsewhere on the machine spreads
/// over all of them alike.
async fn measure(ops: Vec<(String, Op)>) {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); ops.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
    for (_, op) in &ops {
        for _ in 0..500 {
            op().await;
        }
    }
    for _ in 0..ROUNDS {
        for (i, (_, op)) in ops.iter().enumerate() {
            for _ in 0..SEQUENTIAL / ROUNDS {
                let started = Instant::now();
                op().await;
                samples[i].push(started.elapsed());
            }
            let started = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let op = op.clone();
                    tokio::spawn(async move {
                        for _ in 0..PER_TASK / ROUNDS {
                            op().await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            rates[i].push((TASKS * PER_TASK / ROUNDS) as f64 / started.elapsed().as_secs_f64());
        }
    }
    for (i, (name, _)) in ops.iter().enumerate() {
        println!(
            "read-cost | {name:<40} | median {:>6.1} µs | {:>7.0} reads/s at {TASKS} tasks",
            median(samples[i].clone()).as_secs_f64() * 1e6,
            median(rates[i].clone())
        );
    }
}

fn op<F, Fut>(f: F) -> Op
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in release mode with --ignored --nocapture"]
async fn read_cost() {
    let Some(url) = services::require("TOKEN_STORE_TEST_REDIS_URL") else {
        return;
    };
    let prefix = common::prefix();
    let config = RedisConfig::standalone(&url).with_prefix(&prefix);
    let raw_store = RedisStore::open(&config).await.unwrap();
    let key = TokenKey::for_server("https://read-cost.example/mcp");
    let missing = TokenKey::for_server("https://read-cost.example/missing");
    let (hit_key, miss_key) = (
        raw_store.redis_key(&key.storage_key()),
        raw_store.redis_key(&missing.storage_key()),
    );
    let raw_store = Arc::new(raw_store);
    let record = TokenRecord::new("a".repeat(400)).with_refresh_token("r".repeat(100));
    TokenStore::from_arc(raw_store.clone())
        .put(&key, &record, token_store_core::Precondition::Any)
        .await
        .unwrap();

    let conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let lua = Arc::new(Script::new(LUA_READ));
    let typed = token_store_redis::open(config).await.unwrap();
    let mut ops: Vec<(String, Op)> = Vec::new();
    for (what, rkey, k) in [("hit", &hit_key, &key), ("miss", &miss_key, &missing)] {
        for variant in [
            Variant::Get,
            Variant::GetRange,
            Variant::Lua,
            Variant::PipelinedExists,
        ] {
            let (conn, lua, rkey) = (conn.clone(), lua.clone(), rkey.clone());
            ops.push((
                format!("redis crate {variant:?} {what}"),
                op(move || {
                    let (mut conn, lua, rkey) = (conn.clone(), lua.clone(), rkey.clone());
                    async move { raw_read(&mut conn, variant, &rkey, &lua).await }
                }),
            ));
        }
        let (store, skey) = (raw_store.clone(), k.storage_key());
        ops.push((
            format!("RedisStore::read {what}"),
            op(move || {
                let (store, skey) = (store.clone(), skey.clone());
                async move {
                    std::hint::black_box(store.read(&skey).await.unwrap());
                }
            }),
        ));
        let (typed, k) = (typed.clone(), k.clone());
        ops.push((
            format!("open() + TokenStore::get {what}"),
            op(move || {
                let (typed, k) = (typed.clone(), k.clone());
                async move {
                    std::hint::black_box(typed.get(&k).await.unwrap());
                }
            }),
        ));
    }
    measure(ops).await;
}
