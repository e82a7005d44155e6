//! Crash harness: a child process writes to a store (named by URL) until it is killed with
//! SIGKILL at a random moment; then the store must open, every record must be whole (its old
//! or its new value, never a mix), and every write the child acknowledged must be there.
//!
//! The child is the backend's own test binary run again: the backend's test file defines
//!
//! ```ignore
//! #[test]
//! fn crash_child() {
//!     token_store_conformance::crash::child(|url| Box::pin(async move { my_backend::open_url(&url).await }));
//! }
//! ```
//!
//! which does nothing in a normal run, and calls [`run`] with the same opener and a URL of a
//! fresh store. Each round starts the child, lets it open the store and write (compare-and-swap
//! writes, unconditional writes and deletes over a few keys, values of varying size carrying a
//! checksum), kills it, reopens the store in the parent and checks every key and the listing.
//! A hook can crash the server at the same moment on some rounds (Redis with AOF).
//!
//! Rounds: 200 by default, `TOKEN_STORE_CRASH_ROUNDS` to change, 1000 with
//! `TOKEN_STORE_TORTURE_LONG=1`.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawStore, Result, StorageKey,
    StoreUrl,
};

use crate::BoxFuture;

/// Opens a store from its URL (the backend's `open_url`).
pub type Opener = fn(StoreUrl) -> BoxFuture<'static, Result<Arc<dyn RawStore>>>;

/// The name the child test must have in the backend's test file.
pub const CHILD_TEST: &str = "crash_child";

const ROLE_ENV: &str = "TOKEN_STORE_CRASH_CHILD_URL";
const START_ENV: &str = "TOKEN_STORE_CRASH_CHILD_START";
const KEYS: u64 = 7;

/// Rounds to run: `TOKEN_STORE_CRASH_ROUNDS`, else 1000 with `TOKEN_STORE_TORTURE_LONG=1`,
/// else `default`.
pub fn rounds(default: usize) -> usize {
    if let Some(n) = std::env::var("TOKEN_STORE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if crate::torture_long() {
        return default.max(1000);
    }
    default
}

