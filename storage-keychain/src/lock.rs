//! The process-wide per-key lock, the first half of what stands in for compare-and-swap,
//! which no keychain has.
//!
//! Every store instance in the process that talks to the same keychain namespace (same
//! backend, same service name) shares one async mutex per key, so a read-check-write under
//! it is atomic against every other writer in this process. Other processes are excluded by
//! the host-wide lock file taken after it ([`crate::host_lock`]); this mutex keeps the
//! waiters of one process queueing here instead of all polling that file.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

type Registry = HashMap<(String, String), Weak<tokio::sync::Mutex<()>>>;

static LOCKS: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Locks `(namespace, key)` for this process. The guard is owned so it can move into a
/// blocking task and be released only when that task ends, even if the caller gave up.
pub(crate) async fn lock(namespace: &str, key: &str) -> OwnedMutexGuard<()> {
    mutex_for(namespace, key).lock_owned().await
}

/// [`lock`] for code already on a blocking thread (never call it from async code).
pub(crate) fn lock_blocking(namespace: &str, key: &str) -> OwnedMutexGuard<()> {
    mutex_for(namespace, key).blocking_lock_owned()
}

fn mutex_for(namespace: &str, key: &str) -> Arc<tokio::sync::Mutex<()>> {
    {
        // A poisoned registry only means another thread panicked while holding it; the map
        // itself is still consistent (every mutation is a single insert or retain).
        let mut map = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
        let id = (namespace.to_owned(), key.to_owned());
        match map.get(&id).and_then(Weak::upgrade) {
            Some(m) => m,
            None => {
                if map.len() >= 256 && map.len().is_power_of_two() {
                    map.retain(|_, w| w.strong_count() > 0);
                }
                let m = Arc::new(tokio::sync::Mutex::new(()));
                map.insert(id, Arc::downgrade(&m));
                m
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_excludes_other_keys_do_not() {
        let a = lock("ns", "k").await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), lock("ns", "k"))
                .await
                .is_err()
        );
        let _other = lock("ns", "k2").await;
        let _other_ns = lock("ns2", "k").await;
        drop(a);
        let _again = lock("ns", "k").await;
    }
}
