//! Concurrent model check: several tasks apply random compare-and-swap operations to the same
//! few keys at once, and the history they record must be explainable as one sequence of
//! writes ("linearizability-lite").
//!
//! Every written value is unique, so every successful write yields a version no other write
//! yields (also on backends whose versions are digests of the bytes). From the successes
//! alone the checker rebuilds, per key, the chain of versions (create -> CAS -> ... ->
//! delete -> create ...) and requires:
//!
//! 1. no version is produced twice;
//! 2. no two successful conditional writes or deletes start from the same version (the second
//!    would have overwritten a write it never saw: a lost update);
//! 3. every version but the final one is built upon (overwritten by a CAS or deleted) exactly
//!    once, and the final read returns the end of the chain: no acknowledged write vanishes;
//! 4. creates and deletes alternate: `creates - deletes` is 1 when the key ends present, else 0;
//! 5. reads return only versions some write produced, with exactly that write's bytes, and
//!    never a version older than one whose write had completed before the read started
//!    (real-time order along the chain; same for writes ordered along the chain);
//! 6. a conflict never names the version the caller was conditioned on as current.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use token_store_core::{Error, KeyKind, Precondition, PutOptions, RawStore, StorageKey, Version};

use crate::Factory;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// Read the key.
    Read(u8),
    /// Read, then write `IfVersion(read)` (or `IfAbsent` when absent).
    Cas(u8),
    /// Write `IfAbsent` without reading.
    Create(u8),
    /// Read, then delete `IfVersion(read)` when present.
    Delete(u8),
}

pub(crate) const KEYS: u8 = 2;

pub(crate) fn op(deletes: bool) -> impl Strategy<Value = Op> {
    let delete_weight = if deletes { 2 } else { 0 };
    prop_oneof![
        2 => (0..KEYS).prop_map(Op::Read),
        5 => (0..KEYS).prop_map(Op::Cas),
        2 => (0..KEYS).prop_map(Op::Create),
        delete_weight => (0..KEYS).prop_map(Op::Delete),
    ]
}

/// Key `k` of the history `case` (`""` for a history on a fresh store of its own).
pub(crate) fn skey(case: &str, k: u8) -> StorageKey {
    let user = if case.is_empty() {
        "linear".to_owned()
    } else {
        format!("linear-{case}")
    };
    StorageKey::new(
        KeyKind::Token,
        vec![user, format!("k{k}"), String::new(), String::new()],
    )
    .unwrap_or_else(|e| panic!("valid key: {e}"))
}

/// What one call did, with when it started and returned.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub(crate) task: usize,
    pub(crate) key: u8,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    pub(crate) what: What,
}

#[derive(Clone, Debug)]
pub(crate) enum What {
    Read {
        got: Option<(Version, Vec<u8>)>,
    },
    /// A successful write from `base` (`None`: from absent, by `IfAbsent`).
    Wrote {
        base: Option<Version>,
        new: Version,
        value: Vec<u8>,
    },
    /// A successful conditional delete of `base`.
    Deleted {
        base: Version,
    },
    /// A failed precondition.
    Conflict {
        base: Option<Version>,
        current: Option<Version>,
    },
}

/// Tallies of one run, for the report line.
#[derive(Default)]
struct Tally {
    ops: u64,
    successes: u64,
    conflicts: u64,
}

/// Runs `cases` random concurrent histories (2 to 4 tasks, up to 8 operations each, on 2 keys),
/// each on a fresh store from `factory`, and checks each as the module docs describe.
/// Call from a plain `#[test]`. Backends without compare-and-swap are reported and skipped.
pub fn concurrent_model_check(backend: &str, factory: impl Factory, cases: u32) {
    check(backend, factory, cases, true);
}

/// [`concurrent_model_check`] without deletes: for a backend with a known race between
/// delete and create, so that everything else stays checked while that is being fixed.
pub fn concurrent_model_check_without_deletes(backend: &str, factory: impl Factory, cases: u32) {
    check(backend, factory, cases, false);
}

