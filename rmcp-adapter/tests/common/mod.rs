//! Test support: a local OAuth token endpoint with rotating refresh tokens that revokes the
//! whole token family on reuse (as real identity providers do), a tiny HTTP client, and
//! store opening by URL.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use token_store_core::{StoreUrl, TokenStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the endpoint counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful refresh grants.
    pub refreshed: usize,
    /// `invalid_grant` answers, for any reason.
    pub invalid_grant: usize,
    /// Refresh tokens presented a second time (each revoked a family).
    pub reuse: usize,
    /// Requests refused for missing or wrong client authentication.
    pub invalid_client: usize,
}

struct Family {
    current_refresh: String,
    revoked: bool,
}

#[derive(Default)]
struct State {
    /// Every refresh token ever issued -> its family.
    refresh_index: HashMap<String, usize>,
    families: Vec<Family>,
    next: usize,
    counters: Counters,
}

/// A token endpoint on 127.0.0.1.
#[derive(Clone)]
pub struct OAuthServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    token_store_core::backend::fill_random(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Base64 (standard alphabet, padded), for the expected Basic auth header.
pub fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn form_decode(s: &str) -> String {
    token_store_core::backend::percent_decode(&s.replace('+', " ")).unwrap_or_default()
}

fn form_encode(s: &str) -> String {
    token_store_core::backend::percent_encode(s)
}

pub fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

impl OAuthServer {
    /// Starts the endpoint. Each token request takes `delay` (a real IdP takes tens of ms,
    /// which is what makes the refresh race likely). With `client` set, requests must
    /// authenticate as that confidential client (HTTP Basic or form fields).
    pub async fn start(delay: Duration, client: Option<(String, String)>) -> OAuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = OAuthServer {
            addr,
            state: Arc::default(),
        };
        let state = server.state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, state, delay, client).await;
                });
            }
        });
        server
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The issuer / base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts a token family as a login would: returns (access token, refresh token).
    pub fn login(&self) -> (String, String) {
        let mut s = self.state.lock().unwrap();
        let family = s.families.len();
        let rt = format!("rt-{family}-0-{}", random_hex(8));
        s.families.push(Family {
            current_refresh: rt.clone(),
            revoked: false,
        });
        s.refresh_index.insert(rt.clone(), family);
        (format!("at-{family}-0-{}", random_hex(8)), rt)
    }

    pub fn counters(&self) -> Counters {
        self.state.lock().unwrap().counters.clone()
    }

    /// Whether the family that `refresh_token` belongs to was revoked.
    pub fn revoked(&self, refresh_token: &str) -> bool {
        let s = self.state.lock().unwrap();
        s.refresh_index
            .get(refresh_token)
            .is_some_and(|&f| s.families[f].revoked)
    }
}

fn grant(state: &Mutex<State>, form: &HashMap<String, String>) -> (u16, Value) {
    let mut s = state.lock().unwrap();
    let invalid = |s: &mut State, why: &str| {
        s.counters.invalid_grant += 1;
        (
            400,
            json!({"error": "invalid_grant", "error_description": why}),
        )
    };
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return (400, json!({"error": "unsupported_grant_type"}));
    }
    let Some(rt) = form.get("refresh_token") else {
        return (400, json!({"error": "invalid_request"}));
    };
    let Some(&family) = s.refresh_index.get(rt) else {
        return invalid(&mut s, "unknown refresh token");
    };
    if s.families[family].revoked {
        return invalid(&mut s, "token family revoked");
    }
    if s.families[family].current_refresh != *rt {
        // Reuse of a rotated refresh token: revoke the whole family (RFC 9700 4.14.2).
        s.families[family].revoked = true;
        s.counters.reuse += 1;
        return invalid(&mut s, "refresh token reused; family revoked");
    }
    s.next += 1;
    let n = s.next;
    let new_rt = format!("rt-{family}-{n}-{}", random_hex(8));
    s.families[family].current_refresh = new_rt.clone();
    s.refresh_index.insert(new_rt.clone(), family);
    s.counters.refreshed += 1;
    (
        200,
        json!({
            "access_token": format!("at-{family}-{n}-{}", random_hex(8)),
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": new_rt,
            "scope": "read write",
        }),
    )
}

