//! The bearer check's cost against the same backend's plain read:
//! `cargo run --release -p token-store-grants --example verify_latency [-- ROUNDS]`.
//!
//! For each backend this machine has (memory, the encrypted file store, SQLite, and Redis,
//! Redis Cluster, Vault, PostgreSQL, the Secret Service and keyutils when `TOKEN_STORE_TEST_*`
//! name them), one access token is issued and one token record of the same kind of size is
//! stored; then `GrantStore::verify` and `TokenStore::get` alternate, one call each per
//! round, and the medians and 99th percentiles are printed with their ratio. What was
//! written is deleted again.

use std::time::{Duration, Instant};

use token_store_core::{Precondition, TokenKey, TokenRecord, TokenStore};
use token_store_grants::{AuthorizationRequest, ClientMetadata, GrantStore, pkce_challenge};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn measure(name: &str, store: TokenStore, rounds: usize) -> Result<(), BoxError> {
    let grants = GrantStore::new(store.clone())?;
    let redirect = "http://127.0.0.1:8765/callback";
    let client = grants
        .register_client(
            ClientMetadata::new([redirect])
                .public()
                .with_grant_types(["authorization_code", "refresh_token"]),
        )
        .await?;
    let verifier = "a-pkce-verifier-of-at-least-forty-three-characters";
    let code = grants
        .authorize(
            AuthorizationRequest::new(
                client.client_id(),
                redirect,
                "user-1",
                pkce_challenge(verifier),
            )
            .with_scopes(["mcp", "read"])
            .with_resource("https://mcp.example.com/mcp"),
        )
        .await?;
    let auth = grants.authenticate_client(client.client_id(), None).await?;
    let tokens = grants
        .exchange_code(&auth, code.expose(), redirect, verifier, None)
        .await?;
    let at = tokens.access_token.expose().to_owned();
    // What a client keeps for one server: two tokens, expiry, scopes, client, resource.
    let key = TokenKey::for_server("https://mcp.example.com/mcp").with_user("user-1");
    let mut record = TokenRecord::new(at.clone())
        .with_refresh_token(
            tokens
                .refresh_token
                .as_ref()
                .map(|s| s.expose())
                .unwrap_or_default(),
        )
        .expires_in(Duration::from_secs(3600))
        .with_scopes(["mcp", "read"]);
    record.client_id = Some(client.client_id().to_owned());
    record.resource = Some("https://mcp.example.com/mcp".to_owned());
    store.put(&key, &record, Precondition::Any).await?;
    for _ in 0..rounds.min(50) {
        store.get(&key).await?;
        grants.verify(&at).await?;
    }
    let (mut get, mut verify) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for n in 0..rounds {
        // Alternate which goes first, so neither always finds a warmer cache.
        let order = [n % 2 == 0, n % 2 == 1];
        for first in order {
            if first {
                let t = Instant::now();
                let r = store.get(&key).await?;
                get.push(t.elapsed());
                assert!(r.is_some());
            } else {
                let t = Instant::now();
                let r = grants.verify(&at).await?;
                verify.push(t.elapsed());
                assert!(r.is_some());
            }
        }
    }
    for kind in token_store_core::KeyKind::ALL {
        let all = token_store_core::ListFilter::all();
        for entry in store.raw().scan(kind, &all).await? {
            if let token_store_core::ListEntry::Key(k) = entry {
                store.raw().remove(&k, &Precondition::Any).await?;
            }
        }
    }
    let (g50, v50) = (pct(&mut get, 0.5), pct(&mut verify, 0.5));
    let (g99, v99) = (pct(&mut get, 0.99), pct(&mut verify, 0.99));
    println!(
        "| {name} | {rounds} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} |",
        us(g50),
        us(v50),
        us(v50) / us(g50),
        us(g99),
        us(v99)
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let mut stores: Vec<(&str, String, usize)> = vec![
        ("memory", "memory:".to_owned(), rounds * 5),
        (
            "file",
            format!(
                "file://{}/f?key_file={}/f.key",
                dir.path().display(),
                dir.path().display()
            ),
            rounds,
        ),
        (
            "sqlite",
            format!("sqlite://{}/g.db", dir.path().display()),
            rounds,
        ),
    ];
    let unique = std::process::id();
    if let Ok(url) = std::env::var("TOKEN_STORE_TEST_REDIS_URL") {
        stores.push((
            "redis",
            format!(
                "{}/?prefix=ts-bench:verify-{unique}",
                url.trim_end_matches('/')
            ),
            rounds,
        ));
    }
    if let Ok(url) = std::env::var("TOKEN_STORE_TEST_REDIS_CLUSTER_URL") {
        stores.push((
            "redis-cluster",
            format!("{url}?prefix=ts-bench:verify-{unique}"),
            rounds,
        ));
    }
    if let (Ok(addr), Ok(_)) = (
        std::env::var("TOKEN_STORE_TEST_VAULT_ADDR"),
        std::env::var("TOKEN_STORE_TEST_VAULT_TOKEN"),
    ) {
        let host = addr
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        stores.push((
            "vault",
            format!("vault://{host}/secret?prefix=ts-bench/verify-{unique}&token_env=TOKEN_STORE_TEST_VAULT_TOKEN"),
            rounds / 4,
        ));
    }
    if std::env::var("TOKEN_STORE_TEST_SECRET_SERVICE").is_ok() {
        let url = format!("keychain:secret-service?service=ts-bench-verify-{unique}");
        stores.push(("secret-service", url, rounds / 4));
    }
    if std::env::var("TOKEN_STORE_TEST_KEYUTILS").is_ok() {
        // Run under `keyctl session -`: the keys go to a private session keyring.
        let url = format!("keychain:keyutils?service=ts-bench-verify-{unique}");
        stores.push(("keyutils", url, rounds));
    }
    if let Ok(url) = std::env::var("TOKEN_STORE_TEST_POSTGRES_URL") {
        let sep = if url.contains('?') { '&' } else { '?' };
        stores.push((
            "postgres",
            format!("{url}{sep}table=bench_verify_{unique}"),
            rounds,
        ));
    }
    println!(
        "| backend | rounds | get p50 µs | verify p50 µs | verify/get | get p99 µs | verify p99 µs |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, url, n) in stores {
        let store = token_store::open(&url).await?;
        measure(name, store, n).await?;
    }
    Ok(())
}
