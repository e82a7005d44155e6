//! Codes, grants, access and refresh tokens: issue, exchange, rotate, verify, introspect,
//! revoke, purge.
//!
//! # Consistency without transactions
//!
//! Each operation touches several records, and backends offer only single-record
//! compare-and-swap. The grant record is the one point every change of a family goes
//! through:
//!
//! - New token records are written first, then *committed* by a compare-and-swap of the
//!   grant that names them. A writer whose swap fails deletes what it wrote, so a token is
//!   handed out only once its grant lists it.
//! - Revocation deletes the tokens a grant lists, then deletes the grant only if it is still
//!   the version that was read (else it reads again). Versions are never reused, so once the
//!   grant is gone no writer's swap can succeed, and every token committed before is deleted.
//! - The grant holds the one current refresh token. Rotation swaps it; of several callers
//!   presenting the same refresh token, one swap succeeds and every other one finds the
//!   token no longer current, which is reuse: the family is revoked.
//! - `verify` reads only the access-token record, which holds everything it answers.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use token_store_core::backend::unix_now;
use token_store_core::{Error, KeyKind, ListEntry, ListFilter, Precondition, Secret, Version};
use zeroize::Zeroizing;

use crate::client::AuthenticatedClient;
use crate::records::{
    AccessRecord, AccessSlot, CodeRecord, GrantRecord, RefreshRecord, RefreshSlot, grant_key, one,
    ttl_until,
};
use crate::secret::{
    GrantKey, Kind, Raw, decode_sealed, digest_eq, encode_sealed, pkce_s256_matches, props_aad,
    random_id, valid_challenge, valid_verifier,
};
use crate::{Client, GrantError, GrantStore};

/// How many unexpired access tokens one grant keeps listed; issuing more revokes the oldest.
const MAX_ACCESS_TOKENS_PER_GRANT: usize = 16;
/// Compare-and-swap attempts on a grant before giving up with the store's `Conflict`.
const MAX_ATTEMPTS: usize = 16;
/// A token record younger than this whose grant does not list it may be a commit in flight:
/// purge leaves it alone.
const COMMIT_GRACE_SECS: f64 = 300.0;
/// How long a rotated refresh token without an expiry is kept to recognise its reuse.
const REUSE_WINDOW_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// What the user approved at the authorization endpoint, to be turned into a code.
#[non_exhaustive]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: String,
    /// The redirect URI the code will be sent to (one the client registered).
    pub redirect_uri: String,
    /// The user who logged in and consented.
    pub user_id: String,
    /// The PKCE challenge.
    pub code_challenge: String,
    /// The PKCE method; only `S256` is accepted.
    pub code_challenge_method: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The resource (RFC 8707) the tokens are for, e.g. the MCP server's URL.
    pub resource: Option<String>,
    props: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("user_id", &self.user_id)
            .field("scopes", &self.scopes)
            .field("resource", &self.resource)
            .field("props", &self.props.as_ref().map(|_| "[SEALED]"))
            .finish_non_exhaustive()
    }
}

impl AuthorizationRequest {
    /// A request with an S256 challenge, no scopes, no resource, no properties.
    pub fn new(
        client_id: impl Into<String>,
        redirect_uri: impl Into<String>,
        user_id: impl Into<String>,
        code_challenge: impl Into<String>,
    ) -> Self {
        AuthorizationRequest {
            client_id: client_id.into(),
            redirect_uri: redirect_uri.into(),
            user_id: user_id.into(),
            code_challenge: code_challenge.into(),
            code_challenge_method: "S256".to_owned(),
            scopes: Vec::new(),
            resource: None,
            props: None,
        }
    }

    /// The same request with these scopes.
    pub fn with_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The same request for a resource (RFC 8707).
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// The same request with a PKCE method other than S256 (which is then refused).
    pub fn with_challenge_method(mut self, method: impl Into<String>) -> Self {
        self.code_challenge_method = method.into();
        self
    }

    /// The same request carrying properties (say, the user's upstream tokens), stored
    /// encrypted so that only a holder of a valid token of this grant can read them.
    pub fn with_props<T: Serialize>(mut self, props: &T) -> Result<Self, GrantError> {
        self.props = Some(props_json(props)?);
        Ok(self)
    }
}

fn props_json<T: Serialize>(props: &T) -> Result<Zeroizing<Vec<u8>>, GrantError> {
    serde_json::to_vec(props)
        .map(Zeroizing::new)
        .map_err(|_| GrantError::InvalidRequest("the grant properties cannot be serialised"))
}

/// Options of a refresh (RFC 6749 §6).
#[derive(Default)]
#[non_exhaustive]
pub struct RefreshOptions {
    /// Narrower scopes for the new access token; `None` for the grant's.
    pub scopes: Option<Vec<String>>,
    /// The resource asked for; must be the grant's.
    pub resource: Option<String>,
    props: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for RefreshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshOptions")
            .field("scopes", &self.scopes)
            .field("resource", &self.resource)
            .field("props", &self.props.as_ref().map(|_| "[SEALED]"))
            .finish()
    }
}

