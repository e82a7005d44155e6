//! The benchmark runner: every backend through the typed API beside its raw client, at
//! 1/16/64 concurrent tasks, at 10 / 10 000 / 1 000 000 stored records, over a long run
//! (resident memory), and from a cold start. Prints the operations table (markdown) on
//! stdout, writes everything as JSON (and, with `--markdown`, as a full markdown report).
//!
//! ```text
//! eval "$(scripts/services.sh start)"
//! keyctl session - cargo run --release -p token-store-bench -- --markdown target/bench.md
//! ```
//!
//! A backend whose service variable is unset is listed as "not run".
#![recursion_limit = "256"]

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use token_store_bench::backends::{ALL, BYTES_LABEL, Spec, open_ours, open_store, spec};
use token_store_bench::ops::{Throughput, fail, throughput};
use token_store_bench::raw::{RecordMap, ScaleFloor};
use token_store_bench::rmcp_load::RmcpLoad;
use token_store_bench::stats::{fmt_rate, fmt_ratio, fmt_us};
use token_store_bench::{
    BResult, BackendOps, BenchError, BytesTarget, Memory, Op, OpRow, Plan, Summary, Target,
    TypedTarget, bytes_table, fixture, measure, ops_table,
};
use token_store_core::backend::KeyHeader;
use token_store_core::{KdfParams, KeySource};
use token_store_core::{Precondition, PutOptions, RawStore, StoreUrl, TokenKey, TokenStore};

#[derive(Parser)]
#[command(about = "token-store latency benchmark: every backend against its raw client")]
struct Args {
    /// Only these backends (comma-separated): memory, file, sqlite, redis, redis-cluster,
    /// redis-tls, vault, secret-service, keyutils.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip these sections (comma-separated): ops, rmcp, concurrency, longrun, cold, scale.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Store sizes of the scale section (memory, SQLite, Redis, PostgreSQL; the file store
    /// stops at 100 000).
    #[arg(long, value_delimiter = ',', default_values_t = vec![10, 100_000, 1_000_000])]
    sizes: Vec<usize>,
    /// Also run the long run: `--long-run-ops` operations (99 gets to 1 CAS put, 16 tasks)
    /// on memory, SQLite and Redis, resident memory sampled along the way. Off by default
    /// (several minutes).
    #[arg(long)]
    long_run: bool,
    /// Operations of the long run.
    #[arg(long, default_value_t = 10_000_000)]
    long_run_ops: usize,
    /// Run one CPU-bound path `--iterations` times and exit, for instruction counts under
    /// `valgrind --tool=callgrind` (see BENCHMARKS.md): json_decode, json_encode,
    /// key_encode, key_decode, memory_get, memory_get_cached, memory_put, map_get, map_put,
    /// memory_list, map_list.
    #[arg(long)]
    probe: Option<String>,
    /// Iterations of `--probe`.
    #[arg(long, default_value_t = 10_000)]
    iterations: usize,
    /// Only these operations in the operations table (comma-separated): get_hit, get_miss,
    /// put, cas_put, delete, list. For profiling one of them.
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// Leave the raw clients out (for profiling ours alone).
    #[arg(long)]
    no_raw: bool,
    /// Seconds per operation per backend (ours and raw together) in the operations table.
    #[arg(long, default_value_t = 2.0)]
    budget: f64,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 1.0)]
    concurrency_secs: f64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/token-store-bench/report.json")]
    json: PathBuf,
    /// Also write the full report (every section) as markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

impl Args {
    fn wants(&self, backend: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == backend)
    }

    fn section(&self, name: &str) -> bool {
        !self.skip.iter().any(|s| s == name)
    }
}

#[derive(Serialize)]
struct AttrRow {
    backend: String,
    op: Op,
    variant: String,
    ours_p50_us: f64,
    raw_p50_us: f64,
    variant_p50_us: f64,
}

#[derive(Serialize)]
struct ConcurrencyRow {
    backend: String,
    op: Op,
    client: String,
    levels: Vec<Throughput>,
}

#[derive(Serialize)]
struct LongRun {
    backend: String,
    ops: usize,
    secs: f64,
    before: Memory,
    after: Memory,
}

#[derive(Serialize)]
struct ColdStart {
    backend: String,
    open_us: f64,
    first_get_us: f64,
    note: String,
}

#[derive(Serialize)]
struct ScaleRow {
    backend: String,
    records: usize,
    populate_secs: f64,
    get: Summary,
    put: Summary,
    cas_put: Summary,
    /// The same operations on a 10-record store of the same backend, timed in the same
    /// alternating blocks (the ratios' denominators).
    base_get: Summary,
    base_put: Summary,
    base_cas_put: Summary,
    /// The floor's get among the same N records and among 10 (memory and SQLite).
    floor_get: Option<Summary>,
    floor_base_get: Option<Summary>,
}

/// Random records of one store of the scale section, as a [`Target`]: gets, puts, and CAS
/// puts whose version is read (untimed) in `prepare`.
struct ScaleTarget {
    store: TokenStore,
    keys: Vec<TokenKey>,
    record: token_store_core::TokenRecord,
    version: std::sync::Mutex<Option<token_store_core::Version>>,
}

impl ScaleTarget {
    fn new(store: TokenStore, n: usize) -> Self {
        ScaleTarget {
            store,
            keys: sample_keys(n, 2000),
            record: fixture::record(1),
            version: std::sync::Mutex::new(None),
        }
    }

    fn key(&self, i: usize) -> &TokenKey {
        &self.keys[i % self.keys.len()]
    }
}

#[token_store_core::async_trait]
impl Target for ScaleTarget {
    fn label(&self) -> String {
        "scale".to_owned()
    }

    fn supports(&self, op: Op) -> bool {
        matches!(op, Op::GetHit | Op::Put | Op::CasPut)
    }

