//! What the grant store writes, record by record, and the byte-level reads and writes.
//!
//! No record holds a secret in the clear: tokens, codes, client secrets and registration
//! tokens are named by their digest only; a grant's properties are sealed under the grant's
//! key, and that key is stored only wrapped under a key derived from a token or code.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use token_store_core::backend::json_error_summary;
use token_store_core::{
    Error, KeyKind, Precondition, PutOptions, RawStore, Result, StorageKey, Version,
};
use zeroize::Zeroizing;

use crate::client::ClientMetadata;

/// A registered client (kind `AsClient`, key: the client id).
#[derive(Serialize, Deserialize)]
pub(crate) struct ClientRecord {
    pub client_id: String,
    /// Digest of the client secret; `None` for a public client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When the secret expires (Unix seconds); `None` never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_expires_at: Option<f64>,
    /// Digest of the registration access token (RFC 7592).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<String>,
    pub issued_at: f64,
    pub metadata: ClientMetadata,
}

/// A grant (kind `Grant`, key: user, grant id): the consent one user gave one client, and
/// the one current refresh token of its family.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct GrantRecord {
    pub id: String,
    pub user: String,
    pub client: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub created: f64,
    /// False until its authorization code is exchanged.
    #[serde(default)]
    pub active: bool,
    /// Digest of the pending authorization code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The properties, sealed under the grant key (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<String>,
    /// The only refresh token of the family that may be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshSlot>,
    /// Access tokens issued and not yet expired, so revocation can delete them.
    #[serde(default)]
    pub access: Vec<AccessSlot>,
    /// The end of the family's absolute lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<f64>,
    /// How many times the refresh token was rotated.
    #[serde(default)]
    pub rotations: u64,
}

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct RefreshSlot {
    pub id: String,
    /// The grant key wrapped under this refresh token.
    pub key: String,
    pub issued_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<f64>,
}

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct AccessSlot {
    pub id: String,
    pub expires_at: f64,
}

/// An authorization code (kind `Code`, key: its digest).
#[derive(Serialize, Deserialize)]
pub(crate) struct CodeRecord {
    pub grant: String,
    pub user: String,
    pub client: String,
    pub redirect_uri: String,
    pub challenge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub expires_at: f64,
    /// The grant key wrapped under the code.
    pub key: String,
    /// Kept (until it expires) after the exchange, so a second redemption is recognised and
    /// revokes what the first issued.
    #[serde(default)]
    pub redeemed: bool,
}

/// An access token (kind `AccessToken`, key: its digest): everything `verify` answers, so a
/// bearer check is one read.
#[derive(Serialize, Deserialize)]
pub(crate) struct AccessRecord {
    pub grant: String,
    pub user: String,
    pub client: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub issued_at: f64,
    pub expires_at: f64,
    /// The grant key wrapped under this token.
    pub key: String,
    /// A copy of the grant's sealed properties as of issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<String>,
}

/// A refresh token (kind `RefreshToken`, key: its digest). Valid only while its grant names
/// it as current; kept after rotation so that reuse is recognised.
#[derive(Serialize, Deserialize)]
pub(crate) struct RefreshRecord {
    pub grant: String,
    pub user: String,
    pub client: String,
    pub issued_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<f64>,
}

pub(crate) fn one(kind: KeyKind, part: &str) -> Result<StorageKey> {
    StorageKey::single(kind, part)
}

pub(crate) fn grant_key(user: &str, grant_id: &str) -> Result<StorageKey> {
    StorageKey::new(KeyKind::Grant, vec![user.to_owned(), grant_id.to_owned()])
}

/// Typed reads and writes over the raw store.
#[derive(Clone, Debug)]
pub(crate) struct Io {
    pub raw: Arc<dyn RawStore>,
}

impl Io {
    pub(crate) async fn read<T: DeserializeOwned>(
        &self,
        key: &StorageKey,
    ) -> Result<Option<(T, Version)>> {
        let Some(rec) = self.raw.read(key).await? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&rec.value).map_err(|e| Error::Corrupt {
            backend: self.raw.backend(),
            key: key.to_string(),
            message: format!("not a grant-store record: {}", json_error_summary(&e)),
            source: None,
        })?;
        Ok(Some((value, rec.version)))
    }

    pub(crate) async fn write<T: Serialize>(
        &self,
        key: &StorageKey,
        value: &T,
        precondition: Precondition,
        ttl: Option<Duration>,
    ) -> Result<Version> {
        let bytes = Zeroizing::new(
            serde_json::to_vec(value)
                .map_err(|e| Error::invalid_input(format!("record cannot be serialised: {e}")))?,
        );
        let options = PutOptions::new(precondition).with_ttl(ttl);
        self.raw.write(key, &bytes, &options).await
    }

    /// Deletes, treating "someone else changed or deleted it first" as `false`.
    pub(crate) async fn remove_if(&self, key: &StorageKey, version: Version) -> Result<bool> {
        match self
            .raw
            .remove(key, &Precondition::IfVersion(version))
            .await
        {
            Ok(removed) => Ok(removed),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn remove(&self, key: &StorageKey) -> Result<bool> {
        self.raw.remove(key, &Precondition::Any).await
    }
}

/// A TTL for a record that must live until `until` (Unix seconds): at least one second, and
/// rounded up, so no backend drops it before its own expiry check would.
pub(crate) fn ttl_until(until: f64, now: f64) -> Duration {
    Duration::from_secs_f64((until - now).max(0.0).ceil() + 1.0)
}
