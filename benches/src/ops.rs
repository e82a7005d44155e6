//! The measured operations and the drivers that time them.
//!
//! A [`Target`] is anything that can do the six operations: the typed [`TokenStore`] API
//! ([`TypedTarget`]) or a backend's raw client (`crate::raw`, with the `runner` feature).
//! [`measure`] times one operation on several targets in alternating blocks, so that a
//! neighbour's load on a shared machine hits ours and raw alike and their ratio stays fair.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use token_store_core::{
    KeyKind, ListFilter, Precondition, PutOptions, Query, RawStore, StorageKey, TokenKey,
    TokenRecord, TokenStore, Version, async_trait,
};

use crate::fixture;
use crate::stats::Summary;

/// The error every benchmark step returns.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Result of a benchmark step.
pub type BResult<T> = std::result::Result<T, BenchError>;

/// Builds a [`BenchError`] from a message.
pub fn fail(message: impl Into<String>) -> BenchError {
    message.into().into()
}

/// One measured operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Read a record that exists.
    GetHit,
    /// Read a key that was never written.
    GetMiss,
    /// Unconditional write over an existing record.
    Put,
    /// Compare-and-swap write (`IfVersion` of the version last written).
    CasPut,
    /// Delete an existing record (created, untimed, just before).
    Delete,
    /// List one user's 100 token keys.
    List,
}

impl Op {
    /// Every operation, in table order.
    pub const ALL: [Op; 6] = [
        Op::GetHit,
        Op::GetMiss,
        Op::Put,
        Op::CasPut,
        Op::Delete,
        Op::List,
    ];

    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Op::GetHit => "get hit",
            Op::GetMiss => "get miss",
            Op::Put => "put",
            Op::CasPut => "CAS put",
            Op::Delete => "delete",
            Op::List => "list 100",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something the six operations can be timed on.
///
/// Index `i` picks the key: `GetHit`, `Put` and `CasPut` use record `i % LIST_SIZE` of the
/// target's own set (which `List` lists), `GetMiss` and `Delete` keys of their own.
#[async_trait]
pub trait Target: Send + Sync {
    /// What this is, for tables (`"ours"`, `"redis GET/SET"`, ...).
    fn label(&self) -> String;

    /// Whether the target can do `op` (a keychain has no compare-and-swap of its own).
    fn supports(&self, op: Op) -> bool {
        let _ = op;
        true
    }

    /// Writes the record set the operations read, overwrite and list.
    async fn setup(&self) -> BResult<()>;

    /// Untimed work before sample `i` of `op` (creating the record a delete removes).
    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        let _ = (op, i);
        Ok(())
    }

    /// The timed operation. Checks its outcome (a hit finds a record, a list finds 100).
    async fn run(&self, op: Op, i: usize) -> BResult<()>;

    /// Removes everything the target wrote.
    async fn cleanup(&self) -> BResult<()>;
}

/// How many records a target writes for hits, overwrites and the listing.
pub const LIST_SIZE: usize = 100;
/// How many distinct keys misses and deletes cycle through.
pub const SIDE_KEYS: usize = 500;

/// The version each of a target's [`LIST_SIZE`] records was last written at, for its
/// compare-and-swap puts.
struct LastVersions(Vec<Mutex<Option<Version>>>);

impl LastVersions {
    fn new() -> Self {
        LastVersions((0..LIST_SIZE).map(|_| Mutex::new(None)).collect())
    }

    fn set(&self, k: usize, v: Version) {
        *self.0[k].lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    /// `IfVersion` of the last write of record `k`, `IfAbsent` before any.
    fn precondition(&self, k: usize) -> Precondition {
        match self.0[k].lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(v) => Precondition::IfVersion(v),
            None => Precondition::IfAbsent,
        }
    }
}

/// The typed API of any store, as an application uses it.
pub struct TypedTarget {
    store: TokenStore,
    label: String,
    hit: Vec<TokenKey>,
    miss: Vec<TokenKey>,
    del: Vec<TokenKey>,
    record: TokenRecord,
    versions: LastVersions,
    list: Query,
}

impl TypedTarget {
    /// A target on `store` whose keys all belong to users named after `run_id`, so that it
    /// never touches anyone else's records.
    pub fn new(store: TokenStore, run_id: &str) -> Self {
        let hit_user = format!("{run_id}-hit");
        TypedTarget {
            store,
            label: "ours".to_owned(),
            hit: (0..LIST_SIZE).map(|i| fixture::key(&hit_user, i)).collect(),
            miss: (0..SIDE_KEYS)
                .map(|i| fixture::key(&format!("{run_id}-miss"), i))
                .collect(),
            del: (0..SIDE_KEYS)
                .map(|i| fixture::key(&format!("{run_id}-del"), i))
                .collect(),
            record: fixture::record(1),
            versions: LastVersions::new(),
            list: Query::new(ListFilter::user(hit_user)),
        }
    }

