//! Soak mode of the torture suites: an hour (or what `TOKEN_STORE_SOAK_SECS` says) of mixed load
//! on several real stores at once while faults are injected at random moments into the services
//! behind them, reusing the fault and crash machinery (`fault::signal`, the services' restart
//! scripts, [`crash::Rounds`]).
//!
//! Off unless `TOKEN_STORE_SOAK=1` (`scripts/soak.sh` sets it up, on services of its own: the
//! faults stop and restart servers). What it reports: operations, faults by kind, errors by
//! kind, the p99 latency of every minute per store, and records lost.
//!
//! The load: on each store, tasks of their own each owning a few keys, so every task knows
//! exactly what its keys must hold; each op is one of read (checked), compare-and-swap write,
//! unconditional write, conditional delete, listing, with self-checking values (16 B–12 KiB,
//! checksummed, as the crash harness writes). An operation that fails may or may not have taken
//! effect: both outcomes are allowed until the next successful read says which. A read that
//! finds neither what was acknowledged nor an outcome of a failed operation is a **lost
//! record**; a value that does not check is **torn**; a call that outlives its time limit by
//! 10 s is a **hang**. A fault that loses data by design (restarting an in-memory OpenBao dev
//! server) allows every key of that store to be empty once, and is reported as such.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use token_store_core::{
    Error, KeyKind, ListFilter, Precondition, PutOptions, RawStore, StorageKey, Version,
};

use crate::crash::{self, Opener, check_value, value};

/// Whether soak mode was asked for (`TOKEN_STORE_SOAK=1`).
pub fn enabled() -> bool {
    std::env::var("TOKEN_STORE_SOAK").is_ok_and(|v| v == "1" || v == "true")
}

/// How long the soak runs: `TOKEN_STORE_SOAK_SECS`, an hour by default.
pub fn duration() -> Duration {
    Duration::from_secs(
        std::env::var("TOKEN_STORE_SOAK_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3600),
    )
}

/// One store under load.
pub struct Target {
    /// Its name in the report (`redis-aof`, `vault`, `sqlite`).
    pub name: String,
    /// The store, as users open it (time limit layer included).
    pub store: Arc<dyn RawStore>,
    /// Its per-call time limit (a call taking 10 s more is a hang).
    pub timeout: Duration,
    /// The errors its faults may cause (others fail the run), e.g. [`unavailable_or_conflict`].
    pub expected: fn(&Error) -> bool,
}

/// The errors any fault may cause: the service is unavailable, or an operation that failed
/// earlier took effect after all and a compare-and-swap based on the old version conflicts.
pub fn unavailable_or_conflict(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Conflict { .. })
}

/// What a fault does.
pub enum Action {
    /// SIGSTOP the process in the pid file, wait 1–4 s, SIGCONT.
    Pause {
        /// The service's pid file.
        pidfile: String,
    },
    /// SIGKILL the process in the pid file, then run the restart script (which waits until the
    /// service answers again).
    Kill {
        /// The service's pid file.
        pidfile: String,
        /// Its restart script.
        restart: String,
    },
    /// Run the restart script (it stops the service, starts it and waits for it).
    Restart {
        /// The restart script.
        restart: String,
    },
    /// 1–3 crash rounds: a child process writing to the store at `url` (other keys than the
    /// load's) SIGKILLed at a random moment, then every record checked ([`crash::Rounds`]).
    KillWriter {
        /// The store's URL (the same store the load uses).
        url: String,
        /// The backend's `open_url`.
        open: Opener,
    },
}

/// One kind of fault, injected now and then.
pub struct Fault {
    /// Its name in the report (`redis-sigstop`, `vault-restart`, ...).
    pub name: String,
    /// The target it hits.
    pub target: String,
    /// Whether it loses the target's data by design (an in-memory server restarted).
    pub wipes: bool,
    /// What it does.
    pub action: Action,
}