fn key(k: u64) -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec![
            "crash".into(),
            format!("https://k{k}.example/mcp"),
            String::new(),
            String::new(),
        ],
    )
    .unwrap_or_else(|e| panic!("valid key: {e}"))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The value of write number `n`: `n`, a body derived from `n` (16 B to ~12 KiB, capped at
/// `max`), and a checksum of both.
pub(crate) fn value(n: u64, max: usize) -> Vec<u8> {
    let len = (16 + (n.wrapping_mul(2_654_435_761) % 12_000) as usize).min(max.saturating_sub(16));
    let mut v = n.to_le_bytes().to_vec();
    v.extend(n.to_le_bytes().iter().cycle().take(len));
    let sum = fnv1a(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// The `n` of a whole value; an error naming what is wrong otherwise.
pub(crate) fn check_value(v: &[u8], max: usize) -> std::result::Result<u64, String> {
    if v.len() < 16 {
        return Err(format!("a {}-byte value is torn", v.len()));
    }
    let (body, sum) = v.split_at(v.len() - 8);
    if fnv1a(body).to_le_bytes() != sum {
        return Err("checksum mismatch: a torn or mixed value".into());
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&body[..8]);
    let n = u64::from_le_bytes(n);
    if v != value(n, max).as_slice() {
        return Err(format!("value {n} is not what was written"));
    }
    Ok(n)
}

/// What operation `n` does to key `n % KEYS`, given whether the key is present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cas,
    Blind,
    Delete,
}

fn kind_of(n: u64, present: bool) -> Kind {
    if present && n % 11 == 5 {
        Kind::Delete
    } else if n % 9 == 4 {
        Kind::Blind
    } else {
        Kind::Cas
    }
}

/// The child side. Returns at once unless this process was started by [`run`].
pub fn child(open: Opener) {
    let Ok(url) = std::env::var(ROLE_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // libtest printed "test crash_child ... " without a newline: start our lines afresh.
    println!();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async move {
        let url = StoreUrl::parse(&url).unwrap_or_else(|e| panic!("child: url: {e}"));
        let store = open(url)
            .await
            .unwrap_or_else(|e| panic!("child: open: {e}"));
        let max = store.capabilities().max_value_size;
        println!("ready");
        for n in start.. {
            let k = key(n % KEYS);
            let current = store
                .read(&k)
                .await
                .unwrap_or_else(|e| panic!("child: read: {e}"));
            if let Some(cur) = &current
                && let Err(why) = check_value(&cur.value, max)
            {
                panic!("child: read a damaged record: {why}");
            }
            let result = match kind_of(n, current.is_some()) {
                Kind::Delete => {
                    let v = current.map(|c| c.version).unwrap_or_else(|| unreachable!());
                    store
                        .remove(&k, &Precondition::IfVersion(v))
                        .await
                        .map(|_| "del")
                }
                Kind::Blind => store
                    .write(&k, &value(n, max), &PutOptions::new(Precondition::Any))
                    .await
                    .map(|_| "ack"),
                Kind::Cas => {
                    let pre = match current {
                        Some(c) => Precondition::IfVersion(c.version),
                        None => Precondition::IfAbsent,
                    };
                    store
                        .write(&k, &value(n, max), &PutOptions::new(pre))
                        .await
                        .map(|_| "ack")
                }
            };
            match result {
                // Printed only once the store returned: an acknowledged operation.
                Ok(what) => println!("{what} {n}"),
                Err(e) => panic!("child: write {n}: {e}"),
            }
        }
    });
}

/// Hooks for crashing the server too, on some rounds.
pub struct ServerCrash {
    /// Every how many rounds (at the same moment as the client).
    pub every: usize,
    /// Kills the server (SIGKILL).
    pub kill: Box<dyn Fn() + Send + Sync>,
    /// Starts it again and waits until it answers.
    pub restart: Box<dyn Fn() + Send + Sync>,
}

/// What a crash run saw.
#[derive(Debug, Default, Clone)]
pub struct CrashReport {
    /// Rounds run (one SIGKILL of the client each).
    pub rounds: usize,
    /// Server SIGKILLs (with [`ServerCrash`]).
    pub server_kills: usize,
    /// Operations the children acknowledged.
    pub acked: u64,
    /// Acknowledged operations whose effect was missing afterwards.
    pub lost: u64,
    /// Records found torn, mixed or not what was written.
    pub torn: u64,
    /// Rounds where the store did not open or a key could not be read.
    pub unreadable: u64,
    /// Listings that missed a present record (or had unreadable entries).
    pub bad_listings: u64,
    /// Listings that named a key whose record was absent (e.g. a delete interrupted between
    /// its steps): reported, not a failure.
    pub stale_listed: u64,
    /// Unacknowledged in-flight operations that had taken effect (allowed), counting those
    /// that landed only after the round they were sent in (the server received them before
    /// the client died but applied them later).
    pub inflight_landed: u64,
    /// Of those, the ones that landed late.
    pub landed_late: u64,
    /// Children that died before they were killed.
    pub child_failures: u64,
    /// Failure descriptions (at most 20).
    pub failures: Vec<String>,
}

impl CrashReport {
    fn fail(&mut self, why: String) {
        if self.failures.len() < 20 {
            self.failures.push(why);
        }
    }

    /// Panics listing the failures, if any.
    pub fn assert_ok(&self, backend: &str) {
        assert!(
            self.failures.is_empty()
                && self.lost == 0
                && self.torn == 0
                && self.unreadable == 0
                && self.bad_listings == 0
                && self.child_failures == 0,
            "crash[{backend}]: {self:?}"
        );
        assert!(
            self.acked > self.rounds as u64,
            "crash[{backend}]: the children barely wrote ({} acknowledged in {} rounds)",
            self.acked,
            self.rounds
        );
    }
}

/// The state of one key: the `n` of its value, or absent.
type State = Option<u64>;

struct ChildProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(url: &str, start: u64) -> ChildProc {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, url)
        .env(START_ENV, start.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the crash child: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| unreachable!());
    let stderr = child.stderr.take().unwrap_or_else(|| unreachable!());
    let (tx, lines) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // Panic messages of the child, kept for the report.
            if line.contains("child:") && tx2.send(format!("stderr {line}")).is_err() {
                break;
            }
        }
    });
    ChildProc { child, lines }
}

/// Runs `rounds` crash rounds against the store at `url` (which must be fresh and not used
/// by anything else), appends a `torture crash` line to the report and returns what it saw.
/// Call from a multi-threaded tokio test; kill moments vary with a seed printed first.
pub async fn run(
    backend: &str,
    url: &str,
    open: Opener,
    rounds: usize,
    server: Option<ServerCrash>,
) -> CrashReport {
    let mut crasher = Rounds::new(backend, url, open).await;
    for _ in 0..rounds {
        if !crasher.round(server.as_ref()).await {
            break;
        }
    }
    crasher.finish()
}

