//! What is stored: token records, client registrations and PKCE/CSRF states.
//!
//! The token record's JSON uses mcp-agent's field names so that both read each other's
//! records; fields of ours are optional and skipped when empty, and fields we do not know are
//! kept in [`TokenRecord::extra`] and written back unchanged.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A secret string (token, client secret, PKCE verifier): zeroized on drop, shown as
/// `[REDACTED]` by `Debug` and `Display`, written in full only by serialisation.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The secret itself. Every call site is a place where a secret leaves its box.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A short preview for humans: the first and last four characters, or nothing for
    /// values too short to hide anything.
    ///
    /// ```
    /// use token_store_core::Secret;
    /// assert_eq!(Secret::new("abcdefghijklmnopqrstuvwxyz").preview(), "abcd…wxyz (26 chars)");
    /// assert_eq!(Secret::new("short").preview(), "[REDACTED] (5 chars)");
    /// ```
    pub fn preview(&self) -> String {
        let s = self.expose();
        let n = s.chars().count();
        if n < 20 {
            return format!("[REDACTED] ({n} chars)");
        }
        let head: String = s.chars().take(4).collect();
        let tail: String = s.chars().skip(n - 4).collect();
        format!("{head}…{tail} ({n} chars)")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        // Not constant-time: equality is for tests and change detection, never for auth.
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// The schema version of the records this crate writes (field `token_store_schema`).
pub const RECORD_SCHEMA: u32 = 1;

fn default_token_type() -> String {
    "Bearer".to_owned()
}

/// Seconds since the Unix epoch as mcp-agent stores times (a float).
pub fn unix_now() -> f64 {
    to_unix(SystemTime::now())
}

/// A `SystemTime` as float Unix seconds.
pub fn to_unix(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// An OAuth token set, in mcp-agent's `TokenRecord` shape.
///
/// `Debug` shows no secret: tokens print as `[REDACTED]`, and of the free-form `metadata` and
/// `extra` maps only the field names (a provider may return a vendor token in an extra field).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenRecord {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token, if the server issued one.
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// Granted scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When the access token expires, in absolute Unix seconds.
    #[serde(default)]
    pub expires_at: Option<f64>,
    /// The token type, normally `Bearer`.
    #[serde(default = "default_token_type")]
    pub token_type: String,
    /// The resource the token is for.
    #[serde(default)]
    pub resource: Option<String>,
    /// The authorization server that issued it.
    #[serde(default)]
    pub authorization_server: Option<String>,
    /// When the token was obtained, in Unix seconds.
    #[serde(default = "unix_now")]
    pub obtained_at: f64,
    /// Free-form metadata (mcp-agent keeps `server_name`, `session_id`, ... here).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The OpenID Connect ID token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<Secret>,
    /// The OAuth client the tokens were issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// When the refresh token expires, in absolute Unix seconds, if the server said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_expires_at: Option<f64>,
    /// Our schema version; absent in records written by mcp-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_store_schema: Option<u32>,
    /// Fields this version does not know, kept so that writing a record back loses nothing.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TokenRecord {
    /// A record holding just an access token, obtained now.
    pub fn new(access_token: impl Into<Secret>) -> Self {
        TokenRecord {
            access_token: access_token.into(),
            refresh_token: None,
            scopes: Vec::new(),
            expires_at: None,
            token_type: default_token_type(),
            resource: None,
            authorization_server: None,
            obtained_at: unix_now(),
            metadata: Map::new(),
            id_token: None,
            client_id: None,
            refresh_expires_at: None,
            token_store_schema: Some(RECORD_SCHEMA),
            extra: Map::new(),
        }
    }

    /// Sets the refresh token.
    pub fn with_refresh_token(mut self, refresh_token: impl Into<Secret>) -> Self {
        self.refresh_token = Some(refresh_token.into());
        self
    }

    /// Sets the access token's lifetime from now.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_at = Some(unix_now() + lifetime.as_secs_f64());
        self
    }

    /// Sets the scopes.
    pub fn with_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the access token expires within `leeway` from now (a token without expiry
    /// never does).
    pub fn is_expired(&self, leeway: Duration) -> bool {
        self.expires_at
            .is_some_and(|at| unix_now() + leeway.as_secs_f64() >= at)
    }

    /// How long the whole record is worth keeping: as long as the refresh token may live, or
    /// the access token when there is no refresh token. `None` means "no known end".
    pub fn useful_lifetime(&self) -> Option<Duration> {
        let until = if self.refresh_token.is_some() {
            self.refresh_expires_at?
        } else {
            self.expires_at?
        };
        Some(Duration::from_secs_f64((until - unix_now()).max(1.0)))
    }

    /// Converts an `oauth2` token response received at `received_at` (its relative
    /// `expires_in` becomes an absolute `expires_at`).
    #[cfg(feature = "oauth2")]
    pub fn from_oauth2<EF, TT>(
        response: &oauth2::StandardTokenResponse<EF, TT>,
        received_at: SystemTime,
    ) -> Self
    where
        EF: oauth2::ExtraTokenFields,
        TT: oauth2::TokenType,
    {
        use oauth2::TokenResponse;
        let obtained_at = to_unix(received_at);
        let mut record = TokenRecord::new(response.access_token().secret().clone());
        record.refresh_token = response
            .refresh_token()
            .map(|t| Secret::new(t.secret().clone()));
        record.expires_at = response.expires_in().map(|d| obtained_at + d.as_secs_f64());
        record.scopes = response
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        record.token_type = token_type_name(response.token_type());
        record.obtained_at = obtained_at;
        record
    }

    /// Converts back to an `oauth2` token response as of `now` (`expires_in` is what is left,
    /// zero once expired).
    #[cfg(feature = "oauth2")]
    pub fn to_oauth2(
        &self,
        now: SystemTime,
    ) -> oauth2::StandardTokenResponse<oauth2::EmptyExtraTokenFields, oauth2::basic::BasicTokenType>
    {
        let token_type = match self.token_type.to_ascii_lowercase().as_str() {
            "bearer" => oauth2::basic::BasicTokenType::Bearer,
            "mac" => oauth2::basic::BasicTokenType::Mac,
            other => oauth2::basic::BasicTokenType::Extension(other.to_owned()),
        };
        let mut response = oauth2::StandardTokenResponse::new(
            oauth2::AccessToken::new(self.access_token.expose().to_owned()),
            token_type,
            oauth2::EmptyExtraTokenFields {},
        );
        if let Some(rt) = &self.refresh_token {
            response.set_refresh_token(Some(oauth2::RefreshToken::new(rt.expose().to_owned())));
        }
        if let Some(at) = self.expires_at {
            let left = (at - to_unix(now)).max(0.0);
            response.set_expires_in(Some(&Duration::from_secs_f64(left)));
        }
        if !self.scopes.is_empty() {
            response.set_scopes(Some(
                self.scopes
                    .iter()
                    .cloned()
                    .map(oauth2::Scope::new)
                    .collect(),
            ));
        }
        response
    }
}

#[cfg(feature = "oauth2")]
fn token_type_name<TT: oauth2::TokenType>(tt: &TT) -> String {
    // TokenType is only guaranteed to serialise; its JSON string form is the wire name.
    match serde_json::to_value(tt) {
        Ok(Value::String(s)) if s.eq_ignore_ascii_case("bearer") => default_token_type(),
        Ok(Value::String(s)) => s,
        _ => default_token_type(),
    }
}

/// A dynamic client registration result (RFC 7591), including the client secret of a
/// confidential client. `Debug` shows no secret and only the names of `extra` fields.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClientRegistration {
    /// The client id.
    pub client_id: String,
    /// The client secret, for confidential clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// When the client secret expires (Unix seconds; 0 or absent means never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<u64>,
    /// The registration access token (RFC 7592), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_access_token: Option<Secret>,
    /// Registered redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Everything else the server returned (client_name, grant_types, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ClientRegistration {
    /// A registration with just a client id.
    pub fn new(client_id: impl Into<String>) -> Self {
        ClientRegistration {
            client_id: client_id.into(),
            client_secret: None,
            client_secret_expires_at: None,
            registration_access_token: None,
            redirect_uris: Vec::new(),
            extra: Map::new(),
        }
    }

    /// Sets the client secret.
    pub fn with_secret(mut self, secret: impl Into<Secret>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }
}

