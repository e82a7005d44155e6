//! Audit events: one structured `tracing` event per change of stored credentials, under the
//! target [`TARGET`] (`token_store::audit`), at INFO.
//!
//! Each event carries `action` ([`Action::as_str`]), `backend`, `kind` (`token`, `client`,
//! `lease`), `key_fp` (a [`fingerprint`] of the storage key, never the key) and `version`
//! (the record version written, or the winner's version for a lost conflict, when known).
//! Never a key part in the clear (keys name users and URLs), never a token or secret.
//!
//! ```text
//! INFO token_store::audit: token store state change action="refreshed" backend="redis" kind="token" key_fp="5f0c6a3e9b1d2c47" version="8c1f..."
//! ```
//!
//! Enable them with a filter such as `RUST_LOG=token_store::audit=info` (or a
//! `tracing_subscriber::filter::Targets` sending that target to its own sink).
//!
//! # Where events come from, and why there
//!
//! Stores, deletes and lost conflicts are emitted by [`TokenStore`](crate::TokenStore)'s typed
//! methods; refreshes and revocations by [`TokenManager`](crate::TokenManager) and the rmcp
//! adapter through [`TokenStore::put_refreshed`](crate::TokenStore::put_refreshed) and
//! [`TokenStore::delete_revoked`](crate::TokenStore::delete_revoked); lease takeovers by
//! [`Lease::acquire`](crate::Lease::acquire). Every caller reaches a backend through exactly
//! one `TokenStore`, however many [`layers`](crate::layers) are stacked beneath it, so each
//! change is reported once on every backend. A `RawStore` layer could not promise that: it
//! may be stacked twice or left out of a hand-built stack, it sees bytes (ciphertext under
//! [`Encrypted`](crate::layers::Encrypted)) with no way to tell a refresh from a login, and
//! it would also report the layers' own bookkeeping writes.
//!
//! Not audited: pending authorizations (one-time PKCE states) and taking or releasing a
//! lease without a takeover: they are short-lived coordination records, not credentials.

use std::fmt;

use hmac::{Hmac, Mac};

use crate::error::{Error, Result};
use crate::key::StorageKey;
use crate::raw::{RawStore, Version};

/// The `tracing` target of audit events.
pub const TARGET: &str = "token_store::audit";

/// The message of every audit event.
pub const MESSAGE: &str = "token store state change";

/// What changed. The `action` field of an audit event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// A record was written (a login, an import, a client registration).
    Stored,
    /// A token record was replaced by the result of a refresh.
    Refreshed,
    /// A record was deleted.
    Deleted,
    /// A token record was deleted because the authorization server rejected its refresh token.
    Revoked,
    /// A conditional write or delete lost against another writer and changed nothing.
    ConflictLost,
    /// An expired (or unreadable) lease whose holder died was replaced.
    LeaseTakenOver,
}

impl Action {
    /// The `action` field's value: `stored`, `refreshed`, `deleted`, `revoked`,
    /// `conflict_lost`, `lease_taken_over`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stored => "stored",
            Action::Refreshed => "refreshed",
            Action::Deleted => "deleted",
            Action::Revoked => "revoked",
            Action::ConflictLost => "conflict_lost",
            Action::LeaseTakenOver => "lease_taken_over",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Separates these fingerprints from every other use of HMAC-SHA-256 on the same keys.
const DOMAIN: &[u8] = b"token-store/v1/audit-key-fingerprint";

/// The `key_fp` of a storage key: the first 64 bits (16 hex digits) of HMAC-SHA-256 of its
/// encoded form under a fixed domain separator.
///
/// The same on every host and process, so one key's events correlate across replicas, and
/// an operator who knows a key finds its events by computing its fingerprint with this
/// function. It does not reveal the key: recovering a user id or URL from it means guessing
/// the whole encoded key (user, resource, issuer and scopes) and checking each guess.
///
/// ```
/// use token_store_core::{TokenKey, audit};
/// let key = TokenKey::new("alice", "https://mcp.example.com/mcp", None, ["read"]).storage_key();
/// let fp = audit::fingerprint(&key);
/// assert_eq!(fp.len(), 16);
/// assert!(!fp.contains("alice"));
/// assert_eq!(fp, audit::fingerprint(&key));
/// ```
pub fn fingerprint(key: &StorageKey) -> String {
    let mut mac = <Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(DOMAIN)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(key.encode().as_bytes());
    crate::crypto::hex(&mac.finalize().into_bytes()[..8])
}

/// Formats a key's fingerprint only when an event is actually recorded.
struct Fingerprint<'a>(&'a StorageKey);

impl fmt::Display for Fingerprint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fingerprint(self.0))
    }
}

/// Emits one audit event. Field values (the backend's name, the fingerprint) are computed
/// only when a subscriber takes the event: with none, this is one cached interest check.
pub(crate) fn emit(
    action: Action,
    raw: &dyn RawStore,
    key: &StorageKey,
    version: Option<&Version>,
) {
    tracing::info!(
        target: "token_store::audit",
        action = action.as_str(),
        backend = raw.backend(),
        kind = key.kind().as_str(),
        key_fp = %Fingerprint(key),
        version = version.map(Version::as_str),
        "token store state change"
    );
}

/// Audits a typed write: `action` with the new version, or a lost conflict.
pub(crate) fn written(
    action: Action,
    raw: &dyn RawStore,
    key: &StorageKey,
    result: &Result<Version>,
) {
    match result {
        Ok(version) => emit(action, raw, key, Some(version)),
        Err(e) => conflict_lost(raw, key, e),
    }
}

/// Audits a typed delete: `action` when a record went (with the version it had to have, if
/// the delete was conditional), a lost conflict, or nothing when there was no record.
pub(crate) fn removed(
    action: Action,
    raw: &dyn RawStore,
    key: &StorageKey,
    result: &Result<bool>,
    expected: Option<&Version>,
) {
    match result {
        Ok(true) => emit(action, raw, key, expected),
        Ok(false) => {}
        Err(e) => conflict_lost(raw, key, e),
    }
}

fn conflict_lost(raw: &dyn RawStore, key: &StorageKey, e: &Error) {
    if let Error::Conflict { current, .. } = e {
        emit(Action::ConflictLost, raw, key, current.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyKind, TokenKey};

    #[test]
    fn fingerprints_are_stable_distinct_and_hide_the_key() {
        let a = TokenKey::new("alice", "https://a.example/mcp", None, ["read"]).storage_key();
        let b = TokenKey::new("bob", "https://a.example/mcp", None, ["read"]).storage_key();
        let fa = fingerprint(&a);
        assert_eq!(fa.len(), 16);
        assert!(fa.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(fa, fingerprint(&b));
        // Pinned: fingerprints must stay comparable across versions and hosts.
        let fixed = StorageKey::single(KeyKind::Lease, "refresh:x").unwrap();
        assert_eq!(fingerprint(&fixed), fingerprint(&fixed.clone()));
        assert_eq!(fingerprint(&fixed).len(), 16);
        // Not a plain digest of the key: the domain separator is in.
        let plain = Version::of_bytes(fixed.encode().as_bytes());
        assert!(!plain.as_str().starts_with(&fingerprint(&fixed)));
    }
}
