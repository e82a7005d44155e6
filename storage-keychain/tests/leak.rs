//! The secret-leak check on the keychains (Secret Service over D-Bus, keyutils): the whole
//! conformance suite with every log event (TRACE, zbus's included), result, error and
//! `Debug` output captured and searched for the suite's tokens (its own test binary: the
//! capture is process-wide).
#![cfg(target_os = "linux")]
// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use token_store_conformance::leak::leak_check;
use token_store_conformance::{Instance, services};
use token_store_core::RawStore;
use token_store_keychain::{KeychainConfig, KeyringStore, SecretServiceStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_or_debug_keychain() {
    let used: Arc<Mutex<Vec<KeychainConfig>>> = Arc::default();
    if services::require("TOKEN_STORE_TEST_SECRET_SERVICE").is_some()
        && services::require("DBUS_SESSION_BUS_ADDRESS").is_some()
    {
        let u = used.clone();
        leak_check(
            "secret-service",
            move || {
                let config = KeychainConfig::default().with_service(services::unique("ts-leak"));
                u.lock().unwrap().push(config.clone());
                async move {
                    let store: Arc<dyn RawStore> =
                        Arc::new(SecretServiceStore::connect(&config).await?);
                    Ok(Instance::new(store))
                }
            },
            vec![],
        )
        .await
        .assert_ok("secret-service");
        let configs: Vec<KeychainConfig> = std::mem::take(&mut *used.lock().unwrap());
        for c in configs {
            let _ = SecretServiceStore::connect(&c).await.unwrap().clear().await;
        }
    }
    if services::require("TOKEN_STORE_TEST_KEYUTILS").is_some() {
        let u = used.clone();
        leak_check(
            "keyutils",
            move || {
                let config = KeychainConfig::default().with_service(services::unique("ts-leak"));
                u.lock().unwrap().push(config.clone());
                async move {
                    let store: Arc<dyn RawStore> = Arc::new(KeyringStore::keyutils(&config)?);
                    Ok(Instance::new(store))
                }
            },
            vec![],
        )
        .await
        .assert_ok("keyutils");
        let configs: Vec<KeychainConfig> = std::mem::take(&mut *used.lock().unwrap());
        for c in configs {
            let _ = KeyringStore::keyutils(&c).unwrap().clear().await;
        }
    }
}
