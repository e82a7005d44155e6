//! `tokenstore logout --revoke` against the loopback OAuth server of the rmcp adapter's
//! examples (`rmcp-adapter/examples/loopback_mcp_server.rs`), run as a child process: a real
//! login (dynamic registration, PKCE, code exchange), then RFC 8414 discovery and RFC 7009
//! revocation, after which the server refuses the revoked refresh token and access token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use base64::Engine;
use common::{Tool, on, read_request};
use serde_json::{Value, json};
use sha2::Digest;
use token_store::{ClientKey, ClientRegistration, Precondition, TokenKey, TokenRecord};

/// The example's binary, beside this test's `tokenstore` in the same target directory and
/// profile. `cargo test --workspace` (CI) has built it with everything else; when it is
/// missing or older than its source (`cargo test -p token-store-cli` alone), it is built here.
/// A binary at least as new as its source is used as it is: a `cargo build -p` from here
/// would resolve features for the rmcp crate alone and could rebuild half the workspace.
fn loopback_binary() -> PathBuf {
    let tokenstore = PathBuf::from(env!("CARGO_BIN_EXE_tokenstore"));
    let profile_dir = tokenstore.parent().unwrap().to_path_buf();
    let binary = profile_dir.join("examples").join("loopback_mcp_server");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rmcp-adapter/examples/loopback_mcp_server.rs");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(written)) = (modified(&binary), modified(&source))
        && built >= written
    {
        return binary;
    }
    let target_dir = profile_dir.parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--quiet",
            "-p",
            "token-store-rmcp",
            "--example",
            "loopback_mcp_server",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build
        .status()
        .expect("run cargo build for the loopback server");
    assert!(status.success(), "building the loopback server failed");
    binary
}

