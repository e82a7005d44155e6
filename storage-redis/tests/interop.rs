//! mcp-agent interoperability at the byte level, listing next to foreign keys, persistence
//! with a fixed record, URLs, encryption and mutual TLS refusal.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use redis::AsyncCommands;
use token_store_conformance::services;
use token_store_core::{
    DEFAULT_USER_KEY, Error, KeyKind, ListEntry, ListFilter, Precondition, RawStore, StoreUrl,
    TokenKey, TokenRecord, TokenStore, Version,
};
use token_store_redis::{RedisConfig, RedisStore};

/// The version the store gives bytes: their hex SHA-1, as Redis's `redis.sha1hex` computes
/// it (asked of the server here, so the test does not restate the store's code).
async fn sha1hex(raw: &mut redis::aio::MultiplexedConnection, bytes: &[u8]) -> Version {
    let hex: String = redis::cmd("EVAL")
        .arg("return redis.sha1hex(ARGV[1])")
        .arg(0)
        .arg(bytes)
        .query_async(raw)
        .await
        .unwrap();
    Version::new(hex)
}

/// What Python's `json.dumps(record.model_dump())` writes for mcp-agent's `TokenRecord`.
const MCP_AGENT_JSON: &str = r#"{"access_token": "at", "refresh_token": "rt", "scopes": ["read", "write"], "expires_at": 1700000000.5, "token_type": "Bearer", "resource": "https://api.example.com/mcp", "authorization_server": "https://auth.example.com", "obtained_at": 1699996400.25, "metadata": {}}"#;

/// The documented mcp-agent key, minus its default prefix.
const MCP_AGENT_SUFFIX: &str = "mcp-agent%3Apreconfigured-tokens:https%3A%2F%2Fapi.example.com%2Fmcp:https%3A%2F%2Fauth.example.com:read%20write";

const MCP_AGENT_FIELDS: [&str; 9] = [
    "access_token",
    "refresh_token",
    "scopes",
    "expires_at",
    "token_type",
    "resource",
    "authorization_server",
    "obtained_at",
    "metadata",
];

