//! Several real processes on one keychain (gnome-keyring on the shared bus, and keyutils in
//! the session keyring every child inherits), through the conformance crate's multi-process
//! harness: compare-and-swap increments lose no update, keys created at the same moment by
//! several processes are all listed (the keyring-core index), the concurrent model check
//! holds with every task in a process of its own, and a writer killed with SIGKILL at random
//! moments (often while it holds the host lock, in the middle of a compare-and-swap) leaves
//! every record whole and every acknowledged write in place.
//!
//! Needs `TOKEN_STORE_TEST_SECRET_SERVICE=1` + `DBUS_SESSION_BUS_ADDRESS` and
//! `TOKEN_STORE_TEST_KEYUTILS=1` under `keyctl session -`, as the other keychain tests.
#![cfg(target_os = "linux")]
// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use token_store_conformance::{BoxFuture, crash, processes, services};
use token_store_core::{RawStore, StoreUrl};
use token_store_keychain::{KeychainConfig, KeyringStore, SecretServiceStore};

fn open(url: StoreUrl) -> BoxFuture<'static, token_store_core::Result<Arc<dyn RawStore>>> {
    Box::pin(async move { Ok(token_store_keychain::open_url(&url).await?.raw().clone()) })
}

/// The child processes of the harnesses (nothing in a normal run).
#[test]
fn processes_child() {
    processes::child(open);
}

#[test]
fn crash_child() {
    crash::child(open);
}

fn shared_bus() -> bool {
    services::require("TOKEN_STORE_TEST_SECRET_SERVICE").is_some()
        && services::require("DBUS_SESSION_BUS_ADDRESS").is_some()
}

fn keyutils() -> bool {
    services::require("TOKEN_STORE_TEST_KEYUTILS").is_some()
}

/// A keychain URL with a service name of its own, and what to delete afterwards.
struct Fresh {
    url: String,
    config: KeychainConfig,
    keyutils: bool,
}

impl Fresh {
    fn new(keychain: &str, extra: &str) -> Self {
        let service = services::unique("ts-mp");
        Fresh {
            url: format!("keychain:{keychain}?service={service}{extra}"),
            // Deleting hundreds of Secret Service items takes longer than one call's default.
            config: KeychainConfig::default()
                .with_service(service)
                .with_timeout(std::time::Duration::from_secs(300)),
            keyutils: keychain == "keyutils",
        }
    }

    async fn clean_async(self) {
        let removed = if self.keyutils {
            KeyringStore::keyutils(&self.config)
                .unwrap()
                .clear()
                .await
                .unwrap()
        } else {
            SecretServiceStore::connect(&self.config)
                .await
                .unwrap()
                .clear()
                .await
                .unwrap()
        };
        assert!(
            removed > 0,
            "the test left nothing to delete in {}?",
            self.url
        );
    }

    fn clean(self) {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(self.clean_async());
    }
}

#[test]
fn cas_increments_across_processes_keyutils() {
    if !keyutils() {
        return;
    }
    let fresh = Fresh::new("keyutils", "");
    let r = processes::cas_increments("keyutils", &fresh.url, open, 8, 200);
    println!("{r:?}");
    fresh.clean();
}

#[test]
fn cas_increments_across_processes_secret_service() {
    if !shared_bus() {
        return;
    }
    let fresh = Fresh::new("secret-service", "");
    // Every write costs gnome-keyring a rewrite of its file: 4 x 25 keeps this to seconds.
    let r = processes::cas_increments("secret-service", &fresh.url, open, 4, 25);
    println!("{r:?}");
    fresh.clean();
}

#[test]
fn keys_created_at_once_by_several_processes_are_all_listed_keyutils() {
    if !keyutils() {
        return;
    }
    let fresh = Fresh::new("keyutils", "");
    let r = processes::distinct_creates("keyutils", &fresh.url, open, 8, 50);
    println!("{r:?}");
    fresh.clean();
}

#[test]
fn keys_created_at_once_by_several_processes_are_all_listed_keyutils_windows_chunks() {
    if !keyutils() {
        return;
    }
    // An index of 400 keys in 2 560-byte chunks (Windows' layout): every update rewrites
    // ~16 chunks, and listing reads them while others may be replacing them.
    let fresh = Fresh::new("keyutils", "&chunk_size=2560");
    let r = processes::distinct_creates("keyutils-2560", &fresh.url, open, 8, 50);
    println!("{r:?}");
    fresh.clean();
}

#[test]
fn keys_created_at_once_by_several_processes_are_all_listed_secret_service() {
    if !shared_bus() {
        return;
    }
    let fresh = Fresh::new("secret-service", "");
    let r = processes::distinct_creates("secret-service", &fresh.url, open, 8, 50);
    println!("{r:?}");
    fresh.clean();
}

#[test]
fn concurrent_model_across_processes_keyutils() {
    if !keyutils() {
        return;
    }
    let fresh = Fresh::new("keyutils", "");
    processes::concurrent_model_check("keyutils", &fresh.url, open, 4, 64);
    fresh.clean();
}

#[test]
fn concurrent_model_across_processes_keyutils_tiny_chunks() {
    if !keyutils() {
        return;
    }
    // Every record chunked: reads race other processes' chunk deletions.
    let fresh = Fresh::new("keyutils", "&chunk_size=64");
    processes::concurrent_model_check("keyutils-64", &fresh.url, open, 4, 64);
    fresh.clean();
}

#[test]
fn concurrent_model_across_processes_secret_service() {
    if !shared_bus() {
        return;
    }
    let fresh = Fresh::new("secret-service", "");
    processes::concurrent_model_check("secret-service", &fresh.url, open, 3, 24);
    fresh.clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_at_random_moments_loses_nothing_keyutils() {
    if !keyutils() {
        return;
    }
    // Chunked at Windows' size, so kills land between the chunks of a write too.
    let fresh = Fresh::new("keyutils", "&chunk_size=2560");
    let report = crash::run("keyutils-2560", &fresh.url, open, crash::rounds(100), None).await;
    report.assert_ok("keyutils-2560");
    fresh.clean_async().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_at_random_moments_loses_nothing_secret_service() {
    if !shared_bus() {
        return;
    }
    let fresh = Fresh::new("secret-service", "");
    let report = crash::run("secret-service", &fresh.url, open, crash::rounds(40), None).await;
    // Everything `assert_ok` checks but its "more acknowledged writes than rounds": the
    // harness kills within 250 ms of the child's start and a gnome-keyring write takes
    // 24-53 ms, so about one write per round is acknowledged.
    assert!(
        report.failures.is_empty()
            && report.lost == 0
            && report.torn == 0
            && report.unreadable == 0
            && report.bad_listings == 0
            && report.child_failures == 0,
        "crash[secret-service]: {report:?}"
    );
    assert!(
        report.acked > 0,
        "crash[secret-service]: nothing acknowledged"
    );
    fresh.clean_async().await;
}
