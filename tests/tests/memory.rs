//! The whole suite and the model check on the memory store, plain and under the encryption
//! layer.

use std::sync::Arc;

use token_store_conformance::{Instance, model_check, model_check_cases, run};
use token_store_core::layers::Encrypted;
use token_store_core::{KdfParams, KeySource};
use token_store_core::{MemoryStore, RawStore};

fn test_params() -> KdfParams {
    // The cheapest parameters the layer accepts for a passphrase.
    KdfParams::MINIMUM
}

/// A raw key: no Argon2id per store, so the model check's hundreds of stores stay fast.
async fn encrypted() -> token_store_core::Result<Arc<dyn RawStore>> {
    let key = KeySource::raw([42u8; 32]);
    let store = Encrypted::open(MemoryStore::new(), key).await?;
    Ok(Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_memory() {
    run("memory", || async {
        Ok(Instance::new(Arc::new(MemoryStore::new())))
    })
    .await
    .assert_ok();
}

/// The whole suite through the read cache of the handle (`TokenStore::with_cache`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_memory_cached() {
    run("memory+cache", || async {
        Ok(Instance::new(Arc::new(MemoryStore::new()))
            .cached(token_store_core::CacheOptions::new()))
    })
    .await
    .assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_memory_encrypted() {
    run("memory+encrypted", || async {
        Ok(Instance::new(encrypted().await?))
    })
    .await
    .assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_layer_keeps_only_ciphertext_and_detects_moves() {
    use token_store_core::{Error, Precondition, TokenKey, TokenRecord, TokenStore};
    let inner = MemoryStore::new();
    let store = TokenStore::new(
        Encrypted::open_with_params(inner.clone(), KeySource::passphrase("pw"), test_params())
            .await
            .unwrap(),
    );
    let a = TokenKey::for_server("https://a.example");
    let b = TokenKey::for_server("https://b.example");
    store
        .put(&a, &TokenRecord::new("SECRET-A"), Precondition::Any)
        .await
        .unwrap();
    let raw = inner.read(&a.storage_key()).await.unwrap().unwrap();
    assert!(
        !raw.value.windows(8).any(|w| w == b"SECRET-A"),
        "plaintext reached the backend"
    );
    // Move A's ciphertext under B: must be an integrity error, not A's token under B's key.
    inner
        .write(&b.storage_key(), &raw.value, &Default::default())
        .await
        .unwrap();
    assert!(matches!(store.get(&b).await, Err(Error::Integrity { .. })));
    // A wrong passphrase fails at open.
    let wrong =
        Encrypted::open_with_params(inner.clone(), KeySource::passphrase("nope"), test_params())
            .await;
    assert!(matches!(wrong, Err(Error::WrongKey { .. })));
    // The right one reopens and reads.
    let again = TokenStore::new(
        Encrypted::open_with_params(inner, KeySource::passphrase("pw"), test_params())
            .await
            .unwrap(),
    );
    let got = again.get(&a).await.unwrap().unwrap();
    assert_eq!(got.value.access_token.expose(), "SECRET-A");
}

#[tokio::test]
async fn an_undecryptable_lease_never_jams_refresh_under_encryption() {
    use std::time::Duration;
    use token_store_core::{KeyKind, Lease, LeaseOptions, PutOptions, StorageKey, TokenStore};
    let inner = MemoryStore::new();
    let store = TokenStore::new(
        Encrypted::open(inner.clone(), KeySource::raw([1u8; 32]))
            .await
            .unwrap(),
    );
    // A writer without the key leaves bytes the layer cannot open at the lease's key.
    let lease_key = StorageKey::single(KeyKind::Lease, "refresh:x").unwrap();
    inner
        .write(
            &lease_key,
            b"TSE\x01 garbage that is no sealed value",
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let options = LeaseOptions::new(Duration::from_secs(5), Duration::from_millis(300));
    let lease = Lease::acquire(&store, "refresh:x", &options).await.unwrap();
    lease.release().await.unwrap();
    // Other kinds stay strict: an undecryptable token is an integrity error, never "absent".
    let token = token_store_core::TokenKey::for_server("https://x.example");
    inner
        .write(&token.storage_key(), b"garbage", &PutOptions::default())
        .await
        .unwrap();
    assert!(store.get(&token).await.is_err());
}

#[test]
fn model_memory() {
    model_check(
        "memory",
        || async { Ok(Instance::new(Arc::new(MemoryStore::new()))) },
        model_check_cases(256),
    );
}

#[test]
fn model_memory_encrypted() {
    model_check(
        "memory+encrypted",
        || async { Ok(Instance::new(encrypted().await?)) },
        model_check_cases(256),
    );
}
