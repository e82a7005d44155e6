//! The secret-leak check on the encrypted file store: the whole conformance suite with every
//! log event (TRACE), result, error and `Debug` output captured and searched for the suite's
//! tokens and the store's passphrase (its own test binary: the capture is process-wide).

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use token_store_conformance::Instance;
use token_store_conformance::leak::leak_check;
use token_store_conformance::secrets::secret;
use token_store_core::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_or_debug_file() {
    let passphrase = secret("file-passphrase");
    let p = passphrase.clone();
    leak_check(
        "file",
        move || {
            let p = p.clone();
            async move {
                let tmp = Arc::new(tempfile::tempdir().map_err(Error::config)?);
                let dir = tmp.path().join("store");
                let store = common::arc(common::open(&dir, common::pass(&p)).await?);
                Ok(Instance::with_reopen(store, move || {
                    let (tmp, dir, p) = (tmp.clone(), dir.clone(), p.clone());
                    async move {
                        let _keep = tmp;
                        Ok(common::arc(common::open(&dir, common::pass(&p)).await?))
                    }
                }))
            }
        },
        vec![passphrase],
    )
    .await
    .assert_ok("file");
}