/// Crash rounds against one store, one at a time, with what they learned kept between them:
/// for harnesses that interleave rounds with other work (the soak test kills a writer now and
/// then while its own load runs on other keys of the same store). [`run`] is a loop over it.
pub struct Rounds {
    backend: String,
    url: String,
    parsed: StoreUrl,
    open: Opener,
    max: usize,
    rng: Rng,
    report: CrashReport,
    known: HashMap<u64, State>,
    // In-flight operations of killed children that had not (yet) taken effect, per key: a
    // request the server already received may still be applied after the client died, until
    // a later acknowledged operation on that key supersedes it.
    pending: HashMap<u64, Vec<u64>>,
    next_n: u64,
    started: Instant,
}

impl Rounds {
    /// Opens the store once (creating it: key files, headers, schema, never in a child).
    /// Its crash keys (user `crash`) must be used by nothing else.
    pub async fn new(backend: &str, url: &str, open: Opener) -> Self {
        let parsed = StoreUrl::parse(url).unwrap_or_else(|e| panic!("url: {e}"));
        let store = open(parsed.clone())
            .await
            .unwrap_or_else(|e| panic!("crash[{backend}]: the first open failed: {e}"));
        let max = store.capabilities().max_value_size;
        drop(store);
        Rounds {
            backend: backend.to_owned(),
            url: url.to_owned(),
            parsed,
            open,
            max,
            rng: Rng::new(),
            report: CrashReport::default(),
            known: (0..KEYS).map(|k| (k, None)).collect(),
            pending: HashMap::new(),
            next_n: 0,
            started: Instant::now(),
        }
    }

    /// What the rounds so far saw.
    pub fn report(&self) -> &CrashReport {
        &self.report
    }

    /// One round: a child writes until it is killed (and the server with it on `server`'s
    /// rounds), then the store is reopened and checked. `false` when the store did not open
    /// again (recorded as a failure): further rounds make no sense.
    pub async fn round(&mut self, server: Option<&ServerCrash>) -> bool {
        let round = self.report.rounds;
        let (open, max, backend) = (self.open, self.max, self.backend.clone());
        let report = &mut self.report;
        let mut child = spawn(&self.url, self.next_n);
        let blind = round.is_multiple_of(5);
        if blind {
            // Early kills: while the child starts or opens the store.
            std::thread::sleep(Duration::from_millis(self.rng.below(40)));
        } else {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match child.lines.recv_timeout(left) {
                    Ok(l) if l.trim() == "ready" => break,
                    Ok(l) if l.starts_with("stderr ") => {
                        report.fail(format!("round {round}: child: {l}"));
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        report.fail(format!("round {round}: the child never got ready: {e}"));
                        break;
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(self.rng.below(250_000)));
        }
        let server_round = server.is_some_and(|s| s.every > 0 && round % s.every == s.every - 1);
        let _ = child.child.kill(); // SIGKILL
        if server_round && let Some(s) = server {
            (s.kill)();
            report.server_kills += 1;
        }
        let status = child.child.wait().ok();
        let mut acks: Vec<(u64, bool)> = Vec::new();
        while let Ok(line) = child.lines.recv_timeout(Duration::from_secs(10)) {
            let line = line.trim();
            if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse().ok()) {
                acks.push((n, true));
            } else if let Some(n) = line.strip_prefix("del ").and_then(|n| n.parse().ok()) {
                acks.push((n, false));
            } else if line.starts_with("stderr ") {
                report.child_failures += 1;
                report.fail(format!("round {round}: {line}"));
            }
        }
        drop(child);
        // Exited by itself rather than by our signal: it failed.
        #[cfg(unix)]
        if let Some(status) = status {
            use std::os::unix::process::ExitStatusExt;
            if status.signal().is_none() {
                report.child_failures += 1;
                report.fail(format!(
                    "round {round}: the child exited by itself: {status}"
                ));
            }
        }
        if server_round && let Some(s) = server {
            (s.restart)();
        }
        report.acked += acks.len() as u64;
        let known = &mut self.known;
        let pending = &mut self.pending;
        let mut expected = known.clone();
        for &(n, wrote) in &acks {
            expected.insert(n % KEYS, wrote.then_some(n));
            pending.remove(&(n % KEYS));
        }
        let inflight = acks.last().map_or(self.next_n, |(n, _)| n + 1);
        self.next_n = inflight + 1;
        pending.entry(inflight % KEYS).or_default().push(inflight);

        let store = match reopen(open, &self.parsed).await {
            Ok(s) => s,
            Err(e) => {
                report.unreadable += 1;
                report.fail(format!("round {round}: the store does not open: {e}"));
                return false;
            }
        };
        let mut present = BTreeSet::new();
        for k in 0..KEYS {
            let stored: State = match store.read(&key(k)).await {
                Ok(None) => None,
                Ok(Some(r)) => match check_value(&r.value, max) {
                    Ok(n) => Some(n),
                    Err(why) => {
                        report.torn += 1;
                        report.fail(format!("round {round}: k{k}: {why}"));
                        continue;
                    }
                },
                Err(e) => {
                    report.unreadable += 1;
                    report.fail(format!("round {round}: read k{k}: {e}"));
                    continue;
                }
            };
            let want = expected[&k];
            // An in-flight operation may have landed: its value, or absent if it was a
            // delete (only ever of a present key).
            let waiting = pending.get(&k).cloned().unwrap_or_default();
            let landed = waiting.iter().copied().find(|&p| {
                stored == Some(p)
                    || (stored.is_none() && want.is_some() && kind_of(p, true) == Kind::Delete)
            });
            if stored != want && landed.is_none() {
                report.lost += 1;
                report.fail(format!(
                    "round {round}: k{k} holds {stored:?}, acknowledged {want:?} (in flight: {inflight}, pending: {waiting:?})"
                ));
            }
            if let Some(p) = landed
                && stored != want
            {
                report.inflight_landed += 1;
                if p != inflight {
                    report.landed_late += 1;
                }
                pending.remove(&k);
            }
            if stored.is_some() {
                present.insert(k);
            }
            known.insert(k, stored);
        }
        match store.scan(KeyKind::Token, &ListFilter::user("crash")).await {
            Ok(entries) => {
                let mut listed = BTreeSet::new();
                let mut odd = Vec::new();
                for e in entries {
                    match e {
                        ListEntry::Key(key) if ListFilter::user("crash").matches(&key) => {
                            if let Some(k) = (0..KEYS).find(|k| self::key(*k) == key) {
                                listed.insert(k);
                            }
                        }
                        ListEntry::Key(_) => {}
                        other => odd.push(format!("{other:?}")),
                    }
                }
                if !present.is_subset(&listed) || !odd.is_empty() {
                    report.bad_listings += 1;
                    report.fail(format!(
                        "round {round}: listing {listed:?} vs records {present:?}, unreadable {odd:?}"
                    ));
                } else if listed != present {
                    report.stale_listed += 1;
                    println!(
                        "crash[{backend}] round {round}: listing {listed:?} names absent records (records {present:?})"
                    );
                }
            }
            Err(e) => {
                report.bad_listings += 1;
                report.fail(format!("round {round}: listing failed: {e}"));
            }
        }
        report.rounds += 1;
        true
    }

