//! Realistic records and keys: what an MCP client really stores.
//!
//! An access token is a ~1 KB JWT (header, claims, RS256 signature, base64url), the refresh
//! token an opaque 64-character string, with six scopes, an issuer, a resource and the
//! metadata mcp-agent keeps (`server_name`, `session_id`, ...). Serialised, a record is about
//! 1.5 KB of JSON. Values are pseudo-random but deterministic (a seed), so runs compare.

use serde_json::{Map, Value};
use token_store_core::{TokenKey, TokenRecord};

/// The scopes every benchmark record carries (and its key's fingerprint).
pub const SCOPES: [&str; 6] = [
    "openid",
    "profile",
    "email",
    "offline_access",
    "mcp:tools",
    "mcp:resources",
];

/// The authorization server of every benchmark key.
pub const ISSUER: &str = "https://auth.example.com/realms/agents";

/// SplitMix64: a tiny deterministic generator, enough for filler characters.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url_filler(rng: &mut SplitMix, len: usize) -> String {
    (0..len)
        .map(|_| char::from(B64URL[(rng.next() % 64) as usize]))
        .collect()
}

/// A JWT-shaped access token of exactly `len` characters (`len` ≥ 100).
pub fn jwt_like(len: usize, seed: u64) -> String {
    let mut rng = SplitMix(seed);
    // {"alg":"RS256","typ":"JWT","kid":"..."} in base64url, then claims, then a 342-char
    // RS256 signature: the proportions of a real Keycloak/Auth0 token.
    let header = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjEyMzQ1Njc4OTBhYmNkZWYifQ";
    let sig_len = 342.min(len / 3);
    let claims_len = len.saturating_sub(header.len() + sig_len + 2).max(1);
    let claims = b64url_filler(&mut rng, claims_len);
    let sig = b64url_filler(&mut rng, sig_len);
    let mut token = format!("{header}.{claims}.{sig}");
    token.truncate(len);
    token
}

/// The record used for every write: 1 KB access token, refresh token, scopes, metadata.
/// No refresh expiry, so `put` sets no TTL and raw clients write the same way.
pub fn record(seed: u64) -> TokenRecord {
    let mut rng = SplitMix(seed ^ 0x5eed);
    let mut r = TokenRecord::new(jwt_like(1024, seed))
        .with_refresh_token(format!("rt.{}", b64url_filler(&mut rng, 61)))
        .with_scopes(SCOPES)
        .expires_in(std::time::Duration::from_secs(3600));
    r.resource = Some("https://mcp.example.com/mcp".to_owned());
    r.authorization_server = Some(ISSUER.to_owned());
    r.client_id = Some("mcp-agent-0f3c9a".to_owned());
    let mut metadata = Map::new();
    metadata.insert("server_name".into(), Value::from("example-mcp"));
    metadata.insert(
        "session_id".into(),
        Value::from(b64url_filler(&mut rng, 32)),
    );
    metadata.insert("client_name".into(), Value::from("token-store-bench"));
    metadata.insert("token_endpoint_auth_method".into(), Value::from("none"));
    r.metadata = metadata;
    r
}

/// The JSON bytes the typed layer stores for [`record`]`(seed)`: what raw clients write.
pub fn record_bytes(seed: u64) -> Vec<u8> {
    serde_json::to_vec(&record(seed)).unwrap_or_default()
}

/// Token key number `i` of `user`: one MCP server URL per key, same issuer and scopes.
pub fn key(user: &str, i: usize) -> TokenKey {
    TokenKey::new(
        user,
        &format!("https://mcp-{i}.example.com/mcp"),
        Some(ISSUER),
        SCOPES,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_realistic_and_deterministic() {
        let r = record(7);
        assert_eq!(r.access_token.expose().len(), 1024);
        assert_eq!(r.access_token.expose().matches('.').count(), 2);
        let bytes = record_bytes(7);
        assert!((1400..2000).contains(&bytes.len()), "{}", bytes.len());
        assert_eq!(
            jwt_like(1024, 7),
            record(7).access_token.expose().to_owned()
        );
        assert_ne!(jwt_like(1024, 7), jwt_like(1024, 8));
    }
}
