//! Several real processes on one store, named by URL: the checks that only mean something
//! across processes, for backends whose compare-and-swap must hold between processes (a
//! keychain behind a host-wide lock, a database file, a server).
//!
//! - [`cas_increments`]: N processes each make M compare-and-swap increments of one counter;
//!   it must end at exactly N x M (a lost update shows as less).
//! - [`distinct_creates`]: N processes each create M keys of their own at the same time;
//!   listing must then name all N x M (a lost index entry shows as missing).
//! - [`concurrent_model_check`]: the concurrent model check of
//!   [`crate::concurrent_model_check`], with every task of a history in a process of its
//!   own, checked by the same rules (no lost update, no vanished write, no stale read in
//!   real time: event times come from the wall clock, which every process on the host shares).
//!
//! The children are the backend's own test binary run again; the backend's test file defines
//!
//! ```ignore
//! #[test]
//! fn processes_child() {
//!     token_store_conformance::processes::child(|url| Box::pin(async move { my_backend::open_url(&url).await }));
//! }
//! ```
//!
//! which does nothing in a normal run. The children live for a whole check, take commands on
//! stdin and answer on stdout (`@@ ` lines); every command carries the moment (wall clock) to
//! start at, so that they all start together. Call the checks from plain `#[test]`s (they
//! run their own runtime).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::test_runner::{Config, TestCaseError, TestRunner};
use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawStore, StorageKey,
    StoreUrl, Version,
};

use crate::crash::Opener;
use crate::linear::{self, Event, Op, What};

/// The name the child test must have in the backend's test file.
pub const CHILD_TEST: &str = "processes_child";

const ROLE_ENV: &str = "TOKEN_STORE_PROCESSES_CHILD";
const MARK: &str = "@@ ";
/// How long a child may take to answer one command before the check fails.
const ANSWER_WITHIN: Duration = Duration::from_secs(300);

fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    // A parent that went away leaves nobody to tell.
    let _ = writeln!(out, "{MARK}{msg}");
    let _ = out.flush();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn wall_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "~".to_owned();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "~" {
        return Some(Vec::new());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn counter_key(user: &str) -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec![
            user.to_owned(),
            "https://counter.example/mcp".into(),
            String::new(),
            String::new(),
        ],
    )
    .unwrap_or_else(|e| panic!("valid key: {e}"))
}

fn created_key(user: &str, n: u64) -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec![
            user.to_owned(),
            format!("https://k{n}.example/mcp"),
            String::new(),
            String::new(),
        ],
    )
    .unwrap_or_else(|e| panic!("valid key: {e}"))
}

// ---------------------------------------------------------------------------------------
// Child side

/// The child side. Returns at once unless this process was started by one of the checks.
pub fn child(open: Opener) {
    if std::env::var_os(ROLE_ENV).is_none() {
        return;
    }
    // libtest printed "test processes_child ... " without a newline: start our lines afresh.
    println!();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("child: runtime: {e}"));
    rt.block_on(async move {
        let mut current: Option<(String, Arc<dyn RawStore>)> = None;
        say("ready");
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.unwrap_or_else(|e| panic!("child: stdin: {e}"));
            let words: Vec<&str> = line.split(' ').collect();
            let [start, verb, url, args @ ..] = &words[..] else {
                panic!("child: bad command {line:?}");
            };
            let store = match &current {
                Some((u, s)) if u == url => s.clone(),
                _ => {
                    let parsed = StoreUrl::parse(url).unwrap_or_else(|e| panic!("child: url: {e}"));
                    let s = open(parsed)
                        .await
                        .unwrap_or_else(|e| panic!("child: open: {e}"));
                    current = Some(((*url).to_owned(), s.clone()));
                    s
                }
            };
            let start: u64 = start
                .parse()
                .unwrap_or_else(|e| panic!("child: start: {e}"));
            tokio::time::sleep(Duration::from_millis(start.saturating_sub(now_ms()))).await;
            match (*verb, args) {
                ("inc", [user, n]) => increments(&*store, user, parse(n)).await,
                ("create", [user, n]) => creates(&*store, user, parse(n)).await,
                ("history", [case, salt, task, ops]) => {
                    history(&*store, case, salt, parse(task) as usize, ops).await
                }
                _ => panic!("child: unknown command {line:?}"),
            }
        }
    });
}