/// The soak's results.
#[derive(Debug, Default)]
pub struct Report {
    /// Wall time run.
    pub secs: u64,
    /// Operations per target.
    pub ops: BTreeMap<String, u64>,
    /// Faults injected, by name.
    pub faults: BTreeMap<String, u64>,
    /// Errors by target and kind (`Unavailable`, `Conflict`, ... `hang`).
    pub errors: BTreeMap<(String, String), u64>,
    /// Acknowledged records found missing (or not as acknowledged), per target.
    pub lost: BTreeMap<String, u64>,
    /// Records whose value did not check (torn or mixed), per target.
    pub torn: BTreeMap<String, u64>,
    /// Reads that found the value of an operation that had failed (timed out, or the server
    /// went away) and was already superseded in the task's model: the server applied it
    /// late, after the client gave up (a request queued in a paused server). Not a loss: the
    /// operation never was acknowledged, and a linearizable store may apply a call whose
    /// outcome the caller never learnt at any later moment. Per target.
    pub late: BTreeMap<String, u64>,
    /// Minute by minute: operations, errors, faults injected, p99 latency per target.
    pub minutes: Vec<Minute>,
    /// Crash rounds of the killed-writer faults, per target.
    pub crashes: BTreeMap<String, crash::CrashReport>,
    /// What went wrong (at most 50).
    pub failures: Vec<String>,
}

/// One minute of the soak.
#[derive(Debug, Default, Clone)]
pub struct Minute {
    /// Operations that ended in this minute.
    pub ops: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Faults started in this minute, by name.
    pub faults: Vec<String>,
    /// p99 latency per target, of every operation ending in this minute.
    pub p99: BTreeMap<String, Duration>,
}

impl Report {
    /// Panics when records were lost or torn, a call hung, or a check failed.
    pub fn assert_ok(&self) {
        let lost: u64 = self.lost.values().sum();
        let torn: u64 = self.torn.values().sum();
        let hangs: u64 = self
            .errors
            .iter()
            .filter(|((_, kind), _)| kind == "hang")
            .map(|(_, n)| n)
            .sum();
        let crash_bad = self
            .crashes
            .values()
            .any(|c| !c.failures.is_empty() || c.lost > 0 || c.torn > 0 || c.unreadable > 0);
        assert!(
            self.failures.is_empty() && lost == 0 && torn == 0 && hangs == 0 && !crash_bad,
            "soak: {lost} lost, {torn} torn, {hangs} hangs, crash rounds {:?}, failures: {:#?}",
            self.crashes,
            self.failures
        );
    }

