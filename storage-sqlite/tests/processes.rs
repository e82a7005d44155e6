//! Several real processes on one database file: compare-and-swap increments from two
//! processes lose no update, and a writer killed with SIGKILL at random moments leaves every
//! record whole and every acknowledged write in place.
//!
//! The children are this test binary run again with `TOKEN_STORE_SQLITE_CHILD` set, filtered
//! to the `child_process_entry` test (which does nothing in a normal run).

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use token_store_core::{Error, KeyKind, Precondition, PutOptions, RawStore, StorageKey};
use token_store_sqlite::{SqliteConfig, SqliteStore};

const CHILD_ENV: &str = "TOKEN_STORE_SQLITE_CHILD";
const DB_ENV: &str = "TOKEN_STORE_SQLITE_CHILD_DB";
const ARG_ENV: &str = "TOKEN_STORE_SQLITE_CHILD_ARG";

/// Keys the crash writer cycles through.
const CRASH_KEYS: u64 = 7;

fn spawn_child(role: &str, db: &Path, arg: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, role)
        .env(DB_ENV, db)
        .env(ARG_ENV, arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    token_store_core::backend::fill_random(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn counter_key() -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec!["cas".into(), "counter".into(), String::new(), String::new()],
    )
    .unwrap()
}

fn crash_key(k: u64) -> StorageKey {
    StorageKey::new(
        KeyKind::Token,
        vec![
            "crash".into(),
            format!("k{k}"),
            String::new(),
            String::new(),
        ],
    )
    .unwrap()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A value that proves its own integrity: `n`, a body of `n`'s bytes repeated to a length
/// that varies with `n` (up to several pages, so overflow pages are written too), and a
/// checksum of all of it.
fn crash_value(n: u64) -> Vec<u8> {
    let len = 16 + (n.wrapping_mul(2_654_435_761) % 20_000) as usize;
    let mut v = n.to_le_bytes().to_vec();
    v.extend(n.to_le_bytes().iter().cycle().take(len));
    let sum = fnv1a(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// The `n` of a value written by [`crash_value`], or a panic if it is not whole.
fn check_crash_value(v: &[u8]) -> u64 {
    assert!(v.len() >= 16, "a record of {} bytes is torn", v.len());
    let (body, sum) = v.split_at(v.len() - 8);
    assert_eq!(
        fnv1a(body).to_le_bytes(),
        sum,
        "checksum mismatch: torn record"
    );
    let n = u64::from_le_bytes(body[..8].try_into().unwrap());
    assert_eq!(
        v,
        crash_value(n).as_slice(),
        "record {n} is not what was written"
    );
    n
}

/// Runs only as a child (see the module docs).
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = PathBuf::from(std::env::var(DB_ENV).unwrap());
    let arg: u64 = std::env::var(ARG_ENV).unwrap().parse().unwrap();
    // libtest has printed "test child_process_entry ... " without a newline: end that line so
    // the parent sees each of our lines whole.
    println!();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match role.as_str() {
            "cas" => cas_child(&db, arg).await,
            "crash" => crash_child(&db, arg).await,
            other => panic!("unknown child role {other}"),
        }
    });
}

async fn cas_child(db: &Path, increments: u64) {
    let store = SqliteStore::open(&SqliteConfig::new(db)).await.unwrap();
    // Start together with the other child, so the two really race.
    let go = db.with_extension("go");
    while !go.exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let key = counter_key();
    let started = Instant::now();
    let mut conflicts = 0u64;
    let mut done = 0u64;
    while done < increments {
        let cur = store.read(&key).await.unwrap().expect("counter exists");
        let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
        let next = (n + 1).to_string();
        match store
            .write(
                &key,
                next.as_bytes(),
                &PutOptions::new(Precondition::IfVersion(cur.version)),
            )
            .await
        {
            Ok(_) => done += 1,
            Err(Error::Conflict { .. }) => conflicts += 1,
            // Anything else (a leaked "database is locked" in particular) fails the child.
            Err(e) => panic!("increment failed: {e}"),
        }
    }
    println!(
        "result conflicts={conflicts} ms={}",
        started.elapsed().as_millis()
    );
}

