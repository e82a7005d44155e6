//! [`RmcpStateStore`]: rmcp's `StateStore` (PKCE verifier and CSRF state of a pending
//! authorization) over the core's one-time states.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use oauth2::{CsrfToken, PkceCodeVerifier};
use rmcp::transport::auth::{AuthError, StateStore, StoredAuthorizationState};
use serde_json::Value;
use token_store_core::{AuthState, TokenStore};

use crate::credentials::store_error;

/// How long a pending authorization is kept by default.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(10 * 60);

/// How often `save` sweeps expired states at most (per adapter).
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

const REQUIRE_ISSUER: &str = "rmcp_require_issuer";

/// rmcp's [`StateStore`] over any token-store backend, shared by every process and replica
/// using the store: the authorization can start on one and the redirect land on another.
///
/// - `save` stores rmcp's state as a core [`AuthState`] under the CSRF value's digest (the
///   CSRF value itself is never stored), for at most the TTL (default 10 minutes, enforced
///   on read even by backends without TTL); expired states are swept at most once a minute.
/// - `load` reads without consuming: rmcp validates the callback's issuer first, and a
///   forged callback must not burn the state the legitimate one needs.
/// - `delete` consumes atomically (the core's `take_state`), and fails when the state is
///   already gone: of two callbacks racing with the same state, across replicas, exactly
///   one proceeds to the code exchange.
#[derive(Clone)]
pub struct RmcpStateStore {
    store: TokenStore,
    ttl: Duration,
    last_sweep: Arc<Mutex<Option<Instant>>>,
}

impl fmt::Debug for RmcpStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RmcpStateStore")
            .field("backend", &self.store.backend())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RmcpStateStore {
    /// States in `store`, kept for [`DEFAULT_STATE_TTL`].
    pub fn new(store: TokenStore) -> Self {
        RmcpStateStore {
            store,
            ttl: DEFAULT_STATE_TTL,
            last_sweep: Arc::default(),
        }
    }

    /// Keep pending authorizations for `ttl` instead.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Deletes expired states now; returns how many.
    pub async fn purge_expired(&self) -> token_store_core::Result<usize> {
        self.typed().purge_expired_states().await
    }

    fn typed(&self) -> &TokenStore {
        &self.store
    }

    async fn maybe_sweep(&self) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < SWEEP_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "swept expired authorization states"),
            // Sweeping is housekeeping; reads ignore expired states anyway.
            Err(e) => tracing::warn!(error = %e, "sweeping expired authorization states failed"),
        }
    }
}

fn to_auth_state(state: &StoredAuthorizationState) -> AuthState {
    let mut auth = AuthState::new(state.pkce_verifier.clone());
    auth.expected_issuer = state.expected_issuer.clone();
    auth.requested_scopes = state.requested_scopes.clone();
    auth.created_at = state.created_at;
    auth.extra
        .insert(REQUIRE_ISSUER.to_owned(), Value::Bool(state.require_issuer));
    auth
}

fn from_auth_state(csrf: &str, auth: AuthState) -> StoredAuthorizationState {
    let require_issuer = auth.extra.get(REQUIRE_ISSUER) == Some(&Value::Bool(true));
    let mut state = StoredAuthorizationState::new_with_expected_issuer(
        &PkceCodeVerifier::new(auth.pkce_verifier.expose().to_owned()),
        &CsrfToken::new(csrf.to_owned()),
        auth.expected_issuer,
        require_issuer,
    )
    .with_requested_scopes(auth.requested_scopes);
    state.created_at = auth.created_at;
    state
}

#[async_trait]
impl StateStore for RmcpStateStore {
    async fn save(
        &self,
        csrf_token: &str,
        state: StoredAuthorizationState,
    ) -> Result<(), AuthError> {
        self.typed()
            .save_state(csrf_token, &to_auth_state(&state), self.ttl)
            .await
            .map_err(store_error)?;
        self.maybe_sweep().await;
        Ok(())
    }

    async fn load(&self, csrf_token: &str) -> Result<Option<StoredAuthorizationState>, AuthError> {
        let state = self
            .typed()
            .peek_state(csrf_token)
            .await
            .map_err(store_error)?;
        Ok(state.map(|auth| from_auth_state(csrf_token, auth)))
    }

    async fn delete(&self, csrf_token: &str) -> Result<(), AuthError> {
        match self
            .typed()
            .take_state(csrf_token)
            .await
            .map_err(store_error)?
        {
            Some(_) => Ok(()),
            None => Err(AuthError::InternalError(
                "Authorization state not found (expired, or already used by another callback)"
                    .to_owned(),
            )),
        }
    }
}
