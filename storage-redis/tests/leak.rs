//! The secret-leak check on Redis (standalone and cluster): the whole conformance suite with
//! every log event (TRACE, the redis client's `log` records included), result, error and
//! `Debug` output captured and searched for the suite's tokens (its own test binary: the
//! capture is process-wide).

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use token_store_conformance::leak::leak_check;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_or_debug_redis() {
    let Some(config) = common::standalone() else {
        return;
    };
    leak_check("redis", common::factory(config), vec![])
        .await
        .assert_ok("redis");
    let Some(config) = common::cluster() else {
        return;
    };
    leak_check("redis-cluster", common::factory(config), vec![])
        .await
        .assert_ok("redis-cluster");
}