fn parse(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|e| panic!("child: number {s:?}: {e}"))
}

async fn increments(store: &dyn RawStore, user: &str, n: u64) {
    let key = counter_key(user);
    let (mut done, mut conflicts) = (0, 0u64);
    while done < n {
        let cur = store
            .read(&key)
            .await
            .unwrap_or_else(|e| panic!("child: read: {e}"))
            .unwrap_or_else(|| panic!("child: the counter is gone"));
        let v: u64 = std::str::from_utf8(&cur.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("child: the counter is not a number"));
        match store
            .write(
                &key,
                (v + 1).to_string().as_bytes(),
                &PutOptions::new(Precondition::IfVersion(cur.version)),
            )
            .await
        {
            Ok(_) => done += 1,
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("child: increment: {e}"),
        }
    }
    say(&format!("done inc {conflicts}"));
}

async fn creates(store: &dyn RawStore, user: &str, n: u64) {
    for i in 0..n {
        store
            .write(
                &created_key(user, i),
                format!("{user}/{i}").as_bytes(),
                &PutOptions::new(Precondition::IfAbsent),
            )
            .await
            .unwrap_or_else(|e| panic!("child: create {i}: {e}"));
    }
    say("done create");
}

fn op_code(op: Op) -> String {
    match op {
        Op::Read(k) => format!("R{k}"),
        Op::Cas(k) => format!("C{k}"),
        Op::Create(k) => format!("N{k}"),
        Op::Delete(k) => format!("D{k}"),
    }
}

fn op_decode(code: &str) -> Option<Op> {
    let k = code.get(1..)?.parse().ok()?;
    Some(match code.get(..1)? {
        "R" => Op::Read(k),
        "C" => Op::Cas(k),
        "N" => Op::Create(k),
        "D" => Op::Delete(k),
        _ => return None,
    })
}

async fn history(store: &dyn RawStore, case: &str, salt: &str, task: usize, ops: &str) {
    // Event times are this process' Instants; the parent compares them with other
    // processes' through the wall clock they all share.
    let anchor = (Instant::now(), SystemTime::now());
    let mut events = Vec::new();
    for (i, code) in ops.split(',').enumerate() {
        let op = op_decode(code).unwrap_or_else(|| panic!("child: op {code:?}"));
        // Unique bytes per write across every process of the case, of varying length.
        let value = format!("{salt}/t{task}/o{i}/{}", "v".repeat((i * 37) % 200)).into_bytes();
        linear::apply(store, case, task, op, value, &mut events)
            .await
            .unwrap_or_else(|e| panic!("child: {e}"));
    }
    for e in &events {
        say(&format!("ev {}", encode_event(e, anchor)));
    }
    say("done history");
}

fn encode_event(e: &Event, (i0, w0): (Instant, SystemTime)) -> String {
    let wall = |t: Instant| wall_ns(w0 + t.saturating_duration_since(i0));
    let v = |v: &Option<Version>| {
        v.as_ref()
            .map_or("-".to_owned(), |v| hex(v.as_str().as_bytes()))
    };
    let what = match &e.what {
        What::Read { got: None } => "R -".to_owned(),
        What::Read {
            got: Some((ver, bytes)),
        } => format!("R {} {}", hex(ver.as_str().as_bytes()), hex(bytes)),
        What::Wrote { base, new, value } => format!(
            "W {} {} {}",
            v(base),
            hex(new.as_str().as_bytes()),
            hex(value)
        ),
        What::Deleted { base } => format!("D {}", hex(base.as_str().as_bytes())),
        What::Conflict { base, current } => format!("C {} {}", v(base), v(current)),
    };
    format!(
        "{} {} {} {} {what}",
        e.task,
        e.key,
        wall(e.start),
        wall(e.end)
    )
}

/// An event as the child wrote it, with wall-clock nanoseconds for its times.
struct Wire {
    task: usize,
    key: u8,
    start: u64,
    end: u64,
    what: What,
}

