//! Criterion benchmarks: the record codec, and get/put through the typed API beside the raw
//! client for the backends that need no service (memory, encrypted file, SQLite), plus
//! Redis when `TOKEN_STORE_TEST_REDIS_URL` is set. The full matrix (every backend,
//! concurrency, scale, memory, cold start) is the runner: `cargo run --release -p
//! token-store-bench`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use token_store_bench::raw::{RawFile, RawMemory, RawRedis, RawSqlite};
use token_store_bench::{Op, Target, TypedTarget, fixture};
use token_store_core::layers::Traced;
use token_store_core::{BackendKind, MemoryStore, RawStore, StoreUrl, TokenRecord, TokenStore};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn open(url: &str) -> Arc<dyn RawStore> {
    let parsed = StoreUrl::parse(url).expect("url");
    let store: Arc<dyn RawStore> = match parsed.kind() {
        BackendKind::Memory => Arc::new(MemoryStore::new()),
        BackendKind::File => token_store_file::open_url(&parsed).await.expect("file"),
        BackendKind::Sqlite => token_store_sqlite::open_url(&parsed).await.expect("sqlite"),
        BackendKind::Redis => token_store_redis::open_url(&parsed).await.expect("redis"),
        other => panic!("not benchmarked here: {other:?}"),
    };
    Arc::new(Traced::new(store))
}

fn codec(c: &mut Criterion) {
    let record = fixture::record(1);
    let bytes = fixture::record_bytes(1);
    let key = fixture::key("codec-user", 1);
    let mut g = c.benchmark_group("codec");
    g.bench_function("encode record", |b| {
        b.iter(|| serde_json::to_vec(black_box(&record)).expect("encode"))
    });
    g.bench_function("decode record", |b| {
        b.iter(|| serde_json::from_slice::<TokenRecord>(black_box(&bytes)).expect("decode"))
    });
    g.bench_function("storage key + encode", |b| {
        b.iter(|| black_box(&key).storage_key().encode())
    });
    g.finish();
}

/// Ours and raw side by side for `ops` of one backend.
fn pair(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    ours: Arc<dyn Target>,
    raw: Arc<dyn Target>,
    ops: &[Op],
) {
    rt.block_on(async {
        ours.setup().await.expect("setup ours");
        raw.setup().await.expect("setup raw");
    });
    for &op in ops {
        let mut g = c.benchmark_group(format!("{name}/{op}"));
        for (label, target) in [("ours", &ours), ("raw", &raw)] {
            let next = AtomicUsize::new(0);
            g.bench_function(label, |b| {
                b.to_async(rt).iter(|| {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let target = target.clone();
                    async move { target.run(op, i).await.expect("op") }
                })
            });
        }
        g.finish();
    }
    rt.block_on(async {
        ours.cleanup().await.expect("cleanup ours");
        raw.cleanup().await.expect("cleanup raw");
    });
}

fn stores(c: &mut Criterion) {
    let rt = runtime();
    let run_id = token_store_bench::ops::run_id();
    let tmp = tempfile::tempdir().expect("tempdir");
    let typed = |s: Arc<dyn RawStore>| -> Arc<dyn TokenStore> { Arc::new(s) };

    let memory = rt.block_on(open("memory:"));
    pair(
        c,
        &rt,
        "memory",
        Arc::new(TypedTarget::new(typed(memory), &run_id)),
        Arc::new(RawMemory::new(&run_id)),
        &[Op::GetHit, Op::Put],
    );

    let file_url = format!(
        "file://{}?key_file={}",
        tmp.path().join("files").display(),
        tmp.path().join("key").display()
    );
    let file = rt.block_on(open(&file_url));
    pair(
        c,
        &rt,
        "file",
        Arc::new(TypedTarget::new(typed(file), &run_id)),
        Arc::new(RawFile::new(&tmp.path().join("raw-files")).expect("raw files")),
        &[Op::GetHit],
    );

    let db = tmp.path().join("db").join("tokens.db");
    let sqlite = rt.block_on(open(&format!("sqlite://{}", db.display())));
    pair(
        c,
        &rt,
        "sqlite",
        Arc::new(TypedTarget::new(typed(sqlite), &run_id)),
        Arc::new(RawSqlite::open(&db, &run_id).expect("raw sqlite")),
        &[Op::GetHit, Op::Put],
    );

    if let Ok(url) = std::env::var("TOKEN_STORE_TEST_REDIS_URL") {
        let redis = rt.block_on(open(&format!("{url}?prefix={run_id}-ours")));
        let raw = rt
            .block_on(RawRedis::connect(
                &url,
                None,
                &format!("{run_id}-raw"),
                &run_id,
            ))
            .expect("raw redis");
        pair(
            c,
            &rt,
            "redis",
            Arc::new(TypedTarget::new(typed(redis), &run_id)),
            Arc::new(raw),
            &[Op::GetHit, Op::Put, Op::CasPut],
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = codec, stores
}
criterion_main!(benches);
