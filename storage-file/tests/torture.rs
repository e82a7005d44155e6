//! The shared torture suites on the encrypted file store: 200 SIGKILL crash rounds through
//! `open_url`, the concurrent model check, hostile keys and stored bytes, and the file
//! format's own decoders fed hostile files (random and damaged record files, validly
//! encrypted records with hostile plaintext, hostile `store.json`).

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use token_store_conformance::hostile::{self, hostile_cases};
use token_store_conformance::proptest::prelude::*;
use token_store_conformance::proptest::sample::select;
use token_store_conformance::proptest::test_runner::{Config, TestCaseError, TestRunner};
use token_store_conformance::{
    Instance, concurrent_model_check, crash, model_check_cases, summary,
};
use token_store_conformance::{proptest, serde_json};
use token_store_core::backend::Cipher;
use token_store_core::{
    Error, KeyKind, KeySource, ListEntry, ListFilter, PutOptions, RawStore, StorageKey, StoreUrl,
};

async fn instance() -> token_store_core::Result<Instance> {
    let tmp = Arc::new(tempfile::tempdir().map_err(Error::config)?);
    let dir = tmp.path().join("store");
    let key = KeySource::KeyFile(tmp.path().join("key"));
    let store = common::arc(common::open(&dir, key.clone()).await?);
    Ok(Instance::with_reopen(store, move || {
        let tmp = tmp.clone();
        let dir = dir.clone();
        let key = key.clone();
        async move {
            let _keep = tmp;
            Ok(common::arc(common::open(&dir, key).await?))
        }
    }))
}

fn open_url(
    url: StoreUrl,
) -> token_store_conformance::BoxFuture<'static, token_store_core::Result<Arc<dyn RawStore>>> {
    Box::pin(async move { Ok(token_store_file::open_url(&url).await?.raw().clone()) })
}

/// The crash child (does nothing unless started by the crash harness).
#[test]
fn crash_child() {
    crash::child(open_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_rounds_file() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!(
        "file://{}?key_file={}",
        tmp.path().join("store").display(),
        tmp.path().join("key").display()
    );
    crash::run("file", &url, open_url, crash::rounds(200), None)
        .await
        .assert_ok("file");
}

#[test]
fn concurrent_model_file() {
    concurrent_model_check("file", instance, model_check_cases(256));
}

#[test]
fn hostile_keys_file() {
    hostile::hostile_keys("file", instance, hostile_cases(64));
}

#[test]
fn hostile_bytes_file() {
    hostile::hostile_bytes("file", instance, hostile_cases(64));
}

/// A store with one record, and what is needed to forge its files.
struct Forge {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    key_file: PathBuf,
    cipher: Cipher,
    key: StorageKey,
    path: PathBuf,
    valid: Vec<u8>,
}

async fn forge() -> Forge {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let key_file = tmp.path().join("key");
    let store = common::open(&dir, KeySource::KeyFile(key_file.clone()))
        .await
        .unwrap();
    let key = StorageKey::single(KeyKind::Meta, "hostile").unwrap();
    store
        .write(&key, b"valid value", &PutOptions::default())
        .await
        .unwrap();
    let (cipher, records) = common::store_cipher(&dir, &key_file);
    let path = records.join(cipher.keyed_name(key.encode().as_bytes()));
    let valid = std::fs::read(&path).unwrap();
    Forge {
        _tmp: tmp,
        dir,
        key_file,
        cipher,
        key,
        path,
        valid,
    }
}

/// Reads `f.key` and lists after `bytes` replaced its file: the read gives a typed error
/// (or, for a forged but well-formed record, exactly what it holds), the listing reports
/// the file as unreadable or lists the key, and the store still opens.
async fn read_forged(f: &Forge, bytes: &[u8]) -> Result<&'static str, String> {
    std::fs::write(&f.path, bytes).map_err(|e| e.to_string())?;
    let store = common::open(&f.dir, KeySource::KeyFile(f.key_file.clone()))
        .await
        .map_err(|e| format!("the store no longer opens: {e:?}"))?;
    let outcome = match store.read(&f.key).await {
        Ok(Some(_)) => "read",
        Ok(None) => "absent",
        Err(Error::Corrupt { .. }) => "corrupt",
        Err(Error::Integrity { .. }) => "integrity",
        Err(e) => return Err(format!("read gave {e:?}")),
    };
    let listed = store
        .scan(KeyKind::Meta, &ListFilter::all())
        .await
        .map_err(|e| format!("scan gave {e:?}"))?;
    if listed.len() > 1 {
        return Err(format!("one file listed as {listed:?}"));
    }
    if outcome == "read" && !matches!(listed.first(), Some(ListEntry::Key(k)) if *k == f.key) {
        return Err(format!("readable but listed as {listed:?}"));
    }
    Ok(outcome)
}

/// The plaintext layout of a record file (see the crate docs), with every field chosen by
/// the strategy, sealed with the store's real key under the file's real name: only the
/// decoder after decryption stands between these bytes and the caller.
fn plaintext(
    format: u8,
    key: &[u8],
    version: &[u8],
    expires: u64,
    value: &[u8],
    lies: [Option<u32>; 3],
    tail: &[u8],
) -> Vec<u8> {
    let mut p = vec![format];
    for (field, lie) in [(key, lies[0]), (version, lies[1])] {
        p.extend_from_slice(&lie.unwrap_or(field.len() as u32).to_le_bytes());
        p.extend_from_slice(field);
    }
    p.extend_from_slice(&expires.to_le_bytes());
    p.extend_from_slice(&lies[2].unwrap_or(value.len() as u32).to_le_bytes());
    p.extend_from_slice(value);
    p.extend_from_slice(tail);
    p
}