    async fn setup(&self) -> BResult<()> {
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::CasPut {
            let found = self
                .store
                .get(self.key(i))
                .await?
                .ok_or_else(|| fail("scale: missing record"))?;
            *self.version.lock().unwrap_or_else(|p| p.into_inner()) = Some(found.version);
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let key = self.key(i);
        match op {
            Op::GetHit => {
                self.store
                    .get(key)
                    .await?
                    .ok_or_else(|| fail("scale: missing record"))?;
            }
            Op::Put => {
                self.store.put(key, &self.record, Precondition::Any).await?;
            }
            _ => {
                let version = self
                    .version
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .ok_or_else(|| fail("scale: no version"))?;
                self.store
                    .put(key, &self.record, Precondition::IfVersion(version))
                    .await?;
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        Ok(())
    }
}

/// rmcp's `load()` through the adapter, cached and not, alternating blocks.
#[derive(Serialize)]
struct RmcpRow {
    backend: String,
    cached: Summary,
    uncached: Summary,
}

/// Resident memory along the long run.
#[derive(Serialize)]
struct BigRun {
    backend: String,
    ops: usize,
    secs: f64,
    /// (operations done, memory) at each tenth of the run, the first before any.
    samples: Vec<(usize, Memory)>,
}

/// The typed layer's JSON work per operation, measured alone.
#[derive(Serialize, Default)]
struct Codec {
    encode_p50_us: f64,
    decode_p50_us: f64,
}

fn codec() -> Codec {
    let record = fixture::record(1);
    let bytes = fixture::record_bytes(1);
    let time = |f: &dyn Fn()| {
        let mut s: Vec<Duration> = (0..20_000)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect();
        Summary::of(&mut s).p50_us
    };
    Codec {
        encode_p50_us: time(&|| {
            std::hint::black_box(serde_json::to_vec(std::hint::black_box(&record)).ok());
        }),
        decode_p50_us: time(&|| {
            std::hint::black_box(
                serde_json::from_slice::<token_store_core::TokenRecord>(std::hint::black_box(
                    &bytes,
                ))
                .ok(),
            );
        }),
    }
}

#[derive(Serialize)]
struct Report {
    machine: String,
    record_json_bytes: usize,
    ops: Vec<BackendOps>,
    concurrency: Vec<ConcurrencyRow>,
    longrun: Vec<LongRun>,
    cold_start: Vec<ColdStart>,
    argon2id_derivation_us: Option<f64>,
    attribution: Vec<AttrRow>,
    codec: Codec,
    scale: Vec<ScaleRow>,
    rmcp_load: Vec<RmcpRow>,
    long_run: Vec<BigRun>,
    total_secs: f64,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

fn main() -> BResult<()> {
    let args = Args::parse();
    if let Some(probe) = &args.probe {
        return token_store_bench::probe::run(probe, args.iterations);
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Two workers on this two-core box, like the `tokenstore` CLI.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> BResult<()> {
    let started = Instant::now();
    let run_id = token_store_bench::ops::run_id();
    let tmp = tempfile::Builder::new().prefix("tsbench-").tempdir()?;
    let mut report = Report {
        machine: machine(),
        record_json_bytes: fixture::record_bytes(1).len(),
        ops: Vec::new(),
        concurrency: Vec::new(),
        longrun: Vec::new(),
        cold_start: Vec::new(),
        argon2id_derivation_us: None,
        attribution: Vec::new(),
        codec: codec(),
        scale: Vec::new(),
        rmcp_load: Vec::new(),
        long_run: Vec::new(),
        total_secs: 0.0,
    };
    eprintln!(
        "machine: {}; record: {} bytes of JSON (encode {}, decode {})",
        report.machine,
        report.record_json_bytes,
        fmt_us(report.codec.encode_p50_us),
        fmt_us(report.codec.decode_p50_us)
    );

    for name in ALL {
        if !args.wants(name) {
            continue;
        }
        let spec = match spec(name, &run_id, tmp.path()).await {
            Ok(Ok(mut spec)) => {
                if args.no_raw {
                    spec.raw = None;
                    spec.raw_bytes = None;
                }
                spec
            }
            Ok(Err(why)) => {
                eprintln!("{name}: {why}");
                report.ops.push(BackendOps {
                    backend: name.to_owned(),
                    url: String::new(),
                    raw_label: None,
                    rows: vec![],
                    note: Some(why),
                });
                continue;
            }
            Err(e) => {
                eprintln!("{name}: raw client failed: {e}");
                report.ops.push(BackendOps {
                    backend: name.to_owned(),
                    url: String::new(),
                    raw_label: None,
                    rows: vec![],
                    note: Some(format!("raw client failed: {e}")),
                });
                continue;
            }
        };
        if let Err(e) = bench_backend(&args, &spec, &run_id, &mut report).await {
            eprintln!("{name}: failed: {e}");
            let redacted = StoreUrl::parse(&spec.url)
                .map(|u| u.redacted())
                .unwrap_or_default();
            match report.ops.iter_mut().find(|b| b.backend == name) {
                Some(b) => b.note = Some(format!("failed: {e}")),
                None => report.ops.push(BackendOps {
                    backend: name.to_owned(),
                    url: redacted,
                    raw_label: None,
                    rows: vec![],
                    note: Some(format!("failed: {e}")),
                }),
            }
        }
    }

    if args.section("cold") && args.wants("file") {
        match argon2id_alone().await {
            Ok(us) => report.argon2id_derivation_us = Some(us),
            Err(e) => eprintln!("argon2id: {e}"),
        }
        match cold_passphrase_file(tmp.path()).await {
            Ok(c) => report.cold_start.push(c),
            Err(e) => eprintln!("cold start of the passphrase file store: {e}"),
        }
    }

    if args.section("scale") {
        scale(&args, &run_id, tmp.path(), &mut report).await;
    }

    if args.long_run {
        for backend in ["memory", "sqlite", "redis"] {
            if !args.wants(backend) {
                continue;
            }
            match big_run(backend, &args, &run_id, tmp.path()).await {
                Ok(r) => report.long_run.push(r),
                Err(e) => eprintln!("long run {backend}: {e}"),
            }
        }
    }

    report.total_secs = started.elapsed().as_secs_f64();
    println!("{}", ops_table(&report.ops));
    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("wrote {}", args.json.display());
    if let Some(path) = &args.markdown {
        std::fs::write(path, full_markdown(&report))?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!("total {:.0} s", report.total_secs);
    Ok(())
}

/// How hard to push a backend in the operations table.
fn plan(args: &Args) -> Plan {
    Plan::timed(100, 50_000, Duration::from_secs_f64(args.budget))
}

async fn bench_backend(args: &Args, spec: &Spec, run_id: &str, report: &mut Report) -> BResult<()> {
    let name = spec.name;
    eprintln!("== {name}");
    let store = open_ours(spec).await?;
    let url = StoreUrl::parse(&spec.url)?.redacted();
    let ours = Arc::new(TypedTarget::new(store.clone(), &format!("{run_id}-{name}")));
    ours.setup().await?;
    for raw in spec.raw.iter().chain(&spec.raw_bytes) {
        raw.setup().await?;
    }
    // Every backend with a byte-level floor is also timed as bytes (`raw()` of the handle
    // `open` returned): ours without the typed layer's JSON, against the same floor. The
    // memory floor holds parsed records, so bytes would not compare with it.
    // Its records are removed before the listing is timed: a file store lists its whole
    // directory and Redis scans its whole database, so they would make ours list more.
    let mut auto_bytes: Option<Arc<dyn Target>> = None;
    let has_bytes = spec
        .variants
        .iter()
        .any(|v| v.label().starts_with(BYTES_LABEL));
    if spec.raw.is_some() && !spec.name.starts_with("memory") && !has_bytes {
        auto_bytes = Some(Arc::new(BytesTarget::new(
            store.raw().clone(),
            &format!("{run_id}-{name}-b"),
            format!("{BYTES_LABEL} (backend + its layers, no typed JSON)"),
        )));
    }
    let variants = Variants {
        spec: &spec.variants,
        bytes: auto_bytes,
    };
    if args.section("ops") {
        for v in variants.all() {
            v.setup().await?;
        }
    }
    let outcome = bench_setup_done(args, spec, &variants, &store, &ours, &url, report).await;
    let mut cleaned = vec![ours.cleanup().await];
    for raw in spec.raw.iter().chain(&spec.raw_bytes) {
        cleaned.push(raw.cleanup().await);
    }
    if args.section("ops") {
        for v in variants.all() {
            cleaned.push(v.cleanup().await);
        }
    }
    outcome?;
    cleaned.into_iter().collect::<BResult<Vec<()>>>()?;
    if args.section("rmcp") && spec.name != "memory-uncached" {
        match rmcp_load(args, spec, run_id).await {
            Ok(row) => report.rmcp_load.push(row),
            Err(e) => eprintln!("{name}: rmcp load failed: {e}"),
        }
    }
    // A new memory store is a new, empty store: there is nothing to open.
    if args.section("cold") && !spec.name.starts_with("memory") {
        match cold_start(spec, &url).await {
            Ok(c) => report.cold_start.push(c),
            Err(e) => eprintln!("{name}: cold start failed: {e}"),
        }
    }
    Ok(())
}

/// The attribution variants of a backend's operations table: the spec's, plus ours as bytes
/// when the spec has none (`bytes`: removed before the listing is timed).
struct Variants<'a> {
    spec: &'a [Arc<dyn Target>],
    bytes: Option<Arc<dyn Target>>,
}

impl Variants<'_> {
    fn all(&self) -> impl Iterator<Item = &Arc<dyn Target>> {
        self.spec.iter().chain(&self.bytes)
    }

    /// The variants timed for `op`.
    fn timed(&self, op: Op) -> impl Iterator<Item = &Arc<dyn Target>> {
        self.spec
            .iter()
            .chain(self.bytes.iter().filter(move |_| op != Op::List))
    }
}

async fn bench_setup_done(
    args: &Args,
    spec: &Spec,
    variants: &Variants<'_>,
    store: &TokenStore,
    ours: &Arc<TypedTarget>,
    url: &str,
    report: &mut Report,
) -> BResult<()> {
    let name = spec.name;
    if args.section("ops") {
        let plan = plan(args);
        let mut rows = Vec::new();
        for op in Op::ALL {
            let wanted = serde_json::to_value(op)?;
            if !args.ops.is_empty() && !args.ops.iter().any(|o| wanted == o.as_str()) {
                continue;
            }
            let p = if op == Op::List {
                plan.scaled_down(10)
            } else {
                plan
            };
            if op == Op::List
                && let Some(v) = &variants.bytes
            {
                v.cleanup().await?;
            }
            let variants: Vec<&Arc<dyn Target>> = variants.timed(op).collect();
            let mut targets: Vec<&dyn Target> = vec![&**ours];
            if let Some(raw) = &spec.raw {
                targets.push(&**raw);
            }
            // The byte floor, for ours as bytes (not for lists: ours as bytes is not listed).
            let raw_bytes_at =
                spec.raw_bytes
                    .as_ref()
                    .filter(|_| op != Op::List)
                    .map(|raw_bytes| {
                        targets.push(&**raw_bytes);
                        targets.len() - 1
                    });
            let first_variant = targets.len();
            targets.extend(variants.iter().map(|v| &***v as &dyn Target));
            let s = measure(op, &targets, &p).await?;
            let ours_s = s
                .first()
                .copied()
                .flatten()
                .ok_or_else(|| fail("no samples"))?;
            let raw_s = spec.raw.as_ref().and_then(|_| s.get(1).copied().flatten());
            let raw_bytes_s = raw_bytes_at.and_then(|at| s.get(at).copied().flatten());
            let bytes_s = variants
                .iter()
                .zip(&s[first_variant..])
                .find(|(v, _)| v.label().starts_with(BYTES_LABEL))
                .and_then(|(_, vs)| *vs);
            for (v, vs) in variants.iter().zip(&s[first_variant..]) {
                if let (Some(vs), Some(r)) = (vs, raw_s) {
                    eprintln!(
                        "            variant p50 {:>9}  ({})",
                        fmt_us(vs.p50_us),
                        v.label()
                    );
                    report.attribution.push(AttrRow {
                        backend: name.to_owned(),
                        op,
                        variant: v.label(),
                        ours_p50_us: ours_s.p50_us,
                        raw_p50_us: r.p50_us,
                        variant_p50_us: vs.p50_us,
                    });
                }
            }
            eprintln!(
                "  {op:<9} ours p50 {:>9}  raw p50 {:>9}",
                fmt_us(ours_s.p50_us),
                raw_s.map_or("–".into(), |r| fmt_us(r.p50_us))
            );
            if let (Some(b), Some(rb)) = (bytes_s, raw_bytes_s) {
                eprintln!(
                    "            as bytes {:>9}  byte floor {:>9}",
                    fmt_us(b.p50_us),
                    fmt_us(rb.p50_us)
                );
            }
            rows.push(OpRow {
                op,
                ours: ours_s,
                raw: raw_s,
                bytes: bytes_s,
                raw_bytes: raw_bytes_s,
            });
        }
        report.ops.push(BackendOps {
            backend: name.to_owned(),
            url: url.to_owned(),
            raw_label: spec.raw.as_ref().map(|r| r.label()),
            rows,
            note: None,
        });
    }
    if args.section("concurrency") {
        let secs = Duration::from_secs_f64(args.concurrency_secs);
        for op in [Op::GetHit, Op::CasPut] {
            let mut levels = Vec::new();
            for tasks in [1, 16, 64] {
                let t = throughput(ours.clone(), op, tasks, secs).await?;
                eprintln!("  {op} x{tasks}: {} ops/s", fmt_rate(t.ops_per_sec));
                levels.push(t);
            }
            report.concurrency.push(ConcurrencyRow {
                backend: name.to_owned(),
                op,
                client: "ours".to_owned(),
                levels,
            });
            if let Some(raw) = spec
                .raw
                .as_ref()
                .filter(|r| spec.raw_concurrency && r.supports(op))
            {
                let mut levels = Vec::new();
                for tasks in [1, 16, 64] {
                    levels.push(throughput(raw.clone(), op, tasks, secs).await?);
                }
                report.concurrency.push(ConcurrencyRow {
                    backend: name.to_owned(),
                    op,
                    client: "raw".to_owned(),
                    levels,
                });
            }
        }
        if let Some((host, port)) = &spec.redis_benchmark {
            for (op, test) in [(Op::GetHit, "GET"), (Op::Put, "SET")] {
                let mut levels = Vec::new();
                for tasks in [1, 16, 64] {
                    match redis_benchmark(host, *port, tasks, test).await {
                        Ok(t) => levels.push(t),
                        Err(e) => eprintln!("  redis-benchmark: {e}"),
                    }
                }
                report.concurrency.push(ConcurrencyRow {
                    backend: name.to_owned(),
                    op,
                    client: format!("redis-benchmark -P 1 -t {}", test.to_lowercase()),
                    levels,
                });
            }
        }
    }
    if args.section("longrun") {
        report.longrun.push(long_run(name, ours).await?);
    }
    let _ = store;
    Ok(())
}

/// rmcp's `load()` through the adapter with and without the read cache, on one store
/// handle, alternating blocks.
async fn rmcp_load(args: &Args, spec: &Spec, run_id: &str) -> BResult<RmcpRow> {
    let store = open_store(&spec.url).await?;
    let key = fixture::key(&format!("{run_id}-rmcp"), 0);
    let cached = RmcpLoad::new(store.clone(), key.clone(), true)?;
    let uncached = RmcpLoad::new(store, key, false)?;
    cached.setup().await?;
    let outcome = measure(Op::GetHit, &[&cached, &uncached], &plan(args)).await;
    cached.cleanup().await?;
    let s = outcome?;
    let (Some(Some(c)), Some(Some(u))) = (s.first().copied(), s.get(1).copied()) else {
        return Err(fail("no samples"));
    };
    eprintln!(
        "  rmcp load(): cached p50 {}, uncached p50 {}",
        fmt_us(c.p50_us),
        fmt_us(u.p50_us)
    );
    Ok(RmcpRow {
        backend: spec.name.to_owned(),
        cached: c,
        uncached: u,
    })
}

/// `redis-benchmark -P 1 -c N -t get|set -d <record size>` against the same server.
async fn redis_benchmark(host: &str, port: u16, clients: usize, test: &str) -> BResult<Throughput> {
    let requests = if clients == 1 { 20_000 } else { 100_000 };
    let size = fixture::record_bytes(1).len();
    let out = tokio::process::Command::new("redis-benchmark")
        .args(["-h", host, "-p", &port.to_string(), "-P", "1"])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
        .args(["-d", &size.to_string(), "-r", "100", "-t", test, "--csv"])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("\"{test}\"")))
        .ok_or_else(|| fail(format!("no {test} line in redis-benchmark output")))?;
    let cols: Vec<f64> = line
        .split(',')
        .skip(1)
        .filter_map(|c| c.trim_matches('"').parse().ok())
        .collect();
    // rps, avg, min, p50, p95, p99, max (ms)
    let get = |i: usize| cols.get(i).copied().unwrap_or(0.0);
    Ok(Throughput {
        tasks: clients,
        ops_per_sec: get(0),
        latency: Summary {
            samples: requests,
            p50_us: get(3) * 1e3,
            p99_us: get(5) * 1e3,
            mean_us: get(1) * 1e3,
            ops_per_sec: get(0),
        },
    })
}

/// Alternating gets and puts for a few seconds; resident memory before and after.
async fn long_run(name: &str, ours: &Arc<TypedTarget>) -> BResult<LongRun> {
    // Warm-up first: connection buffers, caches and the allocator's pools settle.
    let warm = Instant::now();
    let mut i = 0;
    while warm.elapsed() < Duration::from_millis(500) {
        ours.run(if i % 2 == 0 { Op::GetHit } else { Op::Put }, i)
            .await?;
        i += 1;
    }
    let before = Memory::now();
    let t = Instant::now();
    let mut ops = 0;
    while t.elapsed() < Duration::from_secs(4) || ops < 200 {
        ours.run(if ops % 2 == 0 { Op::GetHit } else { Op::Put }, ops)
            .await?;
        ops += 1;
    }
    let after = Memory::now();
    eprintln!(
        "  long run: {ops} ops, RSS {} -> {} KiB, HWM {} -> {} KiB",
        before.rss_kib, after.rss_kib, before.hwm_kib, after.hwm_kib
    );
    Ok(LongRun {
        backend: name.to_owned(),
        ops,
        secs: t.elapsed().as_secs_f64(),
        before,
        after,
    })
}

/// The long run: `args.long_run_ops` operations from 16 tasks, 99 gets to 1 CAS put over
/// 1000 records, resident memory at every tenth. Redis runs in a private server.
async fn big_run(backend: &str, args: &Args, run_id: &str, tmp: &Path) -> BResult<BigRun> {
    eprintln!("== long run: {backend}, {} operations", args.long_run_ops);
    let mut server = None;
    let store = match backend {
        "memory" => open_store("memory:").await?,
        "sqlite" => {
            let path = tmp.join("long-sqlite").join("tokens.db");
            open_store(&format!("sqlite://{}", path.display())).await?
        }
        _ => {
            let s = PrivateRedis::start().await?;
            let store = open_store(&format!("{}?prefix={run_id}-long", s.url())).await?;
            server = Some(s);
            store
        }
    };
    // A multiple of TASKS, so every task owns as many records.
    const RECORDS: usize = 1024;
    const TASKS: usize = 16;
    let keys: Arc<Vec<TokenKey>> = Arc::new((0..RECORDS).map(scale_key).collect());
    let record = Arc::new(fixture::record(1));
    for key in keys.iter() {
        store.put(key, &record, Precondition::Any).await?;
    }
    let total = args.long_run_ops;
    let tenth = (total / 10).max(1);
    let mut samples = vec![(0, Memory::now())];
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let step = tenth.min(total - done);
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let (store, keys, record) = (store.clone(), keys.clone(), record.clone());
            let count = step / TASKS + usize::from(t < step % TASKS);
            tasks.spawn(async move {
                for n in 0..count {
                    // Each task owns the records k ≡ t (mod TASKS): its CAS never conflicts.
                    let k = (t + TASKS * (done + n)) % RECORDS;
                    let key = &keys[k - k % TASKS + t];
                    let got = store.get(key).await?.ok_or_else(|| fail("missing"))?;
                    if n % 100 == 99 {
                        store
                            .put(key, &record, Precondition::IfVersion(got.version))
                            .await?;
                    }
                }
                Ok::<_, BenchError>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        done += step;
        samples.push((done, Memory::now()));
        eprintln!(
            "  {done:>9} ops: RSS {} KiB",
            samples.last().map_or(0, |s| s.1.rss_kib)
        );
    }
    let secs = started.elapsed().as_secs_f64();
    drop(store);
    drop(server);
    Ok(BigRun {
        backend: backend.to_owned(),
        ops: total,
        secs,
        samples,
    })
}

/// Time to open the store again (a new handle, a new connection) and do its first get.
async fn cold_start(spec: &Spec, url: &str) -> BResult<ColdStart> {
    let key = TokenKey::for_server("https://cold-start.example.com/mcp")
        .with_user(format!("{}-cold", token_store_bench::ops::run_id()));
    let writer = open_store(&spec.url).await?;
    writer
        .put(&key, &fixture::record(1), Precondition::Any)
        .await?;
    let t = Instant::now();
    let store = open_store(&spec.url).await?;
    let open_us = t.elapsed().as_secs_f64() * 1e6;
    let t = Instant::now();
    let found = store.get(&key).await?;
    let first_get_us = t.elapsed().as_secs_f64() * 1e6;
    writer.delete(&key, Precondition::Any).await?;
    if found.is_none() {
        return Err(fail("the record written before was not found"));
    }
    eprintln!(
        "  cold start: open {}, first get {}",
        fmt_us(open_us),
        fmt_us(first_get_us)
    );
    Ok(ColdStart {
        backend: spec.name.to_owned(),
        open_us,
        first_get_us,
        note: url.to_owned(),
    })
}

/// One Argon2id derivation with the default parameters, alone (what a passphrase open
/// should cost).
async fn argon2id_alone() -> BResult<f64> {
    let t = Instant::now();
    tokio::task::spawn_blocking(|| {
        KeyHeader::create(
            &KeySource::passphrase("benchmark passphrase"),
            KdfParams::DEFAULT,
        )
    })
    .await??;
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

/// Opening an existing passphrase-keyed file store: one Argon2id derivation expected.
async fn cold_passphrase_file(tmp: &Path) -> BResult<ColdStart> {
    let dir = tmp.join("file-passphrase");
    let source = || KeySource::passphrase("benchmark passphrase");
    let key = fixture::key("cold", 0);
    let store = token_store::file::open(token_store::file::FileConfig::new(&dir, source())).await?;
    store
        .put(&key, &fixture::record(1), Precondition::Any)
        .await?;
    drop(store);
    let t = Instant::now();
    let store = token_store::file::open(token_store::file::FileConfig::new(&dir, source())).await?;
    let open_us = t.elapsed().as_secs_f64() * 1e6;
    let t = Instant::now();
    store.get(&key).await?.ok_or_else(|| fail("missing"))?;
    let first_get_us = t.elapsed().as_secs_f64() * 1e6;
    eprintln!("file (passphrase): open {}", fmt_us(open_us));
    Ok(ColdStart {
        backend: "file (passphrase, Argon2id m=64 MiB t=3)".to_owned(),
        open_us,
        first_get_us,
        note: "FileStore::open with KeySource::Passphrase".to_owned(),
    })
}

// ---------------------------------------------------------------------------------------
// Scale: get and put latency with 10, 10 000 and 1 000 000 stored records.

fn scale_key(i: usize) -> TokenKey {
    // 1000 users with 1000 servers each at a million records.
    TokenKey::new(
        format!("scale-user-{}", i % 1000),
        &format!("https://mcp-{i}.example.com/mcp"),
        Some(fixture::ISSUER),
        fixture::SCOPES,
    )
}

/// Random (but fixed) record indexes below `n`, with their keys, for the timed calls.
fn sample_keys(n: usize, count: usize) -> Vec<TokenKey> {
    sample_keys_from(0x2545_f491_4f6c_dd1d, n, count)
}

fn sample_keys_from(seed: u64, n: usize, count: usize) -> Vec<TokenKey> {
    let mut x = seed;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            scale_key((x % n as u64) as usize)
        })
        .collect()
}

/// Random record indexes as storage keys, for the floors: drawn apart from [`sample_keys`],
/// or a floor reading the same SQLite file right after ours would find each record's pages
/// in the CPU caches ours had just filled.
fn sample_storage_keys(n: usize) -> Vec<token_store_core::StorageKey> {
    sample_keys_from(0x9e37_79b9_7f4a_7c15, n, 2000)
        .iter()
        .map(TokenKey::storage_key)
        .collect()
}

/// Writes records `from..to` through the store's own byte-level API, `batch` at a time
/// concurrently (the layout is the store's, so nothing is faked).
async fn populate_raw_api(store: &TokenStore, from: usize, to: usize, batch: usize) -> BResult<()> {
    let value = Arc::new(fixture::record_bytes(1));
    let mut i = from;
    while i < to {
        let end = (i + batch).min(to);
        let mut tasks = Vec::with_capacity(end - i);
        for j in i..end {
            let store = store.clone();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .raw()
                    .write(&scale_key(j).storage_key(), &value, &PutOptions::default())
                    .await
            }));
        }
        for t in tasks {
            t.await??;
        }
        i = end;
    }
    Ok(())
}

