//! Leases: a named, expiring lock kept in the store itself, so it works across every process
//! and host that shares the store (Redis, Vault, SQLite, the file store).
//!
//! Built only on conditional writes: take = create-if-absent, or replace an expired holder's
//! record if it is still the version we saw; release = delete-if-still-ours. A holder that
//! dies simply lets its lease expire.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key::{KeyKind, StorageKey};
use crate::raw::{Precondition, PutOptions, RawStore, Version};
use crate::record::unix_now;

#[derive(Serialize, Deserialize)]
struct LeaseRecord {
    owner: String,
    expires_at: f64,
}

/// A held lease. Release it with [`Lease::release`]; dropping it without releasing leaves
/// it to expire (a crashed holder behaves the same).
#[must_use = "a lease is held until released or expired"]
pub struct Lease {
    store: Arc<dyn RawStore>,
    key: StorageKey,
    version: Version,
    released: bool,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// How to take a lease.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LeaseOptions {
    /// How long the lease lives if its holder never releases it (e.g. dies).
    pub ttl: Duration,
    /// How long to wait for a lease someone else holds before giving up.
    pub wait: Duration,
    /// The first pause between attempts (doubles up to 200 ms, with jitter).
    pub poll: Duration,
}

impl LeaseOptions {
    /// A lease living `ttl` unless released, waited for at most `wait`.
    pub fn new(ttl: Duration, wait: Duration) -> Self {
        LeaseOptions {
            ttl,
            wait,
            ..Self::default()
        }
    }

    /// The same options with another first pause between attempts.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: Duration::from_secs(30),
            wait: Duration::from_secs(30),
            poll: Duration::from_millis(10),
        }
    }
}

fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = crate::crypto::fill_random(&mut b);
    let frac = u16::from_le_bytes(b) as f64 / u16::MAX as f64;
    max.mul_f64(0.5 + frac / 2.0)
}

impl Lease {
    /// Takes the lease `name` in `store`, waiting at most `options.wait` for its holder.
    /// Fails with [`Error::Unavailable`] when the wait runs out.
    pub async fn acquire(
        store: Arc<dyn RawStore>,
        name: &str,
        options: &LeaseOptions,
    ) -> Result<Lease> {
        let key = StorageKey::single(KeyKind::Lease, name)?;
        let owner = Version::random()?.to_string();
        let deadline = tokio::time::Instant::now() + options.wait;
        let mut pause = options.poll;
        loop {
            let record = LeaseRecord {
                owner: owner.clone(),
                expires_at: unix_now() + options.ttl.as_secs_f64(),
            };
            let bytes = serde_json::to_vec(&record)
                .map_err(|e| Error::invalid_input(format!("lease: {e}")))?;
            let attempt = match store.read(&key).await? {
                None => Some(Precondition::IfAbsent),
                Some(held) => {
                    let expired = serde_json::from_slice::<LeaseRecord>(&held.value)
                        .map(|l| l.expires_at <= unix_now())
                        // An unreadable lease record can never be released by its writer.
                        .unwrap_or(true);
                    expired.then_some(Precondition::IfVersion(held.version))
                }
            };
            if let Some(precondition) = attempt {
                let options = PutOptions::new(precondition).with_ttl(Some(options.ttl));
                match store.write(&key, &bytes, &options).await {
                    Ok(version) => {
                        return Ok(Lease {
                            store,
                            key,
                            version,
                            released: false,
                        });
                    }
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::unavailable(
                    store.backend(),
                    format!(
                        "lease {name} still held by another process after {:?}",
                        options.wait
                    ),
                    None,
                ));
            }
            tokio::time::sleep(jitter(pause).min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Releases the lease, unless it expired and someone else took it meanwhile.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        match self
            .store
            .remove(&self.key, &Precondition::IfVersion(self.version.clone()))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Best effort: release in the background when a runtime is there; otherwise the
        // lease simply expires.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            let key = self.key.clone();
            let version = self.version.clone();
            handle.spawn(async move {
                let _ = store.remove(&key, &Precondition::IfVersion(version)).await;
            });
        }
    }
}
