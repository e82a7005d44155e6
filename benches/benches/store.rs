//! Criterion benchmarks: the record codec, and get / put / CAS put through the typed API
//! beside the raw client for every backend available here: memory, encrypted file and
//! SQLite always; Redis (plain, cluster, TLS), Vault, Secret Service and keyutils when the
//! environment of `scripts/services.sh` names them (keyutils needs `keyctl session -`). The
//! full matrix (concurrency, scale, memory, cold start, attribution) is the runner: `cargo
//! run --release -p token-store-bench`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use token_store_bench::backends::{ALL, open_store, spec};
use token_store_bench::{Op, Target, TypedTarget, fixture};
use token_store_core::TokenRecord;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
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

/// Ours and, where it does the operation, raw side by side for `ops` of one backend.
fn pair(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    ours: Arc<dyn Target>,
    raw: Option<Arc<dyn Target>>,
    ops: &[Op],
) {
    let mut targets = vec![("ours", ours)];
    targets.extend(raw.map(|r| ("raw", r)));
    rt.block_on(async {
        for (label, t) in &targets {
            t.setup()
                .await
                .unwrap_or_else(|e| panic!("setup {label}: {e}"));
        }
    });
    for &op in ops {
        let mut g = c.benchmark_group(format!("{name}/{op}"));
        for (label, target) in targets.iter().filter(|(_, t)| t.supports(op)) {
            let next = AtomicUsize::new(0);
            g.bench_function(*label, |b| {
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
        for (label, t) in &targets {
            t.cleanup()
                .await
                .unwrap_or_else(|e| panic!("cleanup {label}: {e}"));
        }
    });
}

fn stores(c: &mut Criterion) {
    let rt = runtime();
    let run_id = token_store_bench::ops::run_id();
    let tmp = tempfile::tempdir().expect("tempdir");
    for name in ALL {
        let spec = match rt.block_on(spec(name, &run_id, tmp.path())) {
            Ok(Ok(spec)) => spec,
            Ok(Err(why)) => {
                eprintln!("{name}: {why}");
                continue;
            }
            Err(e) => panic!("{name}: raw client failed: {e}"),
        };
        let store = rt
            .block_on(open_store(&spec.url))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = Arc::new(TypedTarget::new(store.clone(), &format!("{run_id}-{name}")));
        // Keychains rewrite a file per write (tens of ms): reads only, or the bench runs
        // for minutes.
        let ops: &[Op] = match name {
            "secret-service" => &[Op::GetHit],
            _ => &[Op::GetHit, Op::Put, Op::CasPut],
        };
        pair(c, &rt, name, ours, spec.raw, ops);
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