    /// Appends the `torture crash` line to the report and returns what all rounds saw.
    pub fn finish(self) -> CrashReport {
        let report = self.report;
        crate::summary::torture(
            "crash",
            &self.backend,
            &[
                ("rounds", report.rounds.to_string()),
                ("kills", report.rounds.to_string()),
                ("server_kills", report.server_kills.to_string()),
                ("acked", report.acked.to_string()),
                ("lost", report.lost.to_string()),
                ("torn", report.torn.to_string()),
                ("unreadable", report.unreadable.to_string()),
                ("bad_listings", report.bad_listings.to_string()),
                ("stale_listed", report.stale_listed.to_string()),
                ("inflight_landed", report.inflight_landed.to_string()),
                ("landed_late", report.landed_late.to_string()),
                ("child_failures", report.child_failures.to_string()),
                (
                    "secs",
                    format!("{:.1}", self.started.elapsed().as_secs_f64()),
                ),
            ],
        );
        report
    }
}

async fn reopen(open: Opener, url: &StoreUrl) -> Result<Arc<dyn RawStore>> {
    // A restarted server may still be loading (Redis replays its AOF): retry briefly, but
    // only on errors that say so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match open(url.clone()).await {
            Err(e @ Error::Unavailable { .. }) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// A small xorshift PRNG: kill moments need to vary, not to be unpredictable.
pub(crate) struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let mut b = [0u8; 8];
        let _ = token_store_core::backend::fill_random(&mut b);
        let seed = u64::from_le_bytes(b) | 1;
        println!("crash: kill-moment seed {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_check_themselves() {
        for n in [0, 1, 7, 12345, u64::MAX / 3] {
            let v = value(n, 1 << 20);
            assert_eq!(check_value(&v, 1 << 20), Ok(n));
            let mut torn = v.clone();
            torn.truncate(v.len() / 2);
            assert!(check_value(&torn, 1 << 20).is_err());
        }
        assert!(value(3, 100).len() <= 100);
    }
}
