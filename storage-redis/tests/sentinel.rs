//! Sentinel: the suite through `redis+sentinel://`, then a failover the store must follow.
//!
//! Needs `TOKEN_STORE_TEST_REDIS_SENTINEL_URL` (e.g.
//! `redis+sentinel://127.0.0.1:26390,127.0.0.1:26391/mymaster`), which `scripts/services.sh`
//! exports; unset, the test fails under CI and reports "not run" locally.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use token_store_conformance::{Instance, run};
use token_store_core::{Precondition, StoreUrl, TokenKey, TokenRecord, TokenStore};

fn sentinel_url() -> Option<String> {
    token_store_conformance::services::require("TOKEN_STORE_TEST_REDIS_SENTINEL_URL")
}

async fn open(url: &str, prefix: &str) -> token_store_core::Result<TokenStore> {
    let sep = if url.contains('?') { '&' } else { '?' };
    token_store_redis::open_url(&StoreUrl::parse(&format!(
        "{url}{sep}prefix={prefix}&timeout_ms=2000"
    ))?)
    .await
}

fn master_addr(sentinel_port: &str) -> String {
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            sentinel_port,
            "sentinel",
            "get-master-addr-by-name",
            "mymaster",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_suite_and_failover() {
    let Some(url) = sentinel_url() else { return };
    let suite_url = url.clone();
    let report = run("redis-sentinel", move || {
        let url = suite_url.clone();
        async move {
            let prefix = common::prefix();
            let store = open(&url, &prefix).await?;
            Ok(Instance::with_reopen(store.raw().clone(), move || {
                let (url, prefix) = (url.clone(), prefix.clone());
                async move { Ok(open(&url, &prefix).await?.raw().clone()) }
            }))
        }
    })
    .await;
    report.assert_ok();

    let store = open(&url, &common::prefix()).await.unwrap();
    let key = TokenKey::for_server("https://sentinel.example");
    store
        .put(&key, &TokenRecord::new("before"), Precondition::Any)
        .await
        .unwrap();
    let sentinel_port = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split([',', '/']).next())
        .and_then(|hp| hp.rsplit(':').next())
        .unwrap()
        .to_owned();
    let old_master = master_addr(&sentinel_port);
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &sentinel_port, "sentinel", "failover", "mymaster"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{out:?}"
    );
    let started = Instant::now();
    let mut n = 0u32;
    let mut followed = None;
    while started.elapsed() < Duration::from_secs(30) {
        n += 1;
        let written = store
            .put(
                &key,
                &TokenRecord::new(format!("after-{n}")),
                Precondition::Any,
            )
            .await;
        if written.is_ok() && master_addr(&sentinel_port) != old_master {
            followed = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let followed = followed.expect("the store did not follow the failover within 30 s");
    let got = store.get(&key).await.unwrap().unwrap();
    assert!(got.value.access_token.expose().starts_with("after-"));
    println!(
        "sentinel: master {old_master} -> {}; the same store wrote to the new master {followed:?} after the failover command",
        master_addr(&sentinel_port)
    );
}
