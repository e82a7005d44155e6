//! OAuth clients: dynamic registration (RFC 7591), its management protocol (RFC 7592), and
//! client authentication at the token endpoint.

use std::fmt;

use serde::{Deserialize, Serialize};
use token_store_core::backend::unix_now;
use token_store_core::{KeyKind, Precondition, Secret};

use crate::records::{ClientRecord, one};
use crate::secret::{Kind, Raw, digest_eq, random_id};
use crate::{GrantError, GrantStore};

/// `token_endpoint_auth_method` of a public client (no secret; PKCE protects its codes).
pub const AUTH_NONE: &str = "none";
/// `token_endpoint_auth_method`: the secret in an HTTP Basic header (RFC 7591's default).
pub const AUTH_BASIC: &str = "client_secret_basic";
/// `token_endpoint_auth_method`: the secret in the form body.
pub const AUTH_POST: &str = "client_secret_post";

/// Client metadata (RFC 7591 §2), as a registration request sends it and the store keeps it.
/// Fields it does not know are kept in `extra` and returned as sent.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClientMetadata {
    /// Where authorization responses may be sent; exact match at authorization time.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// `none`, `client_secret_basic` (the default) or `client_secret_post`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<String>,
    /// `authorization_code` (the default) and optionally `refresh_token`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grant_types: Vec<String>,
    /// `code` (the default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_types: Vec<String>,
    /// A name to show the user at consent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The client's home page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    /// The scopes the client may ask for, space-separated; `None` for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Every other field of the request, kept verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for ClientMetadata {
    // `extra` may hold a software statement (a signed JWT): show only its field names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMetadata")
            .field("redirect_uris", &self.redirect_uris)
            .field(
                "token_endpoint_auth_method",
                &self.token_endpoint_auth_method,
            )
            .field("grant_types", &self.grant_types)
            .field("client_name", &self.client_name)
            .field("scope", &self.scope)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ClientMetadata {
    /// Metadata with these redirect URIs and every other field defaulted (a confidential
    /// client using `client_secret_basic`, the authorization code grant only).
    pub fn new<S: Into<String>>(redirect_uris: impl IntoIterator<Item = S>) -> Self {
        ClientMetadata {
            redirect_uris: redirect_uris.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// The same metadata for a public client (`token_endpoint_auth_method: none`), as MCP
    /// clients register: no secret, PKCE only.
    pub fn public(mut self) -> Self {
        self.token_endpoint_auth_method = Some(AUTH_NONE.to_owned());
        self
    }

    /// The same metadata with these grant types (e.g. `["authorization_code",
    /// "refresh_token"]`).
    pub fn with_grant_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.grant_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// The same metadata with a display name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// The same metadata limited to these scopes.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The authentication method, defaulted as RFC 7591 says.
    pub fn auth_method(&self) -> &str {
        self.token_endpoint_auth_method
            .as_deref()
            .unwrap_or(AUTH_BASIC)
    }

    /// Whether the client may use `grant_type` (`authorization_code` by default).
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        if self.grant_types.is_empty() {
            grant_type == "authorization_code"
        } else {
            self.grant_types.iter().any(|g| g == grant_type)
        }
    }

    /// Whether every scope of `scopes` is one the client registered (any, when it registered
    /// none).
    pub fn allows_scopes(&self, scopes: &[String]) -> bool {
        match &self.scope {
            None => true,
            Some(allowed) => {
                let allowed: Vec<&str> = allowed.split_whitespace().collect();
                scopes.iter().all(|s| allowed.contains(&s.as_str()))
            }
        }
    }

    /// Checks the metadata and fills in RFC 7591's defaults.
    fn validated(mut self) -> Result<Self, GrantError> {
        if self.redirect_uris.is_empty() {
            return Err(GrantError::InvalidRedirectUri(
                "at least one redirect URI is required",
            ));
        }
        for uri in &self.redirect_uris {
            check_redirect_uri(uri)?;
        }
        if ![AUTH_NONE, AUTH_BASIC, AUTH_POST].contains(&self.auth_method()) {
            return Err(GrantError::InvalidClientMetadata(
                "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post",
            ));
        }
        if self.grant_types.is_empty() {
            self.grant_types = vec!["authorization_code".to_owned()];
        }
        if self
            .grant_types
            .iter()
            .any(|g| g != "authorization_code" && g != "refresh_token")
        {
            return Err(GrantError::InvalidClientMetadata(
                "grant_types may hold only authorization_code and refresh_token",
            ));
        }
        if self.response_types.is_empty() {
            self.response_types = vec!["code".to_owned()];
        }
        if self.response_types.iter().any(|r| r != "code") {
            return Err(GrantError::InvalidClientMetadata(
                "response_types may hold only code",
            ));
        }
        Ok(self)
    }
}

/// A redirect URI must be absolute, without a fragment, and either HTTPS, plain HTTP to a
/// loopback address (native apps, RFC 8252 §7.3), or a private-use scheme (RFC 8252 §7.1).
fn check_redirect_uri(uri: &str) -> Result<(), GrantError> {
    let parsed = url::Url::parse(uri)
        .map_err(|_| GrantError::InvalidRedirectUri("a redirect URI is not an absolute URL"))?;
    if parsed.fragment().is_some() {
        return Err(GrantError::InvalidRedirectUri(
            "a redirect URI must not have a fragment",
        ));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(GrantError::InvalidRedirectUri(
                    "plain http redirect URIs must point to a loopback address",
                ))
            }
        }
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" => Err(
            GrantError::InvalidRedirectUri("a redirect URI scheme that is not allowed"),
        ),
        // A private-use scheme is a reverse domain name (RFC 8252 §7.1).
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(GrantError::InvalidRedirectUri(
            "a redirect URI scheme that is not allowed",
        )),
    }
}

