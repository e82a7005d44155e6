//! [`RmcpCredentialStore`]: rmcp's `CredentialStore` for one [`TokenKey`].

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rmcp::transport::auth::{
    AuthError, CredentialRefreshGuard, CredentialStore, OAuthClientConfig, OAuthHttpClient,
    OAuthTokenResponse, StoredCredentials,
};
use serde_json::Value;
use token_store_core::backend::unix_now;
use token_store_core::metrics::{self, RefreshOutcome};
use token_store_core::{
    ClientKey, ClientRegistration, Error, Lease, LeaseOptions, Precondition, TokenKey,
    TokenManager, TokenRecord, TokenStore, Version,
};

use crate::coalesce::CoalescingHttpClient;
use crate::convert;

/// Marks a client registration that also stands for rmcp credentials without tokens (rmcp
/// stores those when a portable client id outlives an issuer change).
const TOKENLESS: &str = "rmcp_tokenless";
/// The issuer of such tokenless credentials.
const TOKENLESS_ISSUER: &str = "rmcp_issuer";

/// rmcp 3.11 refreshes tokens with less than `min(30 s, lifetime / 2)` left; a stored token
/// handed to a coalesced refresh must outlive the largest of those buffers.
const COALESCE_MIN_REMAINING: f64 = 30.0;

pub(crate) fn store_error(e: Error) -> AuthError {
    // The core error names the backend and key, never a value.
    AuthError::CredentialStoreError(e.to_string())
}

/// What the adapter knows about the refresh guard it handed out.
#[derive(Default)]
struct GuardState {
    /// Bumped per guard, so a stale guard's drop does not clear a newer guard's state.
    generation: u64,
    held: bool,
    /// The version the first `load` under the guard saw (`Some(None)`: no record).
    base: Option<Option<Version>>,
    /// The record that load returned, for coalescing ([`RmcpCredentialStore::coalesce`]).
    base_record: Option<TokenRecord>,
    /// The version this adapter last loaded or saved: the credentials this process acts on.
    seen: Option<Option<Version>>,
    /// `seen` when the guard was taken: the credentials the refresh was started from.
    seen_at_acquire: Option<Option<Version>>,
    /// The guarded refresh was answered from the store; its save writes nothing.
    coalesced: bool,
    /// How the guarded refresh ended, once known; counted when the guard is dropped.
    outcome: Option<RefreshOutcome>,
}

impl GuardState {
    fn reset(&mut self) {
        self.held = false;
        self.base = None;
        self.base_record = None;
        self.seen_at_acquire = None;
        self.coalesced = false;
        self.outcome = None;
    }

    /// How the guarded refresh ended: as noted, else from what its load saw. rmcp drops the
    /// guard without a save or a rejection when it has nothing to refresh with (login
    /// required) or when the token request failed for another reason (transient).
    fn outcome(&self) -> RefreshOutcome {
        if let Some(outcome) = self.outcome {
            return outcome;
        }
        match &self.base_record {
            Some(record) if record.refresh_token.is_some() => RefreshOutcome::Transient,
            _ => RefreshOutcome::LoginRequired,
        }
    }
}

fn lock(state: &Mutex<GuardState>) -> MutexGuard<'_, GuardState> {
    // The state is plain data, consistent after any panic; poisoning carries no meaning here.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

type Memo = Option<(Version, StoredCredentials)>;

fn lock_memo(memo: &Mutex<Memo>) -> MutexGuard<'_, Memo> {
    // Replaced whole, so consistent after any panic.
    memo.lock().unwrap_or_else(|e| e.into_inner())
}

/// What rmcp holds across load, token request and save: the store-held lease.
struct RefreshGuard {
    // Dropped after `drop` below runs; `Lease`'s own drop releases it in the background.
    _lease: Lease,
    state: Arc<Mutex<GuardState>>,
    generation: u64,
    /// For counting the refresh's outcome.
    store: TokenStore,
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if state.generation == self.generation {
            metrics::record_refresh(&self.store, state.outcome());
            state.reset();
        }
    }
}

