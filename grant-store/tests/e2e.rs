//! End to end: the example `mcp_auth_server` run as 4 replica processes behind one store (a
//! Redis, or one SQLite file) and a TCP balancer that sends every connection to a random
//! replica; rmcp's own client (with the project's `RmcpCredentialStore`) and raw OAuth
//! clients against it. Every request has an expected answer; the test counts wrong accepts
//! and wrong rejects and wants zero of each. A second test SIGKILLs a replica in the middle
//! of refresh-token rotations and checks that a family never has two valid refresh tokens.
//!
//! The test binary re-executes itself as the replicas (`replica`, selected by
//! `GRANTS_E2E_ARGS`), running the example's own server module.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/mcp_auth_server/server.rs"]
#[allow(dead_code)]
mod server;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthorizationManager};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;
use token_store_conformance::services;
use token_store_core::backend::{fill_random, hex, percent_encode};
use token_store_core::{TokenKey, TokenStore};
use token_store_grants::pkce_challenge;
use token_store_rmcp::{RmcpCredentialStore, RmcpStateStore};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const ARGS_VAR: &str = "GRANTS_E2E_ARGS";
const REDIRECT: &str = "http://127.0.0.1:8765/callback";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

/// Not a test: the body of the replica processes the tests below start.
#[test]
#[ignore = "a replica process of the end-to-end tests; started by them"]
fn replica() {
    let Ok(args) = std::env::var(ARGS_VAR) else {
        return;
    };
    let options = server::Options::try_parse_from(
        std::iter::once("replica".to_owned()).chain(args.split('\u{1f}').map(str::to_owned)),
    )
    .unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(server::serve(options))
        .unwrap();
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    fill_random(&mut b).unwrap();
    u64::from_le_bytes(b)
}

struct Replica {
    child: Child,
    addr: SocketAddr,
}

#[derive(Clone)]
struct Setup {
    store: String,
    base: String,
    users: std::path::PathBuf,
    access_ttl: u64,
}

async fn spawn_replica(setup: &Setup) -> Replica {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--base-url",
        &setup.base,
        "--store",
        &setup.store,
        "--users",
        &setup.users.display().to_string(),
        "--access-ttl",
        &setup.access_ttl.to_string(),
    ]
    .join("\u{1f}");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "replica",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ARGS_VAR, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("a replica did not start in 30 s")
            .unwrap()
            .expect("a replica exited before listening");
        // The harness prints "test replica ... " before the server's own line.
        if let Some((_, rest)) = line.split_once("listening on http://") {
            let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            // Keep reading (and dropping) its output so it never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Replica { child, addr };
        }
    }
}