/// A registered client, as the store knows it (no secret: only its digest is kept).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Client {
    /// The client id.
    pub client_id: String,
    /// Its metadata.
    pub metadata: ClientMetadata,
    /// When it registered (Unix seconds).
    pub issued_at: f64,
    /// When its secret expires (Unix seconds); `None` for never or no secret.
    pub secret_expires_at: Option<f64>,
    /// Whether it has a secret (a confidential client).
    pub confidential: bool,
}

impl Client {
    fn from_record(record: ClientRecord) -> Self {
        Client {
            confidential: record.secret.is_some(),
            client_id: record.client_id,
            metadata: record.metadata,
            issued_at: record.issued_at,
            secret_expires_at: record.secret_expires_at,
        }
    }

    /// The RFC 7591 / 7592 response body for this client, without any secret (for a read
    /// of the client configuration endpoint).
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = match serde_json::to_value(&self.metadata) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        body.insert("client_id".into(), self.client_id.clone().into());
        body.insert("client_id_issued_at".into(), (self.issued_at as u64).into());
        if self.confidential {
            body.insert(
                "client_secret_expires_at".into(),
                self.secret_expires_at.map_or(0, |t| t as u64).into(),
            );
        }
        serde_json::Value::Object(body)
    }
}

/// A client whose authentication succeeded; only [`GrantStore::authenticate_client`] makes
/// one, so the token endpoint's operations cannot be called for an unauthenticated client.
#[derive(Clone, Debug)]
pub struct AuthenticatedClient(Client);

impl AuthenticatedClient {
    /// The client.
    pub fn client(&self) -> &Client {
        &self.0
    }

    /// Its id.
    pub fn client_id(&self) -> &str {
        &self.0.client_id
    }
}

/// The answer to a registration: the client, and the secrets it is given once and the store
/// never has again.
#[non_exhaustive]
pub struct RegisteredClient {
    /// The client.
    pub client: Client,
    /// The client secret (confidential clients).
    pub client_secret: Option<Secret>,
    /// The registration access token for the client configuration endpoint (RFC 7592).
    pub registration_access_token: Secret,
}

impl fmt::Debug for RegisteredClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredClient")
            .field("client", &self.client)
            .field("client_secret", &self.client_secret)
            .field("registration_access_token", &"[REDACTED]")
            .finish()
    }
}

impl RegisteredClient {
    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client.client_id
    }

    /// The RFC 7591 response body, secrets included: send it to the client, log it never.
    /// `registration_client_uri` is where the server serves RFC 7592 for this client.
    pub fn to_json(&self, registration_client_uri: Option<&str>) -> serde_json::Value {
        let mut body = self.client.to_json();
        if let serde_json::Value::Object(map) = &mut body {
            if let Some(secret) = &self.client_secret {
                map.insert("client_secret".into(), secret.expose().into());
            }
            map.insert(
                "registration_access_token".into(),
                self.registration_access_token.expose().into(),
            );
            if let Some(uri) = registration_client_uri {
                map.insert("registration_client_uri".into(), uri.into());
            }
        }
        body
    }
}

impl GrantStore {
    /// Registers a client (RFC 7591): validates the metadata, fills in the defaults, and
    /// issues a client id, a client secret unless the client is public, and a registration
    /// access token. Only the secrets' digests are stored.
    pub async fn register_client(
        &self,
        metadata: ClientMetadata,
    ) -> Result<RegisteredClient, GrantError> {
        let metadata = metadata.validated()?;
        let now = unix_now();
        let client_id = random_id()?;
        let secret = if metadata.auth_method() == AUTH_NONE {
            None
        } else {
            Some(Raw::generate()?)
        };
        let registration = Raw::generate()?;
        let record = ClientRecord {
            client_id: client_id.clone(),
            secret: secret.as_ref().map(|s| s.id(Kind::ClientSecret)),
            secret_expires_at: secret
                .as_ref()
                .and(self.config.client_secret_ttl)
                .map(|ttl| now + ttl.as_secs_f64()),
            registration: Some(registration.id(Kind::Registration)),
            issued_at: now,
            metadata,
        };
        self.io
            .write(
                &one(KeyKind::AsClient, &client_id)?,
                &record,
                Precondition::IfAbsent,
                None,
            )
            .await?;
        tracing::debug!(client_id = %client_id, "registered an OAuth client");
        Ok(RegisteredClient {
            client: Client::from_record(record),
            client_secret: secret.map(|s| s.to_secret()),
            registration_access_token: registration.to_secret(),
        })
    }

