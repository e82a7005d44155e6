//! The authenticated HTTP client: one `reqwest` client (rustls, with its own crypto
//! provider), the token of every call, and the retry after a 403 under AppRole.

mod auth;
mod transport;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use token_store_core::{Error, Result};

use crate::config::VaultConfig;

pub(crate) use transport::{LIST_ANSWER_LIMIT, Reply, status_error};

pub(crate) const BACKEND: &str = "vault";

/// The longest a TCP / TLS connect may take, when the per-call limit is longer or unset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct VaultHttp {
    transport: transport::Transport,
    tokens: auth::Tokens,
}

impl VaultHttp {
    pub(crate) fn new(config: &VaultConfig) -> Result<Self> {
        Ok(VaultHttp {
            transport: transport::Transport {
                http: http_client(config)?,
                base: config.address.as_str().trim_end_matches('/').to_owned(),
                namespace: config.namespace.clone(),
            },
            tokens: auth::Tokens::new(config.auth.clone()),
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
        self.call_limited(method, path, body, transport::ANSWER_LIMIT)
            .await
    }

    /// [`Self::call`] with another bound on the answer's size (for LIST).
    pub(crate) async fn call_limited(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        limit: usize,
    ) -> Result<Reply> {
        let token = self.tokens.current(&self.transport).await?;
        let reply = self
            .transport
            .send(method.clone(), path, body, Some(&token), limit)
            .await?;
        if reply.status == StatusCode::FORBIDDEN && self.tokens.can_log_in() {
            self.tokens.invalidate(&token).await;
            let token = self.tokens.current(&self.transport).await?;
            let reply = self
                .transport
                .send(method.clone(), path, body, Some(&token), limit)
                .await?;
            return transport::check(&method, path, reply);
        }
        transport::check(&method, path, reply)
    }

    /// Logs in now (AppRole), so bad credentials fail at open rather than at the first call.
    pub(crate) async fn ensure_token(&self) -> Result<()> {
        self.tokens.current(&self.transport).await.map(drop)
    }
}

/// The `reqwest` client: the per-call limit also bounds each request (the AppRole login in
/// `VaultStore::open` runs before any layer is around the store), redirects are not
/// followed, and a given CA replaces the system roots.
fn http_client(config: &VaultConfig) -> Result<reqwest::Client> {
    let limit = config.common.timeout;
    let mut builder = reqwest::Client::builder()
        .connect_timeout(limit.map_or(CONNECT_TIMEOUT, |t| t.min(CONNECT_TIMEOUT)))
        // Vault's redirects (standby -> active) would re-send the token to another host;
        // clients are expected to point at the active node or a load balancer.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(limit) = limit {
        builder = builder.timeout(limit);
    }
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
    builder.build().map_err(|e| Error::Config {
        message: "cannot build the HTTP client for Vault".into(),
        source: Some(Box::new(e)),
    })
}
