//! Failover: each way the service can fail gives a typed, retryable error
//! (`Error::Unavailable`) within the limit that applies to it, and the same store object
//! works again afterwards.
//!
//! - the shared fault harness under load (reads, CAS increments, writes, listings from three
//!   tasks): the crash server stopped (fast shutdown) and restarted, killed with SIGKILL and
//!   restarted (no acknowledged increment lost: `fsync=on`), paused with SIGSTOP; every
//!   connection of the store killed with `pg_terminate_backend` again and again; the table
//!   locked so statements hit `statement_timeout`; the same with a pool of one connection, so
//!   callers also hit the pool timeout;
//! - single calls, timed: a statement whose backend is terminated, a statement timeout, a
//!   full pool, a stopped server, an unreachable host at open, and a call abandoned by the
//!   per-call timeout (its statement must be cancelled on the server, its connection closed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use token_store_conformance::fault::{self, Fault};
use token_store_conformance::services;
use token_store_core::{Error, KeyKind, ListFilter, PutOptions, RawStore, StorageKey};
use token_store_postgres::{PostgresConfig, PostgresStore};

/// The crash server is stopped and killed by tests of this binary: one at a time.
static CRASH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TIMEOUT: Duration = Duration::from_secs(2);

struct CrashServer {
    config: PostgresConfig,
    pidfile: String,
    restart: String,
}

fn crash_server() -> Option<CrashServer> {
    let url = services::require("TOKEN_STORE_TEST_POSTGRES_CRASH_URL")?;
    Some(CrashServer {
        config: common::config(&url),
        pidfile: services::require("TOKEN_STORE_TEST_POSTGRES_CRASH_PIDFILE")?,
        restart: services::require("TOKEN_STORE_TEST_POSTGRES_CRASH_RESTART")?,
    })
}

/// A store with a unique application name (so tests find its connections) and a table of
/// its own, under the per-call timeout.
async fn store(
    config: &PostgresConfig,
    tune: impl FnOnce(PostgresConfig) -> PostgresConfig,
) -> (Arc<dyn RawStore>, PostgresConfig) {
    let config = tune(
        config
            .clone()
            .with_table(common::ident("t"))
            .with_application_name(common::ident("ts_app"))
            .with_timeout(TIMEOUT),
    );
    (common::open_raw(config.clone()).await.unwrap(), config)
}

fn table(config: &PostgresConfig) -> String {
    format!("\"{}\".\"{}\"", config.schema, config.table)
}

fn key(n: u32) -> StorageKey {
    StorageKey::single(KeyKind::Meta, format!("failover-{n}")).unwrap()
}

