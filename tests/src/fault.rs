//! Service-fault harness: a store under a small load (reads, compare-and-swap increments,
//! unconditional writes, listings) while a fault is injected into the service behind it
//! (stopped, paused, sealed, daemon killed) and then healed.
//!
//! Checked for every call: it returns within the store's configured timeout (plus scheduling
//! slack) — no hang; it fails only with an error the fault may cause (by default
//! [`Error::Unavailable`]) — no untyped error, no panic. Then, with the *same* store object
//! (never re-created): calls succeed again after the heal, and for durable faults no
//! acknowledged increment is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use token_store_core::{
    Error, KeyKind, ListFilter, Precondition, PutOptions, RawStore, StorageKey,
};

use crate::BoxFuture;

/// Which errors a fault may cause.
pub type Expect = fn(&Error) -> bool;

/// The usual expectation: the service is unavailable (retryable).
pub fn unavailable(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. })
}

/// One fault to inject.
pub struct Fault {
    /// Its name in reports (`sigstop`, `stopped`, `sealed`, `daemon-killed`, ...).
    pub name: String,
    /// The store's configured per-call timeout.
    pub timeout: Duration,
    /// Whether acknowledged writes must survive it (false for an in-memory dev server
    /// restarted empty).
    pub durable: bool,
    /// How long the fault lasts before it is healed.
    pub duration: Duration,
    /// How long the same store may take to work again after the heal.
    pub recovery: Duration,
    /// The errors calls may fail with while it lasts.
    pub expect: Expect,
    /// Whether the same store object must work again after the heal (always, but for a
    /// run that documents a known bug while still checking the rest).
    pub same_store_recovers: bool,
}

impl Fault {
    /// A durable fault of `name` on a store with per-call `timeout`, lasting twice the timeout
    /// (at least 2 s), expecting `Unavailable`, allowing 30 s to recover.
    pub fn new(name: impl Into<String>, timeout: Duration) -> Self {
        Fault {
            name: name.into(),
            timeout,
            durable: true,
            duration: (timeout * 2).max(Duration::from_secs(2)),
            recovery: Duration::from_secs(30),
            expect: unavailable,
            same_store_recovers: true,
        }
    }

    /// The same fault, not requiring the same store object to recover (for a known bug):
    /// errors after the heal are then not checked either, and the caller checks the data
    /// with a new store ([`FaultReport::counter`]).
    pub fn without_recovery(mut self) -> Self {
        self.same_store_recovers = false;
        self.recovery = Duration::from_secs(3);
        self
    }

    /// The same fault, losing data by design (no lost-write check).
    pub fn not_durable(mut self) -> Self {
        self.durable = false;
        self
    }

    /// The same fault, accepting these errors while it lasts.
    pub fn expecting(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// The same fault, lasting `d`.
    pub fn lasting(mut self, d: Duration) -> Self {
        self.duration = d;
        self
    }
}

/// What a fault run saw.
#[derive(Debug, Default, Clone)]
pub struct FaultReport {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed with an expected error.
    pub failed: u64,
    /// Calls failed while the fault lasted.
    pub failed_during: u64,
    /// The slowest failing call.
    pub slowest_failure: Duration,
    /// From the heal to the first successful call of the same store.
    pub recovered_after: Option<Duration>,
    /// Acknowledged compare-and-swap increments.
    pub acked: u64,
    /// Increments whose outcome is unknown (the call failed).
    pub uncertain: u64,
    /// Acknowledged increments missing at the end (durable faults only).
    pub lost: u64,
    /// What went wrong (empty when all held).
    pub failures: Vec<String>,
    /// The counter the increments went to.
    pub counter: Option<StorageKey>,
}

impl FaultReport {
    /// Panics listing the failures, if any.
    pub fn assert_ok(&self, backend: &str, fault: &str) {
        assert!(
            self.failures.is_empty(),
            "fault[{backend}/{fault}]: {:#?}",
            self
        );
    }
}

const PHASE_BEFORE: u8 = 0;
const PHASE_FAULT: u8 = 1;
const PHASE_AFTER: u8 = 2;
/// While `heal` runs: the service may already be back.
const PHASE_HEALING: u8 = 3;

#[derive(Default)]
struct Shared {
    calls: AtomicU64,
    failed: AtomicU64,
    failed_during: AtomicU64,
    ok_after: AtomicU64,
    slowest_failure_us: AtomicU64,
    acked: AtomicU64,
    uncertain: AtomicU64,
    first_ok_after_us: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    fn fail(&self, why: String) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() < 20 {
            f.push(why);
        }
    }
}

fn counter_key(name: &str) -> StorageKey {
    StorageKey::single(KeyKind::Meta, format!("fault-counter-{name}"))
        .unwrap_or_else(|e| panic!("key: {e}"))
}

