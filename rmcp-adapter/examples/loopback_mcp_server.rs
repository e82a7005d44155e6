//! A small OAuth-protected MCP server on 127.0.0.1, to try `persistent_client` against:
//! RFC 9728 resource metadata, RFC 8414 authorization server metadata, dynamic client
//! registration (issuing a client secret, so the client must keep it), an authorization
//! endpoint that approves at once (a script can play the browser), PKCE, short-lived access
//! tokens and rotating refresh tokens whose reuse revokes the token family, and RFC 7009 token
//! revocation (advertised as `revocation_endpoint` in the RFC 8414 metadata): revoking a
//! refresh token revokes its whole family and the family's access tokens, revoking an access
//! token invalidates that token. The MCP endpoint (rmcp's streamable HTTP server, one `echo`
//! tool) wants a valid bearer token.
//!
//! ```text
//! cargo run -p token-store-rmcp --example loopback_mcp_server -- [PORT] [ACCESS_TOKEN_TTL_SECS]
//! ```
//!
//! PORT 0 picks a free port. The first line on stderr names the address actually bound
//! (`[server] MCP endpoint http://127.0.0.1:PORT/mcp ...`), so a test can start the server as
//! a child process and read it. Every OAuth event is logged to stderr, with running counts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rmcp::ServerHandler;
use rmcp::model::{ListToolsResult, ServerCapabilities, ServerConfig, Tool};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};
use sha2::Digest;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({"type": "object", "properties": {"text": {"type": "string"}}});
        let Value::Object(schema) = schema else {
            unreachable!()
        };
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "echo",
            "Echoes its text",
            schema,
        )]))
    }
}

struct Family {
    /// The client the family was issued to: only it may revoke the family's tokens.
    client: String,
    current_refresh: String,
    revoked: bool,
}

#[derive(Default)]
struct Oauth {
    clients: HashMap<String, Option<String>>,
    /// code -> (client id, PKCE challenge)
    codes: HashMap<String, (String, String)>,
    /// access token -> (expiry, family)
    access: HashMap<String, (Instant, usize)>,
    refresh_index: HashMap<String, usize>,
    families: Vec<Family>,
    counts: HashMap<&'static str, usize>,
}

impl Oauth {
    fn count(&mut self, event: &'static str) -> usize {
        let n = self.counts.entry(event).or_default();
        *n += 1;
        *n
    }
}

struct Server {
    base: String,
    ttl: Duration,
    oauth: Mutex<Oauth>,
    mcp: StreamableHttpService<Echo, LocalSessionManager>,
}

fn random() -> String {
    let mut b = [0u8; 16];
    token_store_core::backend::fill_random(&mut b).unwrap_or_default();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn decode_base64(s: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        bits = bits << 6 | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            let d = |x: &str| {
                token_store_core::backend::percent_decode(&x.replace('+', " ")).unwrap_or_default()
            };
            (d(k), d(v))
        })
        .collect()
}

fn respond(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap_or_default()
}

impl Server {
    fn issue(&self, o: &mut Oauth, family: usize) -> Value {
        let access = format!("at-{}", random());
        let refresh = format!("rt-{}", random());
        o.access
            .insert(access.clone(), (Instant::now() + self.ttl, family));
        o.families[family].current_refresh = refresh.clone();
        o.refresh_index.insert(refresh.clone(), family);
        json!({"access_token": access, "token_type": "Bearer", "expires_in": self.ttl.as_secs(),
               "refresh_token": refresh, "scope": "mcp"})
    }

    /// Client authentication (Basic or form fields, as registered): the client id, or
    /// `None` (logged and counted) when the client must get `invalid_client`.
    fn authenticate(
        o: &mut Oauth,
        headers: &hyper::HeaderMap,
        f: &HashMap<String, String>,
        endpoint: &str,
    ) -> Option<String> {
        let (mut id, mut secret) = (f.get("client_id").cloned(), f.get("client_secret").cloned());
        if let Some(basic) = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        {
            let decoded = String::from_utf8(decode_base64(basic)).unwrap_or_default();
            if let Some((i, s)) = decoded.split_once(':') {
                let d = |x: &str| {
                    token_store_core::backend::percent_decode(&x.replace('+', " "))
                        .unwrap_or_default()
                };
                (id, secret) = (Some(d(i)), Some(d(s)));
            }
        }
        let authenticated = id
            .as_ref()
            .and_then(|id| o.clients.get(id))
            .is_some_and(|registered| registered.is_none() || *registered == secret);
        match id {
            Some(id) if authenticated => Some(id),
            _ => {
                let n = o.count("invalid_client");
                eprintln!(
                    "[server] {endpoint} request with missing or wrong client secret -> invalid_client (#{n})"
                );
                None
            }
        }
    }