fn check(backend: &str, factory: impl Factory, cases: u32, deletes: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let factory: Arc<dyn Factory> = Arc::new(factory);
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Shrinking re-runs whole concurrent histories; a few rounds show the culprit.
        max_shrink_iters: 64,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(proptest::collection::vec(op(deletes), 1..=8), 2..=4);
    let started = Instant::now();
    let skipped = std::sync::Mutex::new(None::<&str>);
    let result = runner.run(&strategy, |tasks| {
        rt.block_on(async {
            let instance = factory
                .create()
                .await
                .map_err(|e| TestCaseError::fail(format!("factory: {e}")))?;
            let events = run_history(instance.store.clone(), tasks).await?;
            let mut finals = HashMap::new();
            for k in 0..KEYS {
                let got = instance
                    .store
                    .read(&skey("", k))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("final read: {e}")))?;
                finals.insert(k, got.map(|r| r.version));
            }
            {
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                t.ops += events.len() as u64;
                for e in &events {
                    match e.what {
                        What::Wrote { .. } | What::Deleted { .. } => t.successes += 1,
                        What::Conflict { .. } => t.conflicts += 1,
                        What::Read { .. } => {}
                    }
                }
            }
            for k in 0..KEYS {
                let mine: Vec<&Event> = events.iter().filter(|e| e.key == k).collect();
                check_key(&mine, finals[&k].as_ref())
                    .map_err(|why| TestCaseError::fail(format!("key k{k}: {why}")))?;
            }
            Ok(())
        })
    });
    if let Some(why) = *skipped.lock().unwrap_or_else(|e| e.into_inner()) {
        println!("concurrent model check[{backend}]: not applicable ({why})");
        return;
    }
    match result {
        Ok(()) => {
            let t = tally.lock().unwrap_or_else(|e| e.into_inner());
            crate::summary::torture(
                "concurrent-model",
                backend,
                &[
                    ("cases", cases.to_string()),
                    ("deletes", deletes.to_string()),
                    ("ops", t.ops.to_string()),
                    ("successes", t.successes.to_string()),
                    ("conflicts", t.conflicts.to_string()),
                    ("secs", format!("{:.1}", started.elapsed().as_secs_f64())),
                ],
            );
        }
        Err(e) => panic!("concurrent model check[{backend}] failed: {e}"),
    }
}

async fn run_history(
    store: Arc<dyn RawStore>,
    tasks: Vec<Vec<Op>>,
) -> Result<Vec<Event>, TestCaseError> {
    let mut salt = [0u8; 4];
    token_store_core::backend::fill_random(&mut salt)
        .map_err(|e| TestCaseError::fail(format!("random: {e}")))?;
    let salt = u32::from_le_bytes(salt);
    let mut handles = Vec::new();
    for (task, ops) in tasks.into_iter().enumerate() {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut events = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                // Unique bytes per write, of varying length.
                let value =
                    format!("{salt:08x}/t{task}/o{i}/{}", "v".repeat((i * 37) % 200)).into_bytes();
                apply(&*store, "", task, op, value, &mut events).await?;
            }
            Ok::<_, String>(events)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let events = h
            .await
            .map_err(|e| TestCaseError::fail(format!("task panicked: {e}")))?
            .map_err(TestCaseError::fail)?;
        all.extend(events);
    }
    Ok(all)
}

/// Runs `op` of `task` on the keys of history `case`, recording what it saw in `events`.
pub(crate) async fn apply(
    store: &dyn RawStore,
    case: &str,
    task: usize,
    op: Op,
    value: Vec<u8>,
    events: &mut Vec<Event>,
) -> Result<(), String> {
    let (k, base) = match op {
        Op::Read(k) => {
            let (_, ev) = read_event(store, case, task, k).await?;
            events.push(ev);
            return Ok(());
        }
        Op::Create(k) => (k, None),
        Op::Cas(k) | Op::Delete(k) => {
            let (got, ev) = read_event(store, case, task, k).await?;
            events.push(ev);
            match (op, got) {
                (Op::Delete(_), None) => return Ok(()),
                (_, got) => (k, got.map(|(v, _)| v)),
            }
        }
    };
    let start = Instant::now();
    let what = if matches!(op, Op::Delete(_)) {
        let Some(base) = base.clone() else {
            return Ok(());
        };
        match store
            .remove(&skey(case, k), &Precondition::IfVersion(base.clone()))
            .await
        {
            Ok(true) => What::Deleted { base },
            Ok(false) => {
                return Err("a conditional delete of a present version deleted nothing".into());
            }
            Err(Error::Conflict { current, .. }) => What::Conflict {
                base: Some(base),
                current,
            },
            Err(e) => return Err(format!("delete: {e}")),
        }
    } else {
        let pre = match &base {
            Some(v) => Precondition::IfVersion(v.clone()),
            None => Precondition::IfAbsent,
        };
        match store
            .write(&skey(case, k), &value, &PutOptions::new(pre))
            .await
        {
            Ok(new) => What::Wrote { base, new, value },
            Err(Error::Conflict { current, .. }) => What::Conflict { base, current },
            Err(e) => return Err(format!("write: {e}")),
        }
    };
    events.push(Event {
        task,
        key: k,
        start,
        end: Instant::now(),
        what,
    });
    Ok(())
}

type Seen = Option<(Version, Vec<u8>)>;

async fn read_event(
    store: &dyn RawStore,
    case: &str,
    task: usize,
    k: u8,
) -> Result<(Seen, Event), String> {
    let start = Instant::now();
    let got = store
        .read(&skey(case, k))
        .await
        .map_err(|e| format!("read: {e}"))?;
    let end = Instant::now();
    let got = got.map(|r| (r.version, r.value.to_vec()));
    Ok((
        got.clone(),
        Event {
            task,
            key: k,
            start,
            end,
            what: What::Read { got },
        },
    ))
}

