//! The secret-leak check on PostgreSQL (plain, TLS, and under the encryption layer with a
//! passphrase): the whole conformance suite with every log event (TRACE; tokio-postgres's and
//! deadpool's `log` records included, so statement parameters logged at the debug level are
//! searched too), result, error and `Debug` output captured and searched for the suite's
//! tokens, the database password and the passphrase (its own test binary: the capture is
//! process-wide).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use token_store_conformance::leak::{capture, leak_check};
use token_store_conformance::secrets::secret;
use token_store_conformance::{BoxFuture, Instance, services};
use token_store_core::layers::Encrypted;
use token_store_core::{KdfParams, KeyKind, KeySource, PutOptions, RawStore, StorageKey, StoreUrl};
use token_store_postgres::{PostgresConfig, PostgresStore};

fn passphrase_factory(
    config: PostgresConfig,
    passphrase: String,
) -> impl Fn() -> BoxFuture<'static, token_store_core::Result<Instance>> + Send + Sync + 'static {
    move || {
        let config = config.clone().with_table(common::ident("t"));
        let passphrase = passphrase.clone();
        Box::pin(async move {
            let open = move || {
                let config = config.clone();
                let passphrase = passphrase.clone();
                async move {
                    let store = PostgresStore::open(&config).await?;
                    // The cheapest parameters core accepts: the KDF's cost is not under test.
                    let sealed = Encrypted::open_with_params(
                        store,
                        KeySource::passphrase(passphrase),
                        KdfParams::MINIMUM,
                    )
                    .await?;
                    Ok(Arc::new(sealed) as Arc<dyn RawStore>)
                }
            };
            let store = open().await?;
            Ok(Instance::with_reopen(store, open))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_or_debug_postgres() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let password = services::require("TOKEN_STORE_TEST_POSTGRES_PASSWORD").unwrap();
    leak_check(
        "postgres",
        common::factory(config.clone()),
        vec![password.clone()],
    )
    .await
    .assert_ok("postgres");

    let passphrase = secret("postgres-passphrase");
    leak_check(
        "postgres+encrypted",
        passphrase_factory(config.clone(), passphrase.clone()),
        vec![passphrase, password.clone()],
    )
    .await
    .assert_ok("postgres+encrypted");

    if let Some(tls) = common::tls() {
        let _drop = common::DropSchema(tls.clone());
        leak_check("postgres-tls", common::factory(tls), vec![password.clone()])
            .await
            .assert_ok("postgres-tls");
    }

    // The value of a write must not reach the debug log of tokio-postgres's statement
    // parameters, not even as a list of byte values; nor may the password, as text or bytes,
    // from a URL, a failed login or the config's formatting.
    let capture = capture();
    let value = secret("postgres-param");
    let store = common::open_raw(config.clone().with_table(common::ident("t")))
        .await
        .unwrap();
    let key = StorageKey::single(KeyKind::Meta, "leak-param").unwrap();
    store
        .write(&key, value.as_bytes(), &PutOptions::default())
        .await
        .unwrap();
    store.read(&key).await.unwrap();
    let url = StoreUrl::parse(&common::plain_url().unwrap()).unwrap();
    let parsed = PostgresConfig::from_url(&url).unwrap();
    capture.line(&format!(
        "url: {url} / {url:?} / config: {parsed} / {parsed:?}"
    ));
    let wrong = parsed
        .clone()
        .with_password(token_store_core::Secret::new(format!("{password}-wrong")));
    let refused = PostgresStore::open(&wrong).await;
    capture.line(&format!("wrong password: {refused:?}"));
    assert!(
        matches!(
            refused,
            Err(token_store_core::Error::PermissionDenied { .. })
        ),
        "{refused:?}"
    );
    let text = capture.text();
    assert!(
        text.contains("executing statement"),
        "tokio-postgres's debug log is not captured; the check proves nothing"
    );
    for needle in [
        value.clone(),
        format!("{:?}", value.as_bytes()),
        password.clone(),
        format!("{:?}", password.as_bytes()),
    ] {
        assert!(
            !text.contains(&needle),
            "{needle} was found in the captured output"
        );
    }
}
