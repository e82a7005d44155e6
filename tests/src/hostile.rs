//! Hostile input, bounded proptest runs every backend takes:
//!
//! - [`hostile_keys`]: keys of every odd character (NUL, controls, `:`/`/`/`%`/`#`, `.`/`..`,
//!   glob and shell characters, bidi and zero-width marks, astral characters) and of extreme
//!   length around [`MAX_ENCODED_KEY_LEN`]: each one round-trips (write, read back the same
//!   bytes and version, listed, deleted) or fails with [`Error::InvalidKey`] — also when the
//!   invalid key reaches the backend's `write` directly, past the typed layer's check.
//! - [`hostile_bytes`]: stored bytes the store did not write (random bytes, damaged record
//!   JSON, hostile JSON: deep nesting, huge numbers, lone surrogates, wrong types) at token,
//!   client and state keys: the backend hands back exactly those bytes, and the typed API
//!   gives the record or [`Error::Corrupt`], never a panic, and listings and the state purge
//!   keep working.
//!
//! The strategies are public so backend tests can feed them to their own decoders (files,
//! Redis values, Vault responses).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use token_store_core::backend::percent_encode;
use token_store_core::{
    ClientKey, ClientRegistration, Error, KeyKind, ListEntry, ListFilter, MAX_ENCODED_KEY_LEN,
    Precondition, PutOptions, RawStore, StorageKey, TokenKey, TokenRecord, TokenStore, Version,
};

use crate::Factory;

/// Cases per hostile run: `TOKEN_STORE_HOSTILE_CASES`, else `default` (x8 with
/// `TOKEN_STORE_TORTURE_LONG=1`).
pub fn hostile_cases(default: u32) -> u32 {
    if let Some(n) = std::env::var("TOKEN_STORE_HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if crate::torture_long() {
        default * 8
    } else {
        default
    }
}

/// Pieces of key parts that have broken key encodings somewhere.
pub const PALETTE: &[&str] = &[
    "",
    ":",
    "::",
    "/",
    "//",
    "%",
    "%41",
    "%%",
    "%2F",
    "%zz",
    "#",
    "#client",
    "#meta:",
    ".",
    "..",
    "../",
    "./",
    "*",
    "?",
    "[",
    "]",
    "[a-z]",
    "\\",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\0",
    "\u{1}",
    "\u{7f}",
    "\u{80}",
    "\u{a0}",
    "\u{feff}",
    "\u{200b}",
    "\u{202e}",
    "\u{2028}",
    "🦀",
    "ü",
    "用户",
    "'",
    "\"",
    "${HOME}",
    "$(id)",
    "`",
    ";",
    "&",
    "=",
    "+",
    "~",
    "-",
    "_",
    "{}",
    "<>",
    "|",
    "!",
    "@",
    ",",
    "\u{10ffff}",
    "\u{fffd}",
    "A",
    "a",
    "0",
    "https://",
    "?q=1#f",
    "CON",
    "nul",
    "aux.txt",
    "~user",
    "$",
    "^",
];

/// One key part: arbitrary characters, palette pieces, or a medium-long run.
pub fn key_part() -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::collection::vec(any::<char>(), 0..20).prop_map(String::from_iter),
        4 => proptest::collection::vec(select(PALETTE), 0..6).prop_map(|v| v.concat()),
        1 => (select(PALETTE), 1usize..300).prop_map(|(p, n)| p.repeat(n)),
    ]
    .boxed()
}

/// A key whose encoded form is within a few bytes of [`MAX_ENCODED_KEY_LEN`] (on both sides).
pub fn boundary_key() -> BoxedStrategy<(KeyKind, Vec<String>)> {
    (select(&["a", "ü", "%", ":", "🦀", "\0"][..]), -12i64..12)
        .prop_map(|(c, delta)| {
            let enc = percent_encode(c).len() as i64;
            // "#meta:" precedes the single part.
            let target = MAX_ENCODED_KEY_LEN as i64 - 6 + delta;
            let n = (target / enc).max(1) as usize;
            (KeyKind::Meta, vec![c.repeat(n)])
        })
        .boxed()
}

fn any_key() -> BoxedStrategy<(KeyKind, Vec<String>)> {
    prop_oneof![
        6 => (
            select(&KeyKind::ALL[..]),
            proptest::collection::vec(key_part(), 4)
        )
            .prop_map(|(kind, mut parts)| {
                parts.truncate(kind.arity());
                (kind, parts)
            }),
        1 => boundary_key(),
    ]
    .boxed()
}

