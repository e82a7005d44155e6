//! Model-based property test: random operation sequences applied to a store and to a plain
//! map must agree on every result, every value and every version.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawStore, StorageKey, Version,
};

use crate::Factory;

#[derive(Clone, Debug)]
enum Cond {
    Any,
    IfAbsent,
    IfCurrent,
    IfStale,
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8, Cond),
    Delete(u8, Cond),
    Get(u8),
    List,
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        Just(Cond::Any),
        Just(Cond::IfAbsent),
        Just(Cond::IfCurrent),
        Just(Cond::IfStale)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, any::<u8>(), cond()).prop_map(|(k, v, c)| Op::Put(k, v, c)),
        (0u8..4, cond()).prop_map(|(k, c)| Op::Delete(k, c)),
        (0u8..4).prop_map(Op::Get),
        Just(Op::List),
    ]
}

fn skey(k: u8) -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec![
            "model".into(),
            format!("k{k}"),
            String::new(),
            String::new(),
        ],
    )
    .unwrap_or_else(|e| panic!("valid key: {e}"))
}

fn value(v: u8) -> Vec<u8> {
    // Varied lengths so size-dependent code paths are exercised too.
    vec![v; 1 + (v as usize % 7) * 13]
}

/// Cases per backend: `TOKEN_STORE_PROPTEST_CASES`, else `default`.
pub fn model_check_cases(default: u32) -> u32 {
    std::env::var("TOKEN_STORE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` random operation sequences, each on a fresh store, against a map model.
/// Call from a plain `#[test]` (it builds its own runtime). Prints the number of cases run.
pub fn model_check(backend: &str, factory: impl Factory, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..32), |ops| {
        rt.block_on(async {
            let instance = factory
                .create()
                .await
                .map_err(|e| TestCaseError::fail(format!("factory: {e}")))?;
            apply(&*instance.store, &ops).await
        })
    });
    match result {
        Ok(()) => {
            let line = format!("model check[{backend}]: {cases} cases passed");
            println!("{line}");
            if let Some(path) = std::env::var_os("TOKEN_STORE_CONFORMANCE_REPORT") {
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(f, "{line}");
                }
            }
        }
        Err(e) => panic!("model check[{backend}] failed: {e}"),
    }
}

async fn apply(store: &dyn RawStore, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model: HashMap<u8, (Vec<u8>, Version)> = HashMap::new();
    let mut seen: Vec<Version> = Vec::new();
    for op in ops {
        match op {
            Op::Put(k, v, c) => {
                let current = model.get(k).map(|(_, ver)| ver.clone());
                let Some((pre, should_succeed)) = precondition(c, current.as_ref(), &seen) else {
                    continue;
                };
                let result = store
                    .write(&skey(*k), &value(*v), &PutOptions::new(pre))
                    .await;
                match (result, should_succeed) {
                    (Ok(ver), true) => {
                        seen.push(ver.clone());
                        model.insert(*k, (value(*v), ver));
                    }
                    (Err(Error::Conflict { current: got, .. }), false) => {
                        prop_assert_eq!(got, current, "conflict names the wrong version");
                    }
                    (other, expected) => {
                        return Err(TestCaseError::fail(format!(
                            "{op:?}: got {other:?}, expected success = {expected}"
                        )));
                    }
                }
            }
            Op::Delete(k, c) => {
                let current = model.get(k).map(|(_, ver)| ver.clone());
                let Some((pre, should_succeed)) = precondition(c, current.as_ref(), &seen) else {
                    continue;
                };
                let result = store.remove(&skey(*k), &pre).await;
                match (result, should_succeed) {
                    (Ok(existed), true) => {
                        prop_assert_eq!(existed, current.is_some(), "delete's existed flag");
                        model.remove(k);
                    }
                    (Err(Error::Conflict { .. }), false) => {}
                    (other, expected) => {
                        return Err(TestCaseError::fail(format!(
                            "{op:?}: got {other:?}, expected success = {expected}"
                        )));
                    }
                }
            }
            Op::Get(k) => {
                let got = store
                    .read(&skey(*k))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("get: {e}")))?;
                match (got, model.get(k)) {
                    (None, None) => {}
                    (Some(rec), Some((val, ver))) => {
                        prop_assert_eq!(rec.value.as_slice(), val.as_slice());
                        prop_assert_eq!(&rec.version, ver);
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "get {k}: store has {:?}, model {:?}",
                            got.is_some(),
                            want.is_some()
                        )));
                    }
                }
            }
            Op::List => {
                let listed = store
                    .scan(KeyKind::Token, &ListFilter::user("model"))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("list: {e}")))?;
                let mut keys: Vec<StorageKey> = listed
                    .into_iter()
                    .filter_map(|e| match e {
                        ListEntry::Key(k) if ListFilter::user("model").matches(&k) => Some(k),
                        _ => None,
                    })
                    .collect();
                keys.sort();
                keys.dedup();
                let mut want: Vec<StorageKey> = model.keys().map(|k| skey(*k)).collect();
                want.sort();
                prop_assert_eq!(keys, want);
            }
        }
    }
    Ok(())
}

/// The precondition to send and whether the model says it holds; `None` to skip the op.
fn precondition(
    c: &Cond,
    current: Option<&Version>,
    seen: &[Version],
) -> Option<(Precondition, bool)> {
    Some(match c {
        Cond::Any => (Precondition::Any, true),
        Cond::IfAbsent => (Precondition::IfAbsent, current.is_none()),
        Cond::IfCurrent => match current {
            Some(v) => (Precondition::IfVersion(v.clone()), true),
            None => return None,
        },
        Cond::IfStale => {
            let stale = seen.iter().rev().find(|v| Some(*v) != current)?;
            (Precondition::IfVersion(stale.clone()), false)
        }
    })
}
