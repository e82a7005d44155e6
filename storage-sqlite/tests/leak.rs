//! The secret-leak check on SQLite, plain and encrypted: the whole conformance suite with
//! every log event (TRACE), result, error and `Debug` output captured and searched for the
//! suite's tokens and the passphrase (its own test binary: the capture is process-wide).

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use token_store_conformance::leak::leak_check;
use token_store_conformance::secrets::secret;
use token_store_conformance::{Instance, services};
use token_store_core::RawStore;
use token_store_core::layers::Encrypted;
use token_store_core::{KdfParams, KeySource};
use token_store_sqlite::{SqliteConfig, SqliteStore};

async fn open(
    path: PathBuf,
    passphrase: Option<String>,
) -> token_store_core::Result<Arc<dyn RawStore>> {
    let store = SqliteStore::open(&SqliteConfig::new(path)).await?;
    Ok(match passphrase {
        Some(p) => Arc::new(
            // The cheapest parameters core accepts: the KDF's cost is not under test.
            Encrypted::open_with_params(store, KeySource::passphrase(p), KdfParams::MINIMUM)
                .await?,
        ),
        None => Arc::new(store),
    })
}

fn factory(
    root: Arc<tempfile::TempDir>,
    passphrase: Option<String>,
) -> impl Fn() -> token_store_conformance::BoxFuture<'static, token_store_core::Result<Instance>>
+ Send
+ Sync
+ 'static {
    move || {
        let path = root.path().join(services::unique("db")).join("tokens.db");
        let passphrase = passphrase.clone();
        Box::pin(async move {
            let store = open(path.clone(), passphrase.clone()).await?;
            Ok(Instance::with_reopen(store, move || {
                open(path.clone(), passphrase.clone())
            }))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_or_debug_sqlite() {
    let root = Arc::new(tempfile::tempdir().unwrap());
    leak_check("sqlite", factory(root.clone(), None), vec![])
        .await
        .assert_ok("sqlite");
    let passphrase = secret("sqlite-passphrase");
    leak_check(
        "sqlite+encrypted",
        factory(root, Some(passphrase.clone())),
        vec![passphrase],
    )
    .await
    .assert_ok("sqlite+encrypted");
}
