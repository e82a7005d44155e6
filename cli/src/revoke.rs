//! RFC 7009 token revocation at the issuer, with the endpoint discovered from the issuer's
//! RFC 8414 metadata (or OpenID Connect discovery as a fallback).

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use token_store::{Secret, canonical_url};

use crate::exit::{CliResult, Code, Failure};
use crate::input;
use crate::out::clean;

/// A revocation endpoint and how it accepts client authentication.
pub(crate) struct Endpoint {
    pub(crate) url: url::Url,
    /// `revocation_endpoint_auth_methods_supported`, empty when not advertised.
    auth_methods: Vec<String>,
}

/// Whether a token was revoked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revoked {
    Yes,
    /// The issuer does not revoke this kind of token (`unsupported_token_type`).
    Unsupported,
}

/// The client a revocation authenticates as (RFC 7009 section 2.1: confidential clients
/// authenticate, public clients identify themselves).
pub(crate) struct ClientAuth {
    pub(crate) id: Option<String>,
    pub(crate) secret: Option<Secret>,
    /// The registration's `token_endpoint_auth_method`, when it says.
    pub(crate) method: Option<String>,
}

enum Method {
    Basic,
    Post,
    IdOnly,
}

impl ClientAuth {
    fn method(&self, endpoint: &Endpoint) -> Method {
        if self.secret.is_none() || self.id.is_none() {
            return Method::IdOnly;
        }
        let offers = |m: &str| endpoint.auth_methods.iter().any(|s| s == m);
        let post_only = !endpoint.auth_methods.is_empty()
            && !offers("client_secret_basic")
            && offers("client_secret_post");
        if post_only || self.method.as_deref() == Some("client_secret_post") {
            Method::Post
        } else {
            Method::Basic
        }
    }
}

#[derive(Deserialize)]
struct Metadata {
    issuer: Option<String>,
    revocation_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint_auth_methods_supported: Vec<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: Option<String>,
    error_description: Option<String>,
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks a revocation endpoint: http(s), and https unless on loopback (a refresh token is
/// never sent in the clear over a network).
fn check_endpoint(what: &str, raw: &str, code: Code) -> CliResult<url::Url> {
    let url = input::http_url(what, raw).map_err(|f| Failure::new(code, f.message))?;
    if url.scheme() != "https" && !is_loopback(&url) {
        return Err(Failure::new(
            code,
            format!(
                "{what} {} is plain http; tokens are sent only over https (or to loopback)",
                clean(raw)
            ),
        ));
    }
    Ok(url)
}

/// RFC 8414 section 3: the well-known suffix goes between the host and the issuer's path.
/// Then OpenID Connect discovery (the suffix after the path), which many issuers serve.
fn metadata_urls(issuer: &url::Url) -> Vec<url::Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut out = Vec::new();
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    rfc8414.set_query(None);
    rfc8414.set_fragment(None);
    out.push(rfc8414);
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    oidc.set_query(None);
    oidc.set_fragment(None);
    out.push(oidc);
    out
}

fn unreachable(url: &url::Url, e: reqwest::Error) -> Failure {
    let why = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        // The URL is named once, here, not again by reqwest's message.
        crate::out::one_line(&e.without_url())
    };
    Failure::new(
        Code::Unavailable,
        format!("cannot reach {}: {why}", clean(url.as_str())),
    )
}

/// An HTTP client for the issuer: a timeout on every request, no redirects (a token must
/// not follow a redirect to another host).
pub(crate) struct Revoker {
    http: reqwest::Client,
}

