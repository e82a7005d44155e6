//! rmcp's `StoredCredentials` <-> the shared [`TokenRecord`].
//!
//! The record carries everything in the fields every tool reads (access and refresh token,
//! absolute `expires_at`, scopes, issuer, client id, ID token). What only rmcp needs for a
//! lossless round trip and that the shared fields cannot express (an absent
//! `token_received_at`, the response's own `scope`, vendor fields) goes to
//! `metadata["rmcp"]`. No secret is written twice: the ID token is lifted out of the vendor
//! fields into [`TokenRecord::id_token`] and put back on the way out.

use std::time::Duration;

use oauth2::{AccessToken, RefreshToken, Scope, TokenResponse, basic::BasicTokenType};
use rmcp::transport::auth::{OAuthTokenResponse, StoredCredentials, VendorExtraTokenFields};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use token_store_core::backend::unix_now;
use token_store_core::{Secret, TokenRecord};

/// The `metadata` entry holding rmcp's verbatim fields.
pub const METADATA_KEY: &str = "rmcp";

/// Vendor fields giving the refresh token's lifetime in seconds (GitHub, Keycloak/Okta).
const REFRESH_LIFETIME_FIELDS: [&str; 2] = ["refresh_token_expires_in", "refresh_expires_in"];

#[derive(Serialize, Deserialize)]
struct RmcpFields {
    /// rmcp's `token_received_at`, verbatim (it may be absent, which changes rmcp's behaviour:
    /// without it rmcp never checks expiry).
    #[serde(default)]
    token_received_at: Option<u64>,
    /// The `obtained_at` written alongside. A record rewritten by another tool has another
    /// `obtained_at`; these fields then describe an older token and are ignored.
    obtained_at: f64,
    /// The token response's `scope`, which may differ from the granted scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<Vec<String>>,
    /// Vendor fields of the token response, minus the ID token.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    extra: Map<String, Value>,
}

fn token_type_name(tt: &BasicTokenType) -> String {
    match tt {
        BasicTokenType::Bearer => "Bearer".to_owned(),
        BasicTokenType::Mac => "mac".to_owned(),
        BasicTokenType::Extension(other) => other.clone(),
    }
}

fn token_type_of(name: &str) -> BasicTokenType {
    if name.eq_ignore_ascii_case("bearer") {
        BasicTokenType::Bearer
    } else if name.eq_ignore_ascii_case("mac") {
        BasicTokenType::Mac
    } else {
        BasicTokenType::Extension(name.to_owned())
    }
}

/// The record for `credentials`, or `None` when rmcp stores a client id without tokens.
pub fn to_record(credentials: &StoredCredentials) -> Option<TokenRecord> {
    let response = credentials.token_response.as_ref()?;
    let obtained_at = credentials
        .token_received_at
        .map(|at| at as f64)
        .unwrap_or_else(unix_now);
    let mut record = TokenRecord::new(response.access_token().secret().clone());
    record.refresh_token = response
        .refresh_token()
        .map(|t| Secret::new(t.secret().clone()));
    record.expires_at = response
        .expires_in()
        .map(|d| obtained_at + d.as_secs() as f64);
    record.scopes = credentials.granted_scopes.clone();
    record.token_type = token_type_name(response.token_type());
    record.authorization_server = credentials.issuer.clone();
    record.obtained_at = obtained_at;
    record.client_id = Some(credentials.client_id.clone());

    let mut extra: Map<String, Value> = response
        .extra_fields()
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(Value::String(id_token)) = extra.get("id_token") {
        record.id_token = Some(Secret::new(id_token.clone()));
        extra.remove("id_token");
    }
    record.refresh_expires_at = REFRESH_LIFETIME_FIELDS
        .iter()
        .find_map(|f| extra.get(*f).and_then(Value::as_u64))
        .filter(|&secs| secs > 0)
        .map(|secs| obtained_at + secs as f64);

    let fields = RmcpFields {
        token_received_at: credentials.token_received_at,
        obtained_at,
        scope: response
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect()),
        extra,
    };
    if let Ok(value) = serde_json::to_value(&fields) {
        record.metadata.insert(METADATA_KEY.to_owned(), value);
    }
    Some(record)
}

/// rmcp's view of a stored record. Records written by other tools (the `tokenstore` CLI, a
/// `TokenManager` refresh, mcp-agent) have no or stale rmcp fields; their expiry is then
/// derived from `obtained_at` and `expires_at`, so rmcp still sees when they expire.
pub fn from_record(record: &TokenRecord, fallback_client_id: Option<&str>) -> StoredCredentials {
    let fields = record
        .metadata
        .get(METADATA_KEY)
        .and_then(|v| serde_json::from_value::<RmcpFields>(v.clone()).ok())
        .filter(|f| f.obtained_at == record.obtained_at);
    let (received_at, scope, extra) = match fields {
        Some(f) => (f.token_received_at, f.scope, f.extra),
        None => (
            Some(record.obtained_at.max(0.0).floor() as u64),
            None,
            Map::new(),
        ),
    };
    // rmcp computes `remaining = expires_in - (now - token_received_at)`, so with
    // `expires_in = expires_at - token_received_at` it sees exactly the stored expiry.
    let expires_in = match (record.expires_at, received_at) {
        (None, _) => None,
        (Some(at), Some(received)) => Some((at - received as f64).max(0.0).floor() as u64),
        // rmcp does not check expiry without `token_received_at`; keep its view.
        (Some(at), None) => Some((at - record.obtained_at).max(0.0).round() as u64),
    };

    let mut vendor = VendorExtraTokenFields::default();
    vendor.0 = extra.into_iter().collect();
    if let Some(id_token) = &record.id_token {
        vendor.0.insert(
            "id_token".to_owned(),
            Value::String(id_token.expose().to_owned()),
        );
    }
    let mut response = OAuthTokenResponse::new(
        AccessToken::new(record.access_token.expose().to_owned()),
        token_type_of(&record.token_type),
        vendor,
    );
    if let Some(rt) = &record.refresh_token {
        response.set_refresh_token(Some(RefreshToken::new(rt.expose().to_owned())));
    }
    if let Some(secs) = expires_in {
        response.set_expires_in(Some(&Duration::from_secs(secs)));
    }
    if let Some(scope) = scope {
        response.set_scopes(Some(scope.into_iter().map(Scope::new).collect()));
    }
    let client_id = record
        .client_id
        .as_deref()
        .or(fallback_client_id)
        .unwrap_or_default()
        .to_owned();
    StoredCredentials::new(
        client_id,
        Some(response),
        record.scopes.clone(),
        received_at,
    )
    .with_issuer(record.authorization_server.clone())
}
