//! One CPU-bound path run N times on a current-thread runtime, for instruction counts: the
//! shared machine's wall clock moves by tens of percent, instructions do not. Run it under
//! `valgrind --tool=callgrind` twice, with N and 2N iterations: the difference of the two
//! totals divided by N is the path's instructions per call, with setup and process start
//! cancelled out (`scripts` in BENCHMARKS.md).

use std::hint::black_box;

use token_store_core::{
    CacheOptions, ListFilter, MemoryStore, Query, StorageKey, TokenRecord, TokenStore,
};

use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, Target, TypedTarget, fail};
use crate::raw::{RawMemory, RawSqlite};

/// The probes `--probe` takes.
pub const PROBES: [&str; 14] = [
    "json_decode",
    "json_decode_derived",
    "json_encode",
    "key_encode",
    "key_decode",
    "memory_get",
    "memory_get_cached",
    "memory_put",
    "map_get",
    "map_put",
    "memory_list",
    "map_list",
    "sqlite_list",
    "sqlite_floor_list",
];

/// Runs probe `name` `iterations` times.
pub fn run(name: &str, iterations: usize) -> BResult<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(name, iterations))
}

/// `<backend>/<client>/<op>` (e.g. `postgres/ours/get`): one operation of the runner's
/// backends, through ours, ours as bytes, its floor or an attribution variant (`variant0`, …), so
/// the client side of a networked backend is counted too (the server is another process).
async fn run_backend(name: &str, n: usize) -> BResult<()> {
    let mut words = name.split('/');
    let (Some(backend), Some(client), Some(op), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(fail(format!("{name}: not <backend>/<client>/<op>")));
    };
    let backend = crate::backends::ALL
        .iter()
        .copied()
        .find(|b| *b == backend)
        .ok_or_else(|| fail(format!("no backend {backend}")))?;
    let op = match op {
        "get" => Op::GetHit,
        "miss" => Op::GetMiss,
        "put" => Op::Put,
        "cas" => Op::CasPut,
        "delete" => Op::Delete,
        "list" => Op::List,
        other => return Err(fail(format!("no operation {other}"))),
    };
    let tmp = tempfile::Builder::new().prefix("tsprobe-").tempdir()?;
    let spec = crate::backends::spec(backend, "probe", tmp.path())
        .await?
        .map_err(fail)?;
    let target: std::sync::Arc<dyn Target> = match client {
        "ours" => std::sync::Arc::new(TypedTarget::new(
            crate::backends::open_ours(&spec).await?,
            "probe",
        )),
        "bytes" => std::sync::Arc::new(crate::ops::BytesTarget::new(
            crate::backends::open_ours(&spec).await?.raw().clone(),
            "probe",
            "bytes",
        )),
        // The byte floor (memory's holds parsed records: it has no other).
        "floor" => spec
            .raw_bytes
            .clone()
            .or_else(|| spec.raw.clone())
            .ok_or_else(|| fail("no floor"))?,
        "typedfloor" => spec.raw.clone().ok_or_else(|| fail("no floor"))?,
        other => {
            let i: usize = other
                .strip_prefix("variant")
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| fail(format!("no client {other}")))?;
            spec.variants
                .get(i)
                .cloned()
                .ok_or_else(|| fail("no such variant"))?
        }
    };
    target.setup().await?;
    for i in 0..n {
        target.prepare(op, i).await?;
        target.run(op, i).await?;
    }
    target.cleanup().await?;
    Ok(())
}

async fn run_async(name: &str, n: usize) -> BResult<()> {
    if name.contains('/') {
        return run_backend(name, n).await;
    }
    let record = fixture::record(1);
    let bytes = fixture::record_bytes(1);
    let key = fixture::key("probe-user", 1);
    let encoded = key.storage_key().encode();
    match name {
        "json_decode" => {
            for _ in 0..n {
                black_box(serde_json::from_slice::<TokenRecord>(black_box(&bytes))?);
            }
        }
        "json_decode_derived" => {
            for _ in 0..n {
                black_box(serde_json::from_slice::<Derived>(black_box(&bytes))?);
            }
        }
        "json_encode" => {
            for _ in 0..n {
                black_box(serde_json::to_vec(black_box(&record))?);
            }
        }
        "key_encode" => {
            for _ in 0..n {
                black_box(black_box(&key).as_storage_key().encode());
            }
        }
        "key_decode" => {
            for _ in 0..n {
                black_box(StorageKey::decode(black_box(&encoded)).ok_or_else(|| fail("decode"))?);
            }
        }
        "memory_get" | "memory_get_cached" | "memory_put" | "memory_list" => {
            let store = TokenStore::new(MemoryStore::new());
            let store = if name == "memory_get_cached" {
                store.with_cache(CacheOptions::new())
            } else {
                store
            };
            let target = TypedTarget::new(store.clone(), "probe");
            target.setup().await?;
            let op = match name {
                "memory_put" => Op::Put,
                "memory_list" => Op::List,
                _ => Op::GetHit,
            };
            for i in 0..n {
                target.run(op, i % LIST_SIZE).await?;
            }
            let listed = store
                .list(&Query::new(ListFilter::user("probe-hit")))
                .await?;
            black_box(listed);
        }
        "map_get" | "map_put" | "map_list" => {
            let target = RawMemory::new("probe");
            target.setup().await?;
            let op = match name {
                "map_put" => Op::Put,
                "map_list" => Op::List,
                _ => Op::GetHit,
            };
            for i in 0..n {
                target.run(op, i % LIST_SIZE).await?;
            }
        }
        "sqlite_list" | "sqlite_floor_list" => {
            let tmp = tempfile::Builder::new().prefix("tsprobe-").tempdir()?;
            let path = tmp.path().join("tokens.db");
            let store =
                crate::backends::open_store(&format!("sqlite://{}", path.display())).await?;
            let target: Box<dyn Target> = if name == "sqlite_list" {
                Box::new(TypedTarget::new(store, "probe"))
            } else {
                Box::new(RawSqlite::open(&path, "probe")?)
            };
            target.setup().await?;
            for i in 0..n {
                target.run(Op::List, i % LIST_SIZE).await?;
            }
        }
        other => {
            return Err(fail(format!(
                "unknown probe {other}; one of {}",
                PROBES.join(", ")
            )));
        }
    }
    Ok(())
}

/// `TokenRecord`'s deserialiser as serde derived it before it was written by hand (the
/// `flatten` of unknown fields buffers every field first): the "before" of the decode probe.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Derived {
    access_token: token_store_core::Secret,
    #[serde(default)]
    refresh_token: Option<token_store_core::Secret>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    expires_at: Option<f64>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    authorization_server: Option<String>,
    #[serde(default)]
    obtained_at: Option<f64>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    id_token: Option<token_store_core::Secret>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    refresh_expires_at: Option<f64>,
    #[serde(default)]
    token_store_schema: Option<u32>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}
