//! The HTTP side: one `reqwest` client, the token (static or AppRole, renewed lazily), and
//! the mapping of Vault's answers to token-store errors.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use token_store_core::{Error, Result};
use tokio::sync::RwLock;

use crate::config::{Auth, VaultConfig};

pub(crate) const BACKEND: &str = "vault";

/// The most of one answer read into memory. A KV read of the largest record is ~350 KiB
/// (base64 of 256 KiB plus a little JSON), login and metadata answers are a few KiB: anything
/// past this is a broken server or a proxy, and reading it whole would let it make us allocate
/// without bound.
pub(crate) const ANSWER_LIMIT: usize = 1 << 20;

/// LIST answers grow with the folder (one name per key, each up to the 16 KiB key limit),
/// so they get more room: 16 MiB is some 200 000 typical token or state names.
pub(crate) const LIST_ANSWER_LIMIT: usize = 16 << 20;

/// A Vault answer the caller interprets itself (2xx, 400, 404); the rest are errors already.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// Vault's `errors` array, joined, for messages.
    pub fn errors(&self) -> String {
        vault_errors(&self.body)
    }
}

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
}

pub(crate) struct VaultHttp {
    http: reqwest::Client,
    base: String,
    namespace: Option<String>,
    auth: Auth,
    state: RwLock<TokenState>,
}

impl VaultHttp {
    pub(crate) fn new(config: &VaultConfig) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            // Vault's redirects (standby -> active) would re-send the token to another host;
            // clients are expected to point at the active node or a load balancer.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|e| Error::Config {
                message: format!("cannot read the Vault CA file {}", path.display()),
                source: Some(Box::new(e)),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Config {
                message: format!("{} holds no valid PEM certificate", path.display()),
                source: Some(Box::new(e)),
            })?;
            if certs.is_empty() {
                return Err(Error::config(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
            // Like the Vault CLI: a given CA replaces the system roots.
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| Error::Config {
            message: "cannot build the HTTP client for Vault".into(),
            source: Some(Box::new(e)),
        })?;
        let token = config
            .static_token()
            .map(|t| SecretString::from(t.to_owned()));
        Ok(VaultHttp {
            http,
            base: config.address.as_str().trim_end_matches('/').to_owned(),
            namespace: config.namespace.clone(),
            auth: config.auth.clone(),
            state: RwLock::new(TokenState {
                token,
                renew_at: None,
                expires_at: None,
                renewable: false,
                login_lease: Duration::ZERO,
            }),
        })
    }

    /// One request with the current token. A 403 under AppRole may mean the token died early
    /// (revoked, server restarted): log in again once and retry before reporting it.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply> {
        self.call_limited(method, path, body, ANSWER_LIMIT).await
    }

    /// [`Self::call`] with another bound on the answer's size (for LIST).
    pub(crate) async fn call_limited(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        limit: usize,
    ) -> Result<Reply> {
        let token = self.token().await?;
        let reply = self
            .send(method.clone(), path, body, Some(&token), limit)
            .await?;
        if reply.status == StatusCode::FORBIDDEN && matches!(self.auth, Auth::AppRole { .. }) {
            self.invalidate(&token).await;
            let token = self.token().await?;
            let reply = self
                .send(method.clone(), path, body, Some(&token), limit)
                .await?;
            return check(&method, path, reply);
        }
        check(&method, path, reply)
    }

    /// Logs in now (AppRole), so bad credentials fail at open rather than at the first call.
    pub(crate) async fn ensure_token(&self) -> Result<()> {
        self.token().await.map(drop)
    }

    async fn invalidate(&self, stale: &SecretString) {
        let mut state = self.state.write().await;
        // Another task may have replaced it already.
        if state
            .token
            .as_ref()
            .is_some_and(|t| t.expose_secret() == stale.expose_secret())
        {
            state.token = None;
        }
    }

    async fn token(&self) -> Result<SecretString> {
        let now = Instant::now();
        if let Some(t) = self.state.read().await.usable(now) {
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
        // Renew while that still buys a useful lease; otherwise (not renewable, expired, capped
        // by the max TTL, revoked) log in again.
        if let (Some(token), true) = (state.token.clone(), state.renewable)
            && state.expires_at.is_some_and(|at| at > now)
        {
            match self
                .send(
                    Method::POST,
                    "auth/token/renew-self",
                    Some(&json!({})),
                    Some(&token),
                    ANSWER_LIMIT,
                )
                .await?
            {
                r if r.status.is_success() => {
                    if let Some((lease, renewable)) = lease_of(&r.body)
                        && lease * 3 >= state.login_lease
                    {
                        set_lease(&mut state, token.clone(), lease, renewable, now, false);
                        return Ok(token);
                    }
                }
                r if r.status.is_server_error() => {
                    return Err(status_error("renew token", "auth/token/renew-self", &r));
                }
                _ => {}
            }
        }
        let path = format!("auth/{mount}/login");
        let body = json!({
            "role_id": role_id.expose_secret(),
            "secret_id": secret_id.expose_secret(),
        });
        let r = self
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
            .ok_or_else(|| {
                Error::backend(BACKEND, "AppRole login answered without a token", None)
            })?;
        let (lease, renewable) = lease_of(&r.body).unwrap_or((Duration::ZERO, false));
        set_lease(&mut state, token.clone(), lease, renewable, now, true);
        tracing::debug!(
            lease_secs = lease.as_secs(),
            renewable,
            "vault: AppRole login"
        );
        Ok(token)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&SecretString>,
        limit: usize,
    ) -> Result<Reply> {
        let url = format!("{}/v1/{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token.expose_secret());
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| transport_error(&method, path, e))?;
        let status = resp.status();
        let too_large = || {
            Error::backend(
                BACKEND,
                format!(
                    "{method} {path}: HTTP {}: the answer is larger than {limit} bytes, \
                     more than any Vault answer for this call (a broken server or proxy?)",
                    status.as_u16()
                ),
                None,
            )
        };
        // A declared length over the bound fails before reading anything; a lying or absent
        // one is caught while reading, chunk by chunk, so at most `limit` bytes are held.
        if resp
            .content_length()
            .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport_error(&method, path, e))?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = if bytes.trim_ascii().is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                // A proxy's HTML page, say: keep a short excerpt for the message.
                let excerpt: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
                json!({ "errors": [excerpt] })
            })
        };
        Ok(Reply { status, body })
    }
}