/// A TCP balancer: each connection goes to a random replica of `backends`.
async fn start_balancer(listener: tokio::net::TcpListener, backends: Arc<Mutex<Vec<SocketAddr>>>) {
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let backends = backends.clone();
            tokio::spawn(async move {
                let choices = backends.lock().unwrap().clone();
                if choices.is_empty() {
                    return;
                }
                let start = (random_u64() % choices.len() as u64) as usize;
                for i in 0..choices.len() {
                    let target = choices[(start + i) % choices.len()];
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
}

fn users_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("users.txt");
    let hash = server::hash_password(PASSWORD).unwrap();
    std::fs::write(&path, format!("# test users\n{USER}:{hash}\nbob:{hash}\n")).unwrap();
    path
}

/// Counts of requests whose answer was as expected, and of those that were not.
#[derive(Default, Debug)]
struct Tally {
    right: u64,
    wrong_accepts: u64,
    wrong_rejects: u64,
    notes: Vec<String>,
}

impl Tally {
    fn expect(&mut self, what: &str, should_accept: bool, accepted: bool) {
        match (should_accept, accepted) {
            (true, true) | (false, false) => self.right += 1,
            (false, true) => {
                self.wrong_accepts += 1;
                self.notes.push(format!("wrong accept: {what}"));
            }
            (true, false) => {
                self.wrong_rejects += 1;
                self.notes.push(format!("wrong reject: {what}"));
            }
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A fresh connection per request, so the balancer picks a replica for each.
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn post_form(
    http: &reqwest::Client,
    url: &str,
    pairs: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let sent = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(pairs))
        .send()
        .await;
    // A replica killed mid-request: no answer (status 0).
    let Ok(resp) = sent else {
        return (0, Value::Null, reqwest::header::HeaderMap::new());
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
    )
}

#[derive(Clone, Debug)]
struct Tokens {
    at: String,
    rt: String,
}

impl Tokens {
    fn from(body: &Value) -> Tokens {
        Tokens {
            at: body["access_token"].as_str().unwrap_or_default().to_owned(),
            rt: body["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

async fn register_public(http: &reqwest::Client, base: &str) -> String {
    let resp = http
        .post(format!("{base}/register"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "client_name": "e2e raw client",
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    body["client_id"].as_str().unwrap().to_owned()
}

/// Logs in headlessly: POST the login form, take the code from the redirect, exchange it.
async fn raw_login(http: &reqwest::Client, base: &str, client_id: &str) -> Tokens {
    let mut v = [0u8; 32];
    fill_random(&mut v).unwrap();
    let verifier = hex(&v);
    let challenge = pkce_challenge(&verifier);
    let (status, _, headers) = post_form(
        http,
        &format!("{base}/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "s1"),
            ("scope", "mcp"),
            ("username", USER),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(status, 302, "login refused");
    let location = url::Url::parse(headers["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("no code in the redirect");
    let (status, body, _) = post_form(
        http,
        &format!("{base}/token"),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "code exchange failed: {body}");
    Tokens::from(&body)
}

async fn raw_refresh(
    http: &reqwest::Client,
    base: &str,
    client_id: &str,
    rt: &str,
) -> Result<Tokens, u16> {
    let (status, body, _) = post_form(
        http,
        &format!("{base}/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", client_id),
        ],
    )
    .await;
    if status == 200 {
        Ok(Tokens::from(&body))
    } else {
        Err(status)
    }
}

/// A bearer-checked MCP request (initialize); whether the server let it through.
async fn mcp_accepts(http: &reqwest::Client, base: &str, at: &str) -> bool {
    let resp = http
        .post(format!("{base}/mcp"))
        .header("authorization", format!("Bearer {at}"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "e2e", "version": "1"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    match resp.status().as_u16() {
        200 => true,
        401 => false,
        other => panic!("MCP endpoint answered {other}"),
    }
}

async fn introspect_active(
    http: &reqwest::Client,
    base: &str,
    client_id: &str,
    token: &str,
) -> bool {
    let (status, body, _) = post_form(
        http,
        &format!("{base}/introspect"),
        &[("token", token), ("client_id", client_id)],
    )
    .await;
    assert_eq!(status, 200, "introspection failed: {body}");
    body["active"] == true
}

// ---------------------------------------------------------------------------------------
// rmcp's own client

struct RmcpClient {
    store: TokenStore,
    key: TokenKey,
    mcp: String,
}

impl RmcpClient {
    fn credentials(&self) -> RmcpCredentialStore {
        RmcpCredentialStore::new(self.store.clone(), self.key.clone()).unwrap()
    }

    /// A manager as an application builds it: from the store if it can, else registering
    /// (once) and logging in headlessly.
    async fn manager(&self, login: bool) -> AuthorizationManager {
        let credentials = self.credentials();
        let mut manager = AuthorizationManager::new(self.mcp.as_str()).await.unwrap();
        manager.set_credential_store(credentials.clone());
        manager.set_state_store(RmcpStateStore::new(self.store.clone()));
        if !login && manager.initialize_from_store().await.unwrap() {
            if let Some(config) = credentials.client_config(REDIRECT).await.unwrap() {
                manager.configure_client(config).unwrap();
            }
            return manager;
        }
        let resolution = manager.resolve_metadata().await.unwrap();
        manager.set_metadata(resolution.metadata);
        let config = match credentials.client_config(REDIRECT).await.unwrap() {
            Some(config) => config,
            None => {
                let config = manager
                    .register_client("e2e rmcp client", REDIRECT, &["mcp"])
                    .await
                    .unwrap();
                credentials.save_client_config(&config).await.unwrap();
                config
            }
        };
        manager.configure_client(config).unwrap();
        // Play the browser: the user logs in on the form the authorization URL leads to.
        let url = url::Url::parse(&manager.get_authorization_url(&["mcp"]).await.unwrap()).unwrap();
        let mut pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        pairs.push(("username".into(), USER.into()));
        pairs.push(("password".into(), PASSWORD.into()));
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let authorize = format!("{}://{}{}", url.scheme(), url.authority(), url.path());
        let (status, _, headers) = post_form(&http(), &authorize, &borrowed).await;
        assert_eq!(status, 302, "headless login refused");
        let back = url::Url::parse(headers["location"].to_str().unwrap()).unwrap();
        let get = |name: &str| {
            back.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        manager
            .exchange_code_for_token_with_issuer(
                &get("code").unwrap(),
                &get("state").unwrap(),
                get("iss").as_deref(),
            )
            .await
            .unwrap();
        manager
    }

    /// Calls the `whoami` tool; the replica that answered, or `None` if refused.
    async fn whoami(&self, manager: AuthorizationManager) -> Option<u64> {
        let client = AuthClient::new(http(), manager);
        let transport = StreamableHttpClientTransport::with_client(
            client,
            StreamableHttpClientTransportConfig::with_uri(self.mcp.as_str()),
        );
        let service = ().serve(transport).await.ok()?;
        let result = service
            .call_tool(CallToolRequestParams::new("whoami"))
            .await
            .ok();
        let _ = service.cancel().await;
        let result = serde_json::to_value(result?).ok()?;
        let text = result["content"][0]["text"].as_str()?;
        let answer: Value = serde_json::from_str(text).ok()?;
        assert_eq!(answer["user"], USER, "the tool saw another user");
        answer["replica"].as_u64()
    }

    async fn refresh_token(&self) -> Option<String> {
        let record = self.store.get(&self.key).await.unwrap()?.value;
        record.refresh_token.map(|s| s.expose().to_owned())
    }

    async fn client_id(&self) -> String {
        self.store
            .get(&self.key)
            .await
            .unwrap()
            .unwrap()
            .value
            .client_id
            .unwrap()
    }
}

async fn rmcp_scenario(
    base: &str,
    dir: &Path,
    tally: &mut Tally,
) -> std::collections::BTreeSet<u64> {
    let mut replicas = std::collections::BTreeSet::new();
    let client = RmcpClient {
        store: token_store::open(&format!("sqlite://{}/client.db", dir.display()))
            .await
            .unwrap(),
        key: TokenKey::for_server(&format!("{base}/mcp")),
        mcp: format!("{base}/mcp"),
    };
    // Register, log in, call the tool (each call on a new connection: a random replica).
    drop(client.manager(true).await);
    for _ in 0..6 {
        let manager = client.manager(false).await;
        let r = client.whoami(manager).await;
        tally.expect("rmcp tool call after login", true, r.is_some());
        replicas.extend(r);
    }
    // Restart: a new manager from the store alone, no login.
    let manager = client.manager(false).await;
    tally.expect(
        "rmcp tool call after a client restart",
        true,
        client.whoami(manager).await.is_some(),
    );
    // Refresh: the access token (2 s) expires; rmcp refreshes through the balancer.
    let before = client.refresh_token().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let r = client.whoami(client.manager(false).await).await;
    tally.expect("rmcp tool call after expiry (refreshed)", true, r.is_some());
    let after = client.refresh_token().await.unwrap();
    assert_ne!(
        before, after,
        "rmcp did not refresh (the refresh token did not rotate)"
    );
    // A replayed old refresh token is refused and kills the family.
    let http = http();
    let client_id = client.client_id().await;
    let replay = raw_refresh(&http, base, &client_id, &before).await;
    tally.expect("replayed old refresh token", false, replay.is_ok());
    let r = client.whoami(client.manager(false).await).await;
    tally.expect(
        "rmcp tool call after the family was killed by a replay",
        false,
        r.is_some(),
    );
    // Log in again, then revoke (RFC 7009) and be refused.
    let manager = client.manager(true).await;
    tally.expect(
        "rmcp tool call after a new login",
        true,
        client.whoami(manager).await.is_some(),
    );
    let rt = client.refresh_token().await.unwrap();
    let (status, _, _) = post_form(
        &http,
        &format!("{base}/revoke"),
        &[("token", &rt), ("client_id", &client_id)],
    )
    .await;
    assert_eq!(status, 200);
    let r = client.whoami(client.manager(false).await).await;
    tally.expect("rmcp tool call after revocation", false, r.is_some());
    replicas
}

/// Several raw clients at once, each a random walk over valid and invalid requests.
async fn raw_hammer(base: &str, clients: usize, steps: usize) -> Tally {
    let mut tasks = Vec::new();
    for n in 0..clients {
        let base = base.to_owned();
        tasks.push(tokio::spawn(async move {
            let http = http();
            let mut tally = Tally::default();
            let client_id = register_public(&http, &base).await;
            let mut t = raw_login(&http, &base, &client_id).await;
            let mut old: Vec<String> = Vec::new();
            let mut dead_ats: Vec<String> = vec![hex(&[n as u8; 32])];
            for _ in 0..steps {
                match random_u64() % 6 {
                    0 | 1 => {
                        let ok = mcp_accepts(&http, &base, &t.at).await;
                        tally.expect("a live access token", true, ok);
                    }
                    2 => match raw_refresh(&http, &base, &client_id, &t.rt).await {
                        Ok(next) => {
                            tally.expect("a current refresh token", true, true);
                            old.push(std::mem::replace(&mut t, next).rt);
                        }
                        Err(_) => tally.expect("a current refresh token", true, false),
                    },
                    3 => {
                        let dead = &dead_ats[(random_u64() as usize) % dead_ats.len()];
                        let ok = mcp_accepts(&http, &base, dead).await;
                        tally.expect("a revoked or unknown access token", false, ok);
                    }
                    4 if !old.is_empty() => {
                        let replayed = old[(random_u64() as usize) % old.len()].clone();
                        let r = raw_refresh(&http, &base, &client_id, &replayed).await;
                        tally.expect("a replayed refresh token", false, r.is_ok());
                        tally.expect(
                            "the access token of a family killed by reuse",
                            false,
                            mcp_accepts(&http, &base, &t.at).await,
                        );
                        let r = raw_refresh(&http, &base, &client_id, &t.rt).await;
                        tally.expect(
                            "the current refresh token of a killed family",
                            false,
                            r.is_ok(),
                        );
                        dead_ats.push(t.at.clone());
                        old.clear();
                        t = raw_login(&http, &base, &client_id).await;
                    }
                    _ => {
                        let (status, _, _) = post_form(
                            &http,
                            &format!("{base}/revoke"),
                            &[("token", &t.rt), ("client_id", &client_id)],
                        )
                        .await;
                        assert_eq!(status, 200);
                        tally.expect(
                            "the access token of a revoked grant",
                            false,
                            mcp_accepts(&http, &base, &t.at).await,
                        );
                        let r = raw_refresh(&http, &base, &client_id, &t.rt).await;
                        tally.expect("a revoked refresh token", false, r.is_ok());
                        dead_ats.push(t.at.clone());
                        old.clear();
                        t = raw_login(&http, &base, &client_id).await;
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await.unwrap();
        total.right += t.right;
        total.wrong_accepts += t.wrong_accepts;
        total.wrong_rejects += t.wrong_rejects;
        total.notes.extend(t.notes);
    }
    total
}

async fn replicas_behind_one_store(name: &str, store: String) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let setup = Setup {
        store,
        base: base.clone(),
        users: users_file(dir.path()),
        access_ttl: 2,
    };
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(spawn_replica(&setup).await);
    }
    let backends = Arc::new(Mutex::new(
        replicas.iter().map(|r| r.addr).collect::<Vec<_>>(),
    ));
    start_balancer(listener, backends).await;
    let mut tally = Tally::default();
    let served = rmcp_scenario(&base, dir.path(), &mut tally).await;
    let hammer = raw_hammer(&base, 6, 30).await;
    let total = tally.right + hammer.right;
    println!(
        "e2e[{name}]: 4 replicas, rmcp client: {} expectations ({} wrong accepts, {} wrong rejects, tool answered by {} replicas); raw clients: 6 x 30 steps, {} expectations ({} wrong accepts, {} wrong rejects); {total} in all, {:.1} s",
        tally.right + tally.wrong_accepts + tally.wrong_rejects,
        tally.wrong_accepts,
        tally.wrong_rejects,
        served.len(),
        hammer.right + hammer.wrong_accepts + hammer.wrong_rejects,
        hammer.wrong_accepts,
        hammer.wrong_rejects,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        tally.wrong_accepts + hammer.wrong_accepts,
        0,
        "{:?} {:?}",
        tally.notes,
        hammer.notes
    );
    assert_eq!(
        tally.wrong_rejects + hammer.wrong_rejects,
        0,
        "{:?} {:?}",
        tally.notes,
        hammer.notes
    );
    assert!(
        served.len() >= 2,
        "the balancer sent every tool call to one replica"
    );
    for mut r in replicas {
        let _ = r.child.start_kill();
        let _ = r.child.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_behind_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/grants.db", dir.path().display());
    replicas_behind_one_store("sqlite", store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_behind_one_redis() {
    let Some(url) = services::require("TOKEN_STORE_TEST_REDIS_URL") else {
        return;
    };
    let store = format!(
        "{}/?prefix=ts-test:{}",
        url.trim_end_matches('/'),
        services::unique("e2e")
    );
    replicas_behind_one_store("redis", store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_rotation_on_sqlite_never_leaves_two_valid_refresh_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/grants.db", dir.path().display());
    sigkill_mid_rotation("sqlite", store, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_rotation_on_redis_never_leaves_two_valid_refresh_tokens() {
    let Some(url) = services::require("TOKEN_STORE_TEST_REDIS_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "{}/?prefix=ts-test:{}",
        url.trim_end_matches('/'),
        services::unique("kill")
    );
    sigkill_mid_rotation("redis", store, dir.path()).await;
}

/// SIGKILL a replica while it rotates a refresh token, many times: of the refresh tokens
/// the client holds (the one it sent, and the one it got back if any), never are two valid.
async fn sigkill_mid_rotation(name: &str, store: String, dir: &Path) {
    let rounds = if token_store_conformance::torture_long() {
        1000
    } else {
        100
    };
    let started = Instant::now();
    let setup = Setup {
        store,
        base: "http://127.0.0.1:1".to_owned(),
        users: users_file(dir),
        access_ttl: 60,
    };
    // The observer replica is never killed; the victim is, and comes back each round.
    let observer = spawn_replica(&setup).await;
    let seen = format!("http://{}", observer.addr);
    let http = http();
    let client_id = register_public(&http, &seen).await;
    let mut tokens = raw_login(&http, &seen, &client_id).await;
    // How long a rotation takes, to aim the kills inside one.
    let mut victim = spawn_replica(&setup).await;
    let mut took = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        tokens = raw_refresh(
            &http,
            &format!("http://{}", victim.addr),
            &client_id,
            &tokens.rt,
        )
        .await
        .unwrap();
        took.push(t.elapsed());
    }
    took.sort();
    let window = took[2].as_micros().max(200) as u64;
    let (mut uncommitted, mut answered, mut lost, mut both) = (0, 0, 0, 0);
    for round in 0..rounds {
        let url = format!("http://{}", victim.addr);
        let sent = tokens.rt.clone();
        let request = {
            let http = http.clone();
            let client_id = client_id.clone();
            let sent = sent.clone();
            tokio::spawn(async move { raw_refresh(&http, &url, &client_id, &sent).await })
        };
        tokio::time::sleep(Duration::from_micros(random_u64() % (window * 3 / 2))).await;
        let _ = victim.child.start_kill();
        let _ = victim.child.wait().await;
        let got = match tokio::time::timeout(Duration::from_secs(10), request).await {
            Ok(Ok(Ok(t))) => Some(t),
            _ => None,
        };
        let old_active = introspect_active(&http, &seen, &client_id, &sent).await;
        let new_active = match &got {
            Some(t) => introspect_active(&http, &seen, &client_id, &t.rt).await,
            None => false,
        };
        assert!(
            !(old_active && new_active),
            "round {round}: two valid refresh tokens in one family"
        );
        if old_active && new_active {
            both += 1;
        }
        match (old_active, &got, new_active) {
            // Killed before the commit: the token sent is still the current one.
            (true, None, false) => uncommitted += 1,
            (false, Some(t), true) => {
                answered += 1;
                tokens = t.clone();
            }
            (false, None, false) => {
                // Committed, but the answer died with the replica: the client logs in again.
                lost += 1;
                tokens = raw_login(&http, &seen, &client_id).await;
            }
            (old, got, new) => panic!(
                "round {round}: sent token active {old}, answer {}, new token active {new}",
                got.is_some()
            ),
        }
        victim = spawn_replica(&setup).await;
    }
    let line = format!(
        "sigkill[{name}]: {rounds} replicas killed mid-rotation (window {window} µs): {uncommitted} rotations not committed, {answered} committed and answered, {lost} committed with the answer lost (re-login), {both} with two valid refresh tokens; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("{line}");
    token_store_conformance::summary::append(&line);
    assert_eq!(both, 0);
    assert_eq!(
        uncommitted + answered + lost,
        rounds,
        "an outcome was not classified"
    );
    drop(observer);
}