fn decode_event(line: &str) -> Option<Wire> {
    let w: Vec<&str> = line.split(' ').collect();
    let version =
        |s: &str| -> Option<Version> { Some(Version::new(String::from_utf8(unhex(s)?).ok()?)) };
    let maybe = |s: &str| -> Option<Option<Version>> {
        if s == "-" {
            Some(None)
        } else {
            version(s).map(Some)
        }
    };
    let what = match w.get(4..)? {
        ["R", "-"] => What::Read { got: None },
        ["R", ver, bytes] => What::Read {
            got: Some((version(ver)?, unhex(bytes)?)),
        },
        ["W", base, new, value] => What::Wrote {
            base: maybe(base)?,
            new: version(new)?,
            value: unhex(value)?,
        },
        ["D", base] => What::Deleted {
            base: version(base)?,
        },
        ["C", base, current] => What::Conflict {
            base: maybe(base)?,
            current: maybe(current)?,
        },
        _ => return None,
    };
    Some(Wire {
        task: w.first()?.parse().ok()?,
        key: w.get(1)?.parse().ok()?,
        start: w.get(2)?.parse().ok()?,
        end: w.get(3)?.parse().ok()?,
        what,
    })
}

// ---------------------------------------------------------------------------------------
// Parent side

struct Kid {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kid {
    fn spawn() -> Kid {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        let mut child = Command::new(exe)
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn a child process: {e}"));
        let stdin = child.stdin.take().unwrap_or_else(|| unreachable!());
        let stdout = child.stdout.take().unwrap_or_else(|| unreachable!());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((_, msg)) = line.split_once(MARK)
                    && tx.send(msg.to_owned()).is_err()
                {
                    break;
                }
            }
        });
        Kid {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("a child stopped listening: {e}"))
    }

    fn next(&self) -> Result<String, String> {
        self.lines.recv_timeout(ANSWER_WITHIN).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => {
                format!("a child did not answer within {ANSWER_WITHIN:?}")
            }
            mpsc::RecvTimeoutError::Disconnected => {
                "a child exited (its panic is printed above)".to_owned()
            }
        })
    }
}