/// rmcp's [`CredentialStore`] over any token-store backend, bound to one [`TokenKey`].
///
/// - `load`/`save`/`clear` read and write a normal [`TokenRecord`](token_store_core::TokenRecord)
///   (absolute `expires_at`, scopes, issuer, client id), so the `tokenstore` CLI, mcp-agent
///   and [`TokenManager`] read what rmcp wrote and the other way round; rmcp-only fields go to
///   `metadata["rmcp"]`, so the round trip is lossless and the expiry survives a restart.
/// - `acquire_refresh_guard` takes the store-held [`Lease`] named
///   [`TokenManager::lease_name`]: one refresh at a time across every process and host
///   sharing the store, and with [`TokenManager`] users of the same key. A holder that dies
///   lets it expire after [`LeaseOptions::ttl`]; waiting is bounded by
///   [`LeaseOptions::wait`], after which rmcp gets [`AuthError::CredentialStoreError`].
/// - `save` under the guard is a compare-and-swap against the version loaded under it: a
///   writer that bypassed the guard (a login elsewhere) wins, and is kept.
/// - `on_refresh_token_rejected` deletes the record only while it still carries the rejected
///   refresh token, never a newer one.
/// - The client secret of a confidential client, which rmcp does not store, is kept as a
///   [`ClientRegistration`] ([`save_client_config`](Self::save_client_config),
///   [`client_config`](Self::client_config)).
///
/// # Waiters and rmcp 3.11
///
/// rmcp acquires the guard, then loads, then refreshes, with no check in between whether the
/// token still needs refreshing. A process that waited for the guard therefore loads the
/// winner's tokens (including its new refresh token) and refreshes once more with them: no
/// `invalid_grant`, no revoked token family, but one extra refresh per waiting process.
/// With [`coalescing_http_client`](Self::coalescing_http_client) those extra refreshes are
/// answered from the store instead, so one refresh runs per expiry, as with
/// [`TokenManager::valid_token`].
///
/// Store errors become [`AuthError::CredentialStoreError`], which rmcp keeps apart from
/// errors that require a new login.
#[derive(Clone)]
pub struct RmcpCredentialStore {
    store: TokenStore,
    key: TokenKey,
    client_key: ClientKey,
    lease: LeaseOptions,
    guard: Arc<Mutex<GuardState>>,
    /// The last `load` answer per record version, so a cache hit converts nothing.
    loaded: Arc<Mutex<Option<(Version, StoredCredentials)>>>,
}