/// One key's history against the rules in the module docs.
pub(crate) fn check_key(events: &[&Event], last: Option<&Version>) -> Result<(), String> {
    // Writes by the version they produced; successes by the version they started from.
    let mut produced: HashMap<&Version, &Event> = HashMap::new();
    let mut built_on: HashMap<&Version, &Event> = HashMap::new();
    let (mut creates, mut deletes) = (0usize, 0usize);
    for e in events {
        match &e.what {
            What::Wrote { base, new, .. } => {
                if let Some(prev) = produced.insert(new, e) {
                    return Err(format!(
                        "version {new} produced twice (tasks {} and {})",
                        prev.task, e.task
                    ));
                }
                match base {
                    None => creates += 1,
                    Some(b) => {
                        if let Some(prev) = built_on.insert(b, e) {
                            return Err(format!(
                                "two successful writes from version {b} (tasks {} and {}): a lost update",
                                prev.task, e.task
                            ));
                        }
                    }
                }
            }
            What::Deleted { base } => {
                deletes += 1;
                if let Some(prev) = built_on.insert(base, e) {
                    return Err(format!(
                        "version {base} both deleted and overwritten/deleted again (tasks {} and {})",
                        prev.task, e.task
                    ));
                }
            }
            What::Conflict {
                base: Some(b),
                current: Some(c),
            } if b == c => {
                return Err(format!(
                    "task {}: conflict names the expected version {b} as current",
                    e.task
                ));
            }
            _ => {}
        }
    }
    // Bases and reads refer only to versions that were written, with their bytes.
    for e in events {
        match &e.what {
            What::Read {
                got: Some((v, bytes)),
            } => match produced.get(v) {
                Some(w) => {
                    if let What::Wrote { value, .. } = &w.what
                        && value != bytes
                    {
                        return Err(format!(
                            "task {} read version {v} with other bytes than task {} wrote",
                            e.task, w.task
                        ));
                    }
                }
                None => {
                    return Err(format!(
                        "task {} read version {v}, which no write produced",
                        e.task
                    ));
                }
            },
            What::Wrote { base: Some(b), .. } | What::Deleted { base: b }
                if !produced.contains_key(b) =>
            {
                return Err(format!(
                    "task {} succeeded from version {b}, which no write produced",
                    e.task
                ));
            }
            _ => {}
        }
    }
    // Every version but the final one was built upon: nothing acknowledged vanished.
    for (v, w) in &produced {
        if Some(*v) != last && !built_on.contains_key(v) {
            return Err(format!(
                "version {v} (written by task {}) vanished: never overwritten or deleted, yet not current (current: {last:?})",
                w.task
            ));
        }
    }
    if let Some(v) = last {
        if !produced.contains_key(v) {
            return Err(format!("the final version {v} was produced by no write"));
        }
        if built_on.contains_key(v) {
            return Err(format!(
                "the final version {v} was already overwritten or deleted"
            ));
        }
    }
    let want = usize::from(last.is_some());
    if creates != deletes + want {
        return Err(format!(
            "{creates} creates and {deletes} deletes, but the key ends {}",
            if last.is_some() { "present" } else { "absent" }
        ));
    }
    // Positions along each segment (create -> ... -> end), for real-time order.
    let mut pos: HashMap<&Version, (usize, usize)> = HashMap::new();
    let mut segment = 0;
    for e in events {
        let What::Wrote {
            base: None, new, ..
        } = &e.what
        else {
            continue;
        };
        let mut at = 0;
        let mut v = new;
        loop {
            pos.insert(v, (segment, at));
            match built_on.get(v).map(|e| &e.what) {
                Some(What::Wrote { new, .. }) => {
                    v = new;
                    at += 1;
                }
                _ => break,
            }
        }
        segment += 1;
    }
    if pos.len() != produced.len() {
        return Err(format!(
            "{} versions are not reachable from a create (a cycle?)",
            produced.len() - pos.len()
        ));
    }
    // Anything observed at a version must not have begun after a later version's write
    // had already completed.
    for e in events {
        let seen = match &e.what {
            What::Read { got: Some((v, _)) } => v,
            What::Wrote { new, .. } => new,
            _ => continue,
        };
        let (s, p) = pos[seen];
        for w in events {
            if let What::Wrote { new, .. } = &w.what {
                let (ws, wp) = pos[new];
                if ws == s && wp > p && w.end < e.start {
                    return Err(format!(
                        "task {} saw version {seen} after task {}'s later write {new} had completed (stale)",
                        e.task, w.task
                    ));
                }
            }
        }
    }
    Ok(())
}
