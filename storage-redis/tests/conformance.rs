//! The whole conformance suite and the model check against real Redis: standalone, the
//! 6-node cluster, TLS with the test CA and mutual TLS. Each store gets a unique prefix.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use token_store_conformance::{model_check, model_check_cases, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redis_standalone() {
    let Some(config) = common::standalone() else {
        return;
    };
    let report = run("redis", common::factory(config)).await;
    report.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redis_cluster() {
    let Some(config) = common::cluster() else {
        return;
    };
    let report = run("redis-cluster", common::factory(config)).await;
    report.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redis_tls() {
    let Some(config) = common::tls() else { return };
    let report = run("redis-tls", common::factory(config)).await;
    report.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redis_mutual_tls() {
    let Some(config) = common::mtls() else { return };
    let report = run("redis-mtls", common::factory(config)).await;
    report.assert_ok();
}

#[test]
fn model_redis_standalone() {
    let Some(config) = common::standalone() else {
        return;
    };
    model_check("redis", common::factory(config), model_check_cases(256));
}

#[test]
fn model_redis_cluster() {
    let Some(config) = common::cluster() else {
        return;
    };
    model_check(
        "redis-cluster",
        common::factory(config),
        model_check_cases(256),
    );
}

#[test]
fn model_redis_tls() {
    let Some(config) = common::tls() else { return };
    model_check("redis-tls", common::factory(config), model_check_cases(256));
}
