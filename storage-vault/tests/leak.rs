//! The secret-leak check on Vault / OpenBao, with a root token and with AppRole: the whole
//! conformance suite with every log event (TRACE, the HTTP client's included), result, error
//! and `Debug` output captured and searched for the suite's tokens and for the Vault
//! credentials themselves (its own test binary: the capture is process-wide).

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{approle, env, instance, token_config, unique_prefix};
use token_store_conformance::leak::leak_check;
use token_store_conformance::services::require;
use token_store_vault::VaultConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_or_debug_vault() {
    let Some(e) = env() else { return };
    let (addr, token) = (e.addr.clone(), e.token.clone());
    leak_check(
        "vault",
        move || {
            let config = token_config(&addr, &token, &unique_prefix("token-store-leak"));
            async move { instance(config).await }
        },
        vec![e.token.clone()],
    )
    .await
    .assert_ok("vault");
    let (Some(prefix), Some(role_id), Some(secret_id)) = (
        require("TOKEN_STORE_TEST_VAULT_APPROLE_PREFIX"),
        require("TOKEN_STORE_TEST_VAULT_ROLE_ID"),
        require("TOKEN_STORE_TEST_VAULT_SECRET_ID"),
    ) else {
        return;
    };
    let addr = e.addr.clone();
    let (rid, sid) = (role_id.clone(), secret_id.clone());
    leak_check(
        "vault+approle",
        move || {
            let config = VaultConfig::new(&addr, approle(&rid, &sid))
                .unwrap()
                .with_prefix(unique_prefix(&prefix))
                .unwrap();
            async move { instance(config).await }
        },
        vec![secret_id, role_id, e.token],
    )
    .await
    .assert_ok("vault+approle");
}