/// The loopback server as a child process; killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(loopback_binary())
            .args(["0", "3600"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the loopback server");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("the server says where it listens")
            .unwrap();
        let base = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .and_then(|u| u.strip_suffix("/mcp"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_owned();
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Login {
    client_id: String,
    client_secret: String,
    tokens: Value,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Registers a client and logs in (PKCE, code exchange) as an MCP client would.
async fn login(base: &str) -> Login {
    let http = http();
    let reg: Value = http
        .post(format!("{base}/register"))
        .json(&json!({"redirect_uris": ["http://127.0.0.1:1/callback"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = reg["client_id"].as_str().unwrap().to_owned();
    let client_secret = reg["client_secret"].as_str().unwrap().to_owned();
    let verifier = format!(
        "verifier-{}",
        token_store_conformance::services::unique("v")
    );
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let mut authorize = url::Url::parse(&format!("{base}/authorize")).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", &client_id)
        .append_pair("code_challenge", &challenge)
        .append_pair("redirect_uri", "http://127.0.0.1:1/callback")
        .append_pair("state", "s");
    let redirect = http.get(authorize).send().await.unwrap();
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: Value = http
        .post(format!("{base}/token"))
        .basic_auth(&client_id, Some(&client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", "http://127.0.0.1:1/callback"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        tokens["refresh_token"].is_string(),
        "login failed: {tokens}"
    );
    Login {
        client_id,
        client_secret,
        tokens,
    }
}

/// What the server says to a refresh with `refresh_token` (HTTP status).
async fn refresh_status(base: &str, login: &Login, refresh_token: &str) -> u16 {
    http()
        .post(format!("{base}/token"))
        .basic_auth(&login.client_id, Some(&login.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// What the MCP endpoint says to a request bearing `access_token` (HTTP status).
async fn mcp_status(base: &str, access_token: &str) -> u16 {
    http()
        .post(format!("{base}/mcp"))
        .bearer_auth(access_token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-03-26",
                "capabilities": {},
                "clientInfo": {"name": "tokenstore-test", "version": "1"},
            }}),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Stores a login as an MCP client does: the token record (with its client id and issuer)
/// and the client registration holding the secret.
async fn store_login(url: &str, key: &TokenKey, base: &str, login: &Login) {
    let store = token_store::open(url).await.unwrap();
    let t = &login.tokens;
    let mut record = TokenRecord::new(t["access_token"].as_str().unwrap())
        .with_refresh_token(t["refresh_token"].as_str().unwrap());
    record.client_id = Some(login.client_id.clone());
    record.authorization_server = Some(base.to_owned());
    store.put(key, &record, Precondition::Any).await.unwrap();
    let registration =
        ClientRegistration::new(login.client_id.clone()).with_secret(login.client_secret.clone());
    store
        .put_client(
            &ClientKey::new(base).with_application("rmcp"),
            &registration,
            Precondition::Any,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_at_the_issuer_and_the_server_refuses_the_tokens_afterwards() {
    let server = Server::start();
    let base = server.base.clone();
    let tool = Tool::new();
    let url = format!("sqlite://{}", tool.path("tokens.db").display());
    let key = TokenKey::new(
        token_store::DEFAULT_USER_KEY,
        &format!("{base}/mcp"),
        Some(&base),
        ["mcp"],
    );
    let storage_key = key.storage_key().encode();

    // 1. The issuer unreachable: exit 5, the record kept.
    let first = login(&base).await;
    store_login(&url, &key, &base, &first).await;
    let down = tool.run(
        &on(
            &url,
            &[
                "logout",
                "--key",
                &storage_key,
                "--revoke",
                "--revocation-endpoint",
                "http://127.0.0.1:1/revoke",
                "--timeout",
                "2",
            ],
        ),
        None,
    );
    let text = down.exits(5);
    assert!(text.contains("record is kept"), "{text}");
    tool.run(&on(&url, &["get", "--key", &storage_key]), None)
        .ok();

    // 2. The issuer refuses (wrong client secret): exit 7, kept; with --force, deleted.
    let wrong = tool.run_with(
        &on(
            &url,
            &[
                "--json",
                "logout",
                "--key",
                &storage_key,
                "--revoke",
                "--client-secret-env",
                "WRONG_SECRET",
            ],
        ),
        None,
        &[("WRONG_SECRET", "not-the-secret")],
    );
    wrong.exits(7);
    assert_eq!(wrong.json()["error"]["kind"], "permission");
    tool.run(&on(&url, &["get", "--key", &storage_key]), None)
        .ok();
    assert_eq!(
        refresh_status(
            &base,
            &first,
            first.tokens["refresh_token"].as_str().unwrap()
        )
        .await,
        200,
        "a refused revocation revoked nothing"
    );
    let forced = tool.run_with(
        &on(
            &url,
            &[
                "--json",
                "logout",
                "--key",
                &storage_key,
                "--revoke",
                "--force",
                "--client-secret-env",
                "WRONG_SECRET",
            ],
        ),
        None,
        &[("WRONG_SECRET", "not-the-secret")],
    );
    forced.exits(0);
    let doc = forced.json();
    assert_eq!(doc["deleted"], true, "{doc}");
    assert_eq!(doc["revocation"]["error"]["kind"], "permission", "{doc}");
    tool.run(&on(&url, &["get", "--key", &storage_key]), None)
        .exits(3);

    // 3. The real thing: discovered endpoint, client secret from the stored registration.
    let second = login(&base).await;
    store_login(&url, &key, &base, &second).await;
    let access = second.tokens["access_token"].as_str().unwrap();
    let refresh = second.tokens["refresh_token"].as_str().unwrap();
    assert_eq!(
        mcp_status(&base, access).await,
        200,
        "the fresh access token works"
    );
    let out = tool.run(
        &on(
            &url,
            &[
                "--json",
                "logout",
                "--server",
                &format!("{base}/mcp"),
                "--issuer",
                &base,
                "--scope",
                "mcp",
                "--revoke",
            ],
        ),
        None,
    );
    out.exits(0);
    let doc = out.json();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["command"], "logout");
    assert_eq!(doc["deleted"], true, "{doc}");
    assert_eq!(doc["storage_key"], storage_key.as_str());
    assert_eq!(
        doc["revocation"]["endpoint"],
        format!("{base}/revoke"),
        "discovered from RFC 8414 metadata"
    );
    let outcomes: Vec<(&str, &str)> = doc["revocation"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["token"].as_str().unwrap(), t["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [("refresh_token", "revoked"), ("access_token", "revoked")]
    );
    assert!(
        !out.text().contains(refresh) && !out.text().contains(access),
        "a token was printed"
    );
    // The server refuses the revoked tokens; the record is gone.
    assert_eq!(
        refresh_status(&base, &second, refresh).await,
        400,
        "the revoked refresh token still refreshes"
    );
    assert_eq!(
        mcp_status(&base, access).await,
        401,
        "the revoked access token is still accepted"
    );
    tool.run(&on(&url, &["get", "--key", &storage_key]), None)
        .exits(3);
    tool.run(&on(&url, &["logout", "--key", &storage_key]), None)
        .exits(3);

    // 4. A token issued to another client: the issuer refuses with an OAuth error (exit 9).
    let third = login(&base).await;
    let other = login(&base).await;
    store_login(&url, &key, &base, &third).await;
    let refused = tool.run_with(
        &on(
            &url,
            &[
                "logout",
                "--key",
                &storage_key,
                "--revoke",
                "--client-id",
                &other.client_id,
                "--client-secret-env",
                "OTHER_SECRET",
            ],
        ),
        None,
        &[("OTHER_SECRET", other.client_secret.as_str())],
    );
    let text = refused.exits(9);
    assert!(text.contains("unauthorized_client"), "{text}");
    tool.run(&on(&url, &["get", "--key", &storage_key]), None)
        .ok();
}

/// A revocation endpoint that, while answering, rewrites the record as a concurrent refresh
/// would: logout must then keep the record (exit 4), since its new tokens were not revoked.
#[tokio::test(flavor = "multi_thread")]
async fn logout_keeps_a_record_that_changed_while_its_tokens_were_revoked() {
    let tool = Tool::new();
    let url = format!("sqlite://{}", tool.path("tokens.db").display());
    let key = TokenKey::for_server("https://mcp.example.com/mcp");
    let store = token_store::open(&url).await.unwrap();
    store
        .put(
            &key,
            &TokenRecord::new("at-old").with_refresh_token("rt-old"),
            Precondition::Any,
        )
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/revoke", listener.local_addr().unwrap());
    let (url2, key2) = (url.clone(), key.clone());
    let rewriter = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            let body = read_request(&mut conn);
            if seen.is_empty() {
                rt.block_on(async {
                    let store = token_store::open(&url2).await.unwrap();
                    let refreshed = TokenRecord::new("at-new").with_refresh_token("rt-new");
                    store
                        .put(&key2, &refreshed, Precondition::Any)
                        .await
                        .unwrap();
                });
            }
            seen.push(body);
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
        }
        seen
    });
    let out = tool.run(
        &on(
            &url,
            &[
                "logout",
                "--server",
                "https://mcp.example.com/mcp",
                "--revoke",
                "--revocation-endpoint",
                &endpoint,
            ],
        ),
        None,
    );
    let text = out.exits(4);
    assert!(text.contains("changed since it was read"), "{text}");
    let bodies = rewriter.join().unwrap();
    assert!(
        bodies[0].contains("token=rt-old") && bodies[0].contains("token_type_hint=refresh_token"),
        "{bodies:?}"
    );
    assert!(
        bodies[1].contains("token=at-old") && bodies[1].contains("token_type_hint=access_token"),
        "{bodies:?}"
    );
    let kept = store
        .get(&key)
        .await
        .unwrap()
        .expect("the refreshed record is kept");
    assert_eq!(kept.value.access_token.expose(), "at-new");
}