fn spawn_ready(processes: usize) -> Vec<Kid> {
    let kids: Vec<Kid> = (0..processes).map(|_| Kid::spawn()).collect();
    for kid in &kids {
        match kid.next() {
            Ok(l) if l == "ready" => {}
            Ok(l) => panic!("a child said {l:?} instead of ready"),
            Err(e) => panic!("{e}"),
        }
    }
    kids
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn open_parent(rt: &tokio::runtime::Runtime, open: Opener, url: &str) -> Arc<dyn RawStore> {
    let parsed = StoreUrl::parse(url).unwrap_or_else(|e| panic!("url: {e}"));
    rt.block_on(open(parsed))
        .unwrap_or_else(|e| panic!("opening the store: {e}"))
}

/// A start moment far enough ahead for every child to get its command and, the first
/// time, open the store.
fn start_soon(first: bool) -> u64 {
    now_ms() + if first { 300 } else { 50 }
}

/// Seconds from the start moment `start_ms` until now.
fn since(start_ms: u64) -> f64 {
    now_ms().saturating_sub(start_ms) as f64 / 1000.0
}

/// What [`cas_increments`] saw.
#[derive(Debug)]
pub struct IncrementReport {
    /// Increments every process made.
    pub expected: u64,
    /// The counter's final value.
    pub counted: u64,
    /// Conflicts the processes retried.
    pub conflicts: u64,
    /// Wall time of the increments.
    pub secs: f64,
}

/// `processes` processes each make `each` compare-and-swap increments (read, then write
/// `IfVersion`, retried on conflict) of one counter in the store at `url`, all at once; the
/// counter must end at exactly `processes x each`. Panics if not; appends a
/// `torture processes-cas` line.
pub fn cas_increments(
    backend: &str,
    url: &str,
    open: Opener,
    processes: usize,
    each: u64,
) -> IncrementReport {
    let rt = runtime();
    let store = open_parent(&rt, open, url);
    let user = crate::services::unique("mp-cas");
    let key = counter_key(&user);
    rt.block_on(store.write(&key, b"0", &PutOptions::new(Precondition::Any)))
        .unwrap_or_else(|e| panic!("seeding the counter: {e}"));
    let mut kids = spawn_ready(processes);
    let start = start_soon(true);
    for kid in &mut kids {
        kid.send(&format!("{start} inc {url} {user} {each}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut conflicts = 0;
    for kid in &kids {
        let line = kid.next().unwrap_or_else(|e| panic!("cas[{backend}]: {e}"));
        conflicts += line
            .strip_prefix("done inc ")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("cas[{backend}]: a child said {line:?}"));
    }
    let secs = since(start);
    drop(kids);
    let counted = rt
        .block_on(store.read(&key))
        .unwrap_or_else(|e| panic!("reading the counter: {e}"))
        .and_then(|r| std::str::from_utf8(&r.value).ok()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("cas[{backend}]: the counter is gone or unreadable"));
    let expected = processes as u64 * each;
    crate::summary::torture(
        "processes-cas",
        backend,
        &[
            ("processes", processes.to_string()),
            ("each", each.to_string()),
            ("expected", expected.to_string()),
            ("counted", counted.to_string()),
            ("lost", expected.saturating_sub(counted).to_string()),
            ("conflicts", conflicts.to_string()),
            ("secs", format!("{secs:.1}")),
        ],
    );
    assert_eq!(
        counted,
        expected,
        "cas[{backend}]: {processes} processes x {each} increments ended at {counted}: {} updates lost",
        expected.saturating_sub(counted)
    );
    IncrementReport {
        expected,
        counted,
        conflicts,
        secs,
    }
}

/// What [`distinct_creates`] saw.
#[derive(Debug)]
pub struct CreateReport {
    /// Keys the processes created.
    pub created: u64,
    /// Of those, the ones listing returned.
    pub listed: u64,
    /// Wall time of the creates.
    pub secs: f64,
}

/// `processes` processes each create `each` keys of their own (`IfAbsent`) in the store at
/// `url`, all at once; listing must then return every one of them (a store that keeps an
/// index of its keys must not lose a concurrent creator's entry). Panics if not; appends a
/// `torture processes-create` line.
pub fn distinct_creates(
    backend: &str,
    url: &str,
    open: Opener,
    processes: usize,
    each: u64,
) -> CreateReport {
    let rt = runtime();
    let store = open_parent(&rt, open, url);
    let prefix = crate::services::unique("mp-new");
    let mut kids = spawn_ready(processes);
    let start = start_soon(true);
    for (i, kid) in kids.iter_mut().enumerate() {
        kid.send(&format!("{start} create {url} {prefix}-p{i} {each}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for kid in &kids {
        let line = kid
            .next()
            .unwrap_or_else(|e| panic!("create[{backend}]: {e}"));
        assert_eq!(line, "done create", "create[{backend}]");
    }
    let secs = since(start);
    drop(kids);
    let listed: BTreeSet<String> = rt
        .block_on(store.scan(KeyKind::Token, &ListFilter::all()))
        .unwrap_or_else(|e| panic!("listing: {e}"))
        .into_iter()
        .filter_map(|e| match e {
            ListEntry::Key(k) if k.parts().first().is_some_and(|u| u.starts_with(&prefix)) => {
                Some(k.encode())
            }
            _ => None,
        })
        .collect();
    let mut missing = Vec::new();
    for i in 0..processes {
        for n in 0..each {
            let key = created_key(&format!("{prefix}-p{i}"), n);
            if !listed.contains(&key.encode()) {
                missing.push(key);
            }
        }
    }
    // A missing key whose record is there was dropped from the listing, not never written.
    let stored_but_unlisted = missing
        .iter()
        .filter(|k| rt.block_on(store.read(k)).is_ok_and(|r| r.is_some()))
        .count();
    let created = processes as u64 * each;
    crate::summary::torture(
        "processes-create",
        backend,
        &[
            ("processes", processes.to_string()),
            ("each", each.to_string()),
            ("created", created.to_string()),
            ("listed", listed.len().to_string()),
            ("missing", missing.len().to_string()),
            ("stored_but_unlisted", stored_but_unlisted.to_string()),
            ("secs", format!("{secs:.1}")),
        ],
    );
    assert!(
        missing.is_empty() && listed.len() as u64 == created,
        "create[{backend}]: {processes} processes x {each} keys: {} listed, {} missing ({stored_but_unlisted} of them stored but not listed)",
        listed.len(),
        missing.len()
    );
    CreateReport {
        created,
        listed: listed.len() as u64,
        secs,
    }
}

/// The concurrent model check (see [`crate::concurrent_model_check`]) with each of a
/// history's `processes` tasks in a process of its own, `cases` random histories, all on
/// the store at `url` (each history on keys of its own). Panics on the first history the
/// rules cannot explain; appends a `torture processes-model` line.
pub fn concurrent_model_check(
    backend: &str,
    url: &str,
    open: Opener,
    processes: usize,
    cases: u32,
) {
    let rt = runtime();
    let store = open_parent(&rt, open, url);
    let kids = RefCell::new(spawn_ready(processes));
    let run = crate::services::unique("mp");
    let case_no = Cell::new(0u32);
    let (ops, successes, conflicts) = (Cell::new(0u64), Cell::new(0u64), Cell::new(0u64));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Each run of a history costs a round of every process; a few shrinks show enough.
        max_shrink_iters: 16,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(
        proptest::collection::vec(linear::op(true), 1..=8),
        processes..=processes,
    );
    let began = Instant::now();
    let result = runner.run(&strategy, |tasks| {
        case_no.set(case_no.get() + 1);
        let case = format!("{run}-{}", case_no.get());
        let mut salt = [0u8; 4];
        token_store_core::backend::fill_random(&mut salt)
            .map_err(|e| TestCaseError::fail(format!("random: {e}")))?;
        let salt = hex(&salt);
        let start = start_soon(case_no.get() == 1);
        let mut kids = kids.borrow_mut();
        for (task, (kid, ops)) in kids.iter_mut().zip(&tasks).enumerate() {
            let codes: Vec<String> = ops.iter().map(|&op| op_code(op)).collect();
            kid.send(&format!(
                "{start} history {url} {case} {salt} {task} {}",
                codes.join(",")
            ))
            .map_err(TestCaseError::fail)?;
        }
        let mut wire = Vec::new();
        for kid in kids.iter() {
            loop {
                let line = kid.next().map_err(TestCaseError::fail)?;
                if line == "done history" {
                    break;
                }
                let event = line
                    .strip_prefix("ev ")
                    .and_then(decode_event)
                    .ok_or_else(|| TestCaseError::fail(format!("a child said {line:?}")))?;
                wire.push(event);
            }
        }
        // Wall-clock nanoseconds to Instants on one axis (only their order and distances
        // matter to the checker).
        let t0 = wire.iter().map(|w| w.start).min().unwrap_or(0);
        let origin = Instant::now();
        let at = |ns: u64| origin + Duration::from_nanos(ns.saturating_sub(t0));
        let events: Vec<Event> = wire
            .into_iter()
            .map(|w| Event {
                task: w.task,
                key: w.key,
                start: at(w.start),
                end: at(w.end),
                what: w.what,
            })
            .collect();
        ops.set(ops.get() + events.len() as u64);
        for e in &events {
            match e.what {
                What::Wrote { .. } | What::Deleted { .. } => successes.set(successes.get() + 1),
                What::Conflict { .. } => conflicts.set(conflicts.get() + 1),
                What::Read { .. } => {}
            }
        }
        let mut finals = HashMap::new();
        for k in 0..linear::KEYS {
            let got = rt
                .block_on(store.read(&linear::skey(&case, k)))
                .map_err(|e| TestCaseError::fail(format!("final read: {e}")))?;
            finals.insert(k, got.map(|r| r.version));
        }
        for k in 0..linear::KEYS {
            let mine: Vec<&Event> = events.iter().filter(|e| e.key == k).collect();
            linear::check_key(&mine, finals[&k].as_ref())
                .map_err(|why| TestCaseError::fail(format!("history {case}, key k{k}: {why}")))?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("concurrent model check across {processes} processes[{backend}] failed: {e}");
    }
    crate::summary::torture(
        "processes-model",
        backend,
        &[
            ("processes", processes.to_string()),
            ("cases", cases.to_string()),
            ("ops", ops.get().to_string()),
            ("successes", successes.get().to_string()),
            ("conflicts", conflicts.get().to_string()),
            ("secs", format!("{:.1}", began.elapsed().as_secs_f64())),
        ],
    );
}
