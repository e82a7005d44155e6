//! An MCP client whose OAuth login survives restarts: rmcp's `AuthorizationManager` keeps its
//! credentials, its dynamically registered client (secret included) and its pending
//! authorization in a token-store backend chosen by URL.
//!
//! ```text
//! cargo run -p token-store-rmcp --example persistent_client -- \
//!     https://mcp.example.com/mcp  'sqlite://~/.local/share/mcp-example/tokens.db'
//! ```
//!
//! The store URL is the second argument or `TOKEN_STORE_URL`: `sqlite://PATH`,
//! `file://DIR?key_file=KEY`, `redis://HOST:PORT/?prefix=P`. The first run opens a browser
//! login (the URL is printed; the redirect comes back to http://127.0.0.1:8765/callback);
//! every later run, in this or any other process sharing the store, reconnects without one,
//! and refreshes are coordinated across all of them.

use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthorizationManager};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use token_store_core::{StoreUrl, TokenKey, TokenStore};
use token_store_rmcp::{RmcpCredentialStore, RmcpStateStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CALLBACK_ADDR: &str = "127.0.0.1:8765";
const REDIRECT_URI: &str = "http://127.0.0.1:8765/callback";

/// Opens the store a URL names with the backend crates' `open_url` (the `token-store`
/// facade's `open` does the same for every backend it was built with).
async fn open_store(url: &str) -> Result<TokenStore, BoxError> {
    let url = StoreUrl::parse(url)?;
    Ok(match url.scheme() {
        "sqlite" => token_store_sqlite::open_url(&url).await?,
        "file" => token_store_file::open_url(&url).await?,
        "redis" | "rediss" => token_store_redis::open_url(&url).await?,
        other => return Err(format!("no backend for {other}:// in this example").into()),
    })
}

/// Waits for the browser's redirect and returns (code, state, iss).
async fn wait_for_callback() -> Result<(String, String, Option<String>), BoxError> {
    let listener = tokio::net::TcpListener::bind(CALLBACK_ADDR).await?;
    loop {
        let (mut conn, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let n = conn.read(&mut buf).await?;
        let request = String::from_utf8_lossy(&buf[..n]).to_string();
        let target = request
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let Some(query) = target.strip_prefix("/callback?") else {
            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await?;
            continue;
        };
        let param = |name: &str| {
            query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == name)
                    .then(|| token_store_core::backend::percent_decode(&v.replace('+', " ")))?
            })
        };
        let body = "Logged in. You can close this window.";
        conn.write_all(
            format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                .as_bytes(),
        )
        .await?;
        match (param("code"), param("state")) {
            (Some(code), Some(state)) => return Ok((code, state, param("iss"))),
            _ => {
                return Err(format!(
                    "authorization failed: {}",
                    param("error").unwrap_or_default()
                )
                .into());
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .ok_or("usage: persistent_client MCP_SERVER_URL [STORE_URL]")?;
    let store_url = args
        .next()
        .or_else(|| std::env::var("TOKEN_STORE_URL").ok())
        .ok_or("give a store URL as the second argument or in TOKEN_STORE_URL")?;
    let store = open_store(&store_url).await?;

    let credentials = RmcpCredentialStore::new(store.clone(), TokenKey::for_server(&server))?;
    // Several processes sharing the store each refresh once more after waiting for the
    // refresh guard (rmcp 3.11 does not re-check). To make that one refresh per expiry, build
    // the manager with
    //   AuthorizationManager::new_with_oauth_http_client(server, credentials
    //       .coalescing_http_client(rmcp::transport::auth::default_oauth_http_client()?))
    // at the price of rmcp's filter of private addresses in discovered metadata.
    let mut manager = AuthorizationManager::new(server.as_str()).await?;
    manager.set_credential_store(credentials.clone());
    manager.set_state_store(RmcpStateStore::new(store));

    if manager.initialize_from_store().await? {
        // rmcp restored the client id only; a confidential client also needs its secret.
        if let Some(config) = credentials.client_config(REDIRECT_URI).await? {
            manager.configure_client(config)?;
        }
        eprintln!(
            "credentials restored from {}: no login needed",
            StoreUrl::parse(&store_url)?.redacted()
        );
    } else {
        let resolution = manager.resolve_metadata().await?;
        manager.set_metadata(resolution.metadata);
        let config = match credentials.client_config(REDIRECT_URI).await? {
            Some(config) => config,
            None => {
                let config = manager
                    .register_client("token-store persistent_client example", REDIRECT_URI, &[])
                    .await?;
                credentials.save_client_config(&config).await?;
                config
            }
        };
        manager.configure_client(config)?;
        let url = manager.get_authorization_url(&[]).await?;
        eprintln!("open this URL to log in:\n{url}");
        let (code, state, iss) = wait_for_callback().await?;
        manager
            .exchange_code_for_token_with_issuer(&code, &state, iss.as_deref())
            .await?;
        eprintln!("logged in; credentials stored");
    }

    let client = AuthClient::new(reqwest::Client::default(), manager);
    let transport = StreamableHttpClientTransport::with_client(
        client,
        StreamableHttpClientTransportConfig::with_uri(server.as_str()),
    );
    let service = ().serve(transport).await?;
    for tool in service.list_all_tools().await? {
        println!("{}", tool.name);
    }
    service.cancel().await?;
    Ok(())
}