    /// The report as Markdown tables (totals, then minute by minute).
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let targets: Vec<&String> = self.ops.keys().collect();
        let _ = writeln!(out, "soak: {} s", self.secs);
        let _ = writeln!(
            out,
            "\n| store | ops | errors by kind | records lost | torn | failed ops applied late |\n| --- | ---: | --- | ---: | ---: | ---: |"
        );
        for t in &targets {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .filter(|((target, _), _)| target == *t)
                .map(|((_, kind), n)| format!("{kind} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "| {t} | {} | {} | {} | {} | {} |",
                self.ops[*t],
                if kinds.is_empty() {
                    "–".into()
                } else {
                    kinds.join(", ")
                },
                self.lost.get(*t).copied().unwrap_or(0),
                self.torn.get(*t).copied().unwrap_or(0),
                self.late.get(*t).copied().unwrap_or(0),
            );
        }
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(f, n)| format!("{f} {n}"))
            .collect();
        let _ = writeln!(out, "\nfaults: {}", faults.join(", "));
        for f in &self.failures {
            let _ = writeln!(out, "FAILURE: {f}");
        }
        for (t, c) in &self.crashes {
            let _ = writeln!(
                out,
                "killed writers on {t}: {} rounds, {} acknowledged ops, {} lost, {} torn, {} in-flight landed",
                c.rounds, c.acked, c.lost, c.torn, c.inflight_landed
            );
        }
        let _ = write!(out, "\n| minute | ops | errors | faults |");
        for t in &targets {
            let _ = write!(out, " p99 {t} |");
        }
        let _ = write!(out, "\n| ---: | ---: | ---: | --- |");
        for _ in &targets {
            let _ = write!(out, " ---: |");
        }
        out.push('\n');
        for (i, m) in self.minutes.iter().enumerate() {
            let _ = write!(
                out,
                "| {} | {} | {} | {} |",
                i + 1,
                m.ops,
                m.errors,
                if m.faults.is_empty() {
                    "–".into()
                } else {
                    let mut counted: BTreeMap<&str, usize> = BTreeMap::new();
                    for f in &m.faults {
                        *counted.entry(f.as_str()).or_default() += 1;
                    }
                    counted
                        .iter()
                        .map(|(f, n)| {
                            if *n > 1 {
                                format!("{f} ×{n}")
                            } else {
                                (*f).to_owned()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            for t in &targets {
                let _ = match m.p99.get(*t) {
                    Some(d) => write!(out, " {:.1} ms |", d.as_secs_f64() * 1000.0),
                    None => write!(out, " – |"),
                };
            }
            out.push('\n');
        }
        out
    }
}

/// Tasks per target, and keys per task.
const TASKS: usize = 3;
const KEYS_PER_TASK: usize = 4;

/// A small xorshift generator: choices need to vary, not to be unpredictable.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let mut b = [0u8; 8];
        let _ = token_store_core::backend::fill_random(&mut b);
        Rng(u64::from_le_bytes(b) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn soak_key(task: usize, k: usize) -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec![
            "soak".into(),
            format!("https://t{task}-k{k}.example/mcp"),
            String::new(),
            String::new(),
        ],
    )
    .unwrap_or_else(|e| panic!("valid key: {e}"))
}

/// What a task knows of one of its keys: the value number acknowledged last (`None`:
/// absent), outcomes of failed operations that may have landed, the version it last saw.
#[derive(Default)]
struct KeyModel {
    acked: Option<u64>,
    maybe: Vec<Option<u64>>,
    /// Outcomes of every failed operation (the last [`FAILED_KEPT`]), kept past the reads
    /// that clear `maybe`: one may still land later.
    failed: std::collections::VecDeque<Option<u64>>,
    version: Option<Version>,
    /// The store lost everything by design since: absent is fine once.
    wiped: bool,
}

/// How many failed operations' outcomes a key remembers.
const FAILED_KEPT: usize = 64;

/// What a read found, against a task's model of the key.
#[derive(PartialEq)]
enum Seen {
    /// The acknowledged value, an outcome still pending, or absent after a wipe.
    Expected,
    /// The outcome of a failed operation already superseded in the model: applied late.
    Late,
    /// Anything else: an acknowledged record is missing or not as acknowledged.
    Lost,
}

impl KeyModel {
    fn judge(&self, stored: Option<u64>) -> Seen {
        if stored == self.acked || self.maybe.contains(&stored) || (self.wiped && stored.is_none())
        {
            Seen::Expected
        } else if self.failed.contains(&stored) {
            Seen::Late
        } else {
            Seen::Lost
        }
    }

    /// A failed operation whose outcome (`Some(value)`, or `None` for a delete) may have
    /// landed, or may land later.
    fn note_failure(&mut self, outcome: Option<u64>) {
        self.maybe.push(outcome);
        if self.failed.len() == FAILED_KEPT {
            self.failed.pop_front();
        }
        self.failed.push_back(outcome);
    }
}

/// Shared counters of one run.
#[derive(Default)]
struct Shared {
    started: Mutex<Option<Instant>>,
    ops: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<BTreeMap<(String, String), u64>>,
    lost: Mutex<BTreeMap<String, u64>>,
    torn: Mutex<BTreeMap<String, u64>>,
    late: Mutex<BTreeMap<String, u64>>,
    /// Per minute and target: latencies in microseconds, and errors.
    latencies: Mutex<BTreeMap<(usize, String), Vec<u32>>>,
    minute_errors: Mutex<BTreeMap<usize, u64>>,
    minute_faults: Mutex<BTreeMap<usize, Vec<String>>>,
    failures: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn minute(&self) -> usize {
        lock(&self.started)
            .map(|s| (s.elapsed().as_secs() / 60) as usize)
            .unwrap_or(0)
    }

    fn fail(&self, why: String) {
        let mut f = lock(&self.failures);
        if f.len() < 50 {
            f.push(why);
        }
    }

    fn count(map: &Mutex<BTreeMap<String, u64>>, target: &str) {
        *lock(map).entry(target.to_owned()).or_default() += 1;
    }

    fn record(&self, target: &str, took: Duration, error: Option<&str>) {
        let minute = self.minute();
        Self::count(&self.ops, target);
        lock(&self.latencies)
            .entry((minute, target.to_owned()))
            .or_default()
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        if let Some(kind) = error {
            *lock(&self.errors)
                .entry((target.to_owned(), kind.to_owned()))
                .or_default() += 1;
            *lock(&self.minute_errors).entry(minute).or_default() += 1;
        }
    }
}

/// The error's kind for the report.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::NotFound { .. } => "NotFound",
        Error::Conflict { .. } => "Conflict",
        Error::Unavailable { .. } => "Unavailable",
        Error::PermissionDenied { .. } => "PermissionDenied",
        Error::Locked { .. } => "Locked",
        Error::Integrity { .. } => "Integrity",
        Error::WrongKey { .. } => "WrongKey",
        Error::Corrupt { .. } => "Corrupt",
        Error::InvalidKey { .. } => "InvalidKey",
        Error::InvalidInput { .. } => "InvalidInput",
        Error::TooLarge { .. } => "TooLarge",
        Error::Config { .. } => "Config",
        Error::Backend { .. } => "Backend",
        _ => "other",
    }
}

/// One load task: its keys on one target, until `stop`.
async fn load(
    target: Arc<Target>,
    task: usize,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
) -> HashMap<usize, KeyModel> {
    let mut rng = Rng::new();
    let max = target.store.capabilities().max_value_size;
    let mut models: HashMap<usize, KeyModel> = (0..KEYS_PER_TASK)
        .map(|k| (k, KeyModel::default()))
        .collect();
    let mut seen_epoch = epoch.load(Ordering::SeqCst);
    let mut n = (task as u64) << 40;
    let hard = target.timeout + Duration::from_secs(10);
    while !stop.load(Ordering::Relaxed) {
        let now_epoch = epoch.load(Ordering::SeqCst);
        if now_epoch != seen_epoch {
            seen_epoch = now_epoch;
            for m in models.values_mut() {
                m.wiped = true;
                m.version = None;
            }
        }
        let k = rng.below(KEYS_PER_TASK as u64) as usize;
        let key = soak_key(task, k);
        let pick = rng.below(100);
        let m = models.get_mut(&k).unwrap_or_else(|| unreachable!());
        n += 1;
        let t = Instant::now();
        // Reads also when the version is unknown: a CAS needs it.
        let op = if pick < 35 || (m.version.is_none() && m.acked.is_some() && pick < 85) {
            0
        } else if pick < 70 {
            1
        } else if pick < 80 {
            2
        } else if pick < 90 {
            3
        } else {
            4
        };
        let outcome = tokio::time::timeout(hard, async {
            match op {
                0 => target.store.read(&key).await.map(Outcome::Read),
                1 => {
                    let pre = match (&m.version, m.acked) {
                        (Some(v), Some(_)) => Precondition::IfVersion(v.clone()),
                        _ => Precondition::IfAbsent,
                    };
                    target
                        .store
                        .write(&key, &value(n, max), &PutOptions::new(pre))
                        .await
                        .map(Outcome::Wrote)
                }
                2 => target
                    .store
                    .write(&key, &value(n, max), &PutOptions::new(Precondition::Any))
                    .await
                    .map(Outcome::Wrote),
                3 => match &m.version {
                    Some(v) if m.acked.is_some() => target
                        .store
                        .remove(&key, &Precondition::IfVersion(v.clone()))
                        .await
                        .map(Outcome::Deleted),
                    _ => target.store.read(&key).await.map(Outcome::Read),
                },
                _ => target
                    .store
                    .scan(KeyKind::Token, &ListFilter::user("soak"))
                    .await
                    .map(|_| Outcome::Listed),
            }
        })
        .await;
        let took = t.elapsed();
        // A wiping fault is under way (odd epoch) or began meanwhile: whatever this operation
        // saw or wrote may be gone next time.
        let after = epoch.load(Ordering::SeqCst);
        let settled = after == now_epoch && after.is_multiple_of(2);
        let outcome = match outcome {
            Ok(o) => o,
            Err(_) => {
                shared.record(&target.name, took, Some("hang"));
                shared.fail(format!(
                    "{}: a call (op {op}) hung for {took:?}",
                    target.name
                ));
                continue;
            }
        };
        match outcome {
            Ok(Outcome::Read(got)) => {
                shared.record(&target.name, took, None);
                let stored = match got {
                    None => None,
                    Some(r) => match check_value(&r.value, max) {
                        Ok(v) => {
                            m.version = Some(r.version);
                            Some(v)
                        }
                        Err(why) => {
                            Shared::count(&shared.torn, &target.name);
                            shared.fail(format!("{}: {key}: {why}", target.name));
                            continue;
                        }
                    },
                };
                let seen = m.judge(stored);
                if seen == Seen::Late {
                    Shared::count(&shared.late, &target.name);
                }
                if seen == Seen::Lost {
                    Shared::count(&shared.lost, &target.name);
                    shared.fail(format!(
                        "{}: {key} holds {stored:?}, acknowledged {:?} (maybe {:?})",
                        target.name, m.acked, m.maybe
                    ));
                }
                if stored.is_none() {
                    m.version = None;
                }
                m.acked = stored;
                m.maybe.clear();
                m.wiped = !settled;
            }
            Ok(Outcome::Wrote(v)) => {
                shared.record(&target.name, took, None);
                m.acked = Some(n);
                m.maybe.clear();
                m.version = Some(v);
                m.wiped = !settled;
            }
            Ok(Outcome::Deleted(deleted)) => {
                shared.record(&target.name, took, None);
                // Deleted nothing: the next read says what is there.
                if deleted {
                    m.acked = None;
                    m.maybe.clear();
                    m.wiped = !settled;
                }
                m.version = None;
            }
            Ok(Outcome::Listed) => shared.record(&target.name, took, None),
            Err(e) => {
                shared.record(&target.name, took, Some(kind(&e)));
                if !(target.expected)(&e) {
                    shared.fail(format!("{}: op {op} failed with {e}", target.name));
                }
                let unknown = match op {
                    1 | 2 if !e.is_conflict() => Some(Some(n)),
                    3 if !e.is_conflict() => Some(None),
                    _ => None,
                };
                if let Some(outcome) = unknown {
                    m.note_failure(outcome);
                }
                m.version = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // A fault that wiped the store after this task's last operation.
    if epoch.load(Ordering::SeqCst) != seen_epoch {
        for m in models.values_mut() {
            m.wiped = true;
        }
    }
    models
}

enum Outcome {
    Read(Option<token_store_core::RawRecord>),
    Wrote(Version),
    Deleted(bool),
    Listed,
}

/// Runs the soak for `duration` on `targets`, injecting one of `faults` (picked at random)
/// every `every.0`–`every.1` seconds, then checks every key once more.
pub async fn run(
    targets: Vec<Target>,
    faults: Vec<Fault>,
    duration: Duration,
    every: (u64, u64),
) -> Report {
    let shared = Arc::new(Shared::default());
    *lock(&shared.started) = Some(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let targets: Vec<Arc<Target>> = targets.into_iter().map(Arc::new).collect();
    let epochs: HashMap<String, Arc<AtomicU64>> = targets
        .iter()
        .map(|t| (t.name.clone(), Arc::new(AtomicU64::new(0))))
        .collect();
    let mut tasks = Vec::new();
    for target in &targets {
        for task in 0..TASKS {
            tasks.push((
                target.clone(),
                task,
                tokio::spawn(load(
                    target.clone(),
                    task,
                    shared.clone(),
                    stop.clone(),
                    epochs[&target.name].clone(),
                )),
            ));
        }
    }
    let mut rng = Rng::new();
    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    let mut crashers: HashMap<String, crash::Rounds> = HashMap::new();
    let deadline = Instant::now() + duration;
    loop {
        let wait = Duration::from_secs(every.0 + rng.below(every.1.saturating_sub(every.0) + 1));
        if Instant::now() + wait >= deadline || faults.is_empty() {
            tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
            break;
        }
        tokio::time::sleep(wait).await;
        let fault = &faults[rng.below(faults.len() as u64) as usize];
        *injected.entry(fault.name.clone()).or_default() += 1;
        lock(&shared.minute_faults)
            .entry(shared.minute())
            .or_default()
            .push(fault.name.clone());
        println!(
            "soak {:>5}s: {}",
            lock(&shared.started).map_or(0, |s| s.elapsed().as_secs()),
            fault.name
        );
        // Bumped before and after: odd while the fault may be wiping, so what tasks see or
        // write meanwhile may be gone afterwards.
        let wipe = || {
            if fault.wipes
                && let Some(e) = epochs.get(&fault.target)
            {
                e.fetch_add(1, Ordering::SeqCst);
            }
        };
        wipe();
        match &fault.action {
            Action::Pause { pidfile } => {
                let pid = crate::fault::read_pid(pidfile);
                crate::fault::signal(pid, "-STOP");
                tokio::time::sleep(Duration::from_millis(1000 + rng.below(3000))).await;
                crate::fault::signal(pid, "-CONT");
            }
            Action::Kill { pidfile, restart } => {
                crate::fault::signal(crate::fault::read_pid(pidfile), "-KILL");
                run_script(restart, &shared).await;
            }
            Action::Restart { restart } => run_script(restart, &shared).await,
            Action::KillWriter { url, open } => {
                if !crashers.contains_key(&fault.target) {
                    let r = crash::Rounds::new(&fault.target, url, *open).await;
                    crashers.insert(fault.target.clone(), r);
                }
                if let Some(crasher) = crashers.get_mut(&fault.target) {
                    for _ in 0..1 + rng.below(3) {
                        if !crasher.round(None).await {
                            break;
                        }
                    }
                }
            }
        }
        wipe();
    }
    stop.store(true, Ordering::Relaxed);
    let mut finals = Vec::new();
    for (target, task, handle) in tasks {
        match handle.await {
            Ok(models) => finals.push((target, task, models)),
            Err(e) => shared.fail(format!("a load task panicked: {e}")),
        }
    }
    // Every key once more, after the last fault healed (retrying while a service comes back).
    for (target, task, models) in finals {
        for (k, m) in models {
            let key = soak_key(task, k);
            let deadline = Instant::now() + Duration::from_secs(60);
            let got = loop {
                match target.store.read(&key).await {
                    Err(e) if e.is_retryable() && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => break other,
                }
            };
            let max = target.store.capabilities().max_value_size;
            match got {
                Ok(r) => {
                    let stored = match r.map(|r| check_value(&r.value, max)).transpose() {
                        Ok(s) => s,
                        Err(why) => {
                            Shared::count(&shared.torn, &target.name);
                            shared.fail(format!("{}: final {key}: {why}", target.name));
                            continue;
                        }
                    };
                    let seen = m.judge(stored);
                    if seen == Seen::Late {
                        Shared::count(&shared.late, &target.name);
                    } else if seen == Seen::Lost {
                        Shared::count(&shared.lost, &target.name);
                        shared.fail(format!(
                            "{}: final {key} holds {stored:?}, acknowledged {:?}",
                            target.name, m.acked
                        ));
                    }
                }
                Err(e) => shared.fail(format!("{}: final read of {key}: {e}", target.name)),
            }
        }
    }
    let secs = lock(&shared.started).map_or(0, |s| s.elapsed().as_secs());
    let mut minutes: Vec<Minute> = Vec::new();
    let last = lock(&shared.latencies)
        .keys()
        .map(|(m, _)| *m)
        .max()
        .unwrap_or(0);
    for i in 0..=last {
        let mut minute = Minute {
            errors: lock(&shared.minute_errors).get(&i).copied().unwrap_or(0),
            faults: lock(&shared.minute_faults)
                .get(&i)
                .cloned()
                .unwrap_or_default(),
            ..Minute::default()
        };
        for ((m, target), lat) in lock(&shared.latencies).iter_mut() {
            if *m != i {
                continue;
            }
            minute.ops += lat.len() as u64;
            lat.sort_unstable();
            let idx = ((lat.len() as f64) * 0.99).ceil() as usize;
            let p99 = lat[idx.saturating_sub(1).min(lat.len() - 1)];
            minute
                .p99
                .insert(target.clone(), Duration::from_micros(u64::from(p99)));
        }
        minutes.push(minute);
    }
    let report = Report {
        secs,
        ops: lock(&shared.ops).clone(),
        faults: injected,
        errors: lock(&shared.errors).clone(),
        lost: lock(&shared.lost).clone(),
        torn: lock(&shared.torn).clone(),
        late: lock(&shared.late).clone(),
        minutes,
        crashes: crashers.into_iter().map(|(t, r)| (t, r.finish())).collect(),
        failures: lock(&shared.failures).clone(),
    };
    for (t, ops) in &report.ops {
        crate::summary::torture(
            "soak",
            t,
            &[
                ("secs", secs.to_string()),
                ("ops", ops.to_string()),
                ("faults", report.faults.values().sum::<u64>().to_string()),
                ("lost", report.lost.get(t).copied().unwrap_or(0).to_string()),
                ("torn", report.torn.get(t).copied().unwrap_or(0).to_string()),
            ],
        );
    }
    report
}

/// Runs a service's restart script; a failure is a failure of the run.
async fn run_script(script: &str, shared: &Shared) {
    let script = script.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
    })
    .await;
    match status {
        Ok(Ok(s)) if s.success() => {}
        other => shared.fail(format!("restart script failed: {other:?}")),
    }
}