/// A pending authorization (PKCE verifier and CSRF state), kept until the redirect comes back.
/// `Debug` shows no secret and only the names of `extra` fields.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuthState {
    /// The PKCE code verifier.
    pub pkce_verifier: Secret,
    /// The issuer the response must come from, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_issuer: Option<String>,
    /// The scopes asked for.
    #[serde(default)]
    pub requested_scopes: Vec<String>,
    /// When the authorization started (Unix seconds).
    pub created_at: u64,
    /// Anything else the caller wants back (e.g. rmcp's fields).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AuthState {
    /// A state holding a PKCE verifier, created now.
    pub fn new(pkce_verifier: impl Into<Secret>) -> Self {
        AuthState {
            pkce_verifier: pkce_verifier.into(),
            expected_issuer: None,
            requested_scopes: Vec::new(),
            created_at: unix_now().max(0.0) as u64,
            extra: Map::new(),
        }
    }
}

/// A value read from a store together with the version it was read at.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version, for a later [`Precondition::IfVersion`](crate::Precondition::IfVersion).
    pub version: crate::Version,
}

/// Free-form maps can hold anything a server returned, tokens included: `Debug` names the
/// fields and never shows a value.
struct FieldNames<'a>(&'a Map<String, Value>);

impl fmt::Debug for FieldNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("token_type", &self.token_type)
            .field("resource", &self.resource)
            .field("authorization_server", &self.authorization_server)
            .field("obtained_at", &self.obtained_at)
            .field("metadata", &FieldNames(&self.metadata))
            .field("id_token", &self.id_token)
            .field("client_id", &self.client_id)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("token_store_schema", &self.token_store_schema)
            .field("extra", &FieldNames(&self.extra))
            .finish()
    }
}