impl RefreshOptions {
    /// No narrowing, no new properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// Narrower scopes for the new access token.
    pub fn with_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// The resource the client asks for.
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Replaces the grant's properties (say, after refreshing the upstream token too).
    pub fn with_props<T: Serialize>(mut self, props: &T) -> Result<Self, GrantError> {
        self.props = Some(props_json(props)?);
        Ok(self)
    }
}

/// Tokens issued by a code exchange or a refresh.
#[non_exhaustive]
pub struct IssuedTokens {
    /// The access token.
    pub access_token: Secret,
    /// How long it lives.
    pub expires_in: Duration,
    /// The new refresh token, when the client may refresh.
    pub refresh_token: Option<Secret>,
    /// The scopes of the access token.
    pub scopes: Vec<String>,
    /// What the access token grants (as `verify` would answer).
    pub grant: AccessGrant,
}

impl fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("access_token", &self.access_token)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token)
            .field("scopes", &self.scopes)
            .field("grant", &self.grant)
            .finish()
    }
}

impl IssuedTokens {
    /// The token response body (RFC 6749 §5.1), tokens included: send it, never log it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "access_token": self.access_token.expose(),
            "token_type": "Bearer",
            "expires_in": self.expires_in.as_secs(),
            "scope": self.scopes.join(" "),
        });
        if let (Some(rt), serde_json::Value::Object(map)) = (&self.refresh_token, &mut body) {
            map.insert("refresh_token".into(), rt.expose().into());
        }
        body
    }
}

/// What a valid access token grants: the answer of [`GrantStore::verify`].
#[non_exhaustive]
pub struct AccessGrant {
    /// The grant (token family) id.
    pub grant_id: String,
    /// The user.
    pub user_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// The resource it is for.
    pub resource: Option<String>,
    /// When it was issued (Unix seconds).
    pub issued_at: f64,
    /// When it expires (Unix seconds).
    pub expires_at: f64,
    wrapped_key: String,
    sealed_props: Option<String>,
    token: Raw,
}

impl fmt::Debug for AccessGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessGrant")
            .field("grant_id", &self.grant_id)
            .field("user_id", &self.user_id)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("resource", &self.resource)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl AccessGrant {
    /// Whether the token has `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The grant's properties, decrypted with the key only this token unwraps; `None` when
    /// the grant has none.
    pub fn props<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        let Some(bytes) = self.props_bytes()? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::invalid_input(format!(
                "grant properties are not of the requested type: {}",
                token_store_core::backend::json_error_summary(&e)
            ))
        })
    }

    /// The grant's properties as JSON bytes, decrypted.
    pub fn props_bytes(&self) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        let Some(sealed) = &self.sealed_props else {
            return Ok(None);
        };
        let key = GrantKey::unwrap(&self.token, Kind::Access, &self.grant_id, &self.wrapped_key)
            .ok_or_else(|| integrity(&self.grant_id, "the grant key does not unwrap"))?;
        open_props(&key, &self.grant_id, sealed).map(Some)
    }

    /// The RFC 7662 introspection answer for this token.
    pub fn introspection(&self) -> Introspection {
        Introspection {
            active: true,
            scope: Some(self.scopes.join(" ")),
            client_id: Some(self.client_id.clone()),
            sub: Some(self.user_id.clone()),
            exp: Some(self.expires_at as u64),
            iat: Some(self.issued_at as u64),
            aud: self.resource.clone(),
            token_type: Some("Bearer".to_owned()),
        }
    }
}

fn integrity(grant_id: &str, message: &str) -> Error {
    Error::Integrity {
        backend: "grants",
        key: format!("grant {grant_id}"),
        message: message.to_owned(),
    }
}

fn open_props(key: &GrantKey, grant_id: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let bytes = decode_sealed(sealed)
        .ok_or_else(|| integrity(grant_id, "sealed properties are not base64"))?;
    key.cipher()
        .open(&props_aad(grant_id), &bytes)
        .map_err(|e| e.into_error("grants", format!("grant {grant_id}")))
}

/// An RFC 7662 introspection response.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Introspection {
    /// Whether the token is valid now.
    pub active: bool,
    /// Its scopes, space-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client it was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Issuance (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The resource it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// `Bearer` for access tokens, `refresh_token` for refresh tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
}

impl Introspection {
    /// `{"active": false}`.
    pub fn inactive() -> Self {
        Self::default()
    }
}

/// One of a user's grants, as [`GrantStore::list_grants`] shows it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GrantInfo {
    /// The grant id.
    pub grant_id: String,
    /// The user.
    pub user_id: String,
    /// The client.
    pub client_id: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The resource.
    pub resource: Option<String>,
    /// When the user consented (Unix seconds).
    pub created_at: f64,
    /// When its current refresh token expires, if it has one that does.
    pub refresh_expires_at: Option<f64>,
    /// The end of its absolute lifetime, if any.
    pub expires_at: Option<f64>,
    /// How many times its refresh token was rotated.
    pub rotations: u64,
}

