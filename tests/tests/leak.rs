//! The secret-leak check on the memory store, plain and encrypted (its own test binary:
//! the capturing subscriber is process-wide).

use std::sync::Arc;

use token_store_conformance::Instance;
use token_store_conformance::leak::leak_check;
use token_store_conformance::secrets::secret;
use token_store_core::MemoryStore;
use token_store_core::layers::Encrypted;
use token_store_core::{KdfParams, KeySource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_or_debug_memory() {
    let passphrase = secret("memory-passphrase");
    let p = passphrase.clone();
    leak_check(
        "memory",
        || async { Ok(Instance::new(Arc::new(MemoryStore::new()))) },
        vec![],
    )
    .await
    .assert_ok("memory");
    leak_check(
        "memory+encrypted",
        move || {
            let p = p.clone();
            async move {
                let store = Encrypted::open_with_params(
                    MemoryStore::new(),
                    KeySource::passphrase(p),
                    KdfParams::MINIMUM,
                )
                .await?;
                Ok(Instance::new(Arc::new(store)))
            }
        },
        vec![passphrase],
    )
    .await
    .assert_ok("memory+encrypted");
}
