//! Faults against real servers: kill -9 of an AOF Redis under a CAS increment load, and (if
//! the cluster is there) a master failover. The same store object must keep working.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use token_store_conformance::services;
use token_store_core::{Error, Precondition, TokenKey, TokenRecord, TokenStore};
use token_store_redis::RedisConfig;

const TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack on a loaded 2-core machine on top of the configured timeout.
const SLACK: Duration = Duration::from_millis(1500);

#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    /// Puts that failed with Unavailable: applied or not, nobody knows.
    uncertain: AtomicU64,
    unavailable: AtomicU64,
    slowest_failure_ms: AtomicU64,
}

/// One worker: read the counter, CAS it one up; count acknowledgements and failures.
async fn worker(store: TokenStore, key: TokenKey, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let current = match store.get(&key).await {
            Ok(Some(c)) => c,
            Ok(None) => panic!("the counter vanished"),
            Err(e) => {
                failure(&tally, started, &e);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let n: u64 = current.value.access_token.expose().parse().unwrap();
        let next = TokenRecord::new((n + 1).to_string());
        let started = Instant::now();
        match store
            .put(&key, &next, Precondition::IfVersion(current.version))
            .await
        {
            Ok(_) => {
                tally.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.is_conflict() => {}
            Err(e) => {
                tally.uncertain.fetch_add(1, Ordering::Relaxed);
                failure(&tally, started, &e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn failure(tally: &Tally, started: Instant, e: &Error) {
    let took = started.elapsed();
    assert!(
        matches!(e, Error::Unavailable { .. }),
        "a down Redis gave {e:?}, not Unavailable"
    );
    assert!(
        took <= TIMEOUT + SLACK,
        "a failing call took {took:?} (timeout {TIMEOUT:?})"
    );
    tally.unavailable.fetch_add(1, Ordering::Relaxed);
    tally
        .slowest_failure_ms
        .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
}

fn read_pid(pidfile: &str) -> String {
    std::fs::read_to_string(pidfile).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_cas_load_then_restart_same_store_recovers_and_loses_no_ack() {
    let Some(url) = services::require("TOKEN_STORE_TEST_REDIS_AOF_URL") else {
        return;
    };
    let pidfile = services::require("TOKEN_STORE_TEST_REDIS_AOF_PIDFILE").unwrap();
    let restart = services::require("TOKEN_STORE_TEST_REDIS_AOF_RESTART").unwrap();

    let config = RedisConfig::standalone(url)
        .with_prefix(common::prefix())
        .with_timeout(TIMEOUT);
    let store = token_store_redis::open(config).await.unwrap();
    let key = TokenKey::for_server("https://counter.example");
    store
        .put(&key, &TokenRecord::new("0"), Precondition::IfAbsent)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(worker(
                store.clone(),
                key.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = tally.acked.load(Ordering::Relaxed);
    assert!(before_kill > 0, "no increment went through before the kill");
    let pid = read_pid(&pidfile);
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let killed_at = Instant::now();

    // While it is down, calls fail with Unavailable within the timeout (checked in `failure`).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        tally.unavailable.load(Ordering::Relaxed) > 0,
        "no call failed while Redis was down"
    );

    let status = tokio::process::Command::new("bash")
        .arg(&restart)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "the restart script failed");
    let restarted_at = Instant::now();

    // The same store object works again once Redis is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut recovered = None;
    while Instant::now() < deadline {
        if store.get(&key).await.is_ok() {
            recovered = Some(restarted_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = recovered.expect("the store did not recover within 30 s of the restart");
    let acked_after_restart = tally.acked.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        tally.acked.load(Ordering::Relaxed) > acked_after_restart,
        "no increment went through after the restart"
    );

    // A frozen server (SIGSTOP: connections stay open, nothing answers) must not hang calls
    // either: they fail by the response/operation timeout, and resume after SIGCONT.
    let pid = read_pid(&pidfile);
    let unavailable_before_freeze = tally.unavailable.load(Ordering::Relaxed);
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid} failed");
    };
    signal("-STOP");
    tokio::time::sleep(TIMEOUT * 2).await;
    signal("-CONT");
    let froze = tally.unavailable.load(Ordering::Relaxed) - unavailable_before_freeze;
    assert!(froze > 0, "no call failed while Redis was frozen");
    let acked_after_freeze = tally.acked.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        tally.acked.load(Ordering::Relaxed) > acked_after_freeze,
        "no increment went through after SIGCONT"
    );

    let end: u64 = store
        .get(&key)
        .await
        .unwrap()
        .unwrap()
        .value
        .access_token
        .expose()
        .parse()
        .unwrap();
    let acked = tally.acked.load(Ordering::Relaxed);
    let uncertain = tally.uncertain.load(Ordering::Relaxed);
    println!(
        "fault[redis-aof]: {acked} acknowledged increments ({before_kill} before the kill), \
         {froze} calls timed out while frozen, {uncertain} puts failed as Unavailable, {} Unavailable calls in all (slowest {} ms), \
         down {:?}, recovered {recovered:?} after the restart, final counter {end}",
        tally.unavailable.load(Ordering::Relaxed),
        tally.slowest_failure_ms.load(Ordering::Relaxed),
        restarted_at - killed_at,
    );
    // Every acknowledged increment survived the crash (AOF, appendfsync always); a put whose
    // reply was lost may or may not have been applied.
    assert!(
        end >= acked,
        "lost acknowledged increments: {end} < {acked}"
    );
    assert!(
        end <= acked + uncertain,
        "more increments than attempts: {end} > {acked} + {uncertain}"
    );
    if uncertain == 0 {
        assert_eq!(end, acked);
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The port of the master serving `slot`, from `CLUSTER NODES`.
fn master_of(port: u16, slot: u16) -> Option<u16> {
    redis_cli(port, &["cluster", "nodes"])
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                return None;
            }
            let serves = f[8..].iter().any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>() == Ok(slot),
            });
            let addr = f[1].split('@').next()?;
            serves.then(|| addr.rsplit(':').next()?.parse().ok())?
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_failover_under_cas_load() {
    let Some(config) = common::cluster() else {
        return;
    };
    let Some(dir) = services::require("TOKEN_STORE_TEST_SERVICES_DIR") else {
        return;
    };
    let prefix = common::prefix();
    let config = config.with_prefix(&prefix).with_timeout(TIMEOUT);
    let store = token_store_redis::open(config).await.unwrap();
    let key = TokenKey::for_server("https://failover.example");
    store
        .put(&key, &TokenRecord::new("0"), Precondition::IfAbsent)
        .await
        .unwrap();

    // Find the node directory of the master that owns our key, to kill exactly that one.
    let nodes: Vec<(u16, std::path::PathBuf)> = (1..=6)
        .filter_map(|i| {
            let d = std::path::Path::new(&dir).join(format!("cluster-{i}"));
            let port = std::fs::read_to_string(d.join("port"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((port, d))
        })
        .collect();
    assert_eq!(
        nodes.len(),
        6,
        "expected 6 cluster node directories in {dir}"
    );
    let redis_key = format!("{prefix}:{}", key.storage_key().encode());
    let slot: u16 = redis_cli(nodes[0].0, &["cluster", "keyslot", &redis_key])
        .trim()
        .parse()
        .unwrap();
    let victim = master_of(nodes[0].0, slot).expect("a master serves the slot");
    let (_, victim_dir) = nodes.iter().find(|(p, _)| *p == victim).unwrap().clone();
    let witness = nodes.iter().find(|(p, _)| *p != victim).unwrap().0;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(worker(
                store.clone(),
                key.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = tally.acked.load(Ordering::Relaxed);
    assert!(before > 0);
    let pid = read_pid(victim_dir.join("pid").to_str().unwrap());
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    let killed_at = Instant::now();

    // Writes resume once a replica is promoted and the client has the new slot map.
    let deadline = killed_at + Duration::from_secs(45);
    let mut resumed = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tally.acked.load(Ordering::Relaxed) > before + 10
            && master_of(witness, slot).is_some_and(|p| p != victim)
        {
            resumed = Some(killed_at.elapsed());
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    // Put the killed node back (it rejoins as a replica of the promoted one), same argv as
    // scripts/services.sh uses, so the cluster is whole again for later tests.
    let d = victim_dir.display().to_string();
    let status = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--daemonize", "yes", "--dir", &d])
        .args([
            "--pidfile",
            &format!("{d}/pid"),
            "--logfile",
            &format!("{d}/log"),
        ])
        .args(["--port", &victim.to_string(), "--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("{d}/nodes.conf")])
        .args([
            "--cluster-node-timeout",
            "5000",
            "--repl-diskless-sync-delay",
            "0",
        ])
        .args(["--save", "", "--appendonly", "no"])
        .status()
        .unwrap();
    assert!(status.success(), "could not restart the killed node");
    let rejoin_deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < rejoin_deadline
        && !redis_cli(victim, &["info", "replication"]).contains("master_link_status:up")
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let resumed = resumed.expect("writes did not resume within 45 s of killing the master");
    let end: u64 = store
        .get(&key)
        .await
        .unwrap()
        .unwrap()
        .value
        .access_token
        .expose()
        .parse()
        .unwrap();
    let acked = tally.acked.load(Ordering::Relaxed);
    println!(
        "fault[redis-cluster]: killed master :{victim} (slot {slot}); writes resumed after {resumed:?}; \
         {acked} acknowledged increments, final counter {end} (async replication may lose acks at \
         the switch: {} lost), {} Unavailable calls (slowest {} ms)",
        acked.saturating_sub(end),
        tally.unavailable.load(Ordering::Relaxed),
        tally.slowest_failure_ms.load(Ordering::Relaxed),
    );
    assert!(end > 0);
}
