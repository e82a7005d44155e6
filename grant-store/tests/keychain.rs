//! The grant conformance suite on the OS keychains this machine has: the Secret Service
//! (gnome-keyring on the test bus, `TOKEN_STORE_TEST_SECRET_SERVICE=1`) and the kernel's
//! keyutils (`TOKEN_STORE_TEST_KEYUTILS=1`, under `keyctl session -` so the keys live in a
//! private session keyring). Each instance has a service name of its own; every record the
//! suite wrote is deleted afterwards.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use token_store_conformance::grants::run_grants;
use token_store_conformance::{Instance, services};
use token_store_core::{KeyKind, ListEntry, ListFilter, Precondition, RawStore};

#[derive(Clone, Default)]
struct Used(Arc<Mutex<Vec<String>>>);

impl Used {
    fn factory(
        &self,
        backend: &'static str,
    ) -> impl Fn() -> token_store_conformance::BoxFuture<'static, token_store_core::Result<Instance>>
    + Send
    + Sync
    + 'static {
        let used = self.clone();
        move || {
            let url = format!(
                "keychain:{backend}?service={}",
                services::unique("ts-grants")
            );
            used.0.lock().unwrap().push(url.clone());
            Box::pin(async move {
                let store = token_store::open(&url).await?.raw().clone();
                Ok(Instance::with_reopen(store, move || {
                    let url = url.clone();
                    async move { Ok(token_store::open(&url).await?.raw().clone()) }
                }))
            })
        }
    }

    /// Deletes every record of every kind the suite's stores hold.
    async fn clean(&self) {
        let urls = self.0.lock().unwrap().clone();
        for url in urls {
            let store = token_store::open(&url).await.unwrap();
            let raw: &Arc<dyn RawStore> = store.raw();
            for kind in KeyKind::ALL {
                for entry in raw.scan(kind, &ListFilter::all()).await.unwrap() {
                    if let ListEntry::Key(k) = entry {
                        raw.remove(&k, &Precondition::Any).await.unwrap();
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_secret_service() {
    if services::require("TOKEN_STORE_TEST_SECRET_SERVICE").is_none()
        || services::require("DBUS_SESSION_BUS_ADDRESS").is_none()
    {
        return;
    }
    let used = Used::default();
    let report = run_grants("secret-service", used.factory("secret-service")).await;
    used.clean().await;
    report.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_keyutils() {
    if services::require("TOKEN_STORE_TEST_KEYUTILS").is_none() {
        return;
    }
    let used = Used::default();
    let report = run_grants("keyutils", used.factory("keyutils")).await;
    used.clean().await;
    report.assert_ok();
}
