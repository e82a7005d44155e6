//! The secret-leak check for grants: the grant conformance suite runs with every `tracing`
//! event (TRACE, every target), every store call and its result, and the `Debug` of every
//! value the suite handles captured; the example server runs in this process (its logs and
//! rmcp's captured too) through a login, refreshes, a replay, a revocation and
//! introspection; errors of tampered records are formatted. Then the capture is searched for
//! every token, code, PKCE verifier, client secret, registration token and upstream secret
//! handed out. (The suite's `store_dump_holds_no_secret` case searches the raw store itself,
//! on every backend.) Its own test binary: the capture is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/mcp_auth_server/server.rs"]
#[allow(dead_code)]
mod server;

use std::sync::Arc;

use token_store_conformance::grants::{handled_secrets, run_grants};
use token_store_conformance::leak::{Recording, capture};
use token_store_conformance::secrets::{find_leaks, secret};
use token_store_conformance::{BoxFuture, Instance, services};
use token_store_core::backend::{fill_random, hex, percent_encode};
use token_store_core::layers::Traced;
use token_store_core::{KeyKind, ListEntry, ListFilter, PutOptions, RawStore, TokenStore};
use token_store_grants::{
    AuthorizationRequest, ClientMetadata, GrantError, GrantStore, Introspection, RefreshOptions,
    pkce_challenge,
};

fn recorded(store: Arc<dyn RawStore>) -> Arc<dyn RawStore> {
    Arc::new(Recording::new(Traced::new(store)))
}

fn wrap_factory(
    open: impl Fn() -> BoxFuture<'static, token_store_core::Result<Arc<dyn RawStore>>>
    + Send
    + Sync
    + 'static,
) -> impl Fn() -> BoxFuture<'static, token_store_core::Result<Instance>> + Send + Sync + 'static {
    let open = Arc::new(open);
    move || {
        let open = open.clone();
        Box::pin(async move { Ok(Instance::new(recorded(open().await?))) })
    }
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    pairs: &[(&str, &str)],
) -> (u16, serde_json::Value, String) {
    let body = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let resp = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or_default(),
        location,
    )
}