impl fmt::Debug for ClientRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRegistration")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("client_secret_expires_at", &self.client_secret_expires_at)
            .field("registration_access_token", &self.registration_access_token)
            .field("redirect_uris", &self.redirect_uris)
            .field("extra", &FieldNames(&self.extra))
            .finish()
    }
}

impl fmt::Debug for AuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthState")
            .field("pkce_verifier", &self.pkce_verifier)
            .field("expected_issuer", &self.expected_issuer)
            .field("requested_scopes", &self.requested_scopes)
            .field("created_at", &self.created_at)
            .field("extra", &FieldNames(&self.extra))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_free_form_fields_but_never_shows_their_values() {
        let mut record = TokenRecord::new("at");
        record.extra.insert(
            "vendor_user_token".into(),
            Value::String("xoxp-SECRET-1".into()),
        );
        record.metadata.insert(
            "nested".into(),
            serde_json::json!({"access_token": "SECRET-2"}),
        );
        let mut client = ClientRegistration::new("c");
        client.extra.insert(
            "software_statement".into(),
            Value::String("SECRET-3".into()),
        );
        let mut state = AuthState::new("verifier-SECRET-4");
        state
            .extra
            .insert("csrf".into(), Value::String("SECRET-5".into()));
        let debug = format!(
            "{record:?} {client:?} {state:?} {:#?}",
            Versioned {
                value: record.clone(),
                version: crate::Version::new("v")
            }
        );
        assert!(!debug.contains("SECRET"), "{debug}");
        for name in ["vendor_user_token", "nested", "software_statement", "csrf"] {
            assert!(debug.contains(name), "{name} missing from {debug}");
        }
    }

    #[test]
    fn debug_and_display_redact_secrets() {
        let record = TokenRecord::new("access-SECRET-123")
            .with_refresh_token("refresh-SECRET-456")
            .with_scopes(["read"]);
        let debug = format!("{record:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("[REDACTED]"));
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("access-SECRET-123") && json.contains("refresh-SECRET-456"));
    }

    #[test]
    fn reads_mcp_agent_json_and_keeps_unknown_fields() {
        let py = r#"{"access_token": "at", "refresh_token": null, "scopes": ["read", "write"], "expires_at": 1700000000.5, "token_type": "Bearer", "resource": "https://api.example.com/mcp", "authorization_server": null, "obtained_at": 1699996400.25, "metadata": {"server_name": "demo"}, "future_field": {"x": 1}}"#;
        let record: TokenRecord = serde_json::from_str(py).unwrap();
        assert_eq!(record.access_token.expose(), "at");
        assert_eq!(record.expires_at, Some(1_700_000_000.5));
        assert_eq!(record.token_store_schema, None);
        let back: Value = serde_json::to_value(&record).unwrap();
        assert_eq!(back["future_field"]["x"], 1);
        assert_eq!(back["metadata"]["server_name"], "demo");
    }

    #[cfg(feature = "oauth2")]
    #[test]
    fn oauth2_round_trip_makes_expiry_absolute() {
        let received = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut response = oauth2::StandardTokenResponse::new(
            oauth2::AccessToken::new("at".into()),
            oauth2::basic::BasicTokenType::Bearer,
            oauth2::EmptyExtraTokenFields {},
        );
        response.set_expires_in(Some(&Duration::from_secs(3600)));
        response.set_refresh_token(Some(oauth2::RefreshToken::new("rt".into())));
        let record = TokenRecord::from_oauth2(&response, received);
        assert_eq!(record.expires_at, Some(1_003_600.0));
        assert_eq!(record.token_type, "Bearer");
        let back = record.to_oauth2(received + Duration::from_secs(600));
        use oauth2::TokenResponse;
        assert_eq!(back.expires_in(), Some(Duration::from_secs(3000)));
        assert_eq!(back.refresh_token().unwrap().secret(), "rt");
    }
}