async fn serve(
    mut conn: TcpStream,
    state: Arc<Mutex<State>>,
    delay: Duration,
    client: Option<(String, String)>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[header_end..]).to_string();
    let form = parse_form(&body);
    tokio::time::sleep(delay).await;
    let (status, reply) = if !request_line.starts_with("POST /token ") {
        (404, json!({"error": "not_found"}))
    } else if let Some((id, secret)) = &client {
        let basic = format!("Basic {}", base64(format!("{id}:{secret}").as_bytes()));
        let ok = headers.get("authorization") == Some(&basic)
            || (form.get("client_id") == Some(id) && form.get("client_secret") == Some(secret));
        if ok {
            grant(&state, &form)
        } else {
            state.lock().unwrap().counters.invalid_client += 1;
            (401, json!({"error": "invalid_client"}))
        }
    } else {
        grant(&state, &form)
    };
    let body = reply.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

/// POSTs a form; returns the status and the JSON body.
pub async fn post_form(url: &str, fields: &[(&str, &str)]) -> std::io::Result<(u16, Value)> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let body = fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut conn = TcpStream::connect(host).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    Ok((status, json))
}

/// Opens a store by URL with the backend crates' `open_url`.
pub async fn open_store(url: &str) -> TokenStore {
    let parsed = StoreUrl::parse(url).unwrap();
    let store = match parsed.scheme() {
        "sqlite" => token_store_sqlite::open_url(&parsed).await,
        "file" => token_store_file::open_url(&parsed).await,
        "redis" | "rediss" => token_store_redis::open_url(&parsed).await,
        "keychain" => token_store_keychain::open_url(&parsed).await,
        other => panic!("no backend for {other}"),
    };
    store.unwrap_or_else(|e| panic!("opening {}: {e}", parsed.redacted()))
}

/// Store URLs to run against: SQLite and the file store always (in `dir`), Redis when
/// `TOKEN_STORE_TEST_REDIS_URL` is set (a unique prefix per call), the Secret Service on
/// `DBUS_SESSION_BUS_ADDRESS` with `TOKEN_STORE_TEST_SECRET_SERVICE=1` and keyutils with
/// `TOKEN_STORE_TEST_KEYUTILS=1` (a unique service name per call; the child processes
/// inherit the bus address and the session keyring, so they share the store).
pub fn store_url(backend: &str, dir: &std::path::Path) -> Option<String> {
    use token_store_conformance::services;
    match backend {
        "sqlite" => Some(format!("sqlite://{}", dir.join("tokens.db").display())),
        "file" => Some(format!(
            "file://{}?key_file={}",
            dir.join("store").display(),
            dir.join("key").display()
        )),
        "redis" => {
            let base = services::require("TOKEN_STORE_TEST_REDIS_URL")?;
            let prefix = services::unique("rmcp-e2e");
            let sep = if base.contains('?') { '&' } else { '?' };
            Some(format!("{base}{sep}prefix={prefix}"))
        }
        "secret-service" => {
            services::require("TOKEN_STORE_TEST_SECRET_SERVICE")?;
            services::require("DBUS_SESSION_BUS_ADDRESS")?;
            Some(format!(
                "keychain:secret-service?service={}",
                services::unique("rmcp-e2e")
            ))
        }
        "keyutils" => {
            services::require("TOKEN_STORE_TEST_KEYUTILS")?;
            Some(format!(
                "keychain:keyutils?service={}",
                services::unique("rmcp-e2e")
            ))
        }
        other => panic!("unknown backend {other}"),
    }
}

/// Deletes what a test left in a store that outlives it (the keychains: items of the
/// test's unique service name); nothing to do for the others.
pub async fn clean_up(url: &str) {
    let parsed = StoreUrl::parse(url).unwrap();
    if parsed.scheme() != "keychain" {
        return;
    }
    let service = parsed.param("service").unwrap();
    let config = token_store_keychain::KeychainConfig::default().with_service(service);
    let removed = match parsed.body().trim_matches('/') {
        "secret-service" => token_store_keychain::SecretServiceStore::connect(&config)
            .await
            .unwrap()
            .clear()
            .await
            .unwrap(),
        "keyutils" => token_store_keychain::KeyringStore::keyutils(&config)
            .unwrap()
            .clear()
            .await
            .unwrap(),
        other => panic!("unknown keychain {other}"),
    };
    assert!(removed > 0, "the test stored nothing in {url}?");
}
