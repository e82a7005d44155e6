//! [`TokenManager`]: hands out a valid access token and refreshes it at most once per expiry
//! across every process and host sharing the store.
//!
//! The refresh-token rotation race: two replicas see an expiring token, both refresh with the
//! same refresh token, the identity provider sees the reuse and revokes the whole token family,
//! and a naive error handler then deletes the winner's fresh tokens. The manager prevents each
//! step: a store-held [`Lease`] lets one refresher run, waiters re-read and adopt the winner's
//! token, the result is written with compare-and-swap, a rejected refresh token deletes the
//! record only if it is still the version that was rejected, and a transient failure deletes
//! nothing.

use std::future::Future;
use std::time::Duration;

use crate::error::{BoxError, Error};
use crate::key::TokenKey;
use crate::lease::{Lease, LeaseOptions, check_lease_safe};
use crate::metrics::{self, LeaseWait, RefreshOutcome};
use crate::raw::{Precondition, Version};
use crate::record::{TokenRecord, Versioned};
use crate::store::TokenStore;

/// How a refresh attempt failed, as the caller's refresh function reports it.
#[derive(Debug)]
#[non_exhaustive]
pub enum RefreshError {
    /// The authorization server rejected the refresh token for good (`invalid_grant`): the
    /// user must log in again.
    Rejected(String),
    /// Anything that may succeed later (network, 5xx, timeouts). Never deletes tokens.
    Transient(BoxError),
}

/// Why [`TokenManager::valid_token`] could not return a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// No usable token is stored: a (new) login is needed.
    #[error("no usable token stored for {key}: login required")]
    LoginRequired {
        /// The key.
        key: String,
    },
    /// The authorization server rejected the refresh token; the rejected record was removed.
    #[error("the refresh token for {key} was rejected: {reason}")]
    RefreshRejected {
        /// The key.
        key: String,
        /// The server's reason (its error code and description, never a token).
        reason: String,
    },
    /// The refresh failed in a way that may pass; the stored tokens were kept.
    #[error("refreshing the token for {key} failed; tokens kept")]
    RefreshFailed {
        /// The key.
        key: String,
        /// The refresh function's error.
        #[source]
        source: BoxError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),
}

fn login_required(key: &TokenKey) -> ManagerError {
    ManagerError::LoginRequired {
        key: key.to_string(),
    }
}

/// Keeps tokens valid; see the module docs.
///
/// ```
/// # async fn demo() -> Result<(), token_store_core::ManagerError> {
/// use std::time::Duration;
/// use token_store_core::{Precondition, TokenKey, TokenManager, TokenRecord, TokenStore};
/// let store = TokenStore::in_memory();
/// let key = TokenKey::for_server("https://mcp.example.com/mcp");
/// let expired = TokenRecord::new("old").with_refresh_token("rt-1").expires_in(Duration::ZERO);
/// store.put(&key, &expired, Precondition::Any).await?;
/// let manager = TokenManager::new(store)?;
/// let token = manager
///     .valid_token(&key, |old| async move {
///         // Call the token endpoint with old.refresh_token here.
///         Ok(TokenRecord::new("new").with_refresh_token("rt-2").expires_in(Duration::from_secs(3600)))
///     })
///     .await?;
/// assert_eq!(token.access_token.expose(), "new");
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct TokenManager {
    store: TokenStore,
    leeway: Duration,
    lease: LeaseOptions,
    single_process: bool,
}

impl TokenManager {
    /// A manager over `store`, refreshing tokens that expire within 60 s.
    ///
    /// Fails with [`Error::Config`] when the store's compare-and-swap reaches less far than
    /// the processes that share it (see [`crate::Capabilities::cas_covers_sharing`]): there,
    /// two processes could both spend one rotating refresh token and log the user out. A
    /// program that is the only user of such a store says so with
    /// [`TokenManager::assume_single_process`].
    ///
    /// The manager reads through a read cache ([`TokenStore::with_cache`]): the store's own
    /// when it has one, else one with [`crate::CacheOptions::default`] (5 s max age); a token
    /// within the refresh margin is always read from the store. Writes through other handles
    /// than [`TokenManager::store`] are seen within the max age, at once near expiry; pass
    /// `store.without_cache()` to read the store on every call.
    pub fn new(store: TokenStore) -> Result<Self, Error> {
        check_lease_safe(&store, false)?;
        Ok(Self::unchecked(store, false))
    }