#[test]
fn hostile_record_files() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(forge());
    let name = f.path.file_name().unwrap().to_str().unwrap().to_owned();
    let encoded = f.key.encode().into_bytes();
    let valid = f.valid.clone();
    let len = valid.len();
    let lie =
        prop_oneof![3 => Just(None), 1 => any::<u32>().prop_map(Some), 1 => Just(Some(u32::MAX))];
    let sealed_plaintext = (
        prop_oneof![4 => Just(1u8), 1 => any::<u8>()],
        prop_oneof![4 => Just(encoded.clone()), 1 => proptest::collection::vec(any::<u8>(), 0..40)],
        proptest::collection::vec(any::<u8>(), 0..40),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        [lie.clone(), lie.clone(), lie],
        proptest::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map({
            let cipher = f.cipher.clone();
            let name = name.clone();
            move |(format, key, version, expires, value, lies, tail)| {
                let plain = plaintext(format, &key, &version, expires, &value, lies, &tail);
                let mut aad = b"TSF\x01".to_vec();
                aad.extend_from_slice(name.as_bytes());
                let mut file = b"TSF\x01".to_vec();
                file.extend(cipher.seal(&aad, &plain).unwrap());
                file
            }
        });
    let strategy = prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        2 => proptest::collection::vec((0..len, any::<u8>(), 0u8..3), 1..6).prop_map(move |edits| {
            let mut v = valid.clone();
            for (at, b, how) in edits {
                let at = at.min(v.len());
                match how {
                    0 if at < v.len() => v[at] ^= b | 1,
                    1 => v.insert(at, b),
                    _ => v.truncate(at),
                }
            }
            v
        }),
        3 => sealed_plaintext,
    ];
    let cases = hostile_cases(128);
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |bytes| {
            let outcome = rt
                .block_on(read_forged(&f, &bytes))
                .map_err(TestCaseError::fail)?;
            *outcomes.lock().unwrap().entry(outcome).or_insert(0u32) += 1;
            Ok(())
        })
        .unwrap();
    let outcomes = outcomes.into_inner().unwrap();
    println!("hostile record files: {outcomes:?}");
    summary::torture(
        "hostile-decoder",
        "file",
        &[
            ("cases", cases.to_string()),
            ("decoder", "record-file".into()),
            ("outcomes", format!("{outcomes:?}").replace(' ', "")),
        ],
    );
}

#[test]
fn hostile_store_headers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(forge());
    let header = std::fs::read(f.dir.join("store.json")).unwrap();
    let text = String::from_utf8(header.clone()).unwrap();
    let field = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u32>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        Just(serde_json::json!("d-../../../etc")),
        // Another well-formed record directory: must not make open delete the real one.
        Just(serde_json::json!(format!("d-{}", "0".repeat(32)))),
        Just(
            serde_json::json!({"format": 1, "kdf": "argon2id", "params": {"m_kib": 4294967295u32, "t": 4294967295u32, "p": 4294967295u32}, "salt": "00", "check": "00"})
        ),
        Just(serde_json::json!({"format": 1, "kdf": "raw", "check": "zz"})),
        Just(serde_json::json!([])),
    ];
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        hostile::hostile_json(),
        (select(&["magic", "format", "records", "key"][..]), field).prop_map({
            let text = text.clone();
            move |(name, value)| {
                let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                v[name] = value;
                serde_json::to_vec(&v).unwrap()
            }
        }),
    ];
    let cases = hostile_cases(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |bytes| {
            std::fs::write(f.dir.join("store.json"), &bytes).unwrap();
            let opened = rt.block_on(common::open(&f.dir, KeySource::KeyFile(f.key_file.clone())));
            match opened {
                Ok(store) => {
                    // It opened: the header must have been a valid one for this key.
                    rt.block_on(store.read(&f.key))
                        .map_err(|e| TestCaseError::fail(format!("opened, then {e:?}")))?;
                }
                Err(Error::Corrupt { .. } | Error::Config { .. } | Error::WrongKey { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("open gave {e:?}"))),
            }
            Ok(())
        })
        .unwrap();
    // Put the real header back: the store opens again, record intact.
    std::fs::write(f.dir.join("store.json"), &header).unwrap();
    let store = rt
        .block_on(common::open(&f.dir, KeySource::KeyFile(f.key_file.clone())))
        .unwrap();
    let got = rt.block_on(store.read(&f.key)).unwrap().unwrap();
    assert_eq!(got.value.as_slice(), b"valid value");
    summary::torture(
        "hostile-decoder",
        "file",
        &[
            ("cases", cases.to_string()),
            ("decoder", "store.json".into()),
        ],
    );
}

/// With `store.json` gone (deleted by hand, lost in a partial restore), `open` must refuse
/// with `Corrupt` rather than create a new store whose cleanup would delete every existing
/// `d-*` record directory (a bug this test found, now fixed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_store_json_does_not_delete_records() {
    let f = forge().await;
    std::fs::remove_file(f.dir.join("store.json")).unwrap();
    let opened = common::open(&f.dir, KeySource::KeyFile(f.key_file.clone())).await;
    let record_dirs = std::fs::read_dir(&f.dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("d-")
        })
        .count();
    assert!(
        matches!(opened, Err(token_store_core::Error::Corrupt { .. })),
        "open after losing store.json gave {:?}",
        opened.map(|_| ())
    );
    assert!(
        f.path.exists(),
        "open after losing store.json deleted the record file ({record_dirs} record dirs left)"
    );
}