impl fmt::Debug for RmcpCredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RmcpCredentialStore")
            .field("backend", &self.store.backend())
            .field("key", &self.key)
            .field("client_key", &self.client_key)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl RmcpCredentialStore {
    /// The credentials of `key` in `store`. The client registration lives under
    /// [`ClientKey`] `(key's authorization server, or else its resource; application "rmcp")`;
    /// change it with [`with_client_key`](Self::with_client_key).
    ///
    /// Fails with [`Error::Config`] when the store's compare-and-swap does not reach every
    /// process that can open it (the refresh guard would not hold there; see
    /// [`Lease::check_store`]); a program that is the only user of such a store says so with
    /// [`assume_single_process`](Self::assume_single_process).
    pub fn new(store: TokenStore, key: TokenKey) -> token_store_core::Result<Self> {
        Lease::check_store(&store, false)?;
        Ok(Self::unchecked(store, key, LeaseOptions::default()))
    }

    /// The credentials of `key` in a store only this process uses, whatever its
    /// compare-and-swap guarantees.
    pub fn assume_single_process(store: TokenStore, key: TokenKey) -> Self {
        Self::unchecked(store, key, LeaseOptions::default().assume_single_process())
    }

    fn unchecked(store: TokenStore, key: TokenKey, lease: LeaseOptions) -> Self {
        let issuer = key.authorization_server().unwrap_or(key.resource());
        let client_key = ClientKey::new(issuer).with_application("rmcp");
        RmcpCredentialStore {
            store: store.cached_or_default(),
            key,
            client_key,
            lease,
            guard: Arc::default(),
            loaded: Arc::default(),
        }
    }

    /// Reads through the store's read cache with `options` instead of the default one.
    ///
    /// By default the adapter reads through the store's cache, or else one with
    /// [`CacheOptions::default`](token_store_core::CacheOptions): `load()` (which rmcp calls
    /// before every request) then costs no I/O while the access token has more than the
    /// refresh margin (60 s) left, and is at most the max age (5 s) old. Near expiry, under
    /// the refresh guard and in `on_refresh_token_rejected` the store itself is read, so a
    /// refresh another process made is adopted before this one would start its own. `save`,
    /// `clear` and `on_refresh_token_rejected` drop the entry; after a 401 from the MCP
    /// server call [`invalidate`](Self::invalidate).
    pub fn with_cache(mut self, options: token_store_core::CacheOptions) -> Self {
        self.store = self.store.without_cache().with_cache(options);
        self
    }

    /// Reads the store on every `load` (no read cache).
    pub fn without_cache(mut self) -> Self {
        self.store = self.store.without_cache();
        self
    }

    /// Drops what the read cache holds for these credentials, so the next `load` reads the
    /// store: call it when the MCP server answered 401 (rmcp reports that as
    /// `AuthError::AuthorizationRequired` without telling the credential store).
    pub fn invalidate(&self) {
        self.store.invalidate(&self.key);
        self.store.invalidate_client(&self.client_key);
    }

    /// Keep the client registration under `client_key`.
    pub fn with_client_key(mut self, client_key: ClientKey) -> Self {
        self.client_key = client_key;
        self
    }

    /// How the refresh lease is taken (default: TTL 30 s, wait 30 s). The TTL must exceed
    /// the longest token request; it is how long others wait for a holder that died.
    pub fn with_lease_options(mut self, options: LeaseOptions) -> Self {
        let single_process = self.lease.single_process;
        self.lease = options;
        self.lease.single_process |= single_process;
        self
    }

    /// The token key.
    pub fn key(&self) -> &TokenKey {
        &self.key
    }

    /// The client registration key.
    pub fn client_key(&self) -> &ClientKey {
        &self.client_key
    }

    /// The store.
    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// An OAuth HTTP client for rmcp that answers redundant refreshes from the store, so that
    /// of several processes finding the token expired exactly one calls the authorization
    /// server: the others, having waited for the refresh guard, get the winner's tokens.
    /// All other requests go to `inner` (e.g. `rmcp::transport::auth::default_oauth_http_client()`).
    ///
    /// Give it to `AuthorizationManager::new_with_oauth_http_client`, and this adapter (or a
    /// clone of it) to that manager's `set_credential_store`: they share what the adapter
    /// saw. A later `AuthorizationManager::with_client` replaces it.
    pub fn coalescing_http_client(
        &self,
        inner: impl OAuthHttpClient + 'static,
    ) -> Arc<dyn OAuthHttpClient> {
        Arc::new(CoalescingHttpClient::new(Arc::new(inner), self.clone()))
    }

    fn typed(&self) -> &TokenStore {
        &self.store
    }

    /// The stored registration read from the store itself, for read-modify-write.
    async fn client_registration_fresh(
        &self,
    ) -> token_store_core::Result<Option<ClientRegistration>> {
        Ok(self
            .store
            .without_cache()
            .get_client(&self.client_key)
            .await?
            .map(|v| v.value))
    }

    /// The stored client registration (client id and, for a confidential client, its secret).
    pub async fn client_registration(
        &self,
    ) -> token_store_core::Result<Option<ClientRegistration>> {
        Ok(self
            .typed()
            .get_client(&self.client_key)
            .await?
            .map(|v| v.value))
    }

    /// Stores a client registration, e.g. the result of dynamic client registration.
    pub async fn save_client_registration(
        &self,
        registration: &ClientRegistration,
    ) -> token_store_core::Result<()> {
        let mut registration = registration.clone();
        // Keep rmcp's tokenless-credentials marker for the same client.
        if let Some(old) = self.client_registration_fresh().await?
            && old.client_id == registration.client_id
        {
            for field in [TOKENLESS, TOKENLESS_ISSUER] {
                if let Some(v) = old.extra.get(field) {
                    registration
                        .extra
                        .entry(field.to_owned())
                        .or_insert_with(|| v.clone());
                }
            }
        }
        self.typed()
            .put_client(&self.client_key, &registration, Precondition::Any)
            .await?;
        Ok(())
    }

    /// Stores the secret of confidential client `client_id` (rmcp keeps only the client id,
    /// so without this a confidential client cannot refresh after a restart).
    pub async fn save_client_secret(
        &self,
        client_id: &str,
        secret: &str,
    ) -> token_store_core::Result<()> {
        let registration = match self.client_registration_fresh().await? {
            Some(old) if old.client_id == client_id => old.with_secret(secret),
            _ => ClientRegistration::new(client_id).with_secret(secret),
        };
        self.save_client_registration(&registration).await
    }

    /// Stores an rmcp client configuration (client id, secret, redirect URI), e.g. the one
    /// `AuthorizationManager::register_client` returned.
    pub async fn save_client_config(
        &self,
        config: &OAuthClientConfig,
    ) -> token_store_core::Result<()> {
        let mut registration = match self.client_registration_fresh().await? {
            Some(old) if old.client_id == config.client_id => old,
            _ => ClientRegistration::new(config.client_id.clone()),
        };
        registration.client_secret = config.client_secret.clone().map(Into::into);
        if !registration.redirect_uris.contains(&config.redirect_uri) {
            registration.redirect_uris.push(config.redirect_uri.clone());
        }
        if !config.scopes.is_empty() {
            registration
                .extra
                .insert("scope".to_owned(), Value::String(config.scopes.join(" ")));
        }
        self.save_client_registration(&registration).await
    }

    /// The stored client as an rmcp configuration with `redirect_uri`, secret included. After
    /// `AuthorizationManager::initialize_from_store` (which configures the client id only),
    /// pass it to `configure_client` so a confidential client can refresh.
    pub async fn client_config(
        &self,
        redirect_uri: &str,
    ) -> token_store_core::Result<Option<OAuthClientConfig>> {
        Ok(self.client_registration().await?.map(|r| {
            let scopes = r
                .extra
                .get("scope")
                .and_then(Value::as_str)
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
            let mut config = OAuthClientConfig::new(r.client_id, redirect_uri).with_scopes(scopes);
            if let Some(secret) = r.client_secret {
                config = config.with_client_secret(secret.expose());
            }
            config
        }))
    }

    /// Deletes the client registration; returns whether there was one.
    pub async fn forget_client_registration(&self) -> token_store_core::Result<bool> {
        self.typed()
            .delete_client(&self.client_key, Precondition::Any)
            .await
    }

    /// Notes what a `load` saw: as what this process acts on, and under the guard for the
    /// compare-and-swap of the `save` that follows.
    fn note_loaded(&self, version: Option<Version>, record: Option<&TokenRecord>) {
        let mut state = lock(&self.guard);
        if state.held && state.base.is_none() {
            state.base = Some(version.clone());
            state.base_record = record.cloned();
        }
        state.seen = Some(version);
    }

    /// Answers rmcp's refresh with `refresh_token` from the store when that refresh is
    /// redundant: under the guard, the stored credentials are no longer the ones this
    /// process last loaded (another process refreshed while this one waited), they carry the
    /// very refresh token rmcp is about to send, and their access token is good for more
    /// than rmcp's refresh buffer (30 s). Returns the token response to hand rmcp.
    pub(crate) fn coalesce(&self, refresh_token: &str) -> Option<OAuthTokenResponse> {
        let mut state = lock(&self.guard);
        let (Some(Some(base)), Some(Some(seen))) = (&state.base, &state.seen_at_acquire) else {
            return None;
        };
        if !state.held || base == seen {
            return None;
        }
        let record = state.base_record.as_ref()?;
        if record.refresh_token.as_ref()?.expose() != refresh_token {
            return None;
        }
        let remaining = record.expires_at? - unix_now();
        if remaining <= COALESCE_MIN_REMAINING {
            return None;
        }
        let mut response = convert::from_record(record, None).token_response?;
        response.set_expires_in(Some(&Duration::from_secs(remaining.floor() as u64)));
        state.coalesced = true;
        state.outcome = Some(RefreshOutcome::Adopted);
        Some(response)
    }

    /// The precondition of a save: CAS against the guarded load, else unconditional (a login
    /// or a code exchange is authoritative).
    fn save_precondition(&self) -> (bool, Precondition) {
        let state = lock(&self.guard);
        match (&state.held, &state.base) {
            (true, Some(Some(v))) => (true, Precondition::IfVersion(v.clone())),
            (true, Some(None)) => (true, Precondition::IfAbsent),
            _ => (false, Precondition::Any),
        }
    }

    /// Notes how the guarded refresh ended, if a guard is held.
    fn note_outcome(&self, outcome: RefreshOutcome) {
        let mut state = lock(&self.guard);
        if state.held {
            state.outcome = Some(outcome);
        }
    }

    fn note_saved(&self, version: Option<Version>) {
        let mut state = lock(&self.guard);
        if state.held {
            state.base = Some(version.clone());
            state.base_record = None;
        }
        state.seen = Some(version);
    }

    fn is_coalesced_save(&self, credentials: &StoredCredentials) -> bool {
        use oauth2::TokenResponse;
        let state = lock(&self.guard);
        if !(state.held && state.coalesced) {
            return false;
        }
        let (Some(record), Some(response)) = (&state.base_record, &credentials.token_response)
        else {
            return false;
        };
        record.access_token.expose() == response.access_token().secret()
            && record.refresh_token.as_ref().map(|t| t.expose())
                == response.refresh_token().map(|t| t.secret().as_str())
    }

    async fn load_tokenless(&self) -> Result<Option<StoredCredentials>, AuthError> {
        let Some(registration) = self.client_registration().await.map_err(store_error)? else {
            return Ok(None);
        };
        if registration.extra.get(TOKENLESS) != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        let issuer = registration
            .extra
            .get(TOKENLESS_ISSUER)
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Some(
            StoredCredentials::new(registration.client_id, None, Vec::new(), None)
                .with_issuer(issuer),
        ))
    }

    async fn set_tokenless(
        &self,
        client_id: Option<&str>,
        issuer: Option<&str>,
    ) -> Result<(), AuthError> {
        let old = self
            .client_registration_fresh()
            .await
            .map_err(store_error)?;
        let mut registration = match (old, client_id) {
            (Some(old), Some(id)) if old.client_id == id => old,
            (Some(old), None) if old.extra.contains_key(TOKENLESS) => old,
            (_, Some(id)) => ClientRegistration::new(id),
            (_, None) => return Ok(()),
        };
        registration.extra.remove(TOKENLESS);
        registration.extra.remove(TOKENLESS_ISSUER);
        if client_id.is_some() {
            registration
                .extra
                .insert(TOKENLESS.to_owned(), Value::Bool(true));
            if let Some(issuer) = issuer {
                registration.extra.insert(
                    TOKENLESS_ISSUER.to_owned(),
                    Value::String(issuer.to_owned()),
                );
            }
        }
        self.typed()
            .put_client(&self.client_key, &registration, Precondition::Any)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[async_trait]
impl CredentialStore for RmcpCredentialStore {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        let guarded = lock(&self.guard).held;
        let found = if guarded {
            // Under the refresh guard the save that follows is a CAS on what this reads: it
            // must be the store's current record, never a cached one.
            self.typed()
                .get_fresh(&self.key)
                .await
                .map(|f| f.map(Arc::new))
        } else {
            self.typed().get_shared(&self.key).await
        }
        .map_err(|e| {
            self.note_outcome(RefreshOutcome::Error);
            store_error(e)
        })?;
        let Some(found) = found else {
            self.note_loaded(None, None);
            return self.load_tokenless().await;
        };
        self.note_loaded(Some(found.version.clone()), Some(&found.value));
        if let Some(memo) = lock_memo(&self.loaded).as_ref()
            && memo.0 == found.version
        {
            return Ok(Some(memo.1.clone()));
        }
        let fallback = match found.value.client_id {
            Some(_) => None,
            // A record written by another tool: the registration knows the client.
            None => self
                .client_registration()
                .await
                .map_err(store_error)?
                .map(|r| r.client_id),
        };
        let credentials = convert::from_record(&found.value, fallback.as_deref());
        if fallback.is_none() {
            // Keyed by version: a version is never reused for another value of the key.
            *lock_memo(&self.loaded) = Some((found.version.clone(), credentials.clone()));
        }
        Ok(Some(credentials))
    }

    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        if self.is_coalesced_save(&credentials) {
            // rmcp saves what the store answered: the store has it already.
            return Ok(());
        }
        let (guarded, precondition) = self.save_precondition();
        let Some(mut record) = convert::to_record(&credentials) else {
            // rmcp keeps a portable client id without tokens: no token record then.
            match self.typed().delete(&self.key, precondition).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() && guarded => {
                    tracing::warn!(key = %self.key, "credentials changed by a writer that bypassed the refresh guard; keeping them");
                    return Ok(());
                }
                Err(e) => return Err(store_error(e)),
            }
            self.note_saved(None);
            return self
                .set_tokenless(Some(&credentials.client_id), credentials.issuer.as_deref())
                .await;
        };
        record.resource = Some(self.key.resource().to_owned());
        let saved = if guarded {
            // Under the guard rmcp saves only the result of its refresh.
            self.typed()
                .put_refreshed(&self.key, &record, precondition)
                .await
        } else {
            self.typed().put(&self.key, &record, precondition).await
        };
        let (outcome, result) = match saved {
            Ok(version) => {
                self.note_saved(Some(version));
                (RefreshOutcome::Refreshed, Ok(()))
            }
            Err(e) if e.is_conflict() && guarded => {
                // Under the guard only a writer that bypassed it (a new login elsewhere) can
                // have written: its tokens are newer than the ones this refresh replaced.
                tracing::warn!(key = %self.key, "credentials changed by a writer that bypassed the refresh guard; keeping them");
                (RefreshOutcome::Adopted, Ok(()))
            }
            Err(e) => (RefreshOutcome::Error, Err(store_error(e))),
        };
        if guarded {
            self.note_outcome(outcome);
        }
        result
    }

    async fn clear(&self) -> Result<(), AuthError> {
        self.typed()
            .delete(&self.key, Precondition::Any)
            .await
            .map_err(store_error)?;
        self.note_saved(None);
        self.set_tokenless(None, None).await
    }

    async fn on_refresh_token_rejected(
        &self,
        credentials: &StoredCredentials,
    ) -> Result<(), AuthError> {
        use oauth2::TokenResponse;
        let Some(rejected) = credentials
            .token_response
            .as_ref()
            .and_then(|r| r.refresh_token())
        else {
            return Ok(());
        };
        // The rejection says what this process holds is dead: nothing cached about it stays,
        // and the decision below is made on the store's current record.
        self.invalidate();
        self.note_outcome(RefreshOutcome::Rejected);
        let Some(current) = self
            .typed()
            .get_fresh(&self.key)
            .await
            .map_err(store_error)?
        else {
            return Ok(());
        };
        let still_rejected = current
            .value
            .refresh_token
            .as_ref()
            .is_some_and(|rt| rt.expose() == rejected.secret());
        if !still_rejected {
            tracing::info!(key = %self.key, "refresh token rejected, but newer credentials are stored; keeping them");
            return Ok(());
        }
        match self
            .typed()
            .delete_revoked(&self.key, Precondition::IfVersion(current.version))
            .await
        {
            Ok(_) => {
                tracing::info!(key = %self.key, "refresh token rejected; removed the credentials that carried it");
                Ok(())
            }
            // Replaced between the read and the delete: the newer record stays.
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        let lease = Lease::acquire(
            &self.store,
            &TokenManager::lease_name(&self.key),
            &self.lease,
        )
        .await
        .map_err(|e| {
            // Not taken in time (or the store failed): this refresh ends here.
            metrics::record_refresh(&self.store, RefreshOutcome::Error);
            store_error(e)
        })?;
        let generation = {
            let mut state = lock(&self.guard);
            state.reset();
            state.generation += 1;
            state.held = true;
            state.seen_at_acquire = state.seen.clone();
            state.generation
        };
        Ok(Some(CredentialRefreshGuard::new(RefreshGuard {
            _lease: lease,
            state: self.guard.clone(),
            generation,
            store: self.store.clone(),
        })))
    }
}