    /// A manager over a store that only this process uses, whatever its compare-and-swap
    /// guarantees. Another process refreshing through the same store could then spend the
    /// same refresh token.
    pub fn assume_single_process(store: TokenStore) -> Self {
        Self::unchecked(store, true)
    }

    fn unchecked(store: TokenStore, single_process: bool) -> Self {
        TokenManager {
            store: store.cached_or_default(),
            leeway: Duration::from_secs(60),
            lease: LeaseOptions::default(),
            single_process,
        }
    }

    /// Refresh tokens expiring within `leeway` (default 60 s, mcp-agent's default).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How the refresh lease is taken (its TTL must exceed the longest refresh call).
    pub fn with_lease_options(mut self, options: LeaseOptions) -> Self {
        self.lease = options;
        self
    }

    /// The store.
    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// The name of the refresh lease of `key` (a digest: keys can be long).
    pub fn lease_name(key: &TokenKey) -> String {
        format!(
            "refresh:{}",
            Version::of_bytes(key.storage_key().encode().as_bytes())
        )
    }

    /// Returns a token not expiring within the leeway, refreshing it with `refresh` when
    /// needed. Across every process sharing the store, one refresh runs per expiry; the
    /// others wait and get its result.
    pub async fn valid_token<F, Fut>(
        &self,
        key: &TokenKey,
        refresh: F,
    ) -> Result<TokenRecord, ManagerError>
    where
        F: FnOnce(TokenRecord) -> Fut,
        Fut: Future<Output = Result<TokenRecord, RefreshError>>,
    {
        let store = &self.store;
        let login_required = || login_required(key);
        // Through the cache: a hit is never within max(leeway, the cache's margin) of expiry.
        let first = store
            .get_within::<TokenRecord>(key.as_storage_key(), self.leeway)
            .await?
            .ok_or_else(login_required)?;
        if !first.value.is_expired(self.leeway) {
            return Ok(first.value.clone());
        }
        let waited = metrics::Stopwatch::start();
        let acquired = self.acquire_or_adopt(key).await;
        let waited_for = match &acquired {
            Ok(Ok(_)) => LeaseWait::Acquired,
            Ok(Err(_)) => LeaseWait::Adopted,
            Err(e) if e.is_retryable() => LeaseWait::Timeout,
            Err(_) => LeaseWait::Error,
        };
        metrics::lease_wait(store, waited_for, waited);
        let lease = match acquired {
            Ok(Ok(lease)) => lease,
            Ok(Err(adopted)) => {
                metrics::record_refresh(store, RefreshOutcome::Adopted);
                return Ok(adopted);
            }
            Err(e) => {
                metrics::record_refresh(store, RefreshOutcome::Error);
                return Err(e.into());
            }
        };
        let result = self.refresh_locked(key, refresh).await;
        // A failed release only delays the next refresher until the lease expires.
        let _ = lease.release().await;
        let outcome = match &result {
            Ok((_, outcome)) => *outcome,
            Err(ManagerError::LoginRequired { .. }) => RefreshOutcome::LoginRequired,
            Err(ManagerError::RefreshRejected { .. }) => RefreshOutcome::Rejected,
            Err(ManagerError::RefreshFailed { .. }) => RefreshOutcome::Transient,
            Err(ManagerError::Store(_)) => RefreshOutcome::Error,
        };
        metrics::record_refresh(store, outcome);
        result.map(|(token, _)| token)
    }

