//! Soak mode (off unless `TOKEN_STORE_SOAK=1`; `scripts/soak.sh` runs it on services of its
//! own): `TOKEN_STORE_SOAK_SECS` (an hour by default) of mixed load on the AOF Redis, the plain
//! OpenBao and a SQLite file at once, with a fault every 8–20 s (`TOKEN_STORE_SOAK_FAULT_EVERY`
//! = `MIN-MAX` seconds) picked at random: the AOF Redis paused (SIGSTOP) or killed (SIGKILL, then
//! its restart script), OpenBao paused or restarted (its restart script; in memory, so that one
//! loses the data by design), a child writing to the SQLite file SIGKILLed mid-write. Prints the
//! report tables (ops, faults, errors by kind, records lost, p99 latency per minute) and fails
//! on a lost or torn record, a hang, or an unexpected error.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use token_store_conformance::soak::{self, Action, Fault, Target};
use token_store_conformance::{BoxFuture, crash, services};
use token_store_core::{Error, RawStore, StoreUrl};

fn open(url: StoreUrl) -> BoxFuture<'static, token_store_core::Result<Arc<dyn RawStore>>> {
    Box::pin(async move { Ok(token_store::open(url.as_str()).await?.raw().clone()) })
}

/// The crash child of the killed-writer fault (does nothing in a normal run).
#[test]
fn crash_child() {
    crash::child(open);
}

/// What a restart of the in-memory dev server may also cause: for a moment it answers with a
/// root token of its own, before it takes the configured one.
fn vault_expected(e: &Error) -> bool {
    soak::unavailable_or_conflict(e) || matches!(e, Error::PermissionDenied { .. })
}

fn every() -> (u64, u64) {
    std::env::var("TOKEN_STORE_SOAK_FAULT_EVERY")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((8, 20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak() {
    if !soak::enabled() {
        println!("not run: soak mode is off (TOKEN_STORE_SOAK=1, or scripts/soak.sh)");
        return;
    }
    let var = |name: &str| services::require(name).unwrap_or_else(|| panic!("{name} unset"));
    let timeout = Duration::from_secs(2);
    let prefix = services::unique("soak");
    let redis_url = format!(
        "{}?prefix={prefix}&timeout_ms=2000",
        var("TOKEN_STORE_TEST_REDIS_AOF_URL")
    );
    let vault_addr = var("TOKEN_STORE_TEST_VAULT_ADDR");
    let vault_url = format!(
        "vault://{}/secret?prefix={prefix}&token_env=TOKEN_STORE_TEST_VAULT_TOKEN&timeout_ms=2000",
        vault_addr.trim_start_matches("http://")
    );
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite_url = format!("sqlite://{}?timeout_ms=2000", dir.join("soak.db").display());
    let mut targets = Vec::new();
    for (name, url, expected) in [
        (
            "redis-aof",
            &redis_url,
            soak::unavailable_or_conflict as fn(&Error) -> bool,
        ),
        ("vault", &vault_url, vault_expected),
        ("sqlite", &sqlite_url, soak::unavailable_or_conflict),
    ] {
        targets.push(Target {
            name: name.into(),
            store: open(StoreUrl::parse(url).unwrap()).await.unwrap(),
            timeout,
            expected,
        });
    }
    let redis_pid = var("TOKEN_STORE_TEST_REDIS_AOF_PIDFILE");
    let redis_restart = var("TOKEN_STORE_TEST_REDIS_AOF_RESTART");
    let vault_pid = var("TOKEN_STORE_TEST_VAULT_PIDFILE");
    let vault_restart = var("TOKEN_STORE_TEST_VAULT_RESTART");
    let faults = vec![
        Fault {
            name: "redis-sigstop".into(),
            target: "redis-aof".into(),
            wipes: false,
            action: Action::Pause {
                pidfile: redis_pid.clone(),
            },
        },
        Fault {
            name: "redis-sigkill+restart".into(),
            target: "redis-aof".into(),
            wipes: false,
            action: Action::Kill {
                pidfile: redis_pid,
                restart: redis_restart,
            },
        },
        Fault {
            name: "vault-sigstop".into(),
            target: "vault".into(),
            wipes: false,
            action: Action::Pause { pidfile: vault_pid },
        },
        Fault {
            name: "vault-restart".into(),
            target: "vault".into(),
            wipes: true,
            action: Action::Restart {
                restart: vault_restart,
            },
        },
        Fault {
            name: "sqlite-writer-sigkill".into(),
            target: "sqlite".into(),
            wipes: false,
            action: Action::KillWriter {
                url: sqlite_url.clone(),
                open,
            },
        },
    ];
    let report = soak::run(targets, faults, soak::duration(), every()).await;
    println!("{}", report.table());
    let _ = std::fs::remove_dir_all(&dir);
    report.assert_ok();
}