impl Revoker {
    pub(crate) fn new(timeout: Duration) -> CliResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tokenstore/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Failure::new(
                    Code::Config,
                    format!("cannot set up HTTPS: {}", crate::out::one_line(&e)),
                )
            })?;
        Ok(Revoker { http })
    }

    /// The endpoint given on the command line.
    pub(crate) fn given(raw: &str) -> CliResult<Endpoint> {
        Ok(Endpoint {
            url: check_endpoint("--revocation-endpoint", raw, Code::Usage)?,
            auth_methods: Vec::new(),
        })
    }

    /// The issuer's revocation endpoint, from its metadata.
    pub(crate) async fn discover(&self, issuer: &str) -> CliResult<Endpoint> {
        let issuer_url = input::http_url("the issuer", issuer)?;
        for url in metadata_urls(&issuer_url) {
            tracing::debug!(url = %url, "fetching authorization server metadata");
            let response = self
                .http
                .get(url.clone())
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| unreachable(&url, e))?;
            let status = response.status();
            if status.is_server_error() {
                return Err(Failure::new(
                    Code::Unavailable,
                    format!("{} answered HTTP {status}", clean(url.as_str())),
                ));
            }
            if !status.is_success() {
                continue;
            }
            let meta: Metadata = response.json().await.map_err(|_| {
                Failure::new(
                    Code::Config,
                    format!(
                        "{} is not authorization server metadata",
                        clean(url.as_str())
                    ),
                )
            })?;
            // RFC 8414 section 3.3: metadata naming another issuer must not be used.
            if meta.issuer.as_deref().map(canonical_url) != Some(canonical_url(issuer)) {
                return Err(Failure::new(
                    Code::Config,
                    format!(
                        "the metadata at {} is for issuer {}, not {}",
                        clean(url.as_str()),
                        clean(meta.issuer.as_deref().unwrap_or("(none)")),
                        clean(issuer)
                    ),
                ));
            }
            let Some(endpoint) = meta.revocation_endpoint else {
                return Err(Failure::new(
                    Code::Config,
                    format!(
                        "issuer {} advertises no revocation_endpoint; give --revocation-endpoint",
                        clean(issuer)
                    ),
                ));
            };
            return Ok(Endpoint {
                url: check_endpoint(
                    "the advertised revocation_endpoint",
                    &endpoint,
                    Code::Config,
                )?,
                auth_methods: meta.revocation_endpoint_auth_methods_supported,
            });
        }
        Err(Failure::new(
            Code::Config,
            format!(
                "issuer {} serves no RFC 8414 or OpenID metadata; give --revocation-endpoint",
                clean(issuer)
            ),
        ))
    }

    /// Revokes one token (`hint`: `refresh_token` or `access_token`).
    pub(crate) async fn revoke(
        &self,
        endpoint: &Endpoint,
        token: &Secret,
        hint: &'static str,
        client: &ClientAuth,
    ) -> CliResult<Revoked> {
        tracing::debug!(endpoint = %endpoint.url, hint, "revoking a token");
        let mut form: Vec<(&str, &str)> =
            vec![("token", token.expose()), ("token_type_hint", hint)];
        let mut request = self.http.post(endpoint.url.clone());
        match (client.method(endpoint), &client.id, &client.secret) {
            (Method::Basic, Some(id), Some(secret)) => {
                request = request.header(reqwest::header::AUTHORIZATION, basic(id, secret)?);
            }
            (Method::Post, Some(id), Some(secret)) => {
                form.push(("client_id", id));
                form.push(("client_secret", secret.expose()));
            }
            (_, Some(id), _) => form.push(("client_id", id)),
            _ => {}
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| unreachable(&endpoint.url, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Revoked::Yes);
        }
        let body: Option<OAuthError> = response.json().await.ok();
        let error = body
            .as_ref()
            .and_then(|b| b.error.clone())
            .unwrap_or_default();
        if error == "unsupported_token_type" {
            return Ok(Revoked::Unsupported);
        }
        let description = body
            .and_then(|b| b.error_description)
            .map(|d| {
                // An issuer echoing the request must not make us print the token.
                let d = d.replace(token.expose(), "[REDACTED]");
                format!(" ({})", clean(&d.chars().take(200).collect::<String>()))
            })
            .unwrap_or_default();
        let code = if status.is_server_error() {
            Code::Unavailable
        } else if status == reqwest::StatusCode::UNAUTHORIZED || error == "invalid_client" {
            Code::Permission
        } else {
            Code::Refused
        };
        Err(Failure::new(
            code,
            format!(
                "{} refused to revoke the {}: HTTP {status}{}{description}",
                clean(endpoint.url.as_str()),
                hint.replace('_', " "),
                if error.is_empty() {
                    String::new()
                } else {
                    format!(" {}", clean(&error))
                }
            ),
        ))
    }
}

/// `Basic` client authentication as RFC 6749 section 2.3.1 has it: id and secret
/// form-urlencoded, then base64; the header is marked sensitive.
fn basic(id: &str, secret: &Secret) -> CliResult<reqwest::header::HeaderValue> {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = zeroize::Zeroizing::new(format!("{}:{}", enc(id), enc(secret.expose())));
    let value = zeroize::Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
    ));
    let mut header = reqwest::header::HeaderValue::from_str(&value)
        .map_err(|_| Failure::usage("the client id cannot be sent in a header"))?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_follow_rfc_8414() {
        let urls = metadata_urls(&url::Url::parse("https://as.example/tenant/1/").unwrap());
        assert_eq!(
            urls[0].as_str(),
            "https://as.example/.well-known/oauth-authorization-server/tenant/1"
        );
        assert_eq!(
            urls[1].as_str(),
            "https://as.example/tenant/1/.well-known/openid-configuration"
        );
        let root = metadata_urls(&url::Url::parse("https://as.example").unwrap());
        assert_eq!(
            root[0].as_str(),
            "https://as.example/.well-known/oauth-authorization-server"
        );
    }

    #[test]
    fn tokens_go_over_https_or_loopback_only() {
        assert!(check_endpoint("e", "http://127.0.0.1:9/revoke", Code::Usage).is_ok());
        assert!(check_endpoint("e", "http://localhost/revoke", Code::Usage).is_ok());
        assert!(check_endpoint("e", "https://as.example/revoke", Code::Usage).is_ok());
        let m = check_endpoint("e", "http://as.example/revoke", Code::Usage)
            .unwrap_err()
            .message;
        assert!(m.contains("plain http"), "{m}");
    }
}