    /// The same target with another label.
    pub fn labelled(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
}

#[async_trait]
impl Target for TypedTarget {
    fn label(&self) -> String {
        self.label.clone()
    }

    async fn setup(&self) -> BResult<()> {
        for (k, key) in self.hit.iter().enumerate() {
            let v = self.store.put(key, &self.record, Precondition::Any).await?;
            self.versions.set(k, v);
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            let key = &self.del[i % SIDE_KEYS];
            self.store.put(key, &self.record, Precondition::Any).await?;
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let k = i % LIST_SIZE;
        match op {
            Op::GetHit => {
                if self.store.get(&self.hit[k]).await?.is_none() {
                    return Err(fail("get hit: the record is missing"));
                }
            }
            Op::GetMiss => {
                if self.store.get(&self.miss[i % SIDE_KEYS]).await?.is_some() {
                    return Err(fail("get miss: found a record"));
                }
            }
            Op::Put => {
                let v = self
                    .store
                    .put(&self.hit[k], &self.record, Precondition::Any)
                    .await?;
                self.versions.set(k, v);
            }
            Op::CasPut => {
                let pre = self.versions.precondition(k);
                let v = self.store.put(&self.hit[k], &self.record, pre).await?;
                self.versions.set(k, v);
            }
            Op::Delete => {
                if !self
                    .store
                    .delete(&self.del[i % SIDE_KEYS], Precondition::Any)
                    .await?
                {
                    return Err(fail("delete: nothing was deleted"));
                }
            }
            Op::List => {
                let page = self.store.list(&self.list).await?;
                if page.keys.len() != LIST_SIZE {
                    return Err(fail(format!(
                        "list: {} keys instead of {LIST_SIZE}",
                        page.keys.len()
                    )));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        for key in self.hit.iter().chain(&self.del) {
            self.store.delete(key, Precondition::Any).await?;
        }
        Ok(())
    }
}

/// The byte-level contract of a store ([`RawStore`]) with the same keys, the same value
/// bytes (the typed layer's JSON of the same record) and the same checks as [`TypedTarget`]:
/// beside it, it parts a backend's cost from the typed layer's (JSON, key canonicalisation).
pub struct BytesTarget {
    store: Arc<dyn RawStore>,
    label: String,
    hit: Vec<StorageKey>,
    miss: Vec<StorageKey>,
    del: Vec<StorageKey>,
    value: Vec<u8>,
    versions: LastVersions,
    list: ListFilter,
}

impl BytesTarget {
    /// A target on `store` whose keys belong to users named after `run_id`.
    pub fn new(store: Arc<dyn RawStore>, run_id: &str, label: impl Into<String>) -> Self {
        let hit_user = format!("{run_id}-hit");
        let keys = |user: &str, n: usize| {
            (0..n)
                .map(|i| fixture::key(user, i).storage_key())
                .collect::<Vec<_>>()
        };
        BytesTarget {
            store,
            label: label.into(),
            hit: keys(&hit_user, LIST_SIZE),
            miss: keys(&format!("{run_id}-miss"), SIDE_KEYS),
            del: keys(&format!("{run_id}-del"), SIDE_KEYS),
            value: fixture::record_bytes(1),
            versions: LastVersions::new(),
            list: ListFilter::user(hit_user),
        }
    }

    async fn put(&self, key: &StorageKey, pre: Precondition) -> BResult<Version> {
        Ok(self
            .store
            .write(key, &self.value, &PutOptions::new(pre))
            .await?)
    }
}

#[async_trait]
impl Target for BytesTarget {
    fn label(&self) -> String {
        self.label.clone()
    }

    async fn setup(&self) -> BResult<()> {
        for (k, key) in self.hit.iter().enumerate() {
            let v = self.put(key, Precondition::Any).await?;
            self.versions.set(k, v);
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            self.put(&self.del[i % SIDE_KEYS], Precondition::Any)
                .await?;
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let k = i % LIST_SIZE;
        match op {
            Op::GetHit => {
                if self.store.read(&self.hit[k]).await?.is_none() {
                    return Err(fail("get hit: the record is missing"));
                }
            }
            Op::GetMiss => {
                if self.store.read(&self.miss[i % SIDE_KEYS]).await?.is_some() {
                    return Err(fail("get miss: found a record"));
                }
            }
            Op::Put => {
                let v = self.put(&self.hit[k], Precondition::Any).await?;
                self.versions.set(k, v);
            }
            Op::CasPut => {
                let pre = self.versions.precondition(k);
                let v = self.put(&self.hit[k], pre).await?;
                self.versions.set(k, v);
            }
            Op::Delete => {
                let key = &self.del[i % SIDE_KEYS];
                if !self.store.remove(key, &Precondition::Any).await? {
                    return Err(fail("delete: nothing was deleted"));
                }
            }
            Op::List => {
                let n = self.store.scan(KeyKind::Token, &self.list).await?.len();
                if n != LIST_SIZE {
                    return Err(fail(format!("list: {n} keys instead of {LIST_SIZE}")));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        for key in self.hit.iter().chain(&self.del) {
            self.store.remove(key, &Precondition::Any).await?;
        }
        Ok(())
    }
}

/// How long and how often to time one operation.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Untimed calls per target before timing starts.
    pub warmup: usize,
    /// Timed calls per target before switching to the next target.
    pub block: usize,
    /// Stop once every target has this many samples.
    pub max_samples: usize,
    /// Never stop before every target has this many.
    pub min_samples: usize,
    /// Stop after this long (once `min_samples` are in).
    pub budget: Duration,
}

impl Plan {
    /// Exactly `ops` timed calls per target (after a short warm-up), however long it takes.
    pub fn fixed(ops: usize) -> Self {
        Plan {
            warmup: (ops / 20).clamp(1, 50),
            block: ops.clamp(1, 100),
            max_samples: ops.max(1),
            min_samples: ops.max(1),
            budget: Duration::MAX,
        }
    }

    /// A plan bounded by time: at least `min` samples, at most `max`, about `budget` for all
    /// targets together.
    pub fn timed(min: usize, max: usize, budget: Duration) -> Self {
        Plan {
            warmup: (min / 4).clamp(2, 100),
            block: (min / 4).clamp(5, 200),
            max_samples: max.max(min),
            min_samples: min,
            budget,
        }
    }

    /// The same plan for an operation that is `factor` times slower (a list, say).
    pub fn scaled_down(self, factor: usize) -> Self {
        let f = factor.max(1);
        Plan {
            warmup: (self.warmup / f).max(1),
            block: (self.block / f).max(1),
            max_samples: (self.max_samples / f).max(1),
            min_samples: (self.min_samples / f).max(1),
            budget: self.budget,
        }
    }
}

/// Times `op` on every target (alternating blocks) and summarises each; `None` for a target
/// that does not support `op`.
pub async fn measure(
    op: Op,
    targets: &[&dyn Target],
    plan: &Plan,
) -> BResult<Vec<Option<Summary>>> {
    let active: Vec<bool> = targets.iter().map(|t| t.supports(op)).collect();
    let mut next = vec![0usize; targets.len()];
    for (t, target) in targets.iter().enumerate() {
        if !active[t] {
            continue;
        }
        for _ in 0..plan.warmup {
            one(*target, op, next[t]).await?;
            next[t] += 1;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    let started = Instant::now();
    loop {
        let counts = samples
            .iter()
            .zip(&active)
            .filter(|(_, a)| **a)
            .map(|(s, _)| s.len());
        let least = counts.clone().min().unwrap_or(plan.max_samples);
        if least >= plan.max_samples
            || (least >= plan.min_samples && started.elapsed() >= plan.budget)
        {
            break;
        }
        for (t, target) in targets.iter().enumerate() {
            if !active[t] || samples[t].len() >= plan.max_samples {
                continue;
            }
            for _ in 0..plan.block.min(plan.max_samples - samples[t].len()) {
                samples[t].push(one(*target, op, next[t]).await?);
                next[t] += 1;
            }
        }
    }
    Ok(samples
        .iter_mut()
        .zip(&active)
        .map(|(s, a)| a.then(|| Summary::of(s)))
        .collect())
}

async fn one(target: &dyn Target, op: Op, i: usize) -> BResult<Duration> {
    target.prepare(op, i).await?;
    let t = Instant::now();
    target
        .run(op, i)
        .await
        .map_err(|e| fail(format!("{} {op}: {e}", target.label())))?;
    Ok(t.elapsed())
}

/// Throughput of `tasks` concurrent callers doing `op` for `duration` on one target.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Throughput {
    /// Concurrent tasks.
    pub tasks: usize,
    /// Completed operations per second, all tasks together.
    pub ops_per_sec: f64,
    /// Latency of one operation under that load.
    pub latency: Summary,
}

/// Runs `op` from `tasks` concurrent tokio tasks for `duration`. Task `n` uses index `n`
/// for `CasPut` (every task owns its record, so no CAS conflicts), and `n`, `n + tasks`, ...
/// otherwise. Needs `tasks ≤ LIST_SIZE` for `CasPut`.
pub async fn throughput(
    target: Arc<dyn Target>,
    op: Op,
    tasks: usize,
    duration: Duration,
) -> BResult<Throughput> {
    // Warm up the connection(s) at this concurrency before the clock starts.
    run_tasks(target.clone(), op, tasks, duration / 10).await?;
    let started = Instant::now();
    let mut latencies = run_tasks(target, op, tasks, duration).await?;
    let elapsed = started.elapsed();
    Ok(Throughput {
        tasks,
        ops_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        latency: Summary::of(&mut latencies),
    })
}

async fn run_tasks(
    target: Arc<dyn Target>,
    op: Op,
    tasks: usize,
    duration: Duration,
) -> BResult<Vec<Duration>> {
    let deadline = Instant::now() + duration;
    let mut handles = Vec::with_capacity(tasks);
    for n in 0..tasks {
        let target = target.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut round = 0usize;
            while Instant::now() < deadline {
                let i = if op == Op::CasPut {
                    n
                } else {
                    n + round * tasks
                };
                lat.push(one(&*target, op, i).await?);
                round += 1;
            }
            Ok::<_, BenchError>(lat)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.map_err(|e| fail(format!("task failed: {e}")))??);
    }
    Ok(all)
}

/// One row of the operations table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpRow {
    /// The operation.
    pub op: Op,
    /// Through the typed API.
    pub ours: Summary,
    /// The raw client doing the same, when there is one: the floor of the typed API (a byte
    /// floor's caller also parses and serializes the record).
    pub raw: Option<Summary>,
    /// Ours as bytes (`raw()` of the opened store, no typed JSON), when timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Summary>,
    /// The byte floor (the raw client handing back bytes), when the backend has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<Summary>,
}

impl OpRow {
    /// ours/raw of the medians.
    pub fn ratio_p50(&self) -> Option<f64> {
        self.raw
            .filter(|r| r.p50_us > 0.0)
            .map(|r| self.ours.p50_us / r.p50_us)
    }
}

/// Times the six operations through the typed API of `store` (what `tokenstore bench`
/// does), writing only keys of users named after `run_id` and deleting them afterwards.
pub async fn measure_store(store: TokenStore, run_id: &str, plan: &Plan) -> BResult<Vec<OpRow>> {
    let target = TypedTarget::new(store, run_id);
    let outcome = async {
        target.setup().await?;
        let mut rows = Vec::new();
        for op in Op::ALL {
            let p = if op == Op::List {
                plan.scaled_down(10)
            } else {
                *plan
            };
            let ours = measure(op, &[&target], &p).await?;
            if let Some(Some(ours)) = ours.first() {
                rows.push(OpRow {
                    op,
                    ours: *ours,
                    raw: None,
                    bytes: None,
                    raw_bytes: None,
                });
            }
        }
        Ok::<_, BenchError>(rows)
    }
    .await;
    let cleaned = target.cleanup().await;
    let rows = outcome?;
    cleaned?;
    Ok(rows)
}

/// A run id unlikely to collide with another run's: process id and the clock.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("tsbench-{}-{nanos:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_store_core::MemoryStore;

    #[tokio::test]
    async fn measures_every_op_on_memory_and_cleans_up() {
        let store = TokenStore::new(MemoryStore::new());
        let rows = measure_store(store.clone(), "t", &Plan::fixed(20))
            .await
            .unwrap();
        assert_eq!(rows.len(), Op::ALL.len());
        assert!(
            rows.iter()
                .all(|r| r.ours.samples >= 2 && r.ours.p50_us > 0.0)
        );
        let left = store.list(&Query::default()).await.unwrap();
        assert!(left.keys.is_empty(), "{:?}", left.keys);
    }

    #[tokio::test]
    async fn throughput_counts_operations() {
        let target = TypedTarget::new(TokenStore::new(MemoryStore::new()), "t");
        target.setup().await.unwrap();
        let t = throughput(Arc::new(target), Op::CasPut, 4, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(t.ops_per_sec > 0.0 && t.latency.samples > 0);
    }
}