fn set_lease(
    state: &mut TokenState,
    token: SecretString,
    lease: Duration,
    renewable: bool,
    now: Instant,
    login: bool,
) {
    state.token = Some(token);
    state.renewable = renewable;
    if login {
        state.login_lease = lease;
    }
    if lease.is_zero() {
        // A token without a TTL (e.g. a root-like token): nothing to renew.
        state.renew_at = None;
        state.expires_at = None;
    } else {
        state.renew_at = Some(now + lease * 2 / 3);
        state.expires_at = Some(now + lease);
    }
}

fn lease_of(body: &Value) -> Option<(Duration, bool)> {
    let auth = body.get("auth")?;
    let lease = auth.get("lease_duration")?.as_u64()?;
    let renewable = auth
        .get("renewable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some((Duration::from_secs(lease), renewable))
}

/// Leaves 2xx, 400 and 404 to the caller; everything else becomes an error.
fn check(method: &Method, path: &str, reply: Reply) -> Result<Reply> {
    let s = reply.status;
    if s == StatusCode::NOT_FOUND && has_errors(&reply.body) {
        // A missing secret is a 404 with an empty `errors`; a 404 *with* text is a wrong
        // mount ("no handler for route") or namespace ("namespace not found"): reading that
        // as "no record" would hide the misconfiguration behind an empty store.
        return Err(Error::Config {
            message: format!(
                "vault: {method} {path}: HTTP 404: {} (check the mount and namespace)",
                reply.errors()
            ),
            source: None,
        });
    }
    if s.is_success() || s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND {
        return Ok(reply);
    }
    Err(status_error(method.as_str(), path, &reply))
}

pub(crate) fn status_error(op: &str, path: &str, reply: &Reply) -> Error {
    let code = reply.status.as_u16();
    let message = format!("{op} {path}: HTTP {code}: {}", reply.errors());
    match reply.status {
        StatusCode::FORBIDDEN => Error::PermissionDenied {
            backend: BACKEND,
            message,
            source: None,
        },
        // 503: sealed or standby; 429: rate limited; 412: a performance standby not yet
        // caught up; 502/504: a proxy in front of a dead node. All worth a retry.
        StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::TOO_MANY_REQUESTS
        | StatusCode::PRECONDITION_FAILED
        | StatusCode::BAD_GATEWAY
        | StatusCode::GATEWAY_TIMEOUT => Error::unavailable(BACKEND, message, None),
        _ => Error::backend(BACKEND, message, None),
    }
}

fn transport_error(method: &Method, path: &str, e: reqwest::Error) -> Error {
    // reqwest's Display is terse ("error sending request"); the cause chain says why
    // (connection refused, certificate unknown, ...). None of it carries the token.
    let e = e.without_url();
    let mut why = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        why.push_str(": ");
        why.push_str(&s.to_string());
        source = s.source();
    }
    let message = format!("{method} {path}: {why}");
    if e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() {
        Error::unavailable(BACKEND, message, Some(Box::new(e)))
    } else {
        Error::backend(BACKEND, message, Some(Box::new(e)))
    }
}

fn has_errors(body: &Value) -> bool {
    body.get("errors")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty())
}

fn vault_errors(body: &Value) -> String {
    match body.get("errors").and_then(Value::as_array) {
        Some(errors) if !errors.is_empty() => errors
            .iter()
            .map(|e| match e.as_str() {
                Some(s) => s.split_whitespace().collect::<Vec<_>>().join(" "),
                None => e.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => "(no error text)".to_owned(),
    }
}
