//! Leases: a named, expiring lock kept in the store itself, so it works across every process
//! and host that shares the store (Redis, Vault, SQLite, the file store).
//!
//! Built only on conditional writes: take = create-if-absent, or replace an expired holder's
//! record if it is still the version we saw; release = delete-if-still-ours. A holder that
//! dies simply lets its lease expire.
//!
//! So a lease is exactly as strong as the store's compare-and-swap: [`Lease::acquire`]
//! refuses a store whose compare-and-swap reaches less far than the store is shared
//! ([`Capabilities::cas_covers_sharing`]), unless the caller promises that one process uses
//! the store ([`LeaseOptions::assume_single_process`]).
//!
//! No writer can jam a lease: a lease record that cannot be read (undecodable, or written by
//! someone without the encryption key) or that claims to live longer than [`MAX_LEASE_TTL`]
//! counts as expired and is replaced.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Action};
use crate::error::{Error, Result};
use crate::key::{KeyKind, StorageKey};
use crate::metrics;
use crate::raw::{Capabilities, Precondition, PutOptions, Version};
use crate::record::unix_now;
use crate::store::TokenStore;

/// The longest a lease may live. A lease record claiming more (a far-future expiry written by
/// a confused or hostile writer) counts as expired, so nobody can hold refresh up forever.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);

#[derive(Serialize, Deserialize)]
struct LeaseRecord {
    owner: String,
    expires_at: f64,
}

/// A held lease. Release it with [`Lease::release`]; dropping it without releasing leaves
/// it to expire (a crashed holder behaves the same).
#[must_use = "a lease is held until released or expired"]
pub struct Lease {
    store: TokenStore,
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
    /// The caller promises that only this process uses the store's records, so a store
    /// whose compare-and-swap holds only within one process is accepted.
    pub single_process: bool,
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

    /// Accept a store whose compare-and-swap holds only within this process, because only
    /// this process uses its records. With another process sharing the store, two holders
    /// could take the lease at once.
    pub fn assume_single_process(mut self) -> Self {
        self.single_process = true;
        self
    }
}

/// Refuses a store on which a lease (so a refresh guard) would not hold: its
/// compare-and-swap reaches less far than the processes that can open its records.
pub(crate) fn check_lease_safe(store: &TokenStore, single_process: bool) -> Result<()> {
    Lease::check_store(store, single_process)
}

impl Lease {
    /// Whether leases (and so refresh guards) hold on `store`: [`Error::Config`] when its
    /// compare-and-swap reaches less far than the processes that can open its records
    /// ([`Capabilities::cas_covers_sharing`]), unless `single_process` says only this
    /// process uses the store. Refresh layers built on [`Lease`] call it at construction.
    pub fn check_store(store: &TokenStore, single_process: bool) -> Result<()> {
        let caps: Capabilities = store.capabilities();
        if caps.cas_covers_sharing() || single_process {
            return Ok(());
        }
        Err(Error::config(format!(
            "the {} store is shared {}, but its compare-and-swap holds {}: two processes could both \
         refresh one rotating refresh token. Use a store with shared compare-and-swap, or opt \
         in with assume_single_process() if only this process uses it",
            store.backend(),
            caps.shared_with,
            caps.cas,
        )))
    }
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: Duration::from_secs(30),
            wait: Duration::from_secs(30),
            poll: Duration::from_millis(10),
            single_process: false,
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
    /// Fails with [`Error::Unavailable`] when the wait runs out, and with [`Error::Config`]
    /// on a store whose compare-and-swap does not cover every process sharing it (see the
    /// module docs) or a TTL over [`MAX_LEASE_TTL`].
    ///
    /// ```
    /// # async fn demo() -> token_store_core::Result<()> {
    /// use std::time::Duration;
    /// use token_store_core::{Lease, LeaseOptions, TokenStore};
    /// let store = TokenStore::in_memory();
    /// let options = LeaseOptions::new(Duration::from_secs(10), Duration::from_millis(50));
    /// let lease = Lease::acquire(&store, "refresh:example", &options).await?;
    /// // While it is held, nobody else gets it:
    /// assert!(Lease::acquire(&store, "refresh:example", &options).await.is_err());
    /// lease.release().await?;
    /// Lease::acquire(&store, "refresh:example", &options).await?.release().await?;
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
    /// ```
    pub async fn acquire(store: &TokenStore, name: &str, options: &LeaseOptions) -> Result<Lease> {
        let waited = metrics::Stopwatch::start();
        let result = Self::take(store, name, options).await;
        let outcome = match &result {
            Ok(_) => metrics::LeaseWait::Acquired,
            Err(e) if e.is_retryable() => metrics::LeaseWait::Timeout,
            Err(_) => metrics::LeaseWait::Error,
        };
        metrics::lease_wait(store, outcome, waited);
        result
    }

    /// [`Lease::acquire`] without recording the wait: for callers that wait in several
    /// steps and record the whole wait themselves ([`crate::TokenManager`]).
    pub(crate) async fn take(
        store: &TokenStore,
        name: &str,
        options: &LeaseOptions,
    ) -> Result<Lease> {
        check_lease_safe(store, options.single_process)?;
        if options.ttl > MAX_LEASE_TTL {
            return Err(Error::config(format!(
                "a lease lives at most {MAX_LEASE_TTL:?}, not {:?}",
                options.ttl
            )));
        }
        let raw = store.raw();
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
            let attempt = match raw.read(&key).await? {
                None => Some(Precondition::IfAbsent),
                Some(held) => {
                    let now = unix_now();
                    let expired = serde_json::from_slice::<LeaseRecord>(&held.value)
                        .map(|l| {
                            !l.expires_at.is_finite()
                                || l.expires_at <= now
                                || l.expires_at > now + MAX_LEASE_TTL.as_secs_f64()
                        })
                        // An unreadable lease record can never be released by its writer.
                        .unwrap_or(true);
                    expired.then_some(Precondition::IfVersion(held.version))
                }
            };
            if let Some(precondition) = attempt {
                let takeover = matches!(precondition, Precondition::IfVersion(_));
                let options = PutOptions::new(precondition).with_ttl(Some(options.ttl));
                match raw.write(&key, &bytes, &options).await {
                    Ok(version) => {
                        if takeover {
                            // The holder died (or wrote garbage): worth an alert if frequent.
                            metrics::lease_takeover(store);
                            audit::emit(Action::LeaseTakenOver, &**raw, &key, Some(&version));
                        }
                        return Ok(Lease {
                            store: store.clone(),
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
            .raw()
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
            let store = self.store.raw().clone();
            let key = self.key.clone();
            let version = self.version.clone();
            handle.spawn(async move {
                let _ = store.remove(&key, &Precondition::IfVersion(version)).await;
            });
        }
    }
}