    /// The client registered under `client_id`, if any.
    pub async fn client(&self, client_id: &str) -> Result<Option<Client>, GrantError> {
        Ok(self
            .client_record(client_id)
            .await?
            .map(|(r, _)| Client::from_record(r)))
    }

    async fn client_record(
        &self,
        client_id: &str,
    ) -> Result<Option<(ClientRecord, token_store_core::Version)>, GrantError> {
        if client_id.is_empty() || client_id.len() > 256 {
            return Ok(None);
        }
        Ok(self.io.read(&one(KeyKind::AsClient, client_id)?).await?)
    }

    /// Authenticates a client at the token endpoint: a confidential client must present its
    /// (unexpired) secret, compared in constant time; a public client must present none.
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: Option<&str>,
    ) -> Result<AuthenticatedClient, GrantError> {
        let Some((record, _)) = self.client_record(client_id).await? else {
            return Err(GrantError::InvalidClient("unknown client"));
        };
        match (&record.secret, secret) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(GrantError::InvalidClient(
                    "a public client presented a secret",
                ));
            }
            (Some(_), None) => {
                return Err(GrantError::InvalidClient("client authentication required"));
            }
            (Some(stored), Some(given)) => {
                let matches = Raw::parse(given)
                    .is_some_and(|raw| digest_eq(&raw.id(Kind::ClientSecret), stored));
                if !matches {
                    return Err(GrantError::InvalidClient("client authentication failed"));
                }
                if record.secret_expires_at.is_some_and(|t| t <= unix_now()) {
                    return Err(GrantError::InvalidClient("the client secret has expired"));
                }
            }
        }
        Ok(AuthenticatedClient(Client::from_record(record)))
    }

    /// Checks an RFC 7592 registration access token; returns the client it manages.
    pub async fn check_registration_token(
        &self,
        client_id: &str,
        registration_access_token: &str,
    ) -> Result<Client, GrantError> {
        let (record, _) = self.managed(client_id, registration_access_token).await?;
        Ok(Client::from_record(record))
    }

    async fn managed(
        &self,
        client_id: &str,
        token: &str,
    ) -> Result<(ClientRecord, token_store_core::Version), GrantError> {
        let found = self.client_record(client_id).await?;
        let ok = match (&found, Raw::parse(token)) {
            (Some((record, _)), Some(raw)) => record
                .registration
                .as_deref()
                .is_some_and(|stored| digest_eq(&raw.id(Kind::Registration), stored)),
            _ => false,
        };
        match found {
            Some(found) if ok => Ok(found),
            _ => Err(GrantError::InvalidClient(
                "unknown client or wrong registration access token",
            )),
        }
    }

    /// Replaces a client's metadata (RFC 7592 update), authorised by its registration access
    /// token. The client id, secret and authentication method stay.
    pub async fn update_client(
        &self,
        client_id: &str,
        registration_access_token: &str,
        metadata: ClientMetadata,
    ) -> Result<Client, GrantError> {
        let (mut record, version) = self.managed(client_id, registration_access_token).await?;
        let metadata = metadata.validated()?;
        if (metadata.auth_method() == AUTH_NONE) != record.secret.is_none() {
            return Err(GrantError::InvalidClientMetadata(
                "token_endpoint_auth_method cannot switch between public and confidential",
            ));
        }
        record.metadata = metadata;
        self.io
            .write(
                &one(KeyKind::AsClient, client_id)?,
                &record,
                Precondition::IfVersion(version),
                None,
            )
            .await?;
        Ok(Client::from_record(record))
    }

    /// Deletes a client (RFC 7592), authorised by its registration access token, and revokes
    /// every grant it holds. Returns whether it existed.
    pub async fn delete_client(
        &self,
        client_id: &str,
        registration_access_token: &str,
    ) -> Result<bool, GrantError> {
        let (_, version) = self.managed(client_id, registration_access_token).await?;
        let removed = self
            .io
            .remove_if(&one(KeyKind::AsClient, client_id)?, version)
            .await?;
        self.revoke_client_grants(client_id).await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_follow_rfc_8252() {
        for ok in [
            "https://app.example/cb",
            "http://127.0.0.1:8765/callback",
            "http://[::1]/cb",
            "http://localhost:3000/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://evil.example/cb",
            "https://app.example/cb#frag",
            "javascript:alert(1)",
            "/relative",
            "custom:/x",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
