//! [`GrantError`]: an OAuth error to send back to the client, or a store failure.

use std::fmt;

use token_store_core::Error;

/// Why a grant operation failed.
///
/// The OAuth variants carry the RFC 6749 / 7591 / 8707 error code ([`GrantError::error_code`])
/// and a fixed description that names what was wrong, never a value the client sent; a
/// server answers them with [`GrantError::status`] and [`GrantError::to_json`].
/// [`GrantError::Store`] is the server's own failure (answer 500 or 503, and retry).
#[derive(Debug)]
#[non_exhaustive]
pub enum GrantError {
    /// `invalid_request`: a parameter is missing or malformed.
    InvalidRequest(&'static str),
    /// `invalid_client`: unknown client, or its authentication failed.
    InvalidClient(&'static str),
    /// `invalid_grant`: the code or refresh token is unknown, expired, used, revoked, or was
    /// issued to another client or redirect URI, or the PKCE verifier does not match.
    InvalidGrant(&'static str),
    /// `unauthorized_client`: the client may not use this grant type.
    UnauthorizedClient(&'static str),
    /// `invalid_scope`: a scope the client or grant does not have.
    InvalidScope(&'static str),
    /// `invalid_target` (RFC 8707): a resource the grant is not for.
    InvalidTarget(&'static str),
    /// `invalid_redirect_uri` (RFC 7591): a redirect URI that is not allowed.
    InvalidRedirectUri(&'static str),
    /// `invalid_client_metadata` (RFC 7591): other registration metadata refused.
    InvalidClientMetadata(&'static str),
    /// The store failed; not the client's fault.
    Store(Error),
}

impl GrantError {
    /// The OAuth `error` code; `server_error` for a store failure.
    pub fn error_code(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::InvalidClient(_) => "invalid_client",
            GrantError::InvalidGrant(_) => "invalid_grant",
            GrantError::UnauthorizedClient(_) => "unauthorized_client",
            GrantError::InvalidScope(_) => "invalid_scope",
            GrantError::InvalidTarget(_) => "invalid_target",
            GrantError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            GrantError::InvalidClientMetadata(_) => "invalid_client_metadata",
            GrantError::Store(e) if e.is_retryable() => "temporarily_unavailable",
            GrantError::Store(_) => "server_error",
        }
    }

    /// The HTTP status to answer with: 401 for `invalid_client`, 400 for the other OAuth
    /// errors, 503 for a retryable store failure, 500 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            GrantError::InvalidClient(_) => 401,
            GrantError::Store(e) if e.is_retryable() => 503,
            GrantError::Store(_) => 500,
            _ => 400,
        }
    }

    /// The `error_description`: fixed text, never a value from the request or the store.
    pub fn description(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(d)
            | GrantError::InvalidClient(d)
            | GrantError::InvalidGrant(d)
            | GrantError::UnauthorizedClient(d)
            | GrantError::InvalidScope(d)
            | GrantError::InvalidTarget(d)
            | GrantError::InvalidRedirectUri(d)
            | GrantError::InvalidClientMetadata(d) => d,
            GrantError::Store(_) => "the authorization server's store failed",
        }
    }

    /// The error response body (`{"error": ..., "error_description": ...}`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.error_code(),
            "error_description": self.description(),
        })
    }

    /// Whether this is the store's failure rather than the client's.
    pub fn is_store(&self) -> bool {
        matches!(self, GrantError::Store(_))
    }
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantError::Store(e) => write!(f, "grant store: {e}"),
            other => write!(f, "{}: {}", other.error_code(), other.description()),
        }
    }
}

impl std::error::Error for GrantError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GrantError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for GrantError {
    fn from(e: Error) -> Self {
        GrantError::Store(e)
    }
}