/// SQLite rows in the backend's documented layout, in large transactions on a second
/// connection; each row gets a distinct version (the store draws its own at random).
fn populate_sqlite(path: &Path, from: usize, to: usize) -> BResult<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let value = fixture::record_bytes(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut i = from;
    while i < to {
        let end = (i + 100_000).min(to);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO records(kind, p1, p2, p3, p4, value, version, expires_at, updated_at)
                 VALUES ('token', ?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7)",
            )?;
            for j in i..end {
                let k = scale_key(j).storage_key();
                let p = k.parts();
                stmt.execute(rusqlite::params![
                    p[0],
                    p[1],
                    p[2],
                    p[3],
                    value,
                    j as i64 + 1,
                    now
                ])?;
            }
        }
        tx.commit()?;
        i = end;
    }
    Ok(())
}

/// A private `redis-server` (no persistence) on a free port, so a million keys never land
/// in the shared test Redis. Killed when dropped.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> BResult<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let me = PrivateRedis { child, port };
        let client = redis::Client::open(me.url())?;
        for _ in 0..100 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(me);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(fail("the private redis-server did not start"))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis pipelines of 1000 SETs under the store's key layout.
async fn populate_redis(url: &str, prefix: &str, from: usize, to: usize) -> BResult<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let value = fixture::record_bytes(1);
    let mut i = from;
    while i < to {
        let end = (i + 1000).min(to);
        let mut pipe = redis::pipe();
        for j in i..end {
            pipe.cmd("SET")
                .arg(format!("{prefix}:{}", scale_key(j).storage_key().encode()))
                .arg(&value)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        i = end;
    }
    Ok(())
}