fn scratch_key(task: usize) -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec![
            "fault".into(),
            format!("https://scratch{task}.example"),
            String::new(),
            String::new(),
        ],
    )
    .unwrap_or_else(|e| panic!("key: {e}"))
}

/// Runs the load on `store`, injects the fault with `inject`, heals it with `heal`, and
/// checks the calls as the module docs say. Appends a `torture fault` line to the report.
pub async fn run(
    backend: &str,
    store: Arc<dyn RawStore>,
    fault: Fault,
    inject: impl FnOnce() -> BoxFuture<'static, ()>,
    heal: impl FnOnce() -> BoxFuture<'static, ()>,
) -> FaultReport {
    let counter = counter_key(&crate::services::unique("c"));
    if let Err(e) = store
        .write(&counter, b"0", &PutOptions::new(Precondition::IfAbsent))
        .await
    {
        panic!("fault[{backend}/{}]: setup write failed: {e}", fault.name);
    }
    let shared = Arc::new(Shared::default());
    let phase = Arc::new(AtomicU8::new(PHASE_BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let healed_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut tasks = Vec::new();
    for task in 0..3 {
        let store = store.clone();
        let shared = shared.clone();
        let phase = phase.clone();
        let stop = stop.clone();
        let counter = counter.clone();
        let healed_at = healed_at.clone();
        let limit = fault.timeout;
        let expect = fault.expect;
        let recovers = fault.same_store_recovers;
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let op = (i as usize + task) % 4;
                let t = Instant::now();
                // An outer bound far above the store's own: a call still running here hangs.
                let hard = limit + Duration::from_secs(10);
                let result: Result<Option<bool>, Error> = match tokio::time::timeout(hard, async {
                    match op {
                        0 => increment(&*store, &counter).await,
                        1 => store.read(&counter).await.map(|_| None),
                        2 => store
                            .write(
                                &scratch_key(task),
                                format!("{i}").as_bytes(),
                                &PutOptions::default(),
                            )
                            .await
                            .map(|_| None),
                        _ => store
                            .scan(KeyKind::Token, &ListFilter::user("fault"))
                            .await
                            .map(|_| None),
                    }
                })
                .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        shared.fail(format!("a call (op {op}) hung for over {hard:?}"));
                        continue;
                    }
                };
                let took = t.elapsed();
                shared.calls.fetch_add(1, Ordering::Relaxed);
                let p = phase.load(Ordering::Relaxed);
                match result {
                    Ok(acked) => {
                        if acked == Some(true) {
                            shared.acked.fetch_add(1, Ordering::Relaxed);
                        }
                        if p == PHASE_AFTER {
                            shared.ok_after.fetch_add(1, Ordering::Relaxed);
                            let healed = *healed_at.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some(h) = healed {
                                let us = h.elapsed().as_micros() as u64;
                                let _ = shared.first_ok_after_us.compare_exchange(
                                    0,
                                    us.max(1),
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                );
                            }
                        }
                    }
                    Err(e) => {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        if p == PHASE_FAULT {
                            shared.failed_during.fetch_add(1, Ordering::Relaxed);
                        }
                        if op == 0 {
                            shared.uncertain.fetch_add(1, Ordering::Relaxed);
                        }
                        let settled = p == PHASE_BEFORE || p == PHASE_FAULT;
                        if !expect(&e) && (settled || recovers) {
                            shared.fail(format!("op {op} failed with an unexpected error: {e:?}"));
                        }
                        // Scheduling slack on a loaded 2-core machine.
                        let allowed = limit + Duration::from_millis(1500);
                        if took > allowed {
                            shared.fail(format!(
                                "op {op} took {took:?} to fail (timeout {limit:?}): {e}"
                            ));
                        }
                        shared
                            .slowest_failure_us
                            .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    if shared.acked.load(Ordering::Relaxed) == 0 {
        shared.fail("no increment succeeded before the fault".into());
    }
    phase.store(PHASE_FAULT, Ordering::Relaxed);
    inject().await;
    tokio::time::sleep(fault.duration).await;
    phase.store(PHASE_HEALING, Ordering::Relaxed);
    heal().await;
    *healed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    phase.store(PHASE_AFTER, Ordering::Relaxed);
    let deadline = Instant::now() + fault.recovery;
    while shared.ok_after.load(Ordering::Relaxed) < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if let Err(e) = t.await {
            shared.fail(format!("a load task panicked: {e}"));
        }
    }
    if shared.failed_during.load(Ordering::Relaxed) == 0 {
        shared.fail("no call failed while the fault lasted: was it injected?".into());
    }
    let recovered = match shared.first_ok_after_us.load(Ordering::Relaxed) {
        0 => None,
        us => Some(Duration::from_micros(us)),
    };
    if fault.same_store_recovers && shared.ok_after.load(Ordering::Relaxed) == 0 {
        shared.fail(format!(
            "the same store did not work again within {:?} of the heal",
            fault.recovery
        ));
    }
    let acked = shared.acked.load(Ordering::Relaxed);
    let uncertain = shared.uncertain.load(Ordering::Relaxed);
    let mut lost = 0;
    if fault.durable && fault.same_store_recovers {
        match store.read(&counter).await {
            Ok(Some(r)) => {
                let end: u64 = std::str::from_utf8(&r.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if end < acked {
                    lost = acked - end;
                    shared.fail(format!(
                        "{lost} acknowledged increments lost: {end} < {acked}"
                    ));
                }
                if end > acked + uncertain {
                    shared.fail(format!(
                        "more increments than attempts: {end} > {acked} + {uncertain}"
                    ));
                }
            }
            Ok(None) => {
                lost = acked;
                shared.fail("the counter vanished".into());
            }
            Err(e) => shared.fail(format!("final read: {e}")),
        }
    }
    let report = FaultReport {
        calls: shared.calls.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        failed_during: shared.failed_during.load(Ordering::Relaxed),
        slowest_failure: Duration::from_micros(shared.slowest_failure_us.load(Ordering::Relaxed)),
        recovered_after: recovered,
        acked,
        uncertain,
        lost,
        failures: shared
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        counter: Some(counter.clone()),
    };
    crate::summary::torture(
        "fault",
        backend,
        &[
            ("fault", fault.name.clone()),
            ("faults", "1".into()),
            ("calls", report.calls.to_string()),
            ("failed", report.failed.to_string()),
            ("failed_during", report.failed_during.to_string()),
            (
                "slowest_failure_ms",
                report.slowest_failure.as_millis().to_string(),
            ),
            ("timeout_ms", fault.timeout.as_millis().to_string()),
            (
                "recovered_ms",
                report
                    .recovered_after
                    .map_or("never".into(), |d| d.as_millis().to_string()),
            ),
            ("acked", acked.to_string()),
            ("lost", lost.to_string()),
            ("durable", fault.durable.to_string()),
            ("same_store_recovers", fault.same_store_recovers.to_string()),
            ("ok", report.failures.is_empty().to_string()),
            ("secs", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
    report
}

/// One compare-and-swap increment: `Some(true)` when acknowledged, `Some(false)` on a
/// conflict. A counter that vanished (a dev server restarted empty) is created again.
async fn increment(store: &dyn RawStore, key: &StorageKey) -> Result<Option<bool>, Error> {
    let (n, pre) = match store.read(key).await? {
        Some(cur) => (
            std::str::from_utf8(&cur.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0),
            Precondition::IfVersion(cur.version),
        ),
        None => (0, Precondition::IfAbsent),
    };
    match store
        .write(key, (n + 1).to_string().as_bytes(), &PutOptions::new(pre))
        .await
    {
        Ok(_) => Ok(Some(true)),
        Err(e) if e.is_conflict() => Ok(Some(false)),
        Err(e) => Err(e),
    }
}

/// Sends `signal` (e.g. `"-STOP"`) to `pid` with `kill`; panics when that fails.
pub fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {signal} {pid} failed");
}

/// The pid in a pid file.
pub fn read_pid(pidfile: &str) -> u32 {
    std::fs::read_to_string(pidfile)
        .unwrap_or_else(|e| panic!("{pidfile}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{pidfile}: {e}"))
}

/// Runs a service's restart script (from `scripts/services.sh`) with bash; panics when it fails.
pub fn run_script(script: &str) {
    let ok = std::process::Command::new("bash")
        .arg(script)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{script} failed");
}

/// Waits up to 30 s until `pid` has exited (a server, not our child: polls /proc, and a
/// zombie counts as gone); panics when it has not.
pub fn wait_gone(pid: u32) {
    for _ in 0..600 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && stat.split_whitespace().nth(2) == Some("Z")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("pid {pid} did not exit");
}

/// [`run`] with the fault "the server whose pid is in `pidfile` gets `signal` (e.g. `"-KILL"`)
/// and has exited", healed by its `restart` script.
pub async fn signal_then_restart(
    backend: &str,
    store: Arc<dyn RawStore>,
    fault: Fault,
    pidfile: String,
    signal_name: &'static str,
    restart: String,
) -> FaultReport {
    run(
        backend,
        store,
        fault,
        move || {
            Box::pin(async move {
                let pid = read_pid(&pidfile);
                signal(pid, signal_name);
                if let Err(e) = tokio::task::spawn_blocking(move || wait_gone(pid)).await {
                    panic!("waiting for {pid}: {e}");
                }
            })
        },
        move || {
            Box::pin(async move {
                if let Err(e) = tokio::task::spawn_blocking(move || run_script(&restart)).await {
                    panic!("restart: {e}");
                }
            })
        },
    )
    .await
}
