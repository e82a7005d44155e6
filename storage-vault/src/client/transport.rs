//! One HTTP request to Vault, its answer read within a bound, and the mapping of Vault's
//! answers to token-store errors.

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use token_store_core::{Error, Result};

use super::BACKEND;

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
    /// The server's clock when it answered (its `Date` header, whole seconds), if it sent one.
    pub date: Option<std::time::SystemTime>,
}

impl Reply {
    /// Vault's `errors` array, joined, for messages.
    pub fn errors(&self) -> String {
        vault_errors(&self.body)
    }
}

/// The HTTP client and where it sends: no credentials of its own (the token is per call).
pub(super) struct Transport {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) namespace: Option<String>,
}

impl Transport {
    pub(super) async fn send(
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
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(&method, path, e))?;
        let status = resp.status();
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok());
        let bytes = read_bounded(resp, &method, path, limit).await?;
        let body = if bytes.trim_ascii().is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                // A proxy's HTML page, say: keep a short excerpt for the message.
                let excerpt: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
                json!({ "errors": [excerpt] })
            })
        };
        Ok(Reply { status, body, date })
    }
}

/// The answer's body, at most `limit` bytes of it. A declared length over the bound fails
/// before reading anything; a lying or absent one is caught while reading, chunk by chunk.
async fn read_bounded(
    mut resp: reqwest::Response,
    method: &Method,
    path: &str,
    limit: usize,
) -> Result<Vec<u8>> {
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
        .map_err(|e| transport_error(method, path, e))?
    {
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Leaves 2xx, 400 and 404 to the caller; everything else becomes an error.
pub(super) fn check(method: &Method, path: &str, reply: Reply) -> Result<Reply> {
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
    if s == StatusCode::BAD_REQUEST && reply.errors().contains(KV_UPGRADING) {
        // A KV mount being upgraded (after a restart or a mount tune) answers 400 with
        // "This backend will be unavailable for a brief period and will resume service
        // shortly": transient, whatever the status says.
        return Err(Error::unavailable(
            BACKEND,
            format!(
                "{method} {path}: HTTP 400: {} (the KV mount is being upgraded)",
                reply.errors()
            ),
            None,
        ));
    }
    if s.is_success() || s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND {
        return Ok(reply);
    }
    Err(status_error(method.as_str(), path, &reply))
}

/// Vault's and OpenBao's error text while a KV mount is upgraded to version 2.
const KV_UPGRADING: &str = "Upgrading from non-versioned to versioned data";

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
    // (connection refused, certificate unknown, ...). `without_url` keeps the address out;
    // no part of it carries the token, which travels in a header.
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn reply(status: u16, errors: &[&str]) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body: serde_json::json!({ "errors": errors }),
            date: None,
        }
    }

    // Seen in a one-hour soak: right after an OpenBao restart, reads and writes answered 400
    // with this text for a moment; they were reported as a permanent `Backend` error.
    #[test]
    fn a_kv_mount_being_upgraded_is_unavailable_not_a_backend_error() {
        let upgrading = reply(
            400,
            &[
                "Upgrading from non-versioned to versioned data. This backend will be \
               unavailable for a brief period and will resume service shortly.",
            ],
        );
        // (Reply has no Debug: its body may hold a secret.)
        let Err(e) = check(&Method::GET, "secret/data/x", upgrading) else {
            panic!("an upgrading mount's 400 was handed to the caller");
        };
        assert!(e.is_retryable(), "{e:?}");
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        // Other 400s stay with the caller (a check-and-set mismatch is a conflict there).
        let cas = reply(
            400,
            &["check-and-set parameter did not match the current version"],
        );
        assert!(check(&Method::POST, "secret/data/x", cas).is_ok());
    }
}