async fn crash_child(db: &Path, start: u64) {
    let store = SqliteStore::open(&SqliteConfig::new(db)).await.unwrap();
    for n in start.. {
        let key = crash_key(n % CRASH_KEYS);
        let pre = match store.read(&key).await.unwrap() {
            Some(cur) => {
                check_crash_value(&cur.value);
                Precondition::IfVersion(cur.version)
            }
            None => Precondition::IfAbsent,
        };
        store
            .write(&key, &crash_value(n), &PutOptions::new(pre))
            .await
            .unwrap();
        // Printed only once the commit returned: every acknowledged n must survive.
        println!("ack {n}");
    }
}

fn read_lines(child: &mut Child) -> std::thread::JoinHandle<Vec<String>> {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_cas_increments_lose_no_update() {
    const EACH: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("private").join("cas.db");
    let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
    store
        .write(&counter_key(), b"0", &PutOptions::default())
        .await
        .unwrap();
    let mut children: Vec<Child> = (0..2)
        .map(|_| spawn_child("cas", &db, &EACH.to_string()))
        .collect();
    let readers: Vec<_> = children.iter_mut().map(read_lines).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    std::fs::write(db.with_extension("go"), b"").unwrap();
    for child in &mut children {
        let status = child.wait().unwrap();
        assert!(status.success(), "a CAS child failed: {status}");
    }
    let elapsed = started.elapsed();
    for reader in readers {
        let lines = reader.join().unwrap();
        let result = lines
            .iter()
            .find(|l| l.starts_with("result "))
            .expect("child printed its result");
        println!("child {result}");
    }
    let end = store.read(&counter_key()).await.unwrap().unwrap();
    let n: u64 = std::str::from_utf8(&end.value).unwrap().parse().unwrap();
    assert_eq!(n, 2 * EACH, "lost updates");
    println!(
        "2 processes x {EACH} CAS increments: {n} in {:.2} s ({:.0} increments/s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_keeps_records_whole_and_acknowledged_writes() {
    let rounds: usize = std::env::var("TOKEN_STORE_SQLITE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("private").join("crash.db");
    // The n each key is known to hold after the last verification.
    let mut known: HashMap<u64, u64> = HashMap::new();
    let mut next_n = 0u64;
    let mut total_acks = 0usize;
    let mut inflight_landed = 0usize;
    for round in 0..rounds {
        let mut child = spawn_child("crash", &db, &next_n.to_string());
        let reader = read_lines(&mut child);
        // Early rounds die young too: during open, WAL switch or the first migration.
        let delay = if round % 5 == 0 {
            random_u64() % 15
        } else {
            random_u64() % 400
        };
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let acks: Vec<u64> = reader
            .join()
            .unwrap()
            .iter()
            .filter_map(|l| l.trim().strip_prefix("ack ")?.parse().ok())
            .collect();
        total_acks += acks.len();
        // At most one write can have committed without being acknowledged: the next one.
        let inflight = acks.last().map_or(next_n, |n| n + 1);

        let store = SqliteStore::open(&SqliteConfig::new(&db))
            .await
            .unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"));
        for k in 0..CRASH_KEYS {
            let acked = acks
                .iter()
                .rev()
                .find(|n| *n % CRASH_KEYS == k)
                .copied()
                .or(known.get(&k).copied());
            let stored = store
                .read(&crash_key(k))
                .await
                .unwrap_or_else(|e| panic!("round {round}: read k{k}: {e}"))
                .map(|r| check_crash_value(&r.value));
            let ok = stored == acked || (stored == Some(inflight) && inflight % CRASH_KEYS == k);
            assert!(
                ok,
                "round {round} (killed after {delay} ms): k{k} holds {stored:?}, last acknowledged {acked:?}, in flight {inflight}"
            );
            if stored == Some(inflight) && acked != Some(inflight) {
                inflight_landed += 1;
            }
            if let Some(n) = stored {
                known.insert(k, n);
            }
        }
        drop(store);
        next_n = inflight + 1;
    }
    println!(
        "{rounds} SIGKILL rounds: {total_acks} acknowledged writes all present, {inflight_landed} unacknowledged in-flight writes had committed, every record whole"
    );
    assert!(total_acks > 0, "the writer never got to write");
}