async fn scale(args: &Args, run_id: &str, tmp: &Path, report: &mut Report) {
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    for backend in ["memory", "sqlite", "redis", "postgres", "file"] {
        if !args.wants(backend) {
            continue;
        }
        eprintln!("== scale: {backend}");
        if let Err(e) = scale_backend(backend, &sizes, run_id, tmp, report).await {
            eprintln!("scale {backend}: {e}");
        }
    }
}

async fn scale_backend(
    backend: &str,
    sizes: &[usize],
    run_id: &str,
    tmp: &Path,
    report: &mut Report,
) -> BResult<()> {
    let prefix = format!("{run_id}-scale");
    let mut redis_server = None;
    // The growing store, and beside it a 10-record store of the same backend (its own
    // memory store, SQLite file, Redis database, directory) timed in alternating blocks.
    let (store, small, sqlite_path) = match backend {
        "memory" => (
            open_store("memory:").await?,
            open_store("memory:").await?,
            None,
        ),
        "sqlite" => {
            let path = tmp.join("scale-sqlite").join("tokens.db");
            let small = tmp.join("scale-sqlite-small").join("tokens.db");
            (
                open_store(&format!("sqlite://{}", path.display())).await?,
                open_store(&format!("sqlite://{}", small.display())).await?,
                Some(path),
            )
        }
        "redis" => {
            let server = PrivateRedis::start().await?;
            let store = open_store(&format!("{}?prefix={prefix}", server.url())).await?;
            let small = open_store(&format!("{}1?prefix={prefix}", server.url())).await?;
            redis_server = Some(server);
            (store, small, None)
        }
        "postgres" => {
            let base = token_store_bench::backends::env("TOKEN_STORE_TEST_POSTGRES_URL")
                .ok_or_else(|| fail("not run: TOKEN_STORE_TEST_POSTGRES_URL is unset"))?;
            let schema = format!("scale_{}", run_id.replace('-', "_"));
            (
                open_store(&format!("{base}?schema={schema}&table=big")).await?,
                open_store(&format!("{base}?schema={schema}&table=small")).await?,
                None,
            )
        }
        _ => {
            let url = |name: &str| {
                format!(
                    "file://{}?key_file={}",
                    tmp.join(name).display(),
                    tmp.join("scale-file.key").display()
                )
            };
            (
                open_store(&url("scale-file")).await?,
                open_store(&url("scale-file-small")).await?,
                None,
            )
        }
    };
    populate_raw_api(&small, 0, 10, 10).await?;
    let small = ScaleTarget::new(small, 10);
    // Memory and SQLite get a floor beside them: the same gets done the least way, on the
    // same N records, so that growth any client pays is told from ours.
    let record = fixture::record(1);
    let big_map = RecordMap::default();
    let small_floor = match backend {
        "memory" => {
            let map = RecordMap::default();
            ScaleFloor::insert(&map, (0..10).map(|j| scale_key(j).storage_key()), &record);
            Some(ScaleFloor::map(map, &sample_storage_keys(10)))
        }
        "sqlite" => Some(ScaleFloor::sqlite(
            &tmp.join("scale-sqlite-small").join("tokens.db"),
            &sample_storage_keys(10),
        )?),
        _ => None,
    };
    // A million files would take minutes to write for nothing: the file store touches one
    // file per call, and 100 000 show its growth.
    let cap = if backend == "file" {
        100_000
    } else {
        usize::MAX
    };
    let mut have = 0;
    for &n in sizes.iter().filter(|&&n| n <= cap && n > 0) {
        let t = Instant::now();
        match backend {
            "sqlite" => {
                let path = sqlite_path.clone().ok_or_else(|| fail("no path"))?;
                let from = have;
                tokio::task::spawn_blocking(move || populate_sqlite(&path, from, n)).await??;
            }
            "redis" => {
                let url = redis_server
                    .as_ref()
                    .map(PrivateRedis::url)
                    .unwrap_or_default();
                populate_redis(&url, &prefix, have, n).await?;
            }
            "file" => populate_raw_api(&store, have, n, 64).await?,
            // Through the backend itself, as many writes in flight as its pool serves.
            "postgres" => populate_raw_api(&store, have, n, 256).await?,
            _ => populate_raw_api(&store, have, n, 1024).await?,
        }
        let populate_secs = t.elapsed().as_secs_f64();
        let big_floor = match backend {
            "memory" => {
                let keys = (have..n).map(|j| scale_key(j).storage_key());
                ScaleFloor::insert(&big_map, keys, &record);
                Some(ScaleFloor::map(big_map.clone(), &sample_storage_keys(n)))
            }
            "sqlite" => {
                let path = sqlite_path.clone().ok_or_else(|| fail("no path"))?;
                Some(ScaleFloor::sqlite(&path, &sample_storage_keys(n))?)
            }
            _ => None,
        };
        have = n;
        let big = ScaleTarget::new(store.clone(), n);
        let plan = Plan::timed(100, 2000, Duration::from_secs(1));
        let mut timed = Vec::new();
        let (mut floor_get, mut floor_base_get) = (None, None);
        for op in [Op::GetHit, Op::Put, Op::CasPut] {
            let mut targets: Vec<&dyn Target> = vec![&big, &small];
            if let (Op::GetHit, Some(b), Some(s)) = (op, &big_floor, &small_floor) {
                targets.extend([b as &dyn Target, s as &dyn Target]);
            }
            let s = measure(op, &targets, &plan).await?;
            match (s.first().copied().flatten(), s.get(1).copied().flatten()) {
                (Some(b), Some(s)) => timed.push((b, s)),
                _ => return Err(fail("scale: no samples")),
            }
            if op == Op::GetHit {
                floor_get = s.get(2).copied().flatten();
                floor_base_get = s.get(3).copied().flatten();
            }
        }
        drop(big_floor);
        let [(get, base_get), (put, base_put), (cas_put, base_cas_put)] = timed[..] else {
            return Err(fail("scale: no samples"));
        };
        eprintln!(
            "  {n:>9} records (populated in {populate_secs:.1} s): get p50 {} p99 {}, put p50 {} p99 {}, CAS put p50 {}",
            fmt_us(get.p50_us),
            fmt_us(get.p99_us),
            fmt_us(put.p50_us),
            fmt_us(put.p99_us),
            fmt_us(cas_put.p50_us)
        );
        report.scale.push(ScaleRow {
            backend: backend.to_owned(),
            records: n,
            populate_secs,
            get,
            put,
            cas_put,
            base_get,
            base_put,
            base_cas_put,
            floor_get,
            floor_base_get,
        });
    }
    drop(store);
    drop(redis_server);
    if let Some(path) = sqlite_path
        && let Some(dir) = path.parent()
    {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The full markdown report.

fn full_markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Machine: {}. Record: {} bytes of JSON.\n",
        r.machine, r.record_json_bytes
    );
    out.push_str("### Operations (one task)\n\n");
    out.push_str(&ops_table(&r.ops));
    out.push_str("\n### Ours as bytes against the byte floor (same run, same blocks)\n\n");
    out.push_str(&bytes_table(&r.ops));
    out.push_str("\nRaw clients:\n\n");
    for b in r.ops.iter().filter(|b| !b.rows.is_empty()) {
        let _ = writeln!(
            out,
            "- {}: {} — `{}`",
            b.backend,
            b.raw_label.as_deref().unwrap_or("none"),
            b.url
        );
    }
    if !r.attribution.is_empty() {
        out.push_str(
            "\n### Where the ratios come from (the raw client doing one more step of the backend, same run)\n\n",
        );
        out.push_str("| backend | operation | ours p50 | raw p50 | variant: the raw client doing | its p50 | share of the ours − raw gap |\n");
        out.push_str("| --- | --- | ---: | ---: | --- | ---: | ---: |\n");
        for a in &r.attribution {
            let gap = a.ours_p50_us - a.raw_p50_us;
            let explained = if gap > 0.0 {
                format!("{:.0} %", 100.0 * (a.variant_p50_us - a.raw_p50_us) / gap)
            } else {
                "–".to_owned()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {explained} |",
                a.backend,
                a.op,
                fmt_us(a.ours_p50_us),
                fmt_us(a.raw_p50_us),
                a.variant,
                fmt_us(a.variant_p50_us)
            );
        }
        let _ = writeln!(
            out,
            "\nThe typed layer's JSON alone: encode {} and decode {} per record (p50).",
            fmt_us(r.codec.encode_p50_us),
            fmt_us(r.codec.decode_p50_us)
        );
    }
    if !r.concurrency.is_empty() {
        out.push_str("\n### Concurrency (one store, N tasks)\n\n");
        out.push_str("| backend | operation | client | 1 task | 16 tasks | 64 tasks | p50 at 64 | p99 at 64 |\n");
        out.push_str("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
        for c in &r.concurrency {
            let rate = |n: usize| {
                c.levels
                    .iter()
                    .find(|l| l.tasks == n)
                    .map_or("–".into(), |l| format!("{}/s", fmt_rate(l.ops_per_sec)))
            };
            let at64 = c.levels.iter().find(|l| l.tasks == 64);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                c.backend,
                c.op,
                c.client,
                rate(1),
                rate(16),
                rate(64),
                at64.map_or("–".into(), |l| fmt_us(l.latency.p50_us)),
                at64.map_or("–".into(), |l| fmt_us(l.latency.p99_us)),
            );
        }
    }
    if !r.scale.is_empty() {
        out.push_str("\n### Scale (random records among N, timed in alternating blocks with a 10-record store of the same backend)\n\n");
        out.push_str("| backend | records | populate | get p50 | get p99 | put p50 | put p99 | CAS put p50 | CAS put p99 | get ÷ get at 10 | CAS ÷ CAS at 10 | floor get p50 | floor get ÷ floor at 10 |\n");
        out.push_str(
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for s in &r.scale {
            let (floor, floor_ratio) = match (s.floor_get, s.floor_base_get) {
                (Some(f), Some(b)) => (fmt_us(f.p50_us), fmt_ratio(f.p50_us, b.p50_us)),
                _ => ("–".to_owned(), "–".to_owned()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} s | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.backend,
                s.records,
                s.populate_secs,
                fmt_us(s.get.p50_us),
                fmt_us(s.get.p99_us),
                fmt_us(s.put.p50_us),
                fmt_us(s.put.p99_us),
                fmt_us(s.cas_put.p50_us),
                fmt_us(s.cas_put.p99_us),
                fmt_ratio(s.get.p50_us, s.base_get.p50_us),
                fmt_ratio(s.cas_put.p50_us, s.base_cas_put.p50_us),
                floor,
                floor_ratio,
            );
        }
    }
    if !r.rmcp_load.is_empty() {
        out.push_str("\n### rmcp `load()` through the adapter (alternating blocks)\n\n");
        out.push_str("| backend | cached p50 | cached p99 | uncached p50 | uncached p99 | uncached / cached |\n");
        out.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
        for l in &r.rmcp_load {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.0}× |",
                l.backend,
                fmt_us(l.cached.p50_us),
                fmt_us(l.cached.p99_us),
                fmt_us(l.uncached.p50_us),
                fmt_us(l.uncached.p99_us),
                l.uncached.p50_us / l.cached.p50_us.max(1e-9)
            );
        }
    }
    if !r.long_run.is_empty() {
        out.push_str(
            "\n### Long run (16 tasks, 99 gets : 1 CAS put over 1024 records): resident memory\n\n",
        );
        out.push_str(
            "| backend | ops | secs | VmRSS at each tenth (KiB) | Δ RSS first tenth → end |\n",
        );
        out.push_str("| --- | ---: | ---: | --- | ---: |\n");
        for l in &r.long_run {
            let rss: Vec<String> = l
                .samples
                .iter()
                .map(|(_, m)| m.rss_kib.to_string())
                .collect();
            let first = l.samples.get(1).map_or(0, |s| s.1.rss_kib) as i64;
            let last = l.samples.last().map_or(0, |s| s.1.rss_kib) as i64;
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {:+} KiB |",
                l.backend,
                l.ops,
                l.secs,
                rss.join(" "),
                last - first
            );
        }
    }
    if !r.longrun.is_empty() {
        out.push_str("\n### Long run (alternating get/put, same records): resident memory\n\n");
        out.push_str(
            "| backend | ops | VmRSS before | VmRSS after | Δ RSS | VmHWM before | VmHWM after |\n",
        );
        out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for l in &r.longrun {
            let _ = writeln!(
                out,
                "| {} | {} | {} KiB | {} KiB | {:+} KiB | {} KiB | {} KiB |",
                l.backend,
                l.ops,
                l.before.rss_kib,
                l.after.rss_kib,
                l.after.rss_kib as i64 - l.before.rss_kib as i64,
                l.before.hwm_kib,
                l.after.hwm_kib
            );
        }
    }
    if !r.cold_start.is_empty() {
        out.push_str("\n### Cold start (open a new handle, then the first get)\n\n");
        out.push_str("| backend | open | first get |\n| --- | ---: | ---: |\n");
        for c in &r.cold_start {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                c.backend,
                fmt_us(c.open_us),
                fmt_us(c.first_get_us)
            );
        }
        if let Some(a) = r.argon2id_derivation_us {
            let _ = writeln!(
                out,
                "\nOne Argon2id derivation alone (m=64 MiB, t=3, p=1): {}.",
                fmt_us(a)
            );
        }
    }
    let _ = writeln!(out, "\nWhole run: {:.0} s.", r.total_secs);
    out
}
