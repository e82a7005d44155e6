use std::fmt;

use async_trait::async_trait;

use crate::crypto::{Cipher, KdfParams, KeyHeader, KeySource, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::key::{KeyKind, StorageKey};
use crate::raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore,
    SecretBytes, Version,
};

/// Keeps only XChaCha20-Poly1305 ciphertext in the wrapped store. Each value is bound to its
/// storage key (associated data), so a value copied to another key fails as
/// [`Error::Integrity`]. Keys stay readable (backends index and list by them); put nothing
/// secret in a key.
///
/// The key derivation header (Argon2id parameters, salt, key check) is kept in the wrapped
/// store itself as a `Meta` record, so every process opening the store derives the same key,
/// and a wrong key or passphrase fails at [`Encrypted::open`] with [`Error::WrongKey`].
pub struct Encrypted<R> {
    inner: R,
    cipher: Cipher,
}

impl<R: fmt::Debug> fmt::Debug for Encrypted<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encrypted")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn aad(key: &StorageKey) -> Vec<u8> {
    let mut aad = b"token-store/v1/value\0".to_vec();
    aad.extend_from_slice(key.encode().as_bytes());
    aad
}

impl<R: RawStore> Encrypted<R> {
    /// The name of the `Meta` record that holds the [`KeyHeader`] in the wrapped store.
    pub const HEADER_ENTRY: &'static str = "encryption";

    /// Whether `inner` already holds an encryption header (was ever opened encrypted).
    pub async fn is_initialized(inner: &R) -> Result<bool> {
        let key = StorageKey::single(KeyKind::Meta, Self::HEADER_ENTRY)?;
        Ok(inner.read(&key).await?.is_some())
    }

    /// Wraps `inner`, deriving the key from `source` (new stores use default Argon2id
    /// parameters). Argon2id runs once here, on a blocking thread.
    pub async fn open(inner: R, source: KeySource) -> Result<Self> {
        Self::open_with_params(inner, source, KdfParams::DEFAULT).await
    }

    /// Like [`Encrypted::open`], with the Argon2id parameters a new store gets.
    pub async fn open_with_params(inner: R, source: KeySource, params: KdfParams) -> Result<Self> {
        let backend = inner.backend();
        let header_key = StorageKey::single(KeyKind::Meta, Self::HEADER_ENTRY)?;
        loop {
            if let Some(found) = inner.read(&header_key).await? {
                let header: KeyHeader =
                    serde_json::from_slice(&found.value).map_err(|e| Error::Corrupt {
                        backend,
                        key: header_key.to_string(),
                        message: format!("bad key header: {e}"),
                        source: None,
                    })?;
                let source = source.clone();
                let cipher = blocking(move || header.unlock(backend, &source)).await?;
                return Ok(Encrypted { inner, cipher });
            }
            let src = source.clone();
            let (header, cipher) = blocking(move || KeyHeader::create(&src, params)).await?;
            let bytes = serde_json::to_vec(&header)
                .map_err(|e| Error::invalid_input(format!("key header: {e}")))?;
            match inner
                .write(
                    &header_key,
                    &bytes,
                    &PutOptions::new(Precondition::IfAbsent),
                )
                .await
            {
                Ok(_) => return Ok(Encrypted { inner, cipher }),
                // Another process created the header first: use theirs.
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Wraps `inner` with an already unlocked cipher (no header is read or written).
    pub fn with_cipher(inner: R, cipher: Cipher) -> Self {
        Encrypted { inner, cipher }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend("crypto", "key derivation task failed", Some(Box::new(e))))?
}

#[async_trait]
impl<R: RawStore> RawStore for Encrypted<R> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        c.encrypted_at_rest = true;
        c.max_value_size = c.max_value_size.saturating_sub(SEAL_OVERHEAD);
        c
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        let Some(found) = self.inner.read(key).await? else {
            return Ok(None);
        };
        let value = match self.cipher.open(&aad(key), &found.value) {
            Ok(value) => value,
            // A lease holds no secret, and must never be jammed: whoever can write the backend
            // without the key (a co-tenant of a shared prefix) could otherwise hold every
            // refresh up by leaving an undecryptable lease. It reads as an empty record, which
            // the lease logic treats as expired and replaces by its version.
            Err(_) if key.kind() == KeyKind::Lease => SecretBytes::default(),
            Err(e) => return Err(e.into_error(self.backend(), key.to_string())),
        };
        Ok(Some(RawRecord { value, ..found }))
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        let max = self.capabilities().max_value_size;
        crate::backend::check_size(self.backend(), key, value.len(), max)?;
        let sealed = self.cipher.seal(&aad(key), value)?;
        self.inner.write(key, &sealed, options).await
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        self.inner.remove(key, precondition).await
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        self.inner.scan(kind, filter).await
    }
}
