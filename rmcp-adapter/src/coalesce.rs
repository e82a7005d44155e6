//! One refresh per expiry for rmcp, across processes: an `OAuthHttpClient` that answers a
//! redundant refresh from the store.
//!
//! rmcp 3.11 takes the refresh guard, loads, and refreshes unconditionally. A process that
//! waited for the guard while another refreshed therefore refreshes again (safely: it sends
//! the winner's refresh token). This client sits where rmcp sends the token request: when
//! the adapter's guarded load shows the credentials changed since this process last looked
//! and carry the refresh token being sent, it returns them as the token response instead of
//! calling the authorization server. Everything else passes through unchanged.

use std::sync::Arc;

use oauth2::http::{self, header};
use rmcp::transport::auth::{OAuthHttpClient, OAuthHttpClientFuture, OAuthHttpRequest};

use crate::RmcpCredentialStore;

/// An [`OAuthHttpClient`] that coalesces redundant refreshes; see
/// [`RmcpCredentialStore::coalescing_http_client`].
pub struct CoalescingHttpClient {
    inner: Arc<dyn OAuthHttpClient>,
    credentials: RmcpCredentialStore,
}

impl CoalescingHttpClient {
    /// Wraps `inner`, answering redundant refreshes from `credentials`.
    pub fn new(inner: Arc<dyn OAuthHttpClient>, credentials: RmcpCredentialStore) -> Self {
        CoalescingHttpClient { inner, credentials }
    }
}

/// The refresh token of a `grant_type=refresh_token` form body.
fn refresh_token_of(request: &http::Request<Vec<u8>>) -> Option<String> {
    if request.method() != http::Method::POST {
        return None;
    }
    let body = std::str::from_utf8(request.body()).ok()?;
    let mut grant = None;
    let mut token = None;
    for pair in body.split('&') {
        let (k, v) = pair.split_once('=')?;
        let v = token_store_core::backend::percent_decode(&v.replace('+', " "))?;
        match k {
            "grant_type" => grant = Some(v),
            "refresh_token" => token = Some(v),
            _ => {}
        }
    }
    (grant.as_deref() == Some("refresh_token")).then_some(token)?
}

impl OAuthHttpClient for CoalescingHttpClient {
    fn execute(&self, request: OAuthHttpRequest) -> OAuthHttpClientFuture<'_> {
        let answer = refresh_token_of(&request.request)
            .and_then(|rt| self.credentials.coalesce(&rt))
            .and_then(|response| serde_json::to_vec(&response).ok())
            .and_then(|body| {
                http::Response::builder()
                    .status(http::StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CACHE_CONTROL, "no-store")
                    .body(body)
                    .ok()
            });
        match answer {
            Some(response) => {
                tracing::debug!(key = %self.credentials.key(), "refresh answered from the store: another process refreshed while this one waited");
                Box::pin(async move { Ok(response) })
            }
            None => self.inner.execute(request),
        }
    }
}
