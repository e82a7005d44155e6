//! An MCP server (streamable HTTP, one protected `whoami` tool) that is its own OAuth 2.1
//! authorization server, with every client, code and token in a token-store backend:
//! RFC 8414 and RFC 9728 metadata, dynamic client registration (RFC 7591/7592), `/authorize`
//! with a login form (users from a file of Argon2id hashes; a POST works headless),
//! `/token` (PKCE codes, rotating refresh tokens), `/revoke` (RFC 7009) and `/introspect`
//! (RFC 7662).
//!
//! ```text
//! echo 'correct horse' | cargo run -p token-store-grants --example mcp_auth_server -- --hash-password
//! echo "alice:<the hash>" > users.txt
//! cargo run -p token-store-grants --example mcp_auth_server -- --users users.txt
//! # several replicas sharing grants, behind one public URL:
//! cargo run -p token-store-grants --example mcp_auth_server -- --users users.txt \
//!     --listen 127.0.0.1:9001 --base-url https://mcp.example.com --store 'redis://127.0.0.1:6379/?prefix=mcp-as'
//! ```
//!
//! SQLite is the embedded default (`--store sqlite://mcp-auth-server.db`); a `redis://` store
//! lets replicas share grants. This is an example: a production server adds TLS, CSRF
//! protection of the login form, rate limits and a consent screen.

mod server;

#[tokio::main]
async fn main() -> Result<(), server::BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let options = <server::Options as clap::Parser>::parse();
    server::serve(options).await
}