/// What [`GrantStore::purge_expired`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Authorization codes.
    pub codes: usize,
    /// Access-token records (expired, or orphaned by a revocation cut short).
    pub access_tokens: usize,
    /// Refresh-token records (expired, of a revoked grant, or rotated long ago).
    pub refresh_tokens: usize,
    /// Grants (never exchanged, or every token of them expired).
    pub grants: usize,
}

enum Expect {
    /// The grant's code is being exchanged: it must still be pending.
    Pending,
    /// The refresh token with this digest is being rotated: it must still be current.
    Current(String),
}

fn normalise_scopes(scopes: impl IntoIterator<Item = String>) -> Vec<String> {
    let set: std::collections::BTreeSet<String> = scopes
        .into_iter()
        .flat_map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    set.into_iter().collect()
}

fn min_opt(a: f64, b: Option<f64>) -> f64 {
    b.map_or(a, |b| a.min(b))
}

/// Whether a presented redirect URI is the registered one. A loopback `http` URI matches on
/// any port (RFC 8252 §7.3: native apps bind an ephemeral port).
pub(crate) fn redirect_matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    let (Ok(mut a), Ok(mut b)) = (url::Url::parse(registered), url::Url::parse(presented)) else {
        return false;
    };
    let loopback = |u: &url::Url| match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    if a.scheme() != "http" || !loopback(&a) {
        return false;
    }
    if a.set_port(None).is_err() || b.set_port(None).is_err() {
        return false;
    }
    a == b
}

impl GrantStore {
    /// Checks an authorization request's client and redirect URI before the login page is
    /// shown: an error here must be shown to the user, never redirected (RFC 6749 §4.1.2.1).
    pub async fn validate_authorization(
        &self,
        client_id: &str,
        redirect_uri: &str,
    ) -> Result<Client, GrantError> {
        let client = self
            .client(client_id)
            .await?
            .ok_or(GrantError::InvalidClient("unknown client"))?;
        if !client
            .metadata
            .redirect_uris
            .iter()
            .any(|r| redirect_matches(r, redirect_uri))
        {
            return Err(GrantError::InvalidRequest(
                "redirect_uri is not registered for this client",
            ));
        }
        if !client.metadata.allows_grant("authorization_code") {
            return Err(GrantError::UnauthorizedClient(
                "the client may not use the authorization code grant",
            ));
        }
        Ok(client)
    }