    fn token(&self, headers: &hyper::HeaderMap, body: &str) -> Response<Body> {
        let f = form(body);
        let mut o = self.oauth.lock().unwrap_or_else(|e| e.into_inner());
        let Some(id) = Self::authenticate(&mut o, headers, &f, "token") else {
            return respond(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
        };
        let invalid = |o: &mut Oauth, why: &str| {
            let n = o.count("invalid_grant");
            eprintln!("[server] {why} -> invalid_grant (#{n})");
            respond(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": why}),
            )
        };
        match f.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let Some((client, challenge)) = f.get("code").and_then(|c| o.codes.remove(c))
                else {
                    return invalid(&mut o, "unknown or used code");
                };
                let verifier = f.get("code_verifier").cloned().unwrap_or_default();
                if client != id
                    || base64url(&sha2::Sha256::digest(verifier.as_bytes())) != challenge
                {
                    return invalid(&mut o, "PKCE verification failed");
                }
                let family = o.families.len();
                o.families.push(Family {
                    client: id,
                    current_refresh: String::new(),
                    revoked: false,
                });
                let n = o.count("login");
                eprintln!("[server] authorization code exchanged: login #{n}");
                respond(StatusCode::OK, self.issue(&mut o, family))
            }
            Some("refresh_token") => {
                let rt = f.get("refresh_token").cloned().unwrap_or_default();
                let Some(&family) = o.refresh_index.get(&rt) else {
                    return invalid(&mut o, "unknown refresh token");
                };
                if o.families[family].client != id {
                    return invalid(&mut o, "refresh token of another client");
                }
                if o.families[family].revoked {
                    return invalid(&mut o, "refresh token of a revoked family");
                }
                if o.families[family].current_refresh != rt {
                    o.families[family].revoked = true;
                    return invalid(&mut o, "refresh token REUSED: family revoked");
                }
                let n = o.count("refresh");
                eprintln!("[server] refresh token rotated: refresh #{n}");
                respond(StatusCode::OK, self.issue(&mut o, family))
            }
            _ => respond(
                StatusCode::BAD_REQUEST,
                json!({"error": "unsupported_grant_type"}),
            ),
        }
    }

    /// RFC 7009: an unknown or already invalid token is not an error (200); a token issued
    /// to another client is refused; a refresh token revokes its family and the family's
    /// access tokens.
    fn revoke(&self, headers: &hyper::HeaderMap, body: &str) -> Response<Body> {
        let f = form(body);
        let mut o = self.oauth.lock().unwrap_or_else(|e| e.into_inner());
        let Some(id) = Self::authenticate(&mut o, headers, &f, "revocation") else {
            return respond(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
        };
        let Some(token) = f.get("token").cloned() else {
            return respond(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": "no token"}),
            );
        };
        // The hint only orders the lookups (RFC 7009 section 2.1); both kinds are searched.
        let as_refresh = o.refresh_index.get(&token).copied();
        let as_access = o.access.get(&token).map(|(_, family)| *family);
        let (family, kind) = match (as_refresh, as_access) {
            (Some(family), _) => (family, "refresh"),
            (None, Some(family)) => (family, "access"),
            (None, None) => {
                let n = o.count("revocation_unknown");
                eprintln!("[server] revocation of an unknown token: nothing to do (#{n})");
                return respond(StatusCode::OK, json!({}));
            }
        };
        if o.families[family].client != id {
            let n = o.count("revocation_refused");
            eprintln!("[server] revocation of another client's token -> refused (#{n})");
            return respond(
                StatusCode::BAD_REQUEST,
                json!({"error": "unauthorized_client", "error_description": "the token was issued to another client"}),
            );
        }
        if kind == "refresh" {
            o.families[family].revoked = true;
            o.access.retain(|_, (_, f)| *f != family);
        } else {
            o.access.remove(&token);
        }
        let n = o.count("revocation");
        eprintln!("[server] {kind} token revoked (#{n})");
        respond(StatusCode::OK, json!({}))
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let base = &self.base;
        match path.as_str() {
            p if p.starts_with("/.well-known/oauth-protected-resource") => respond(
                StatusCode::OK,
                json!({"resource": format!("{base}/mcp"), "authorization_servers": [base],
                       "bearer_methods_supported": ["header"]}),
            ),
            p if p.starts_with("/.well-known/oauth-authorization-server")
                || p.starts_with("/.well-known/openid-configuration") =>
            {
                respond(
                    StatusCode::OK,
                    json!({"issuer": base, "authorization_endpoint": format!("{base}/authorize"),
                       "token_endpoint": format!("{base}/token"), "registration_endpoint": format!("{base}/register"),
                       "response_types_supported": ["code"], "grant_types_supported": ["authorization_code", "refresh_token"],
                       "code_challenge_methods_supported": ["S256"], "scopes_supported": ["mcp"],
                       "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
                       "revocation_endpoint": format!("{base}/revoke"),
                       "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"]}),
                )
            }
            "/register" => {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (id, secret) = (format!("client-{}", random()), random());
                let mut o = self.oauth.lock().unwrap_or_else(|e| e.into_inner());
                o.clients.insert(id.clone(), Some(secret.clone()));
                let n = o.count("registration");
                eprintln!("[server] dynamic client registration #{n}: issued a client secret");
                respond(
                    StatusCode::CREATED,
                    json!({"client_id": id, "client_secret": secret, "client_secret_expires_at": 0,
                           "redirect_uris": request["redirect_uris"], "grant_types": ["authorization_code", "refresh_token"],
                           "token_endpoint_auth_method": "client_secret_basic"}),
                )
            }
            "/authorize" => {
                // Approves at once: whoever opens this URL plays the user.
                let q = form(&query);
                let code = random();
                let client = q.get("client_id").cloned().unwrap_or_default();
                let challenge = q.get("code_challenge").cloned().unwrap_or_default();
                self.oauth
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .codes
                    .insert(code.clone(), (client, challenge));
                let location = format!(
                    "{}?code={code}&state={}&iss={}",
                    q.get("redirect_uri").cloned().unwrap_or_default(),
                    token_store_core::backend::percent_encode(
                        q.get("state").map(String::as_str).unwrap_or_default()
                    ),
                    token_store_core::backend::percent_encode(base),
                );
                Response::builder()
                    .status(StatusCode::FOUND)
                    .header("location", location)
                    .body(Full::new(Bytes::new()).boxed())
                    .unwrap_or_default()
            }
            "/token" | "/revoke" => {
                let headers = req.headers().clone();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let body = String::from_utf8_lossy(&body);
                if path == "/token" {
                    self.token(&headers, &body)
                } else {
                    self.revoke(&headers, &body)
                }
            }
            "/mcp" => {
                let token = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned);
                let valid = {
                    let o = self.oauth.lock().unwrap_or_else(|e| e.into_inner());
                    token
                        .as_ref()
                        .and_then(|t| o.access.get(t))
                        .is_some_and(|(until, family)| {
                            *until > Instant::now() && !o.families[*family].revoked
                        })
                };
                if !valid {
                    eprintln!("[server] MCP request without a valid access token -> 401");
                    return Response::builder()
                        .status(StatusCode::UNAUTHORIZED)
                        .header(
                            "www-authenticate",
                            format!("Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\""),
                        )
                        .body(Full::new(Bytes::new()).boxed())
                        .unwrap_or_default();
                }
                self.mcp.handle(req).await
            }
            _ => respond(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(8931);
    let ttl = Duration::from_secs(args.next().map(|t| t.parse()).transpose()?.unwrap_or(60));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // The port actually bound: PORT 0 asks the system for a free one.
    let base = format!("http://{}", listener.local_addr()?);
    let mcp = StreamableHttpService::new(
        || Ok(Echo),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let server = Arc::new(Server {
        base: base.clone(),
        ttl,
        oauth: Mutex::default(),
        mcp,
    });
    eprintln!(
        "[server] MCP endpoint {base}/mcp (access tokens live {} s)",
        ttl.as_secs()
    );
    loop {
        let (conn, _) = listener.accept().await?;
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.route(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                .await;
        });
    }
}