/// The example server in this process, driven through every endpoint; returns the secrets
/// it handed out or was sent.
async fn server_flow(dir: &std::path::Path) -> Vec<String> {
    let mut secrets = Vec::new();
    let password = secret("login-password");
    secrets.push(password.clone());
    let users = dir.join("users.txt");
    std::fs::write(
        &users,
        format!("alice:{}\n", server::hash_password(&password).unwrap()),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let options = <server::Options as clap::Parser>::try_parse_from([
        "server",
        "--listen",
        &addr.to_string(),
        "--store",
        &format!("sqlite://{}/server.db", dir.display()),
        "--users",
        &users.display().to_string(),
    ])
    .unwrap();
    tokio::spawn(server::serve(options));
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for _ in 0..100 {
        if http
            .get(format!("{base}/.well-known/oauth-authorization-server"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A confidential client, registered.
    let reg: serde_json::Value = serde_json::from_slice(
        &http
            .post(format!("{base}/register"))
            .header("content-type", "application/json")
            .body(r#"{"redirect_uris":["http://127.0.0.1:9/cb"],"grant_types":["authorization_code","refresh_token"]}"#)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let id = reg["client_id"].as_str().unwrap().to_owned();
    let client_secret = reg["client_secret"].as_str().unwrap().to_owned();
    secrets.push(client_secret.clone());
    secrets.push(
        reg["registration_access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let verifier = format!("{}-{}", secret("server-verifier"), "v".repeat(30));
    secrets.push(verifier.clone());
    // A wrong password, then the right one.
    let auth = |pw: String| {
        let (id, challenge) = (id.clone(), pkce_challenge(&verifier));
        let http = http.clone();
        let base = base.clone();
        async move {
            post(
                &http,
                &format!("{base}/authorize"),
                &[
                    ("response_type", "code"),
                    ("client_id", &id),
                    ("redirect_uri", "http://127.0.0.1:9/cb"),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                    ("state", "st"),
                    ("scope", "mcp"),
                    ("username", "alice"),
                    ("password", &pw),
                ],
            )
            .await
        }
    };
    let wrong = secret("wrong-password");
    secrets.push(wrong.clone());
    assert_eq!(auth(wrong).await.0, 401);
    let (status, _, location) = auth(password.clone()).await;
    assert_eq!(status, 302);
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    secrets.push(code.clone());
    let creds = [
        ("client_id", id.as_str()),
        ("client_secret", client_secret.as_str()),
    ];
    let token = |extra: Vec<(&'static str, String)>| {
        let http = http.clone();
        let base = base.clone();
        let mut pairs: Vec<(String, String)> = creds
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        pairs.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        async move {
            let borrowed: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            post(&http, &format!("{base}/token"), &borrowed).await
        }
    };
    let (status, t1, _) = token(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("redirect_uri", "http://127.0.0.1:9/cb".into()),
        ("code_verifier", verifier.clone()),
    ])
    .await;
    assert_eq!(status, 200, "{t1}");
    let (at1, rt1) = (
        t1["access_token"].as_str().unwrap().to_owned(),
        t1["refresh_token"].as_str().unwrap().to_owned(),
    );
    secrets.extend([at1.clone(), rt1.clone()]);
    // The code again (reuse), a wrong secret, a refresh, a replay of the old refresh token.
    let (status, _, _) = token(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code),
        ("redirect_uri", "http://127.0.0.1:9/cb".into()),
        ("code_verifier", verifier),
    ])
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = post(
        &http,
        &format!("{base}/token"),
        &[
            ("client_id", &id),
            ("client_secret", &secret("bad-client-secret")),
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt1),
        ],
    )
    .await;
    assert_eq!(status, 401);
    secrets.push(secret("bad-client-secret"));
    // The code's reuse revoked its grant: log in again for a live family.
    let verifier2 = format!("{}-{}", secret("server-verifier-2"), "w".repeat(30));
    secrets.push(verifier2.clone());
    let (_, _, location) = post(
        &http,
        &format!("{base}/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &id),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_challenge", &pkce_challenge(&verifier2)),
            ("code_challenge_method", "S256"),
            ("username", "alice"),
            ("password", &password),
        ],
    )
    .await;
    let code2 = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    secrets.push(code2.clone());
    let (_, t2, _) = token(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code2),
        ("redirect_uri", "http://127.0.0.1:9/cb".into()),
        ("code_verifier", verifier2),
    ])
    .await;
    let (at2, rt2) = (
        t2["access_token"].as_str().unwrap().to_owned(),
        t2["refresh_token"].as_str().unwrap().to_owned(),
    );
    secrets.extend([at2.clone(), rt2.clone()]);
    // The MCP endpoint with the token (rmcp runs and logs), then without.
    let mcp = http
        .post(format!("{base}/mcp"))
        .header("authorization", format!("Bearer {at2}"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"leak","version":"1"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(mcp.status().as_u16(), 200);
    let (_, t3, _) = token(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", rt2.clone()),
    ])
    .await;
    let (at3, rt3) = (
        t3["access_token"].as_str().unwrap().to_owned(),
        t3["refresh_token"].as_str().unwrap().to_owned(),
    );
    secrets.extend([at3.clone(), rt3.clone()]);
    let (_, intro, _) = post(
        &http,
        &format!("{base}/introspect"),
        &[
            ("client_id", &id),
            ("client_secret", &client_secret),
            ("token", &at3),
        ],
    )
    .await;
    assert_eq!(intro["active"], true);
    let (status, _, _) = token(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", rt2),
    ])
    .await;
    assert_eq!(status, 400, "replay accepted");
    let (status, _, _) = post(
        &http,
        &format!("{base}/revoke"),
        &[
            ("client_id", &id),
            ("client_secret", &client_secret),
            ("token", &rt3),
        ],
    )
    .await;
    assert_eq!(status, 200);
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grant_secret_in_logs_errors_or_debug() {
    let capture = capture();
    let dir = tempfile::tempdir().unwrap();
    let root = Arc::new(tempfile::tempdir().unwrap());
    let mut reports = Vec::new();
    reports.push(
        run_grants(
            "memory",
            wrap_factory(|| {
                Box::pin(async {
                    Ok(Arc::new(token_store_core::MemoryStore::new()) as Arc<dyn RawStore>)
                })
            }),
        )
        .await,
    );
    {
        let root = root.clone();
        reports.push(
            run_grants(
                "sqlite",
                wrap_factory(move || {
                    let url = format!(
                        "sqlite://{}/{}.db",
                        root.path().display(),
                        services::unique("g")
                    );
                    Box::pin(async move { Ok(token_store::open(&url).await?.raw().clone()) })
                }),
            )
            .await,
        );
    }
    if let Some(redis) = services::require("TOKEN_STORE_TEST_REDIS_URL") {
        reports.push(
            run_grants(
                "redis",
                wrap_factory(move || {
                    let url = format!(
                        "{}/?prefix=ts-test:{}",
                        redis.trim_end_matches('/'),
                        services::unique("leak")
                    );
                    Box::pin(async move { Ok(token_store::open(&url).await?.raw().clone()) })
                }),
            )
            .await,
        );
    }
    for r in &reports {
        assert_eq!(r.failed(), 0, "the suite failed under capture:\n{r}");
    }

    // Debug and Display of every type that carries a secret, and of OAuth errors.
    let grants = GrantStore::new(TokenStore::new(recorded(Arc::new(
        token_store_core::MemoryStore::new(),
    ))))
    .unwrap();
    let client = grants
        .register_client(
            ClientMetadata::new(["http://127.0.0.1:9/cb"])
                .public()
                .with_grant_types(["authorization_code", "refresh_token"]),
        )
        .await
        .unwrap();
    let upstream = secret("debug-upstream");
    let verifier = format!("{}-{}", secret("debug-verifier"), "x".repeat(30));
    let request = AuthorizationRequest::new(
        client.client_id(),
        "http://127.0.0.1:9/cb",
        "u",
        pkce_challenge(&verifier),
    )
    .with_props(&serde_json::json!({"t": upstream}))
    .unwrap();
    capture.line(&format!("request: {request:?}"));
    let code = grants.authorize(request).await.unwrap();
    let auth = grants
        .authenticate_client(client.client_id(), None)
        .await
        .unwrap();
    let tokens = grants
        .exchange_code(
            &auth,
            code.expose(),
            "http://127.0.0.1:9/cb",
            &verifier,
            None,
        )
        .await
        .unwrap();
    let verified = grants
        .verify(tokens.access_token.expose())
        .await
        .unwrap()
        .unwrap();
    let options = RefreshOptions::new()
        .with_props(&serde_json::json!({"t": upstream}))
        .unwrap();
    capture.line(&format!(
        "debug: {client:?} / {code:?} {code} / {tokens:?} / {verified:?} / {options:?} / {:?} / {auth:?}",
        Introspection::inactive()
    ));
    let mut extra = vec![
        upstream,
        verifier,
        code.expose().to_owned(),
        tokens.access_token.expose().to_owned(),
        tokens.refresh_token.as_ref().unwrap().expose().to_owned(),
        client.registration_access_token.expose().to_owned(),
    ];
    let raw = grants.store().raw().clone();
    let keys = raw
        .scan(KeyKind::AccessToken, &ListFilter::all())
        .await
        .unwrap();
    let mut random = [0u8; 32];
    fill_random(&mut random).unwrap();
    let planted = secret("planted-in-a-corrupt-record");
    for entry in keys {
        if let ListEntry::Key(k) = entry {
            let garbage = format!("{{\"grant\": \"{planted}\", oops");
            raw.write(&k, garbage.as_bytes(), &PutOptions::default())
                .await
                .unwrap();
        }
    }
    let corrupt = grants.verify(tokens.access_token.expose()).await;
    let e = corrupt.expect_err("a corrupt access-token record verified");
    capture.line(&format!("corrupt: {e} / {e:?}"));
    extra.push(planted);
    // Errors: a reused code, a wrong verifier, and a tampered record (its Corrupt error must
    // not quote the stored bytes).
    for e in [
        grants
            .exchange_code(
                &auth,
                code.expose(),
                "http://127.0.0.1:9/cb",
                &extra[1],
                None,
            )
            .await
            .err(),
        grants
            .exchange_code(
                &auth,
                &hex(&[7; 32]),
                "http://127.0.0.1:9/cb",
                &secret("bad-verifier"),
                None,
            )
            .await
            .err(),
    ]
    .into_iter()
    .flatten()
    {
        let e: GrantError = e;
        capture.line(&format!("error: {e} / {e:?} / {}", e.to_json()));
    }

    extra.extend(server_flow(dir.path()).await);
    extra.extend(handled_secrets());
    let text = capture.text();
    assert!(
        text.contains("call read") && text.contains("token_store_grants_conformance"),
        "the capture holds no store calls or suite output"
    );
    assert!(
        text.contains("serving MCP at"),
        "the example server's logs were not captured"
    );
    let leaks = find_leaks(&text, &extra);
    println!(
        "leak[grants]: {} suites ({}), {} bytes captured, {} secrets searched, {} leaks",
        reports.len(),
        reports
            .iter()
            .map(|r| r.backend.clone())
            .collect::<Vec<_>>()
            .join(", "),
        text.len(),
        extra.len() + 1,
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "secrets in logs, errors or Debug output:\n{}",
        leaks.join("\n")
    );
}
