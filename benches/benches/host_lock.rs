//! The keychain backends' host-wide lock measured alone: what it adds to every keychain
//! change (compare-and-swap, write, delete), an uncontended acquire and release through
//! the stores' own code (open the lock file with `O_NOFOLLOW`, `try_lock`, check that the
//! path still names the locked file, unlock, close), in the default lock directory.
//! The keychain operations themselves, with the lock, are in the `store` bench and the
//! runner (`--only secret-service,keyutils`).
//!
//! ```text
//! cargo bench -p token-store-bench --bench host_lock
//! ```

use criterion::{Criterion, criterion_group, criterion_main};
use token_store::keychain::{KeyLock, KeychainConfig, Platform};
use token_store_core::{KeyKind, StorageKey};

fn host_lock(c: &mut Criterion) {
    let key = StorageKey::single(KeyKind::Lease, "bench-host-lock").expect("key");
    let config = KeychainConfig::default().with_service("token-store-bench-host-lock");
    let mut g = c.benchmark_group("keychain host lock");
    // The same code and directory for every keychain; only the namespace hashed differs.
    let lock = KeyLock::new(Platform::Keyutils, &config, &key).expect("lock directory");
    g.bench_function("acquire + release (uncontended)", |b| {
        b.iter(|| drop(lock.lock().expect("uncontended lock")))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(200);
    targets = host_lock
}
criterion_main!(benches);
