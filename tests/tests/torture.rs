//! The torture suites on the memory store, plain and under the encryption layer: concurrent
//! model check, hostile keys and hostile stored bytes, and the core decoders on arbitrary
//! input. (Nothing persists and there is no service, so no crash or fault runs here.)

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use token_store_conformance::hostile::{self, hostile_cases};
use token_store_conformance::{Instance, concurrent_model_check, model_check_cases, summary};
use token_store_core::layers::Encrypted;
use token_store_core::{
    Error, KeyKind, MemoryStore, PutOptions, RawStore, StorageKey, TokenKey, TokenStore,
};
use token_store_core::{KdfParams, KeySource};

fn fast() -> KdfParams {
    KdfParams::MINIMUM
}

async fn plain() -> token_store_core::Result<Instance> {
    Ok(Instance::new(Arc::new(MemoryStore::new())))
}

async fn encrypted() -> token_store_core::Result<Instance> {
    let store = Encrypted::open_with_params(
        MemoryStore::new(),
        KeySource::passphrase(token_store_conformance::secrets::secret("pw")),
        fast(),
    )
    .await?;
    Ok(Instance::new(Arc::new(store)))
}

#[test]
fn concurrent_model_memory() {
    concurrent_model_check("memory", plain, model_check_cases(256));
}

#[test]
fn concurrent_model_memory_encrypted() {
    concurrent_model_check("memory+encrypted", encrypted, model_check_cases(256));
}

#[test]
fn hostile_keys_memory() {
    hostile::hostile_keys("memory", plain, hostile_cases(64));
}

#[test]
fn hostile_bytes_memory() {
    hostile::hostile_bytes("memory", plain, hostile_cases(64));
}

#[test]
fn hostile_keys_memory_encrypted() {
    hostile::hostile_keys("memory+encrypted", encrypted, hostile_cases(32));
}

#[test]
fn hostile_bytes_memory_encrypted() {
    hostile::hostile_bytes("memory+encrypted", encrypted, hostile_cases(32));
}

#[test]
fn core_decoders_on_arbitrary_input() {
    hostile::core_decoders(hostile_cases(64) * 8);
}

/// Ciphertext nobody sealed (random, damaged, another key's) under the encryption layer:
/// `Integrity` or `Corrupt`, never a panic or a wrong record.
#[test]
fn encrypted_layer_rejects_hostile_ciphertext() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = hostile_cases(64);
    let (inner, store, sealed) = rt.block_on(async {
        let inner = MemoryStore::new();
        let store = TokenStore::new(
            Encrypted::open_with_params(inner.clone(), KeySource::passphrase("pw"), fast())
                .await
                .unwrap(),
        );
        let key = TokenKey::for_server("https://enc.example");
        store
            .put(
                &key,
                &token_store_core::TokenRecord::new("t"),
                Default::default(),
            )
            .await
            .unwrap();
        let sealed = inner.read(&key.storage_key()).await.unwrap().unwrap().value;
        (inner, store, sealed.to_vec())
    });
    let len = sealed.len();
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec((0..len, any::<u8>(), 0u8..3), 1..6).prop_map(move |edits| {
            let mut v = sealed.clone();
            for (at, b, how) in edits {
                let at = at.min(v.len());
                match how {
                    0 if at < v.len() => v[at] ^= b | 1,
                    1 => v.insert(at, b),
                    _ => v.truncate(at),
                }
            }
            v
        }),
    ];
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let k = StorageKey::single(KeyKind::Meta, "hostile").unwrap();
    runner
        .run(&strategy, |bytes| {
            rt.block_on(async {
                inner
                    .write(&k, &bytes, &PutOptions::default())
                    .await
                    .unwrap();
                match store.raw().read(&k).await {
                    Err(Error::Integrity { .. } | Error::Corrupt { .. }) => Ok(()),
                    other => Err(TestCaseError::fail(format!("{other:?}"))),
                }
            })
        })
        .unwrap();
    summary::torture(
        "hostile-decoder",
        "memory+encrypted",
        &[
            ("cases", cases.to_string()),
            ("decoder", "sealed-value".into()),
        ],
    );
}

/// A store whose compare-and-swap checks and writes in two steps, with a pause between:
/// the concurrent model check must catch its lost updates (the checker's own test).
#[derive(Debug)]
struct Racy(MemoryStore);

#[token_store_core::async_trait]
impl RawStore for Racy {
    fn backend(&self) -> &'static str {
        "racy"
    }
    fn capabilities(&self) -> token_store_core::Capabilities {
        self.0.capabilities()
    }
    async fn read(
        &self,
        key: &StorageKey,
    ) -> token_store_core::Result<Option<token_store_core::RawRecord>> {
        self.0.read(key).await
    }
    async fn write(
        &self,
        key: &StorageKey,
        value: &[u8],
        options: &PutOptions,
    ) -> token_store_core::Result<token_store_core::Version> {
        let current = self.0.read(key).await?.map(|r| r.version);
        token_store_core::backend::check_precondition(
            "racy",
            key,
            &options.precondition,
            current.as_ref(),
        )?;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        self.0.write(key, value, &PutOptions::default()).await
    }
    async fn remove(
        &self,
        key: &StorageKey,
        precondition: &token_store_core::Precondition,
    ) -> token_store_core::Result<bool> {
        self.0.remove(key, precondition).await
    }
    async fn scan(
        &self,
        kind: KeyKind,
        filter: &token_store_core::ListFilter,
    ) -> token_store_core::Result<Vec<token_store_core::ListEntry>> {
        self.0.scan(kind, filter).await
    }
}

#[test]
fn concurrent_model_check_catches_a_racy_store() {
    let caught = std::panic::catch_unwind(|| {
        concurrent_model_check(
            "racy",
            || async { Ok(Instance::new(Arc::new(Racy(MemoryStore::new())))) },
            256,
        )
    });
    let message = match caught {
        Ok(()) => panic!("a store with a check-then-write race passed the concurrent model check"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    // The race shows in whichever rule the shrunk history breaks first (a lost update, a
    // vanished version, a version both deleted and overwritten, ...): any per-key verdict is a
    // catch; a factory or harness error is not.
    assert!(message.contains("Test failed: key k"), "{message}");
}