    /// Issues an authorization code for what the user approved. The code is single use and
    /// lives [`crate::GrantConfig::code_ttl`]; the store keeps only its digest.
    pub async fn authorize(&self, request: AuthorizationRequest) -> Result<Secret, GrantError> {
        let client = self
            .validate_authorization(&request.client_id, &request.redirect_uri)
            .await?;
        if request.code_challenge_method != "S256" {
            return Err(GrantError::InvalidRequest(
                "code_challenge_method must be S256",
            ));
        }
        if !valid_challenge(&request.code_challenge) {
            return Err(GrantError::InvalidRequest(
                "code_challenge must be an S256 challenge",
            ));
        }
        if request.user_id.is_empty() || request.user_id.len() > 1024 {
            return Err(GrantError::InvalidRequest("a user id is required"));
        }
        let scopes = normalise_scopes(request.scopes);
        if !client.metadata.allows_scopes(&scopes) {
            return Err(GrantError::InvalidScope(
                "a scope the client did not register",
            ));
        }
        if let Some(resource) = &request.resource {
            let ok = url::Url::parse(resource).is_ok_and(|u| u.fragment().is_none());
            if !ok {
                return Err(GrantError::InvalidTarget(
                    "the resource must be an absolute URI without a fragment",
                ));
            }
        }
        let now = unix_now();
        let grant_id = random_id()?;
        let key = GrantKey::generate()?;
        let code = Raw::generate()?;
        let code_id = code.id(Kind::Code);
        let props = match &request.props {
            Some(p) => Some(encode_sealed(&key.cipher().seal(&props_aad(&grant_id), p)?)),
            None => None,
        };
        let expires_at = now + self.config.code_ttl.as_secs_f64();
        let ttl = Some(ttl_until(expires_at, now));
        let grant = GrantRecord {
            id: grant_id.clone(),
            user: request.user_id.clone(),
            client: request.client_id.clone(),
            scopes,
            resource: request.resource.clone(),
            created: now,
            active: false,
            code: Some(code_id.clone()),
            props,
            refresh: None,
            access: Vec::new(),
            expires: self
                .config
                .refresh_absolute_lifetime
                .map(|l| now + l.as_secs_f64()),
            rotations: 0,
        };
        self.io
            .write(
                &grant_key(&request.user_id, &grant_id)?,
                &grant,
                Precondition::IfAbsent,
                ttl,
            )
            .await?;
        let record = CodeRecord {
            grant: grant_id.clone(),
            user: request.user_id,
            client: request.client_id,
            redirect_uri: request.redirect_uri,
            challenge: request.code_challenge,
            resource: request.resource,
            expires_at,
            key: key.wrap(&code, Kind::Code, &grant_id)?,
            redeemed: false,
        };
        self.io
            .write(
                &one(KeyKind::Code, &code_id)?,
                &record,
                Precondition::IfAbsent,
                ttl,
            )
            .await?;
        tracing::debug!(grant_id = %grant_id, "issued an authorization code");
        Ok(code.to_secret())
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3 with PKCE): checks the client,
    /// redirect URI, verifier and resource, takes the code atomically, and issues tokens.
    /// A code presented again fails and revokes everything the first exchange issued.
    pub async fn exchange_code(
        &self,
        client: &AuthenticatedClient,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        resource: Option<&str>,
    ) -> Result<IssuedTokens, GrantError> {
        let raw = Raw::parse(code).ok_or(GrantError::InvalidGrant("unknown authorization code"))?;
        let code_key = one(KeyKind::Code, &raw.id(Kind::Code))?;
        let (mut record, version) = self
            .io
            .read::<CodeRecord>(&code_key)
            .await?
            .ok_or(GrantError::InvalidGrant("unknown authorization code"))?;
        let now = unix_now();
        if record.redeemed {
            self.revoke_grant(&record.user, &record.grant).await?;
            tracing::warn!(grant_id = %record.grant, "authorization code reused: grant revoked");
            return Err(GrantError::InvalidGrant(
                "authorization code already used; its tokens are revoked",
            ));
        }
        if record.expires_at <= now {
            return Err(GrantError::InvalidGrant("authorization code expired"));
        }
        if record.client != client.client_id() {
            return Err(GrantError::InvalidGrant(
                "authorization code issued to another client",
            ));
        }
        if record.redirect_uri != redirect_uri {
            return Err(GrantError::InvalidGrant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        if !valid_verifier(code_verifier) || !pkce_s256_matches(code_verifier, &record.challenge) {
            return Err(GrantError::InvalidGrant("PKCE verification failed"));
        }
        if let Some(asked) = resource
            && record.resource.as_deref() != Some(asked)
        {
            return Err(GrantError::InvalidTarget(
                "the resource is not the one authorised",
            ));
        }
        // The atomic take: of several redemptions exactly one swaps the version they read.
        record.redeemed = true;
        match self
            .io
            .write(
                &code_key,
                &record,
                Precondition::IfVersion(version),
                Some(ttl_until(record.expires_at, now)),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_conflict() => {
                self.revoke_grant(&record.user, &record.grant).await?;
                return Err(GrantError::InvalidGrant(
                    "authorization code already used; its tokens are revoked",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let key = GrantKey::unwrap(&raw, Kind::Code, &record.grant, &record.key)
            .ok_or(GrantError::InvalidGrant("unknown authorization code"))?;
        let (grant, version) = self
            .io
            .read::<GrantRecord>(&grant_key(&record.user, &record.grant)?)
            .await?
            .ok_or(GrantError::InvalidGrant("the grant was revoked"))?;
        let refresh = self.config.issue_refresh_tokens
            && client.client().metadata.allows_grant("refresh_token");
        let scopes = grant.scopes.clone();
        self.issue(grant, version, &key, scopes, None, Expect::Pending, refresh)
            .await
    }

    /// Rotates a refresh token (RFC 6749 §6): issues a new access and refresh token and
    /// retires the presented one. A refresh token presented after it was rotated (by anyone,
    /// even concurrently) revokes the whole grant.
    pub async fn refresh(
        &self,
        client: &AuthenticatedClient,
        refresh_token: &str,
        options: RefreshOptions,
    ) -> Result<IssuedTokens, GrantError> {
        if !client.client().metadata.allows_grant("refresh_token") {
            return Err(GrantError::UnauthorizedClient(
                "the client may not use the refresh token grant",
            ));
        }
        let raw =
            Raw::parse(refresh_token).ok_or(GrantError::InvalidGrant("unknown refresh token"))?;
        let id = raw.id(Kind::Refresh);
        let (record, _) = self
            .io
            .read::<RefreshRecord>(&one(KeyKind::RefreshToken, &id)?)
            .await?
            .ok_or(GrantError::InvalidGrant("unknown refresh token"))?;
        if record.client != client.client_id() {
            return Err(GrantError::InvalidGrant(
                "refresh token issued to another client",
            ));
        }
        let (grant, version) = self
            .io
            .read::<GrantRecord>(&grant_key(&record.user, &record.grant)?)
            .await?
            .ok_or(GrantError::InvalidGrant("refresh token revoked"))?;
        let Some(slot) = grant
            .refresh
            .as_ref()
            .filter(|s| digest_eq(&s.id, &id))
            .cloned()
        else {
            self.revoke_grant(&record.user, &record.grant).await?;
            tracing::warn!(grant_id = %record.grant, "refresh token reused: grant revoked");
            return Err(GrantError::InvalidGrant(
                "refresh token already used; the grant is revoked",
            ));
        };
        let now = unix_now();
        if slot.expires_at.is_some_and(|t| t <= now) || grant.expires.is_some_and(|t| t <= now) {
            return Err(GrantError::InvalidGrant("refresh token expired"));
        }
        let scopes = match options.scopes {
            Some(asked) => {
                let asked = normalise_scopes(asked);
                if !asked.iter().all(|s| grant.scopes.contains(s)) {
                    return Err(GrantError::InvalidScope("a scope the grant does not have"));
                }
                asked
            }
            None => grant.scopes.clone(),
        };
        if let Some(asked) = &options.resource
            && grant.resource.as_deref() != Some(asked.as_str())
        {
            return Err(GrantError::InvalidTarget(
                "the resource is not the one authorised",
            ));
        }
        let key = GrantKey::unwrap(&raw, Kind::Refresh, &grant.id, &slot.key)
            .ok_or(GrantError::InvalidGrant("unknown refresh token"))?;
        self.issue(
            grant,
            version,
            &key,
            scopes,
            options.props,
            Expect::Current(id),
            true,
        )
        .await
    }

    /// Writes new token records, then commits them by a compare-and-swap of the grant.
    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        mut grant: GrantRecord,
        mut version: Version,
        key: &GrantKey,
        scopes: Vec<String>,
        new_props: Option<Zeroizing<Vec<u8>>>,
        expect: Expect,
        with_refresh: bool,
    ) -> Result<IssuedTokens, GrantError> {
        let now = unix_now();
        let grant_id = grant.id.clone();
        let access = Raw::generate()?;
        let access_id = access.id(Kind::Access);
        let access_exp = min_opt(
            now + self.config.access_token_ttl.as_secs_f64(),
            grant.expires,
        );
        let refresh = if with_refresh {
            Some(Raw::generate()?)
        } else {
            None
        };
        let refresh_exp = match (self.config.refresh_token_ttl, grant.expires) {
            (Some(ttl), cap) => Some(min_opt(now + ttl.as_secs_f64(), cap)),
            (None, cap) => cap,
        };
        let props = match &new_props {
            Some(p) => Some(encode_sealed(&key.cipher().seal(&props_aad(&grant_id), p)?)),
            None => grant.props.clone(),
        };
        let access_key = one(KeyKind::AccessToken, &access_id)?;
        let access_record = AccessRecord {
            grant: grant_id.clone(),
            user: grant.user.clone(),
            client: grant.client.clone(),
            scopes: scopes.clone(),
            resource: grant.resource.clone(),
            issued_at: now,
            expires_at: access_exp,
            key: key.wrap(&access, Kind::Access, &grant_id)?,
            props: props.clone(),
        };
        // Fresh 256-bit names: an unconditional write cannot meet another record.
        self.io
            .write(
                &access_key,
                &access_record,
                Precondition::Any,
                Some(ttl_until(access_exp, now)),
            )
            .await?;
        let mut refresh_slot = None;
        let mut refresh_key = None;
        if let Some(rt) = &refresh {
            let rt_id = rt.id(Kind::Refresh);
            let record = RefreshRecord {
                grant: grant_id.clone(),
                user: grant.user.clone(),
                client: grant.client.clone(),
                issued_at: now,
                expires_at: refresh_exp,
            };
            let k = one(KeyKind::RefreshToken, &rt_id)?;
            let written = self
                .io
                .write(
                    &k,
                    &record,
                    Precondition::Any,
                    refresh_exp.map(|t| ttl_until(t, now)),
                )
                .await;
            if let Err(e) = written {
                self.io.remove(&access_key).await.ok();
                return Err(e.into());
            }
            refresh_slot = Some(RefreshSlot {
                id: rt_id,
                key: key.wrap(rt, Kind::Refresh, &grant_id)?,
                issued_at: now,
                expires_at: refresh_exp,
            });
            refresh_key = Some(k);
        }
        let cleanup = |this: &Self| {
            let io = this.io.clone();
            let access_key = access_key.clone();
            let refresh_key = refresh_key.clone();
            async move {
                io.remove(&access_key).await.ok();
                if let Some(k) = refresh_key {
                    io.remove(&k).await.ok();
                }
            }
        };
        let user = grant.user.clone();
        let gkey = grant_key(&user, &grant_id)?;
        let mut evicted = Vec::new();
        let mut committed = false;
        for _ in 0..MAX_ATTEMPTS {
            let still_ok = match &expect {
                Expect::Pending => !grant.active,
                Expect::Current(id) => grant.refresh.as_ref().is_some_and(|s| digest_eq(&s.id, id)),
            };
            if !still_ok {
                cleanup(self).await;
                if let Expect::Current(_) = expect {
                    self.revoke_grant(&user, &grant_id).await?;
                    tracing::warn!(grant_id = %grant_id, "refresh token reused concurrently: grant revoked");
                    return Err(GrantError::InvalidGrant(
                        "refresh token already used; the grant is revoked",
                    ));
                }
                return Err(GrantError::InvalidGrant("authorization code already used"));
            }
            let mut next = grant.clone();
            next.active = true;
            next.code = None;
            next.props = props.clone();
            if with_refresh {
                next.refresh = refresh_slot.clone();
            }
            if let Expect::Current(_) = expect {
                next.rotations += 1;
            }
            next.access.retain(|s| s.expires_at > now);
            next.access.push(AccessSlot {
                id: access_id.clone(),
                expires_at: access_exp,
            });
            evicted.clear();
            while next.access.len() > MAX_ACCESS_TOKENS_PER_GRANT {
                evicted.push(next.access.remove(0).id);
            }
            let live_until = next
                .access
                .iter()
                .map(|s| s.expires_at)
                .fold(access_exp, f64::max);
            let ttl = match &next.refresh {
                Some(slot) => slot.expires_at.map(|t| ttl_until(t.max(live_until), now)),
                None => Some(ttl_until(live_until, now)),
            };
            match self
                .io
                .write(&gkey, &next, Precondition::IfVersion(version.clone()), ttl)
                .await
            {
                Ok(_) => {
                    committed = true;
                    break;
                }
                Err(e) if e.is_conflict() => match self.io.read::<GrantRecord>(&gkey).await {
                    Ok(Some((g, v))) => {
                        grant = g;
                        version = v;
                    }
                    Ok(None) => {
                        cleanup(self).await;
                        return Err(GrantError::InvalidGrant("the grant was revoked"));
                    }
                    Err(e) => {
                        cleanup(self).await;
                        return Err(e.into());
                    }
                },
                Err(e) => {
                    // The swap may or may not have happened (a timeout): the tokens stay,
                    // listed or not; an unlisted one is purged later and was never handed out.
                    return Err(e.into());
                }
            }
        }
        if !committed {
            cleanup(self).await;
            return Err(GrantError::Store(Error::Conflict {
                backend: self.io.raw.backend(),
                key: gkey.to_string(),
                current: None,
            }));
        }
        for id in evicted {
            if let Ok(k) = one(KeyKind::AccessToken, &id) {
                self.io.remove(&k).await.ok();
            }
        }
        let grant = AccessGrant {
            grant_id: grant_id.clone(),
            user_id: user,
            client_id: access_record.client,
            scopes: scopes.clone(),
            resource: access_record.resource,
            issued_at: now,
            expires_at: access_exp,
            wrapped_key: access_record.key,
            sealed_props: access_record.props,
            token: Raw::parse(access.to_secret().expose())
                .ok_or_else(|| Error::invalid_input("a generated token does not parse"))?,
        };
        Ok(IssuedTokens {
            access_token: access.to_secret(),
            expires_in: Duration::from_secs_f64((access_exp - now).max(0.0)),
            refresh_token: refresh.map(|r| r.to_secret()),
            scopes,
            grant,
        })
    }

    /// The bearer check: what a valid, unexpired access token grants, or `None`. One store
    /// read (of the record named by the token's digest); nothing is decrypted until
    /// [`AccessGrant::props`] is called.
    pub async fn verify(&self, access_token: &str) -> Result<Option<AccessGrant>, Error> {
        let Some(raw) = Raw::parse(access_token) else {
            return Ok(None);
        };
        let key = one(KeyKind::AccessToken, &raw.id(Kind::Access))?;
        let Some((record, _)) = self.io.read::<AccessRecord>(&key).await? else {
            return Ok(None);
        };
        if record.expires_at <= unix_now() {
            return Ok(None);
        }
        Ok(Some(AccessGrant {
            grant_id: record.grant,
            user_id: record.user,
            client_id: record.client,
            scopes: record.scopes,
            resource: record.resource,
            issued_at: record.issued_at,
            expires_at: record.expires_at,
            wrapped_key: record.key,
            sealed_props: record.props,
            token: raw,
        }))
    }

    /// RFC 7662 introspection of an access or refresh token. A refresh token is active only
    /// while it is its grant's current one.
    pub async fn introspect(&self, token: &str) -> Result<Introspection, Error> {
        if let Some(grant) = self.verify(token).await? {
            return Ok(grant.introspection());
        }
        let Some(raw) = Raw::parse(token) else {
            return Ok(Introspection::inactive());
        };
        let id = raw.id(Kind::Refresh);
        let Some((record, _)) = self
            .io
            .read::<RefreshRecord>(&one(KeyKind::RefreshToken, &id)?)
            .await?
        else {
            return Ok(Introspection::inactive());
        };
        let Some((grant, _)) = self
            .io
            .read::<GrantRecord>(&grant_key(&record.user, &record.grant)?)
            .await?
        else {
            return Ok(Introspection::inactive());
        };
        let now = unix_now();
        let current = grant
            .refresh
            .as_ref()
            .is_some_and(|s| digest_eq(&s.id, &id) && s.expires_at.is_none_or(|t| t > now))
            && grant.expires.is_none_or(|t| t > now);
        if !current {
            return Ok(Introspection::inactive());
        }
        Ok(Introspection {
            active: true,
            scope: Some(grant.scopes.join(" ")),
            client_id: Some(grant.client),
            sub: Some(grant.user),
            exp: record.expires_at.map(|t| t as u64),
            iat: Some(record.issued_at as u64),
            aud: grant.resource,
            token_type: Some("refresh_token".to_owned()),
        })
    }

    /// RFC 7009 revocation by the client the token was issued to: an access token is deleted;
    /// a refresh token revokes its whole grant. Returns whether anything was revoked (an
    /// unknown token, or another client's, is not an error: the endpoint answers 200).
    pub async fn revoke_token(
        &self,
        client: &AuthenticatedClient,
        token: &str,
    ) -> Result<bool, Error> {
        let Some(raw) = Raw::parse(token) else {
            return Ok(false);
        };
        let access_key = one(KeyKind::AccessToken, &raw.id(Kind::Access))?;
        if let Some((record, version)) = self.io.read::<AccessRecord>(&access_key).await? {
            if record.client != client.client_id() {
                return Ok(false);
            }
            return self.io.remove_if(&access_key, version).await;
        }
        let refresh_key = one(KeyKind::RefreshToken, &raw.id(Kind::Refresh))?;
        if let Some((record, _)) = self.io.read::<RefreshRecord>(&refresh_key).await? {
            if record.client != client.client_id() {
                return Ok(false);
            }
            return self.revoke_grant(&record.user, &record.grant).await;
        }
        Ok(false)
    }

    /// Revokes a grant and every token of it. Returns whether it existed.
    pub async fn revoke_grant(&self, user_id: &str, grant_id: &str) -> Result<bool, Error> {
        let gkey = grant_key(user_id, grant_id)?;
        for _ in 0..MAX_ATTEMPTS {
            let Some((grant, version)) = self.io.read::<GrantRecord>(&gkey).await? else {
                return Ok(false);
            };
            // Tokens first: a crash between leaves a grant without tokens, never tokens
            // without a grant.
            for slot in &grant.access {
                self.io
                    .remove(&one(KeyKind::AccessToken, &slot.id)?)
                    .await?;
            }
            if let Some(slot) = &grant.refresh {
                self.io
                    .remove(&one(KeyKind::RefreshToken, &slot.id)?)
                    .await?;
            }
            if let Some(code) = &grant.code {
                self.io.remove(&one(KeyKind::Code, code)?).await?;
            }
            if self.io.remove_if(&gkey, version).await? {
                tracing::debug!(grant_id = %grant_id, "grant revoked");
                return Ok(true);
            }
        }
        Err(Error::Conflict {
            backend: self.io.raw.backend(),
            key: gkey.to_string(),
            current: None,
        })
    }

    async fn grant_keys(&self, filter: &ListFilter) -> Result<Vec<(String, String)>, Error> {
        let mut keys = Vec::new();
        for entry in self.io.raw.scan(KeyKind::Grant, filter).await? {
            if let ListEntry::Key(k) = entry
                && k.kind() == KeyKind::Grant
                && filter.matches(&k)
                && let [user, id] = k.parts()
            {
                keys.push((user.clone(), id.clone()));
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// A user's active grants (consents that produced tokens), oldest first.
    pub async fn list_grants(&self, user_id: &str) -> Result<Vec<GrantInfo>, Error> {
        let mut out = Vec::new();
        for (user, id) in self.grant_keys(&ListFilter::user(user_id)).await? {
            let Some((g, _)) = self.io.read::<GrantRecord>(&grant_key(&user, &id)?).await? else {
                continue;
            };
            if !g.active {
                continue;
            }
            out.push(GrantInfo {
                refresh_expires_at: g.refresh.as_ref().and_then(|s| s.expires_at),
                grant_id: g.id,
                user_id: g.user,
                client_id: g.client,
                scopes: g.scopes,
                resource: g.resource,
                created_at: g.created,
                expires_at: g.expires,
                rotations: g.rotations,
            });
        }
        out.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        Ok(out)
    }

    /// Revokes every grant of a user (a logout everywhere); returns how many.
    pub async fn revoke_user_grants(&self, user_id: &str) -> Result<usize, Error> {
        let mut n = 0;
        for (user, id) in self.grant_keys(&ListFilter::user(user_id)).await? {
            if self.revoke_grant(&user, &id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    pub(crate) async fn revoke_client_grants(&self, client_id: &str) -> Result<usize, Error> {
        let mut n = 0;
        for (user, id) in self.grant_keys(&ListFilter::all()).await? {
            let Some((g, _)) = self.io.read::<GrantRecord>(&grant_key(&user, &id)?).await? else {
                continue;
            };
            if g.client == client_id && self.revoke_grant(&user, &id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes what can never be used again: expired codes, expired access and refresh
    /// tokens, tokens whose grant is gone (a revocation cut short by a crash), refresh
    /// tokens rotated long ago, grants never exchanged, and grants whose every token
    /// expired. Backends with TTLs drop most of these by themselves; this is for the others
    /// and for the orphans. Records it cannot read are left alone.
    pub async fn purge_expired(&self) -> Result<PurgeReport, Error> {
        let now = unix_now();
        let mut report = PurgeReport::default();
        let mut grants: HashMap<(String, String), Seen> = HashMap::new();
        for key in self.keys(KeyKind::Code).await? {
            if let Ok(Some((r, v))) = self.io.read::<CodeRecord>(&key).await
                && r.expires_at <= now
                && self.io.remove_if(&key, v).await?
            {
                report.codes += 1;
            }
        }
        for key in self.keys(KeyKind::AccessToken).await? {
            let Ok(Some((r, v))) = self.io.read::<AccessRecord>(&key).await else {
                continue;
            };
            let dead = r.expires_at <= now
                || (r.issued_at + COMMIT_GRACE_SECS < now && {
                    let id = key.parts().first().cloned().unwrap_or_default();
                    match self.cached_grant(&mut grants, &r.user, &r.grant).await? {
                        Seen::Missing => true,
                        Seen::Unreadable => false,
                        Seen::Found(g) => !g.access.iter().any(|s| s.id == id),
                    }
                });
            if dead && self.io.remove_if(&key, v).await? {
                report.access_tokens += 1;
            }
        }
        for key in self.keys(KeyKind::RefreshToken).await? {
            let Ok(Some((r, v))) = self.io.read::<RefreshRecord>(&key).await else {
                continue;
            };
            let id = key.parts().first().cloned().unwrap_or_default();
            let dead = r.expires_at.is_some_and(|t| t <= now)
                || (r.issued_at + COMMIT_GRACE_SECS < now && {
                    match self.cached_grant(&mut grants, &r.user, &r.grant).await? {
                        Seen::Missing => true,
                        Seen::Unreadable => false,
                        Seen::Found(g) => {
                            let current = g.refresh.as_ref().is_some_and(|s| s.id == id);
                            !current && r.issued_at + REUSE_WINDOW_SECS < now
                        }
                    }
                });
            if dead && self.io.remove_if(&key, v).await? {
                report.refresh_tokens += 1;
            }
        }
        for (user, id) in self.grant_keys(&ListFilter::all()).await? {
            let Ok(Some((g, _))) = self.io.read::<GrantRecord>(&grant_key(&user, &id)?).await
            else {
                continue;
            };
            let dead = if g.active {
                let refresh_dead = g
                    .refresh
                    .as_ref()
                    .is_none_or(|s| s.expires_at.is_some_and(|t| t <= now));
                let access_dead = g.access.iter().all(|s| s.expires_at <= now);
                (refresh_dead && access_dead) || g.expires.is_some_and(|t| t <= now)
            } else {
                g.created + self.config.code_ttl.as_secs_f64() <= now
            };
            if dead && self.revoke_grant(&user, &id).await? {
                report.grants += 1;
            }
        }
        Ok(report)
    }

    async fn keys(&self, kind: KeyKind) -> Result<Vec<token_store_core::StorageKey>, Error> {
        Ok(self
            .io
            .raw
            .scan(kind, &ListFilter::all())
            .await?
            .into_iter()
            .filter_map(|e| match e {
                ListEntry::Key(k) if k.kind() == kind => Some(k),
                _ => None,
            })
            .collect())
    }

    async fn cached_grant<'a>(
        &self,
        cache: &'a mut HashMap<(String, String), Seen>,
        user: &str,
        id: &str,
    ) -> Result<&'a Seen, Error> {
        let k = (user.to_owned(), id.to_owned());
        if !cache.contains_key(&k) {
            let seen = match self.io.read::<GrantRecord>(&grant_key(user, id)?).await {
                Ok(Some((g, _))) => Seen::Found(Box::new(g)),
                Ok(None) => Seen::Missing,
                // An unreadable grant is no proof that its tokens are orphans.
                Err(Error::Corrupt { .. } | Error::Integrity { .. }) => Seen::Unreadable,
                Err(e) => return Err(e),
            };
            cache.insert(k.clone(), seen);
        }
        Ok(cache.get(&k).unwrap_or(&Seen::Unreadable))
    }
}

/// A grant as purge found it.
enum Seen {
    Missing,
    Unreadable,
    Found(Box<GrantRecord>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_match_on_any_port_only() {
        assert!(redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5555/cb"
        ));
        assert!(redirect_matches(
            "http://127.0.0.1:1/cb",
            "http://127.0.0.1:2/cb"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5555/other"
        ));
        assert!(!redirect_matches(
            "https://a.example:1/cb",
            "https://a.example:2/cb"
        ));
        assert!(redirect_matches(
            "https://a.example/cb",
            "https://a.example/cb"
        ));
    }

    #[test]
    fn scopes_are_split_sorted_and_deduplicated() {
        assert_eq!(
            normalise_scopes(["b a".to_owned(), "a".to_owned()]),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }
}
