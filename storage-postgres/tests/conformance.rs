//! The whole conformance suite and the model check against real PostgreSQL: plain, TLS
//! (`verify-full` against the test CA), mutual TLS (a role authenticated by the client
//! certificate) and plain under the encryption layer. Each store gets a fresh table in a
//! schema of the test's own, dropped at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use token_store_conformance::{model_check, model_check_cases, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    run("postgres", common::factory(config)).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres_tls() {
    let Some(config) = common::tls() else { return };
    let _drop = common::DropSchema(config.clone());
    run("postgres-tls", common::factory(config))
        .await
        .assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres_mutual_tls() {
    let Some(config) = common::mtls() else { return };
    let _drop = common::DropSchema(config.clone());
    run("postgres-mtls", common::factory(config))
        .await
        .assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres_encrypted() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let keys = Arc::new(tempfile::tempdir().unwrap());
    run(
        "postgres+encrypted",
        common::encrypted_factory(config, keys),
    )
    .await
    .assert_ok();
}

#[test]
fn model_postgres() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    model_check("postgres", common::factory(config), model_check_cases(256));
}

#[test]
fn model_postgres_tls() {
    let Some(config) = common::tls() else { return };
    let _drop = common::DropSchema(config.clone());
    model_check(
        "postgres-tls",
        common::factory(config),
        model_check_cases(256),
    );
}

#[test]
fn model_postgres_encrypted() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let keys = Arc::new(tempfile::tempdir().unwrap());
    model_check(
        "postgres+encrypted",
        common::encrypted_factory(config, keys),
        model_check_cases(256),
    );
}