/// Tallies of a hostile-keys run.
#[derive(Default)]
struct KeyTally {
    keys: u64,
    round_tripped: u64,
    core_rejected: u64,
    backend_rejected: u64,
}

/// What happened to one hostile key.
enum KeyOutcome {
    RoundTripped,
    CoreRejected,
    BackendRejected,
}

impl KeyTally {
    fn add(&mut self, o: KeyOutcome) {
        self.keys += 1;
        match o {
            KeyOutcome::RoundTripped => self.round_tripped += 1,
            KeyOutcome::CoreRejected => self.core_rejected += 1,
            KeyOutcome::BackendRejected => self.backend_rejected += 1,
        }
    }
}

/// Runs `cases` proptest cases of 1 to 6 hostile keys each on fresh stores from `factory`
/// (see the module docs), plus every palette piece alone in every part position.
pub fn hostile_keys(backend: &str, factory: impl Factory, cases: u32) {
    let rt = runtime();
    let factory: Arc<dyn Factory> = Arc::new(factory);
    let started = Instant::now();
    let tally = std::sync::Mutex::new(KeyTally::default());
    // The fixed corpus first: each palette piece as each token part.
    rt.block_on(async {
        let instance = factory
            .create()
            .await
            .unwrap_or_else(|e| panic!("hostile keys[{backend}]: factory: {e}"));
        for (n, piece) in PALETTE.iter().enumerate() {
            for at in 0..4 {
                let mut parts = vec![
                    format!("u{n}"),
                    "r".to_owned(),
                    String::new(),
                    String::new(),
                ];
                parts[at] = format!("{}{piece}", parts[at]);
                match one_key(&*instance.store, KeyKind::Token, parts).await {
                    Ok(o) => tally.lock().unwrap_or_else(|e| e.into_inner()).add(o),
                    Err(why) => {
                        panic!("hostile keys[{backend}]: palette {piece:?} in part {at}: {why}")
                    }
                }
            }
        }
    });
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(any_key(), 1..=6), |keys| {
        rt.block_on(async {
            let instance = factory
                .create()
                .await
                .map_err(|e| TestCaseError::fail(format!("factory: {e}")))?;
            let mut seen = HashSet::new();
            for (kind, parts) in keys {
                if !seen.insert((kind, parts.clone())) {
                    continue;
                }
                let o = one_key(&*instance.store, kind, parts.clone())
                    .await
                    .map_err(|why| {
                        TestCaseError::fail(format!(
                            "{kind:?} key {:?}: {why}",
                            parts.iter().map(|p| shorten(p)).collect::<Vec<_>>()
                        ))
                    })?;
                tally.lock().unwrap_or_else(|e| e.into_inner()).add(o);
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("hostile keys[{backend}] failed: {e}");
    }
    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    crate::summary::torture(
        "hostile-keys",
        backend,
        &[
            ("cases", (cases as usize + PALETTE.len()).to_string()),
            ("keys", t.keys.to_string()),
            ("round_tripped", t.round_tripped.to_string()),
            ("invalid_key_core", t.core_rejected.to_string()),
            ("invalid_key_backend", t.backend_rejected.to_string()),
            ("secs", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
}

fn shorten(p: &str) -> String {
    if p.chars().count() > 40 {
        let head: String = p.chars().take(20).collect();
        format!("{head:?}... ({} bytes)", p.len())
    } else {
        format!("{p:?}")
    }
}

/// An unvalidated storage key, as a caller of the byte-level API could build one.
/// Built through the encoded form, which `StorageKey::decode` does not validate.
fn unchecked(kind: KeyKind, parts: &[String]) -> Option<StorageKey> {
    if !matches!(kind, KeyKind::Token | KeyKind::Client) || parts.len() != kind.arity() {
        return None;
    }
    let mut encoded: Vec<String> = kind.marker().map(str::to_owned).into_iter().collect();
    encoded.extend(parts.iter().map(|p| percent_encode(p)));
    StorageKey::decode(&encoded.join(":"))
}

async fn one_key(
    store: &dyn RawStore,
    kind: KeyKind,
    parts: Vec<String>,
) -> std::result::Result<KeyOutcome, String> {
    let key = match StorageKey::new(kind, parts.clone()) {
        Ok(k) => k,
        Err(Error::InvalidKey { .. }) => {
            // The backend must refuse it too when it gets it past the typed layer.
            if let Some(raw) = unchecked(kind, &parts) {
                match store.write(&raw, b"x", &PutOptions::default()).await {
                    Err(Error::InvalidKey { .. }) => {}
                    other => {
                        return Err(format!(
                            "an invalid key reached write and gave {:?}",
                            other.map(|_| ())
                        ));
                    }
                }
                match store.read(&raw).await {
                    Err(Error::InvalidKey { .. }) | Ok(None) => {}
                    other => return Err(format!("reading an invalid key gave {other:?}")),
                }
            }
            return Ok(KeyOutcome::CoreRejected);
        }
        Err(e) => return Err(format!("StorageKey::new gave {e:?}")),
    };
    let mut salt = [0u8; 8];
    token_store_core::backend::fill_random(&mut salt).map_err(|e| e.to_string())?;
    let value: Vec<u8> = salt
        .iter()
        .chain(key.encode().as_bytes().iter().take(64))
        .copied()
        .collect();
    let version = match store.write(&key, &value, &PutOptions::default()).await {
        Ok(v) => v,
        Err(Error::InvalidKey { .. }) => return Ok(KeyOutcome::BackendRejected),
        Err(e) => return Err(format!("write: {e:?}")),
    };
    let got = store
        .read(&key)
        .await
        .map_err(|e| format!("read: {e:?}"))?
        .ok_or("written, then absent")?;
    if got.value.as_slice() != value.as_slice() {
        return Err("read back other bytes".into());
    }
    if got.version != version {
        return Err(format!(
            "read version {} after writing {version}",
            got.version
        ));
    }
    let filter = if kind.arity() > 1 {
        ListFilter::user(key.parts()[0].clone())
    } else {
        ListFilter::all()
    };
    let listed = store
        .scan(kind, &filter)
        .await
        .map_err(|e| format!("scan: {e:?}"))?;
    let hits = listed
        .iter()
        .filter(|e| matches!(e, ListEntry::Key(k) if *k == key))
        .count();
    if hits != 1 {
        let unreadable: Vec<_> = listed
            .iter()
            .filter(|e| matches!(e, ListEntry::Unreadable { .. }))
            .collect();
        return Err(format!(
            "listed {hits} times among {} entries (unreadable: {unreadable:?})",
            listed.len()
        ));
    }
    if !store
        .remove(&key, &Precondition::IfVersion(version))
        .await
        .map_err(|e| format!("remove: {e:?}"))?
    {
        return Err("remove found nothing".into());
    }
    if store
        .read(&key)
        .await
        .map_err(|e| format!("read after remove: {e:?}"))?
        .is_some()
    {
        return Err("still there after remove".into());
    }
    Ok(KeyOutcome::RoundTripped)
}

/// A valid token record's JSON, for mutation.
pub fn valid_record_json() -> Vec<u8> {
    let mut r = TokenRecord::new(crate::secrets::secret("hostile-access"))
        .with_refresh_token(crate::secrets::secret("hostile-refresh"))
        .with_scopes(["read", "write"]);
    r.expires_at = Some(1_900_000_000.5);
    r.metadata
        .insert("nested".into(), serde_json::json!({"a": [1, {"b": null}]}));
    serde_json::to_vec(&r).unwrap_or_else(|e| panic!("serialise: {e}"))
}

/// Hostile JSON documents: deep nesting, huge numbers, bad escapes, wrong types.
pub fn hostile_json() -> BoxedStrategy<Vec<u8>> {
    let fixed: Vec<&'static str> = vec![
        "",
        "null",
        "true",
        "0",
        "-0",
        "1e400",
        "-1e400",
        "18446744073709551616",
        "\"\"",
        "[]",
        "{}",
        "\u{feff}{}",
        "{\"access_token\":null}",
        "{\"access_token\":123}",
        "{\"access_token\":[\"a\"]}",
        "{\"access_token\":\"x\",\"expires_at\":\"soon\"}",
        "{\"access_token\":\"x\",\"expires_at\":1e400}",
        "{\"access_token\":\"x\",\"obtained_at\":-1e308}",
        "{\"access_token\":\"x\",\"scopes\":\"read\"}",
        "{\"access_token\":\"x\",\"scopes\":[1,2]}",
        "{\"access_token\":\"x\",\"metadata\":[]}",
        "{\"access_token\":\"x\",\"token_store_schema\":99999999999}",
        "{\"access_token\":\"\\ud800\"}",
        "{\"access_token\":\"\\udc00\\ud800\"}",
        "{\"access_token\":\"\\u0000\"}",
        "{\"access_token\":\"x\",\"access_token\":\"y\"}",
        "{\"access_token\":\"x\"} trailing",
        "{\"access_token\":\"x\"",
        "{\"client_id\":\"c\",\"client_secret_expires_at\":-1}",
        "{\"client_id\":\"c\",\"redirect_uris\":{}}",
        "{\"expires_at\":1,\"state\":{\"pkce_verifier\":\"v\",\"created_at\":-5}}",
        "{\"expires_at\":\"x\",\"state\":null}",
        "{\"expires_at\":1e999,\"state\":{\"pkce_verifier\":\"v\",\"created_at\":1}}",
    ];
    prop_oneof![
        3 => select(fixed).prop_map(|s| s.as_bytes().to_vec()),
        1 => (1usize..20_000, select(&["[", "{\"a\":", "[{\"x\":"][..]))
            .prop_map(|(depth, open)| open.repeat(depth).into_bytes()),
        1 => (1usize..5_000).prop_map(|n| format!("{{\"access_token\":\"{}\"}}", "\\u0041".repeat(n)).into_bytes()),
        1 => proptest::collection::vec(any::<char>(), 0..64)
            .prop_map(|c| serde_json::json!({"access_token": String::from_iter(c)}).to_string().into_bytes()),
    ]
    .boxed()
}

/// Stored bytes nobody should trust: random, damaged record JSON, hostile JSON.
pub fn hostile_bytes_strategy() -> BoxedStrategy<Vec<u8>> {
    let valid = valid_record_json();
    let len = valid.len();
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..600),
        3 => proptest::collection::vec((0..len, any::<u8>(), 0u8..3), 1..8).prop_map(move |edits| {
            let mut v = valid.clone();
            for (at, byte, how) in edits {
                let at = at.min(v.len());
                match how {
                    0 if at < v.len() => v[at] = byte,
                    1 => v.insert(at, byte),
                    _ => v.truncate(at),
                }
            }
            v
        }),
        3 => hostile_json(),
    ]
    .boxed()
}

/// Where a hostile value goes.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Token,
    Client,
    State,
}

/// Runs `cases` proptest cases writing 1 to 4 hostile values each (see the module docs).
pub fn hostile_bytes(backend: &str, factory: impl Factory, cases: u32) {
    let rt = runtime();
    let factory: Arc<dyn Factory> = Arc::new(factory);
    let started = Instant::now();
    let counts = std::sync::Mutex::new((0u64, 0u64, 0u64));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    });
    let slot = prop_oneof![Just(Slot::Token), Just(Slot::Client), Just(Slot::State)];
    let result = runner.run(
        &proptest::collection::vec((slot, hostile_bytes_strategy()), 1..=4),
        |values| {
            rt.block_on(async {
                let instance = factory
                    .create()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("factory: {e}")))?;
                let store = &instance.token_store();
                let max = store.capabilities().max_value_size;
                for (n, (slot, bytes)) in values.into_iter().enumerate() {
                    if bytes.len() > max {
                        continue;
                    }
                    let (parsed, corrupt) =
                        one_value(store, n, slot, &bytes).await.map_err(|why| {
                            TestCaseError::fail(format!(
                                "{slot:?} value {:?}: {why}",
                                String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
                            ))
                        })?;
                    let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
                    c.0 += 1;
                    c.1 += u64::from(parsed);
                    c.2 += u64::from(corrupt);
                }
                // Listings and the state purge still work over whatever is stored.
                store
                    .list(&Default::default())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("list: {e:?}")))?;
                store
                    .list_clients()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("list clients: {e:?}")))?;
                store
                    .purge_expired_states()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("purge: {e:?}")))?;
                Ok(())
            })
        },
    );
    if let Err(e) = result {
        panic!("hostile bytes[{backend}] failed: {e}");
    }
    let c = counts.lock().unwrap_or_else(|e| e.into_inner());
    crate::summary::torture(
        "hostile-bytes",
        backend,
        &[
            ("cases", cases.to_string()),
            ("values", c.0.to_string()),
            ("parsed", c.1.to_string()),
            ("corrupt", c.2.to_string()),
            ("secs", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
}

/// Stores `bytes` raw at a `slot` key, then reads them through the typed API. Returns
/// whether they parsed and whether they were reported corrupt.
async fn one_value(
    typed: &TokenStore,
    n: usize,
    slot: Slot,
    bytes: &[u8],
) -> std::result::Result<(bool, bool), String> {
    let store = &**typed.raw();
    let server = format!("https://hostile{n}.example/mcp");
    let state = format!("hostile-state-{n}");
    let key = match slot {
        Slot::Token => TokenKey::for_server(&server).storage_key(),
        Slot::Client => ClientKey::new(&server).storage_key(),
        // The typed layer stores a state under the digest of its value.
        Slot::State => StorageKey::single(
            KeyKind::State,
            Version::of_bytes(state.as_bytes()).to_string(),
        )
        .map_err(|e| e.to_string())?,
    };
    store
        .write(&key, bytes, &PutOptions::default())
        .await
        .map_err(|e| format!("raw write: {e:?}"))?;
    let raw = store
        .read(&key)
        .await
        .map_err(|e| format!("raw read: {e:?}"))?
        .ok_or("raw value vanished")?;
    if raw.value.as_slice() != bytes {
        return Err(format!(
            "the backend handed back other bytes ({} instead of {})",
            raw.value.len(),
            bytes.len()
        ));
    }
    let outcome = match slot {
        Slot::Token => {
            let expect_ok = serde_json::from_slice::<TokenRecord>(bytes).is_ok();
            match typed.get(&TokenKey::for_server(&server)).await {
                Ok(Some(_)) if expect_ok => (true, false),
                Err(Error::Corrupt { .. }) if !expect_ok => (false, true),
                other => {
                    return Err(format!(
                        "typed get gave {:?} (parses: {expect_ok})",
                        other.map(|o| o.is_some())
                    ));
                }
            }
        }
        Slot::Client => {
            let expect_ok = serde_json::from_slice::<ClientRegistration>(bytes).is_ok();
            match typed.get_client(&ClientKey::new(&server)).await {
                Ok(Some(_)) if expect_ok => (true, false),
                Err(Error::Corrupt { .. }) if !expect_ok => (false, true),
                other => {
                    return Err(format!(
                        "typed get_client gave {:?} (parses: {expect_ok})",
                        other.map(|o| o.is_some())
                    ));
                }
            }
        }
        Slot::State => match typed.take_state(&state).await {
            Ok(_) => (true, false),
            Err(Error::Corrupt { .. }) => (false, true),
            Err(e) => return Err(format!("take_state gave {e:?}")),
        },
    };
    Ok(outcome)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// Core decoders on arbitrary input, no store needed: key decoding, percent-decoding, record
/// JSON. Appends a `torture hostile-decoder backend=core` line.
pub fn core_decoders(cases: u32) {
    let started = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strings = prop_oneof![
        proptest::collection::vec(any::<char>(), 0..80).prop_map(String::from_iter),
        proptest::collection::vec(select(PALETTE), 0..12).prop_map(|v| v.concat()),
    ];
    let result = runner.run(&(strings, hostile_bytes_strategy()), |(s, bytes)| {
        if let Some(key) = StorageKey::decode(&s) {
            // Only canonical encodings decode, and they encode back to themselves.
            prop_assert_eq!(key.encode(), s.clone());
        }
        if let Some(d) = token_store_core::backend::percent_decode(&s) {
            prop_assert_eq!(
                token_store_core::backend::percent_decode(&percent_encode(&d)),
                Some(d)
            );
        }
        let _ = serde_json::from_slice::<TokenRecord>(&bytes);
        let _ = serde_json::from_slice::<ClientRegistration>(&bytes);
        let _ = serde_json::from_slice::<token_store_core::AuthState>(&bytes);
        let _ = serde_json::from_slice::<token_store_core::backend::KeyHeader>(&bytes);
        Ok(())
    });
    if let Err(e) = result {
        panic!("core decoders failed: {e}");
    }
    crate::summary::torture(
        "hostile-decoder",
        "core",
        &[
            ("cases", cases.to_string()),
            ("secs", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
}
