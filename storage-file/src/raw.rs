//! [`FileStore`] as a [`RawStore`]: what it can do, and each operation routed to a lock-free
//! read or a locked change.

use async_trait::async_trait;
use token_store_core::backend::check_size;
use token_store_core::{
    Capabilities, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore,
    Result, Scope, StorageKey, Version,
};
use zeroize::Zeroizing;

use crate::BACKEND;
use crate::format::{self, MAX_VALUE};
use crate::records::{Named, read_record, remove_locked, scan_dir, sweep_locked, write_locked};
use crate::store::FileStore;

#[async_trait]
impl RawStore for FileStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// Shared by the user's processes on this host, with compare-and-swap across all of them
    /// (`flock`), TTL, encryption at rest, persistence; values up to 1 MiB.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(MAX_VALUE)
            .with_sharing(Scope::Host)
            .with_cas(Scope::Host)
            .with_ttl()
            .with_encryption_at_rest()
            .with_persistence(true)
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        key.validate()?;
        let record = self
            .unlocked(|keyed| read_record(keyed, &Named::new(keyed, key)))
            .await?;
        Ok(record.filter(|r| !r.expired(format::now_ms())).map(|r| {
            let expires_at = r.expires_at();
            RawRecord::new(r.value, r.version).with_expiry(expires_at)
        }))
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(BACKEND, key, value.len(), MAX_VALUE)?;
        let key = key.clone();
        let value = Zeroizing::new(value.to_vec());
        let options = options.clone();
        self.locked(move |_, keyed| write_locked(keyed, &key, &value, &options))
            .await
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        let key = key.clone();
        let precondition = precondition.clone();
        self.locked(move |_, keyed| remove_locked(keyed, &key, &precondition))
            .await
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let filter = filter.clone();
        let scanned = self
            .unlocked_blocking(move |keyed| scan_dir(keyed, kind, &filter))
            .await?;
        if !scanned.expired.is_empty() {
            // Removing needs the lock: a writer may have replaced the record since.
            let expired = scanned.expired;
            self.locked(move |_, keyed| sweep_locked(keyed, &expired))
                .await?;
        }
        Ok(scanned.entries)
    }
}