    /// Takes the refresh lease in short steps, re-reading between them: when the holder has
    /// meanwhile stored a fresh token, that token is adopted at once (`Err`) instead of waiting
    /// for the lease only to find the work done.
    async fn acquire_or_adopt(&self, key: &TokenKey) -> Result<Result<Lease, TokenRecord>, Error> {
        let store = &self.store;
        let name = Self::lease_name(key);
        let deadline = tokio::time::Instant::now() + self.lease.wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let step = LeaseOptions {
                wait: left.min(Duration::from_millis(100)),
                single_process: self.single_process || self.lease.single_process,
                ..self.lease.clone()
            };
            // Lease::take: the whole wait is recorded once, by the caller.
            match Lease::take(store, &name, &step).await {
                Ok(lease) => return Ok(Ok(lease)),
                Err(e) if e.is_retryable() && !left.is_zero() => {
                    if let Some(current) = store.get_fresh(key).await?
                        && !current.value.is_expired(self.leeway)
                    {
                        return Ok(Err(current.value));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn refresh_locked<F, Fut>(
        &self,
        key: &TokenKey,
        refresh: F,
    ) -> Result<(TokenRecord, RefreshOutcome), ManagerError>
    where
        F: FnOnce(TokenRecord) -> Fut,
        Fut: Future<Output = Result<TokenRecord, RefreshError>>,
    {
        let store = &self.store;
        let login_required = || login_required(key);
        // Re-read under the lease: whoever held it before us may have refreshed already.
        let Versioned {
            value: current,
            version,
        } = store.get_fresh(key).await?.ok_or_else(login_required)?;
        if !current.is_expired(self.leeway) {
            return Ok((current, RefreshOutcome::Adopted));
        }
        if current.refresh_token.is_none() {
            return Err(login_required());
        }
        match refresh(current.clone()).await {
            Ok(mut fresh) => {
                // Servers that do not rotate refresh tokens omit them from the response.
                if fresh.refresh_token.is_none() {
                    fresh.refresh_token = current.refresh_token.clone();
                }
                match store
                    .put_refreshed(key, &fresh, Precondition::IfVersion(version))
                    .await
                {
                    Ok(_) => Ok((fresh, RefreshOutcome::Refreshed)),
                    Err(e) if e.is_conflict() => {
                        // Someone wrote without the lease (a login, another tool): theirs is newer.
                        store
                            .get_fresh(key)
                            .await?
                            .map(|v| (v.value, RefreshOutcome::Adopted))
                            .ok_or_else(login_required)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(RefreshError::Rejected(reason)) => {
                // Only the version whose refresh token was rejected goes; a newer one stays.
                match store
                    .delete_revoked(key, Precondition::IfVersion(version))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e.into()),
                }
                Err(ManagerError::RefreshRejected {
                    key: key.to_string(),
                    reason,
                })
            }
            Err(RefreshError::Transient(source)) => Err(ManagerError::RefreshFailed {
                key: key.to_string(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::MemoryStore;
    use crate::lease::MAX_LEASE_TTL;

    fn expiring(tag: &str) -> TokenRecord {
        TokenRecord::new(format!("at-{tag}"))
            .with_refresh_token(format!("rt-{tag}"))
            .expires_in(Duration::ZERO)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_refresh_once_and_share_the_result() {
        let store = TokenStore::in_memory();
        let key = TokenKey::for_server("https://m.example");
        store
            .put(&key, &expiring("0"), Precondition::Any)
            .await
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..16 {
            let manager = TokenManager::new(store.clone()).unwrap();
            let calls = calls.clone();
            let key = key.clone();
            handles.push(tokio::spawn(async move {
                manager
                    .valid_token(&key, |old| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(old.refresh_token.unwrap().expose(), "rt-0");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(TokenRecord::new("at-1")
                            .with_refresh_token("rt-1")
                            .expires_in(Duration::from_secs(3600)))
                    })
                    .await
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap().unwrap().access_token.expose(), "at-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn transient_failure_keeps_tokens_and_rejection_deletes_only_that_version() {
        let store = TokenStore::in_memory();
        let key = TokenKey::for_server("https://m.example");
        store
            .put(&key, &expiring("0"), Precondition::Any)
            .await
            .unwrap();
        let manager = TokenManager::new(store.clone()).unwrap();
        let err = manager
            .valid_token(&key, |_| async {
                Err(RefreshError::Transient("connection reset".into()))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ManagerError::RefreshFailed { .. }));
        assert!(
            store.get(&key).await.unwrap().is_some(),
            "a transient error deleted tokens"
        );

        // The winner writes a new record while the loser's refresh is being rejected.
        let store2 = store.clone();
        let key2 = key.clone();
        let err = manager
            .valid_token(&key, |_| async move {
                store2
                    .put(&key2, &expiring("winner"), Precondition::Any)
                    .await
                    .unwrap();
                Err(RefreshError::Rejected("invalid_grant".into()))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ManagerError::RefreshRejected { .. }));
        let left = store.get(&key).await.unwrap().unwrap();
        assert_eq!(
            left.value.access_token.expose(),
            "at-winner",
            "the winner's record was deleted"
        );

        // With nobody else writing, a rejection removes the record.
        let err = manager
            .valid_token(&key, |_| async {
                Err(RefreshError::Rejected("invalid_grant".into()))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ManagerError::RefreshRejected { .. }));
        assert!(store.get(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_abandoned_lease_expires() {
        let store = TokenStore::in_memory();
        let opts = LeaseOptions::new(Duration::from_millis(200), Duration::from_secs(5))
            .with_poll(Duration::from_millis(5));
        let held = Lease::acquire(&store, "x", &opts).await.unwrap();
        std::mem::forget(held); // a holder that died without releasing
        let started = std::time::Instant::now();
        let again = Lease::acquire(&store, "x", &opts).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100));
        again.release().await.unwrap();
        let short = LeaseOptions {
            wait: Duration::from_millis(50),
            ..opts
        };
        let _blocker = Lease::acquire(&store, "y", &short).await.unwrap();
        let err = Lease::acquire(&store, "y", &short).await.unwrap_err();
        assert!(err.is_retryable());
    }

    /// A backend whose records other processes can open, but whose compare-and-swap holds
    /// only within this process (as the keychain's did before its host lock).
    #[derive(Debug)]
    struct ProcessLocalCas(MemoryStore);

    #[async_trait::async_trait]
    impl crate::RawStore for ProcessLocalCas {
        fn backend(&self) -> &'static str {
            "process-local"
        }
        fn capabilities(&self) -> crate::Capabilities {
            self.0
                .capabilities()
                .with_sharing(crate::Scope::Host)
                .with_cas(crate::Scope::Process)
        }
        async fn read(&self, key: &crate::StorageKey) -> crate::Result<Option<crate::RawRecord>> {
            self.0.read(key).await
        }
        async fn write(
            &self,
            key: &crate::StorageKey,
            value: &[u8],
            options: &crate::PutOptions,
        ) -> crate::Result<Version> {
            self.0.write(key, value, options).await
        }
        async fn remove(&self, key: &crate::StorageKey, p: &Precondition) -> crate::Result<bool> {
            self.0.remove(key, p).await
        }
        async fn scan(
            &self,
            kind: crate::KeyKind,
            filter: &crate::ListFilter,
        ) -> crate::Result<Vec<crate::ListEntry>> {
            self.0.scan(kind, filter).await
        }
    }

    #[tokio::test]
    async fn a_store_without_shared_cas_is_refused_unless_the_caller_runs_alone() {
        use crate::RawStore as _;
        let store = TokenStore::new(ProcessLocalCas(MemoryStore::new()));
        let err = TokenManager::new(store.clone()).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("process-local") && text.contains("assume_single_process"),
            "{text}"
        );
        let opts = LeaseOptions::new(Duration::from_secs(5), Duration::from_millis(10));
        let err = Lease::acquire(&store, "l", &opts).await.unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        // The explicit opt-in works, for the manager and for a bare lease.
        let lease = Lease::acquire(&store, "l", &opts.clone().assume_single_process())
            .await
            .unwrap();
        lease.release().await.unwrap();
        let key = TokenKey::for_server("https://m.example");
        store
            .put(&key, &expiring("0"), Precondition::Any)
            .await
            .unwrap();
        let token = TokenManager::assume_single_process(store)
            .valid_token(&key, |_| async {
                Ok(TokenRecord::new("at-1").expires_in(Duration::from_secs(3600)))
            })
            .await
            .unwrap();
        assert_eq!(token.access_token.expose(), "at-1");
        // The memory store is private to this process, so its own CAS covers it.
        assert!(MemoryStore::new().capabilities().cas_covers_sharing());
    }

    #[tokio::test]
    async fn garbage_or_far_future_leases_never_jam_refresh() {
        let store = TokenStore::in_memory();
        let opts = LeaseOptions::new(Duration::from_secs(5), Duration::from_millis(300));
        let key = crate::StorageKey::single(crate::KeyKind::Lease, "j").unwrap();
        for jam in [
            &b"\xff not json"[..],
            br#"{"owner":"x","expires_at":1e300}"#,
            br#"{"owner":"x"}"#,
        ] {
            store
                .raw()
                .write(&key, jam, &crate::PutOptions::default())
                .await
                .unwrap();
            let lease = Lease::acquire(&store, "j", &opts).await.unwrap();
            lease.release().await.unwrap();
        }
        let too_long = LeaseOptions::new(MAX_LEASE_TTL * 2, Duration::from_millis(10));
        assert!(matches!(
            Lease::acquire(&store, "j", &too_long).await,
            Err(Error::Config { .. })
        ));
    }
}
