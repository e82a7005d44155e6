//! Refresh across real processes sharing one store, against a token endpoint that rotates
//! refresh tokens and revokes the whole family on reuse.
//!
//! The test binary re-executes itself (`worker`, selected by `RMCP_E2E_ROLE`); the parent
//! runs the token endpoint and drives the workers over their stdin/stdout (`@@` lines).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::OAuthServer;
use oauth2::TokenResponse;
use token_store_core::backend::unix_now;
use token_store_core::{
    LeaseOptions, ManagerError, Precondition, RefreshError, TokenKey, TokenManager, TokenRecord,
    TokenStore,
};
use token_store_rmcp::RmcpCredentialStore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const ROLE: &str = "RMCP_E2E_ROLE";
const CLIENT_ID: &str = "e2e-client";
const CLIENT_SECRET: &str = "e2e-secret";

fn key() -> TokenKey {
    TokenKey::for_server("https://mcp.example.com/mcp")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} unset"))
}

fn lease_options() -> LeaseOptions {
    let mut o = LeaseOptions::default();
    if let Ok(ms) = std::env::var("RMCP_E2E_LEASE_TTL_MS") {
        o.ttl = Duration::from_millis(ms.parse().unwrap());
    }
    o
}

fn say(msg: impl AsRef<str>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {}", msg.as_ref()).unwrap();
    out.flush().unwrap();
}

// ---------------------------------------------------------------------------------------
// Worker side

/// Not a test: the body of the worker processes the tests below start.
#[test]
#[ignore = "a worker process of the multi-process tests; started by them"]
fn worker() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(worker_main(role));
}

/// The refresh call a real client makes: POST grant_type=refresh_token.
async fn refresh_at(token_url: &str, old: TokenRecord) -> Result<TokenRecord, RefreshError> {
    let rt = old
        .refresh_token
        .as_ref()
        .ok_or_else(|| RefreshError::Rejected("no refresh token".into()))?;
    let reply = common::post_form(
        token_url,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.expose()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ],
    )
    .await;
    match reply {
        Ok((200, body)) => {
            let mut fresh = TokenRecord::new(body["access_token"].as_str().unwrap_or_default())
                .expires_in(Duration::from_secs(
                    body["expires_in"].as_u64().unwrap_or(3600),
                ))
                .with_scopes(body["scope"].as_str().unwrap_or_default().split(' '));
            if let Some(rt) = body["refresh_token"].as_str() {
                fresh = fresh.with_refresh_token(rt);
            }
            fresh.client_id = old.client_id.clone();
            fresh.authorization_server = old.authorization_server.clone();
            fresh.resource = old.resource.clone();
            Ok(fresh)
        }
        Ok((400, body)) if body["error"] == "invalid_grant" => Err(RefreshError::Rejected(
            format!("invalid_grant: {}", body["error_description"]),
        )),
        Ok((status, body)) => Err(RefreshError::Transient(
            format!("HTTP {status}: {body}").into(),
        )),
        Err(e) => Err(RefreshError::Transient(Box::new(e))),
    }
}

fn error_kind(e: &ManagerError) -> &'static str {
    match e {
        ManagerError::LoginRequired { .. } => "login_required",
        ManagerError::RefreshRejected { .. } => "invalid_grant",
        ManagerError::RefreshFailed { .. } => "refresh_failed",
        ManagerError::Store(_) => "store",
        _ => "other",
    }
}