async fn raw_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn example_key() -> TokenKey {
    TokenKey::new(
        DEFAULT_USER_KEY,
        "https://api.example.com/mcp",
        Some("https://auth.example.com"),
        ["write", "read"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_what_mcp_agent_writes_and_writes_what_it_reads() {
    let Some(url) = services::require("TOKEN_STORE_TEST_REDIS_URL") else {
        return;
    };
    let prefix = common::prefix();
    let mut raw = raw_conn(&url).await;
    let redis_key = format!("{prefix}:{MCP_AGENT_SUFFIX}");
    let _: () = raw.set(&redis_key, MCP_AGENT_JSON).await.unwrap();

    let raw_store = RedisStore::open(&RedisConfig::standalone(&url).with_prefix(&prefix))
        .await
        .unwrap();
    let key = example_key();
    assert_eq!(raw_store.redis_key(&key.storage_key()), redis_key);
    let store = TokenStore::new(raw_store);
    let got = store
        .get(&key)
        .await
        .unwrap()
        .expect("mcp-agent's record is visible");
    assert_eq!(got.value.access_token.expose(), "at");
    assert_eq!(
        got.value
            .refresh_token
            .as_ref()
            .map(|s| s.expose().to_owned()),
        Some("rt".to_owned())
    );
    assert_eq!(got.value.scopes, vec!["read", "write"]);
    assert_eq!(got.value.expires_at, Some(1_700_000_000.5));
    assert_eq!(got.value.obtained_at, 1_699_996_400.25);
    assert_eq!(
        got.value.resource.as_deref(),
        Some("https://api.example.com/mcp")
    );
    assert_eq!(
        got.version,
        sha1hex(&mut raw, MCP_AGENT_JSON.as_bytes()).await
    );
    let listed = store.list(&Default::default()).await.unwrap();
    assert_eq!(listed.keys, vec![key.clone()]);

    // A CAS against mcp-agent's record works with the digest version, and a stale one fails.
    let mut next = got.value.clone();
    next.access_token = "at-2".to_owned().into();
    let v2 = store
        .put(&key, &next, Precondition::IfVersion(got.version.clone()))
        .await
        .unwrap();
    assert!(matches!(
        store.put(&key, &next, Precondition::IfVersion(got.version)).await,
        Err(Error::Conflict { current: Some(c), .. }) if c == v2
    ));

    // What we wrote sits at the exact key, as plain JSON with every mcp-agent field.
    let written: Vec<u8> = raw.get(&redis_key).await.unwrap();
    assert_eq!(sha1hex(&mut raw, &written).await, v2);
    let json: serde_json::Value = serde_json::from_slice(&written).unwrap();
    for field in MCP_AGENT_FIELDS {
        assert!(json.get(field).is_some(), "field {field} missing in {json}");
    }
    assert_eq!(json["access_token"], "at-2");
    assert_eq!(json["scopes"], serde_json::json!(["read", "write"]));
    // mcp-agent never sets a TTL; neither do we for a record without a refresh expiry.
    let ttl: i64 = raw.pttl(&redis_key).await.unwrap();
    assert_eq!(ttl, -1);
    validate_with_pydantic(&written);
}

/// mcp-agent's TokenRecord, mirrored in pydantic, must accept our JSON.
fn validate_with_pydantic(json: &[u8]) {
    let has_pydantic = std::process::Command::new("python3")
        .args(["-c", "import pydantic"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pydantic {
        println!("note: python3 with pydantic not available; skipped the pydantic validation step");
        return;
    }
    const MODEL: &str = r#"
import sys, json, time
from typing import Any, Dict, Tuple
from pydantic import BaseModel, Field
class TokenRecord(BaseModel):
    access_token: str
    refresh_token: str | None = None
    scopes: Tuple[str, ...] = ()
    expires_at: float | None = None
    token_type: str = "Bearer"
    resource: str | None = None
    authorization_server: str | None = None
    obtained_at: float = Field(default_factory=time.time)
    metadata: Dict[str, Any] = Field(default_factory=dict)
r = TokenRecord.model_validate(json.loads(sys.stdin.read()))
assert r.access_token == "at-2", r
assert r.scopes == ("read", "write"), r
print("pydantic ok")
"#;
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", MODEL])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(json).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pydantic rejected our record: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_under_the_prefix_are_skipped_damaged_ones_reported() {
    let Some(url) = services::require("TOKEN_STORE_TEST_REDIS_URL") else {
        return;
    };
    let prefix = common::prefix();
    let mut raw = raw_conn(&url).await;
    for k in [
        "foreign",
        "a:b",
        "%zz:b:c:d",
        "#client:only-one-part",
        "#nope:x",
    ] {
        let _: () = raw.set(format!("{prefix}:{k}"), "x").await.unwrap();
    }
    // A similar prefix must not leak into ours.
    let _: () = raw.set(format!("{prefix}x:u:r:a:s"), "x").await.unwrap();
    let store = RedisStore::open(&RedisConfig::standalone(&url).with_prefix(&prefix))
        .await
        .unwrap();
    let key = TokenKey::for_server("https://a.example");
    let redis_key = store.redis_key(&key.storage_key());
    let store = std::sync::Arc::new(store);
    let typed = TokenStore::from_arc(store.clone());
    typed
        .put(&key, &TokenRecord::new("t"), Precondition::Any)
        .await
        .unwrap();
    let tokens = store
        .scan(KeyKind::Token, &ListFilter::all())
        .await
        .unwrap();
    assert!(
        matches!(tokens.as_slice(), [ListEntry::Key(k)] if *k == key.storage_key()),
        "{tokens:?}"
    );
    let clients = store
        .scan(KeyKind::Client, &ListFilter::all())
        .await
        .unwrap();
    assert!(
        matches!(clients.as_slice(), [ListEntry::Unreadable { location, .. }] if location.ends_with("#client:only-one-part")),
        "{clients:?}"
    );
    // A value of another Redis type at one of our keys is corrupt, not a crash.
    let _: () = raw.del(&redis_key).await.unwrap();
    let _: () = raw.hset(&redis_key, "f", "v").await.unwrap();
    assert!(matches!(typed.get(&key).await, Err(Error::Corrupt { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_across_reopen_fixed_record() {
    let Some(config) = common::standalone() else {
        return;
    };
    let config = config.with_prefix(common::prefix());
    let key = example_key();
    let mut record = TokenRecord::new("access").with_refresh_token("refresh");
    record.obtained_at = 1_700_000_000.125;
    let v = {
        let store = token_store_redis::open(config.clone()).await.unwrap();
        store.put(&key, &record, Precondition::Any).await.unwrap()
    };
    let again = token_store_redis::open(config).await.unwrap();
    let got = again.get(&key).await.unwrap().unwrap();
    assert_eq!(got.value, record);
    assert_eq!(got.version, v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_open_plain_and_encrypted_stores() {
    let Some(url) = services::require("TOKEN_STORE_TEST_REDIS_URL") else {
        return;
    };
    let prefix = common::prefix();
    let dir = std::env::temp_dir().join(services::unique("redis-key"));
    let key_file = dir.join("key");
    let enc_url = StoreUrl::parse(&format!(
        "{url}?prefix={prefix}&key_file={}",
        key_file.display()
    ))
    .unwrap();
    let store = token_store_redis::open_url(&enc_url).await.unwrap();
    assert!(store.capabilities().encrypted_at_rest);
    let key = TokenKey::for_server("https://enc.example");
    store
        .put(&key, &TokenRecord::new("SECRET-TOKEN"), Precondition::Any)
        .await
        .unwrap();
    // Opening the encrypted prefix without its key is refused, not read as corrupt records.
    let plain_url = StoreUrl::parse(&format!("{url}?prefix={prefix}")).unwrap();
    assert!(matches!(
        token_store_redis::open_url(&plain_url).await,
        Err(token_store_core::Error::Config { .. })
    ));
    // What Redis holds, read without the layer: ciphertext only.
    let plain = RedisStore::open(&RedisConfig::from_url(&plain_url).unwrap())
        .await
        .unwrap();
    let raw = plain.read(&key.storage_key()).await.unwrap().unwrap();
    assert!(!raw.value.windows(12).any(|w| w == b"SECRET-TOKEN"));
    let reopened = token_store_redis::open_url(&enc_url).await.unwrap();
    let got = reopened.get(&key).await.unwrap().unwrap();
    assert_eq!(got.value.access_token.expose(), "SECRET-TOKEN");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_forms_for_tls_and_cluster() {
    if let (Some(tls), Some(ca)) = (
        services::require("TOKEN_STORE_TEST_REDIS_MTLS_URL"),
        services::require("TOKEN_STORE_TEST_TLS_CA"),
    ) {
        let cert = services::require("TOKEN_STORE_TEST_TLS_CLIENT_CERT").unwrap();
        let key = services::require("TOKEN_STORE_TEST_TLS_CLIENT_KEY").unwrap();
        let url = format!(
            "{tls}?prefix={}&ca={ca}&cert={cert}&key={key}&timeout_ms=3000",
            common::prefix()
        );
        let store = token_store_redis::open_url(&StoreUrl::parse(&url).unwrap())
            .await
            .unwrap();
        let k = TokenKey::for_server("https://mtls.example");
        store
            .put(&k, &TokenRecord::new("t"), Precondition::Any)
            .await
            .unwrap();
        assert!(store.get(&k).await.unwrap().is_some());
        // Without the client certificate the server refuses us: an error, not a hang.
        let started = std::time::Instant::now();
        let url = format!("{tls}?ca={ca}&timeout_ms=3000");
        let refused = token_store_redis::open_url(&StoreUrl::parse(&url).unwrap()).await;
        assert!(
            refused.is_err(),
            "connected to a mutual-TLS server without a client cert"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(6));
    }
    if let Some(cluster) = services::require("TOKEN_STORE_TEST_REDIS_CLUSTER_URL") {
        let sep = if cluster.contains('?') { '&' } else { '?' };
        let url = format!("{cluster}{sep}prefix={}", common::prefix());
        let store = token_store_redis::open_url(&StoreUrl::parse(&url).unwrap())
            .await
            .unwrap();
        let keys: Vec<TokenKey> = (0..50)
            .map(|n| TokenKey::for_server(&format!("https://c{n}.example")))
            .collect();
        for k in &keys {
            store
                .put(k, &TokenRecord::new("t"), Precondition::IfAbsent)
                .await
                .unwrap();
        }
        // Keys spread over all three masters; the listing must see every one.
        let listed = store.list(&Default::default()).await.unwrap();
        assert_eq!(listed.keys.len(), keys.len());
    }
}
