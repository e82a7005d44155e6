//! [`Slots`] on keyring-core credential stores: kernel keyutils, macOS Keychain, Windows
//! Credential Manager. Each slot is one credential with `service` = the configured service
//! name and `user` = the slot name.

use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};
use token_store_core::{Error, Result, SecretBytes};

use crate::slots::Slots;

pub(crate) struct KeyringSlots {
    store: Arc<CredentialStore>,
    service: String,
    backend: &'static str,
    namespace: String,
    limit: usize,
}

impl KeyringSlots {
    pub(crate) fn new(
        store: Arc<CredentialStore>,
        backend: &'static str,
        service: &str,
        limit: usize,
    ) -> Self {
        KeyringSlots {
            store,
            service: service.to_owned(),
            backend,
            namespace: format!("{backend}\0{service}"),
            limit,
        }
    }

    fn entry(&self, name: &str) -> Result<Entry> {
        self.store
            .build(&self.service, name, None)
            .map_err(|e| map_error(self.backend, e))
    }

    /// Runs `op`, again when keyutils denies access. keyring-core finds a key by a search of
    /// the session keyring, then reads, links or invalidates it by id; a key another
    /// process unlinked in between is no longer ours to touch, and the kernel says EACCES
    /// (a get then failed as "permission denied" in an 8-process test). A new search sees
    /// what is there now: the new key, or none. A keyring that really is not ours keeps
    /// failing, and that error is returned.
    fn retrying<T>(
        &self,
        op: impl Fn() -> std::result::Result<T, keyring_core::Error>,
    ) -> std::result::Result<T, keyring_core::Error> {
        let mut attempts = 1;
        loop {
            match op() {
                Err(keyring_core::Error::NoStorageAccess(_))
                    if self.backend == crate::KEYUTILS && attempts < RACE_ATTEMPTS =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }
}

/// How many times a keyutils call denied access is made in all (see `retrying`).
const RACE_ATTEMPTS: usize = 4;

impl Slots for KeyringSlots {
    fn backend(&self) -> &'static str {
        self.backend
    }

    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn slot_limit(&self) -> usize {
        self.limit
    }

    fn get(&self, name: &str) -> Result<Option<SecretBytes>> {
        let entry = self.entry(name)?;
        match self.retrying(|| entry.get_secret()) {
            Ok(bytes) => Ok(Some(SecretBytes::new(bytes))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(map_error(self.backend, e)),
        }
    }

    fn set(&self, name: &str, bytes: &[u8], label: &str) -> Result<()> {
        let entry = self.entry(name)?;
        self.retrying(|| entry.set_secret(bytes))
            .map_err(|e| map_error(self.backend, e))?;
        set_label(&entry, label);
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<bool> {
        let entry = self.entry(name)?;
        match self.retrying(|| entry.delete_credential()) {
            Ok(()) => Ok(true),
            Err(keyring_core::Error::NoEntry) => Ok(false),
            Err(e) => Err(map_error(self.backend, e)),
        }
    }
}

/// Windows shows a credential's comment in Credential Manager: make our entries
/// recognisable there. Best effort: the secret is already stored.
#[cfg(windows)]
fn set_label(entry: &Entry, label: &str) {
    let attrs = std::collections::HashMap::from([("comment", label)]);
    if let Err(e) = entry.update_attributes(&attrs) {
        tracing::debug!(error = %describe(&e), "could not set the credential comment");
    }
}

#[cfg(not(windows))]
fn set_label(_entry: &Entry, _label: &str) {}

/// A description of a keyring-core error that never includes stored bytes (`BadEncoding`
/// and `BadDataFormat` carry the secret itself, and their `Debug` prints it).
fn describe(e: &keyring_core::Error) -> String {
    use keyring_core::Error as K;
    match e {
        K::PlatformFailure(p) => format!("platform failure: {p}"),
        K::NoStorageAccess(p) => format!("no access to the credential store: {p}"),
        K::NoEntry => "no such credential".to_owned(),
        K::BadEncoding(_) => "credential is not UTF-8".to_owned(),
        K::BadDataFormat(_, p) => format!("credential has an unexpected format: {p}"),
        K::BadStoreFormat(s) => format!("credential store has an unexpected format: {s}"),
        K::TooLong(what, max) => format!("{what} is longer than the platform limit of {max}"),
        K::Invalid(what, why) => format!("invalid {what}: {why}"),
        K::Ambiguous(v) => format!("{} credentials match", v.len()),
        K::NoDefaultStore => "no default credential store".to_owned(),
        K::NotSupportedByStore(s) => format!("not supported by this store: {s}"),
        _ => "unknown credential store error".to_owned(),
    }
}

pub(crate) fn map_error(backend: &'static str, e: keyring_core::Error) -> Error {
    use keyring_core::Error as K;
    let message = describe(&e);
    match e {
        K::NoStorageAccess(p) => {
            if backend == crate::KEYUTILS {
                Error::PermissionDenied {
                    backend,
                    message: format!(
                        "{message} (the session keyring is not writable: run inside a login session or `keyctl session -`)"
                    ),
                    source: Some(p),
                }
            } else {
                // macOS and Windows deny access when the keychain is locked or the user
                // refused: unlocking needs the user, which a library must not wait for.
                Error::Locked { backend, message }
            }
        }
        K::PlatformFailure(p) => {
            let text = p.to_string();
            if text.contains("QuotaExceeded") {
                Error::backend(
                    backend,
                    "the per-user keyutils quota is exhausted (see /proc/sys/kernel/keys/maxbytes and maxkeys)",
                    Some(p),
                )
            } else {
                Error::unavailable(backend, message, Some(p))
            }
        }
        _ => Error::backend(backend, message, None),
    }
}
