//! The token of every call: a fixed one, or one from an AppRole login that is renewed (or
//! replaced by a fresh login) lazily, inside the call that needs it: no background task.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use token_store_core::{Error, Result};
use tokio::sync::RwLock;

use super::BACKEND;
use super::transport::{ANSWER_LIMIT, Transport, status_error};
use crate::config::Auth;

struct TokenState {
    token: Option<SecretString>,
    /// When to renew (two thirds into the lease); `None` for a token we never renew.
    renew_at: Option<Instant>,
    expires_at: Option<Instant>,
    renewable: bool,
    /// The lease a login gives, to notice when renewals are capped by the max TTL.
    login_lease: Duration,
}

impl TokenState {
    fn usable(&self, now: Instant) -> Option<SecretString> {
        let token = self.token.as_ref()?;
        match self.renew_at {
            Some(at) if now >= at => None,
            _ => Some(token.clone()),
        }
    }

    fn set_lease(
        &mut self,
        token: SecretString,
        lease: Duration,
        renewable: bool,
        now: Instant,
        login: bool,
    ) {
        self.token = Some(token);
        self.renewable = renewable;
        if login {
            self.login_lease = lease;
        }
        if lease.is_zero() {
            // A token without a TTL (e.g. a root-like token): nothing to renew.
            self.renew_at = None;
            self.expires_at = None;
        } else {
            self.renew_at = Some(now + lease * 2 / 3);
            self.expires_at = Some(now + lease);
        }
    }
}

/// The credentials and the token they currently give.
pub(super) struct Tokens {
    auth: Auth,
    state: RwLock<TokenState>,
}

impl Tokens {
    pub(super) fn new(auth: Auth) -> Self {
        let token = auth
            .static_token()
            .map(|t| SecretString::from(t.expose_secret().to_owned()));
        Tokens {
            auth,
            state: RwLock::new(TokenState {
                token,
                renew_at: None,
                expires_at: None,
                renewable: false,
                login_lease: Duration::ZERO,
            }),
        }
    }

    /// Whether a fresh login can replace a token the server refused.
    pub(super) fn can_log_in(&self) -> bool {
        matches!(self.auth, Auth::AppRole { .. })
    }

    /// Forgets `stale` so the next call logs in again (unless another task replaced it).
    pub(super) async fn invalidate(&self, stale: &SecretString) {
        let mut state = self.state.write().await;
        if state
            .token
            .as_ref()
            .is_some_and(|t| t.expose_secret() == stale.expose_secret())
        {
            state.token = None;
        }
    }

    /// A token good for the next request: the current one, renewed, or from a new login.
    pub(super) async fn current(&self, transport: &Transport) -> Result<SecretString> {
        if let Some(t) = self.state.read().await.usable(Instant::now()) {
            return Ok(t);
        }
        let mut state = self.state.write().await;
        let now = Instant::now();
        if let Some(t) = state.usable(now) {
            return Ok(t);
        }
        let Auth::AppRole {
            mount,
            role_id,
            secret_id,
        } = &self.auth
        else {
            return state
                .token
                .clone()
                .ok_or_else(|| Error::config("no Vault token configured"));
        };
        if let Some(token) = renew(transport, &mut state, now).await? {
            return Ok(token);
        }
        let (token, lease, renewable) = login(transport, mount, role_id, secret_id).await?;
        state.set_lease(token.clone(), lease, renewable, now, true);
        tracing::debug!(
            lease_secs = lease.as_secs(),
            renewable,
            "vault: AppRole login"
        );
        Ok(token)
    }
}

/// Renews the token while that still buys a useful lease (a third of the login's at least).
/// `None`: log in again instead (not renewable, expired, capped by the max TTL, revoked).
async fn renew(
    transport: &Transport,
    state: &mut TokenState,
    now: Instant,
) -> Result<Option<SecretString>> {
    let Some(token) = state.token.clone() else {
        return Ok(None);
    };
    if !state.renewable || state.expires_at.is_none_or(|at| at <= now) {
        return Ok(None);
    }
    let path = "auth/token/renew-self";
    let r = transport
        .send(
            Method::POST,
            path,
            Some(&json!({})),
            Some(&token),
            ANSWER_LIMIT,
        )
        .await?;
    if r.status.is_server_error() {
        return Err(status_error("renew token", path, &r));
    }
    if r.status.is_success()
        && let Some((lease, renewable)) = lease_of(&r.body)
        && lease * 3 >= state.login_lease
    {
        state.set_lease(token.clone(), lease, renewable, now, false);
        return Ok(Some(token));
    }
    Ok(None)
}

/// An AppRole login: the token, its lease and whether it is renewable.
async fn login(
    transport: &Transport,
    mount: &str,
    role_id: &SecretString,
    secret_id: &SecretString,
) -> Result<(SecretString, Duration, bool)> {
    let path = format!("auth/{mount}/login");
    let body = json!({
        "role_id": role_id.expose_secret(),
        "secret_id": secret_id.expose_secret(),
    });
    let r = transport
        .send(Method::POST, &path, Some(&body), None, ANSWER_LIMIT)
        .await?;
    if !r.status.is_success() {
        // A bad role or secret id is a 400 ("invalid role or secret ID").
        return Err(match r.status {
            StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => Error::PermissionDenied {
                backend: BACKEND,
                message: format!(
                    "AppRole login at {path}: HTTP {}: {}",
                    r.status.as_u16(),
                    r.errors()
                ),
                source: None,
            },
            _ => status_error("AppRole login", &path, &r),
        });
    }
    let token = r
        .body
        .pointer("/auth/client_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| SecretString::from(t.to_owned()))
        .ok_or_else(|| Error::backend(BACKEND, "AppRole login answered without a token", None))?;
    let (lease, renewable) = lease_of(&r.body).unwrap_or((Duration::ZERO, false));
    Ok((token, lease, renewable))
}

/// The longest lease taken at its word: a server claiming more (a hostile or broken one can
/// say `u64::MAX` seconds) is clamped, so the instant arithmetic above cannot overflow.
const MAX_LEASE_SECS: u64 = 10 * 365 * 24 * 3600;

fn lease_of(body: &Value) -> Option<(Duration, bool)> {
    let auth = body.get("auth")?;
    let lease = auth.get("lease_duration")?.as_u64()?.min(MAX_LEASE_SECS);
    let renewable = auth
        .get("renewable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some((Duration::from_secs(lease), renewable))
}