async fn worker_main(role: String) {
    // The harness makes a token expire by rewriting it from another process, not by letting
    // time pass; the read cache (on by default in the manager and the adapter) may serve the
    // previous record for up to its max age. A round starts 100 ms after the rewrite, so a
    // 50 ms max age keeps the cache in the path and the harness's expiry visible.
    let store = common::open_store(&env("RMCP_E2E_STORE"))
        .await
        .with_cache(token_store_core::CacheOptions::new().with_max_age(Duration::from_millis(50)));
    let token_url = env("RMCP_E2E_TOKEN_URL");
    let manager = TokenManager::new(store.clone())
        .unwrap()
        .with_lease_options(lease_options());
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    match role.as_str() {
        // Rounds of TokenManager::valid_token, started together.
        "manager" => {
            say("ready");
            while let Some(line) = stdin.next_line().await.unwrap() {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let ["go", round, start_ms] = parts[..] else {
                    break;
                };
                let start: u64 = start_ms.parse().unwrap();
                tokio::time::sleep(Duration::from_millis(start.saturating_sub(now_ms()))).await;
                let began = Instant::now();
                let refreshed = Arc::new(AtomicBool::new(false));
                let flag = refreshed.clone();
                let url = token_url.clone();
                let result = manager
                    .valid_token(&key(), |old| async move {
                        flag.store(true, Ordering::SeqCst);
                        refresh_at(&url, old).await
                    })
                    .await;
                let micros = began.elapsed().as_micros();
                match result {
                    Ok(token) => say(format!(
                        "ok {round} {} {micros} {}",
                        token.access_token.expose(),
                        refreshed.load(Ordering::SeqCst) as u8
                    )),
                    Err(e) => say(format!("err {round} {} {e}", error_kind(&e))),
                }
            }
        }
        // Takes the refresh lease and hangs inside the refresh, before (or, with
        // RMCP_E2E_HOLD_AFTER_POST, after) the token request, until it is killed.
        "holder" => {
            let after_post = std::env::var("RMCP_E2E_HOLD_AFTER_POST").is_ok();
            let url = token_url.clone();
            let _ = manager
                .valid_token(&key(), |old| async move {
                    if after_post {
                        let _ = refresh_at(&url, old).await;
                    }
                    say("holding");
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Err(RefreshError::Transient("unreachable".into()))
                })
                .await;
        }
        // rmcp's own AuthorizationManager over the adapter.
        "rmcp" => {
            use rmcp::transport::auth::{AuthorizationManager, AuthorizationMetadata};
            let base = env("RMCP_E2E_BASE_URL");
            let adapter = RmcpCredentialStore::new(store.clone(), key())
                .unwrap()
                .with_lease_options(lease_options());
            let mut auth = if std::env::var("RMCP_E2E_COALESCE").is_ok() {
                let http = adapter.coalescing_http_client(
                    rmcp::transport::auth::default_oauth_http_client().unwrap(),
                );
                AuthorizationManager::new_with_oauth_http_client(format!("{base}/mcp"), http)
                    .await
                    .unwrap()
            } else {
                let mut auth = AuthorizationManager::new(format!("{base}/mcp"))
                    .await
                    .unwrap();
                // Loopback token endpoint: skip rmcp's address filter.
                auth.with_client(reqwest::Client::new()).unwrap();
                auth
            };
            let mut metadata = AuthorizationMetadata::default();
            metadata.authorization_endpoint = format!("{base}/authorize");
            metadata.token_endpoint = format!("{base}/token");
            metadata.issuer = Some(base.clone());
            auth.set_metadata(metadata);
            auth.set_credential_store(adapter.clone());
            assert!(auth.initialize_from_store().await.unwrap());
            // The confidential client's secret comes from the store, not from rmcp.
            let config = adapter
                .client_config("http://127.0.0.1:1/callback")
                .await
                .unwrap()
                .unwrap();
            auth.configure_client(config).unwrap();
            say("ready");
            while let Some(line) = stdin.next_line().await.unwrap() {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let ["go", round, start_ms] = parts[..] else {
                    break;
                };
                let start: u64 = start_ms.parse().unwrap();
                tokio::time::sleep(Duration::from_millis(start.saturating_sub(now_ms()))).await;
                let began = Instant::now();
                let result = auth.get_access_token().await;
                let micros = began.elapsed().as_micros();
                match result {
                    Ok(token) => say(format!("ok {round} {token} {micros} 0")),
                    Err(e) => {
                        let kind = match e {
                            rmcp::transport::auth::AuthError::AuthorizationRequired => {
                                "login_required"
                            }
                            rmcp::transport::auth::AuthError::TokenRefreshRejected(_) => {
                                "invalid_grant"
                            }
                            _ => "other",
                        };
                        say(format!("err {round} {kind} {e}"));
                    }
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Parent side

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn spawn(role: &str, vars: &[(&str, String)]) -> Worker {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "worker",
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Worker {
            child,
            stdin,
            lines,
        }
    }

    async fn next(&mut self) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
                .await
                .expect("worker silent for 120 s")
                .unwrap()
                .expect("worker exited");
            // libtest may print "test worker ... " on the same line first.
            if let Some((_, msg)) = line.split_once("@@ ") {
                return msg.to_owned();
            }
        }
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn quit(mut self) {
        drop(self.stdin);
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "worker failed: {status}");
    }
}

/// Makes the stored access token expired (as time would), keeping everything else.
async fn expire(store: &TokenStore) {
    let current = store.get(&key()).await.unwrap().unwrap();
    let mut record = current.value;
    record.expires_at = Some(unix_now() - 1.0);
    store
        .put(&key(), &record, Precondition::IfVersion(current.version))
        .await
        .unwrap();
}

fn percentile(sorted: &[u128], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct RoundStats {
    latencies_us: Vec<u128>,
    refreshers_per_round: Vec<usize>,
    wall: Duration,
}

/// Runs `rounds` rounds of `processes` workers of `role` started at the same moment.
async fn run_rounds(
    backend: &str,
    role: &str,
    coalesce: bool,
    processes: usize,
    rounds: usize,
    server: &OAuthServer,
    url: &str,
) -> RoundStats {
    let store = common::open_store(url).await;
    let mut vars = vec![
        ("RMCP_E2E_STORE", url.to_owned()),
        ("RMCP_E2E_TOKEN_URL", server.token_url()),
        ("RMCP_E2E_BASE_URL", server.base_url()),
    ];
    if coalesce {
        vars.push(("RMCP_E2E_COALESCE", "1".to_owned()));
    }
    let one_refresh_per_expiry = role == "manager" || coalesce;
    let mut workers: Vec<Worker> = (0..processes).map(|_| Worker::spawn(role, &vars)).collect();
    for w in &mut workers {
        assert_eq!(w.next().await, "ready");
    }
    let started = Instant::now();
    let mut stats = RoundStats {
        latencies_us: Vec::new(),
        refreshers_per_round: Vec::new(),
        wall: Duration::ZERO,
    };
    for round in 0..rounds {
        let before = server.counters();
        expire(&store).await;
        let start = now_ms() + 100;
        for w in &mut workers {
            w.send(&format!("go {round} {start}")).await;
        }
        let mut tokens = Vec::new();
        let mut refreshers = 0;
        for w in &mut workers {
            let msg = w.next().await;
            let parts: Vec<&str> = msg.splitn(5, ' ').collect();
            assert_eq!(parts[0], "ok", "[{backend}/{role}] round {round}: {msg}");
            assert_eq!(parts[1], round.to_string());
            tokens.push(parts[2].to_owned());
            stats.latencies_us.push(parts[3].parse().unwrap());
            refreshers += usize::from(parts[4] == "1");
        }
        let after = server.counters();
        assert_eq!(
            after.invalid_grant, 0,
            "[{backend}/{role}] round {round}: {after:?}"
        );
        assert_eq!(
            after.reuse, 0,
            "[{backend}/{role}] round {round}: {after:?}"
        );
        assert_eq!(
            after.invalid_client, 0,
            "[{backend}/{role}] round {round}: {after:?}"
        );
        let refreshed = after.refreshed - before.refreshed;
        if one_refresh_per_expiry {
            assert_eq!(
                refreshed, 1,
                "[{backend}/{role}] round {round}: one refresh per expiry"
            );
            if role == "manager" {
                assert_eq!(refreshers, 1, "[{backend}] round {round}");
            }
            assert!(
                tokens.iter().all(|t| *t == tokens[0]),
                "[{backend}/{role}] round {round}: every process adopts the one refreshed token"
            );
        } else {
            assert!(
                (1..=processes).contains(&refreshed),
                "[{backend}/{role}] round {round}: {refreshed}"
            );
        }
        stats.refreshers_per_round.push(refreshed);
        // The stored token is one the endpoint issued last and is valid.
        let stored = store.get(&key()).await.unwrap().unwrap().value;
        assert!(!stored.is_expired(Duration::from_secs(60)));
        assert!(!server.revoked(stored.refresh_token.as_ref().unwrap().expose()));
    }
    stats.wall = started.elapsed();
    for w in workers {
        w.quit().await;
    }
    stats.latencies_us.sort_unstable();
    stats
}

fn seed_manager_record(server: &OAuthServer) -> TokenRecord {
    let (at, rt) = server.login();
    let mut record = TokenRecord::new(at)
        .with_refresh_token(rt)
        .expires_in(Duration::ZERO);
    record.client_id = Some(CLIENT_ID.into());
    record
}

/// Rounds of the rmcp tests on `backend`: `default`, but at most 20 on the Secret Service,
/// where every write is a D-Bus round trip into gnome-keyring that rewrites its keyring file
/// (24-53 ms each): a coalescing round takes ~1.8 s there, 50 of them 90 s.
fn rounds_for(backend: &str, default: usize) -> usize {
    if backend == "secret-service" {
        default.min(20)
    } else {
        default
    }
}

async fn refresh_once_per_expiry(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = common::store_url(backend, dir.path()) else {
        return;
    };
    const PROCESSES: usize = 8;
    const ROUNDS: usize = 50;
    // 30 ms per token request, like a real IdP over the network: the race window is wide.
    let server = OAuthServer::start(
        Duration::from_millis(30),
        Some((CLIENT_ID.into(), CLIENT_SECRET.into())),
    )
    .await;
    let store = common::open_store(&url).await;
    store
        .put(&key(), &seed_manager_record(&server), Precondition::Any)
        .await
        .unwrap();
    let stats = run_rounds(backend, "manager", false, PROCESSES, ROUNDS, &server, &url).await;
    let counters = server.counters();
    assert_eq!(counters.refreshed, ROUNDS, "exactly one refresh per expiry");
    assert_eq!(counters.invalid_grant, 0);
    eprintln!(
        "e2e[{backend}/TokenManager]: {PROCESSES} processes x {ROUNDS} rounds: {} refresh requests, {} invalid_grant, {} reuse; valid_token latency p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; wall {:.1} s",
        counters.refreshed,
        counters.invalid_grant,
        counters.reuse,
        percentile(&stats.latencies_us, 0.5),
        percentile(&stats.latencies_us, 0.9),
        percentile(&stats.latencies_us, 1.0),
        stats.wall.as_secs_f64()
    );
    common::clean_up(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_once_per_expiry_across_processes_sqlite() {
    refresh_once_per_expiry("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_once_per_expiry_across_processes_file() {
    refresh_once_per_expiry("file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_once_per_expiry_across_processes_redis() {
    refresh_once_per_expiry("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_once_per_expiry_across_processes_secret_service() {
    refresh_once_per_expiry("secret-service").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_once_per_expiry_across_processes_keyutils() {
    refresh_once_per_expiry("keyutils").await;
}

async fn rmcp_managers_across_processes(backend: &str, coalesce: bool) {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = common::store_url(backend, dir.path()) else {
        return;
    };
    const PROCESSES: usize = 8;
    // Without coalescing every round costs 8 sequential refreshes; 20 rounds show it.
    let rounds = rounds_for(backend, if coalesce { 50 } else { 20 });
    let server = OAuthServer::start(
        Duration::from_millis(30),
        Some((CLIENT_ID.into(), CLIENT_SECRET.into())),
    )
    .await;
    let store = common::open_store(&url).await;
    // Credentials as rmcp saved them after a login, and the DCR client secret.
    {
        use oauth2::{AccessToken, RefreshToken, basic::BasicTokenType};
        use rmcp::transport::auth::{
            CredentialStore, OAuthTokenResponse, StoredCredentials, VendorExtraTokenFields,
        };
        let (at, rt) = server.login();
        let mut response = OAuthTokenResponse::new(
            AccessToken::new(at),
            BasicTokenType::Bearer,
            VendorExtraTokenFields::default(),
        );
        response.set_refresh_token(Some(RefreshToken::new(rt)));
        response.set_expires_in(Some(&Duration::from_secs(3600)));
        let adapter = RmcpCredentialStore::new(store.clone(), key()).unwrap();
        adapter
            .save(
                StoredCredentials::new(
                    CLIENT_ID.into(),
                    Some(response),
                    vec![],
                    Some(unix_now() as u64),
                )
                .with_issuer(Some(server.base_url())),
            )
            .await
            .unwrap();
        adapter
            .save_client_secret(CLIENT_ID, CLIENT_SECRET)
            .await
            .unwrap();
        let loaded = adapter.load().await.unwrap().unwrap();
        assert!(loaded.token_response.unwrap().refresh_token().is_some());
    }
    let stats = run_rounds(backend, "rmcp", coalesce, PROCESSES, rounds, &server, &url).await;
    let counters = server.counters();
    assert_eq!(counters.invalid_grant, 0);
    if coalesce {
        assert_eq!(counters.refreshed, rounds, "one refresh per expiry");
    }
    let min = stats
        .refreshers_per_round
        .iter()
        .min()
        .copied()
        .unwrap_or(0);
    let max = stats
        .refreshers_per_round
        .iter()
        .max()
        .copied()
        .unwrap_or(0);
    eprintln!(
        "e2e[{backend}/rmcp AuthorizationManager{}]: {PROCESSES} processes x {rounds} rounds: {} refresh requests ({min}..{max} per expiry), {} invalid_grant, {} reuse; get_access_token latency p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; wall {:.1} s",
        if coalesce { " + coalescing client" } else { "" },
        counters.refreshed,
        counters.invalid_grant,
        counters.reuse,
        percentile(&stats.latencies_us, 0.5),
        percentile(&stats.latencies_us, 0.9),
        percentile(&stats.latencies_us, 1.0),
        stats.wall.as_secs_f64()
    );
    common::clean_up(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_managers_across_processes_never_reuse_a_refresh_token_sqlite() {
    rmcp_managers_across_processes("sqlite", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_managers_with_the_coalescing_client_refresh_once_per_expiry_sqlite() {
    rmcp_managers_across_processes("sqlite", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_managers_across_processes_never_reuse_a_refresh_token_file() {
    rmcp_managers_across_processes("file", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_managers_with_the_coalescing_client_refresh_once_per_expiry_file() {
    rmcp_managers_across_processes("file", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_managers_across_processes_never_reuse_a_refresh_token_redis() {
    rmcp_managers_across_processes("redis", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_managers_with_the_coalescing_client_refresh_once_per_expiry_redis() {
    rmcp_managers_across_processes("redis", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_managers_across_processes_never_reuse_a_refresh_token_secret_service() {
    rmcp_managers_across_processes("secret-service", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_managers_with_the_coalescing_client_refresh_once_per_expiry_secret_service() {
    rmcp_managers_across_processes("secret-service", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_managers_across_processes_never_reuse_a_refresh_token_keyutils() {
    rmcp_managers_across_processes("keyutils", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_managers_with_the_coalescing_client_refresh_once_per_expiry_keyutils() {
    rmcp_managers_across_processes("keyutils", true).await;
}

/// A holder killed with SIGKILL while it holds the lease, before (`after_post = false`) or
/// after its token request reached the endpoint.
async fn killed_holder(backend: &str, after_post: bool) {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = common::store_url(backend, dir.path()) else {
        return;
    };
    let server = OAuthServer::start(
        Duration::from_millis(10),
        Some((CLIENT_ID.into(), CLIENT_SECRET.into())),
    )
    .await;
    let store = common::open_store(&url).await;
    let seeded = seed_manager_record(&server);
    store.put(&key(), &seeded, Precondition::Any).await.unwrap();
    const LEASE_TTL_MS: u64 = 2000;
    let mut vars = vec![
        ("RMCP_E2E_STORE", url.clone()),
        ("RMCP_E2E_TOKEN_URL", server.token_url()),
        ("RMCP_E2E_LEASE_TTL_MS", LEASE_TTL_MS.to_string()),
    ];
    if after_post {
        vars.push(("RMCP_E2E_HOLD_AFTER_POST", "1".into()));
    }
    let mut holder = Worker::spawn("holder", &vars);
    assert_eq!(holder.next().await, "holding");
    let held_since = Instant::now();
    holder.child.kill().await.unwrap(); // SIGKILL: no release, no cleanup
    let mut taker = Worker::spawn("manager", &vars);
    assert_eq!(taker.next().await, "ready");
    taker.send(&format!("go 0 {}", now_ms())).await;
    let msg = taker.next().await;
    let took_over_after = held_since.elapsed();
    taker.quit().await;
    let counters = server.counters();
    if after_post {
        // The endpoint rotated the refresh token, and the new one died with the holder: the
        // taker's refresh token is a reused one. The IdP revokes the family; the taker gets a
        // definitive rejection (no hang), the dead record is removed, a login is needed.
        assert!(msg.starts_with("err 0 invalid_grant"), "{msg}");
        assert_eq!(counters.reuse, 1, "{counters:?}");
        assert!(store.get(&key()).await.unwrap().is_none());
        eprintln!(
            "e2e[{backend}/kill after token request]: taker got invalid_grant after {:.2} s (lease TTL {LEASE_TTL_MS} ms); record removed; {counters:?}",
            took_over_after.as_secs_f64()
        );
    } else {
        assert!(msg.starts_with("ok 0 "), "{msg}");
        assert_eq!(counters.refreshed, 1, "{counters:?}");
        assert_eq!(counters.invalid_grant, 0, "{counters:?}");
        assert!(
            took_over_after >= Duration::from_millis(LEASE_TTL_MS / 2),
            "taken over after {took_over_after:?}, before the lease could expire"
        );
        assert!(
            took_over_after < Duration::from_secs(10),
            "{took_over_after:?}"
        );
        let stored = store.get(&key()).await.unwrap().unwrap().value;
        assert_ne!(stored.access_token, seeded.access_token);
        eprintln!(
            "e2e[{backend}/kill before token request]: another process refreshed {:.2} s after the holder took the lease (lease TTL {LEASE_TTL_MS} ms); {counters:?}",
            took_over_after.as_secs_f64()
        );
    }
    common::clean_up(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_is_taken_over_after_the_lease_ttl_sqlite() {
    killed_holder("sqlite", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_is_taken_over_after_the_lease_ttl_file() {
    killed_holder("file", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_is_taken_over_after_the_lease_ttl_redis() {
    killed_holder("redis", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_after_its_token_request_costs_a_login_not_a_hang_sqlite() {
    killed_holder("sqlite", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_is_taken_over_after_the_lease_ttl_secret_service() {
    killed_holder("secret-service", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_is_taken_over_after_the_lease_ttl_keyutils() {
    killed_holder("keyutils", false).await;
}