// ------------------------------------------------------------------ under load (harness)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_restarted() {
    let Some(server) = crash_server() else { return };
    let _one = CRASH.lock().await;
    let _drop = common::DropSchema(server.config.clone());
    let (store, _) = store(&server.config, |c| c).await;
    let (pidfile, script) = (server.pidfile.clone(), server.restart.clone());
    fault::signal_then_restart(
        "postgres",
        store,
        Fault::new("restarted-fast-shutdown", TIMEOUT),
        pidfile,
        "-INT",
        script,
    )
    .await
    .assert_ok("postgres", "restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_killed() {
    let Some(server) = crash_server() else { return };
    let _one = CRASH.lock().await;
    let _drop = common::DropSchema(server.config.clone());
    let (store, _) = store(&server.config, |c| c).await;
    let (pidfile, script) = (server.pidfile.clone(), server.restart.clone());
    fault::signal_then_restart(
        "postgres",
        store,
        Fault::new("killed-sigkill", TIMEOUT),
        pidfile,
        "-KILL",
        script,
    )
    .await
    .assert_ok("postgres", "killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_paused() {
    let Some(server) = crash_server() else { return };
    let _one = CRASH.lock().await;
    let _drop = common::DropSchema(server.config.clone());
    let (store, _) = store(&server.config, |c| c).await;
    let pid = fault::read_pid(&server.pidfile);
    // SIGSTOP stops the postmaster only: new connections hang, sessions already open go on.
    // Stop the whole server, every backend included.
    let group = move |sig: &'static str| {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        fault::signal(pid, sig);
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            fault::signal(child, sig);
        }
    };
    fault::run(
        "postgres",
        store,
        Fault::new("paused-sigstop", TIMEOUT),
        move || Box::pin(async move { group("-STOP") }),
        move || Box::pin(async move { group("-CONT") }),
    )
    .await
    .assert_ok("postgres", "paused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_connections_killed() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let (store, config) = store(&config, |c| c).await;
    let admin = Arc::new(common::raw_client(&config).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (app, stop_kill) = (config.application_name.clone(), stop.clone());
    fault::run(
        "postgres",
        store,
        Fault::new("connections-terminated", TIMEOUT),
        move || {
            Box::pin(async move {
                tokio::spawn(async move {
                    while !stop_kill.load(Ordering::Relaxed) {
                        let _ = admin
                            .execute(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                                &[&app],
                            )
                            .await;
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                });
            })
        },
        move || Box::pin(async move { stop.store(true, Ordering::Relaxed) }),
    )
    .await
    .assert_ok("postgres", "connections-terminated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_statement_timeout() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let limit = Duration::from_millis(800);
    let (store, config) = store(&config, |c| c.with_statement_timeout(limit)).await;
    lock_fault(
        store,
        &config,
        Fault::new("statement-timeout", limit),
        "statement-timeout",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_pool_full() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let statement = Duration::from_millis(1500);
    let (store, config) = store(&config, |c| {
        c.with_pool_size(1)
            .with_pool_timeout(Duration::from_millis(200))
            .with_statement_timeout(statement)
    })
    .await;
    lock_fault(
        store,
        &config,
        Fault::new("pool-full", statement),
        "pool-full",
    )
    .await;
}

/// The store's table locked (`ACCESS EXCLUSIVE`) by another session while the fault lasts.
async fn lock_fault(store: Arc<dyn RawStore>, config: &PostgresConfig, fault: Fault, name: &str) {
    let admin = Arc::new(common::raw_client(config).await);
    let (lock, unlock) = (admin.clone(), admin);
    let t = table(config);
    fault::run(
        "postgres",
        store,
        fault,
        move || {
            Box::pin(async move {
                lock.batch_execute(&format!("BEGIN; LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"))
                    .await
                    .unwrap();
            })
        },
        move || Box::pin(async move { unlock.batch_execute("ROLLBACK").await.unwrap() }),
    )
    .await
    .assert_ok("postgres", name);
}

// ------------------------------------------------------------------ single calls, timed

fn assert_unavailable(
    what: &str,
    r: &token_store_core::Result<impl std::fmt::Debug>,
    took: Duration,
    within: Duration,
) {
    assert!(matches!(r, Err(Error::Unavailable { .. })), "{what}: {r:?}");
    assert!(took <= within, "{what}: took {took:?}, limit {within:?}");
    println!(
        "{what}: Unavailable after {} ms (limit {} ms): {}",
        took.as_millis(),
        within.as_millis(),
        r.as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
}

/// Until a call succeeds (at most 10 s); how long it took.
async fn recovers(store: &dyn RawStore) -> Duration {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if store
            .write(&key(0), b"after", &PutOptions::default())
            .await
            .is_ok()
        {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the store did not recover within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_mid_statement() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let (store, config) = store(&config, |c| {
        c.with_statement_timeout(Duration::from_secs(10))
    })
    .await;
    store
        .write(&key(0), b"before", &PutOptions::default())
        .await
        .unwrap();
    let admin = common::raw_client(&config).await;
    admin
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            table(&config)
        ))
        .await
        .unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = store
                .write(&key(1), b"blocked", &PutOptions::default())
                .await;
            (r, t.elapsed())
        })
    };
    // Once it waits on the lock, terminate its backend.
    let app = config.application_name.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", &[&app])
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the write never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = Instant::now();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    let (r, _) = writer.await.unwrap();
    assert_unavailable(
        "terminated backend",
        &r,
        killed_at.elapsed(),
        Duration::from_millis(500),
    );
    admin.batch_execute("ROLLBACK").await.unwrap();
    let back = recovers(&*store).await;
    println!(
        "terminated backend: the same store wrote again after {} ms",
        back.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_then_recovery() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let limit = Duration::from_millis(500);
    let (store, config) = store(&config, |c| c.with_statement_timeout(limit)).await;
    store
        .write(&key(0), b"before", &PutOptions::default())
        .await
        .unwrap();
    let admin = common::raw_client(&config).await;
    admin
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            table(&config)
        ))
        .await
        .unwrap();
    let t = Instant::now();
    let r = store.read(&key(0)).await;
    assert_unavailable(
        "statement timeout",
        &r,
        t.elapsed(),
        limit + Duration::from_millis(500),
    );
    assert!(
        r.unwrap_err().to_string().contains("57014"),
        "names the statement timeout"
    );
    admin.batch_execute("ROLLBACK").await.unwrap();
    let back = recovers(&*store).await;
    println!(
        "statement timeout: the same store wrote again after {} ms",
        back.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pool_then_recovery() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let wait = Duration::from_millis(200);
    let (store, config) = store(&config, |c| {
        c.with_pool_size(1)
            .with_pool_timeout(wait)
            .with_statement_timeout(Duration::from_secs(3))
    })
    .await;
    store
        .write(&key(0), b"before", &PutOptions::default())
        .await
        .unwrap();
    let admin = common::raw_client(&config).await;
    admin
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            table(&config)
        ))
        .await
        .unwrap();
    // The only connection waits on the lock...
    let holder = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .write(&key(1), b"queued", &PutOptions::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so the next caller gets no connection.
    let t = Instant::now();
    let r = store.scan(KeyKind::Meta, &ListFilter::all()).await;
    assert_unavailable(
        "full pool",
        &r,
        t.elapsed(),
        wait + Duration::from_millis(500),
    );
    assert!(
        r.unwrap_err().to_string().contains("pool"),
        "names the pool"
    );
    admin.batch_execute("ROLLBACK").await.unwrap();
    holder.await.unwrap().unwrap();
    let back = recovers(&*store).await;
    println!(
        "full pool: the same store wrote again after {} ms",
        back.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_call_is_cancelled_on_the_server() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let per_call = Duration::from_millis(400);
    let (store, config) = store(&config, |c| {
        c.with_statement_timeout(Duration::from_secs(30))
            .with_timeout(per_call)
    })
    .await;
    store
        .write(&key(0), b"before", &PutOptions::default())
        .await
        .unwrap();
    let admin = common::raw_client(&config).await;
    admin
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            table(&config)
        ))
        .await
        .unwrap();
    let t = Instant::now();
    let r = store
        .write(&key(1), b"abandoned", &PutOptions::default())
        .await;
    assert_unavailable(
        "per-call timeout",
        &r,
        t.elapsed(),
        per_call + Duration::from_millis(500),
    );
    // Its backend must not go on waiting for the lock (the statement timeout is 30 s): the
    // connection was closed and the statement cancelled.
    let app = config.application_name.clone();
    let gone = Instant::now();
    loop {
        let waiting: i64 = admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", &[&app])
            .await
            .unwrap()
            .get(0);
        if waiting == 0 {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(3),
            "the abandoned statement still waits on the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "abandoned call: its statement left the server {} ms after the timeout",
        gone.elapsed().as_millis()
    );
    admin.batch_execute("ROLLBACK").await.unwrap();
    // The next call opens a new connection (the abandoned one was closed).
    recovers(&*store).await;
    // The abandoned write never happened.
    assert!(store.read(&key(1)).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_then_recovery() {
    let Some(server) = crash_server() else { return };
    let _one = CRASH.lock().await;
    let _drop = common::DropSchema(server.config.clone());
    let (store, _) = store(&server.config, |c| c).await;
    store
        .write(&key(0), b"before", &PutOptions::default())
        .await
        .unwrap();
    let pid = fault::read_pid(&server.pidfile);
    fault::signal(pid, "-INT");
    tokio::task::spawn_blocking(move || fault::wait_gone(pid))
        .await
        .unwrap();
    let t = Instant::now();
    let r = store.read(&key(0)).await;
    assert_unavailable(
        "stopped server",
        &r,
        t.elapsed(),
        TIMEOUT + Duration::from_millis(500),
    );
    let script = server.restart.clone();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || fault::run_script(&script))
        .await
        .unwrap();
    println!(
        "stopped server: restarted in {} ms",
        started.elapsed().as_millis()
    );
    let back = recovers(&*store).await;
    println!(
        "stopped server: the same store wrote again {} ms after the restart",
        back.as_millis()
    );
    // What was written before is still there.
    assert!(store.read(&key(0)).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_at_open() {
    if common::plain_url().is_none() {
        return;
    }
    // A port nothing listens on: refused at once.
    let config = PostgresConfig::new("tsapp")
        .with_host("127.0.0.1", 1)
        .with_connect_timeout(Duration::from_millis(700));
    let t = Instant::now();
    let r = PostgresStore::open(&config).await;
    assert_unavailable(
        "refused at open",
        &r,
        t.elapsed(),
        Duration::from_millis(700 + 500),
    );
    // An address that drops packets (TEST-NET-1): the connect timeout applies.
    let config = PostgresConfig::new("nobody")
        .with_host("192.0.2.1", 5432)
        .with_connect_timeout(Duration::from_millis(700));
    let t = Instant::now();
    let r = PostgresStore::open(&config).await;
    assert_unavailable(
        "unroutable at open",
        &r,
        t.elapsed(),
        Duration::from_millis(700 + 1500),
    );
}
