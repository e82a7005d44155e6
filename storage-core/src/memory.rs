//! The in-memory reference store: fully conforming, nothing persists.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;

use crate::backend::{check_precondition, check_size};
use crate::error::Result;
use crate::key::{KeyKind, StorageKey};
use crate::raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore,
    SecretBytes, Version,
};

const BACKEND: &str = "memory";
const MAX_VALUE: usize = 16 * 1024 * 1024;

struct Entry {
    value: SecretBytes,
    version: Version,
    expires: Option<(Instant, SystemTime)>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|(at, _)| at > now)
    }
}

/// A store in process memory. Clones share the same records.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    // A blocking lock: it is never held across an await, and readers run in parallel (an
    // async mutex serialised them and cost more than the map lookup itself).
    records: RwLock<HashMap<StorageKey, Entry>>,
    // A store-wide counter, so a deleted and re-created key never repeats an old version.
    next_version: AtomicU64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave the map half-updated (every update is one
    // insert or remove), so a poisoned lock is still safe to use.
    fn records(&self) -> RwLockReadGuard<'_, HashMap<StorageKey, Entry>> {
        self.inner.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn records_mut(&self) -> RwLockWriteGuard<'_, HashMap<StorageKey, Entry>> {
        self.inner
            .records
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn next_version(&self) -> Version {
        let n = self.inner.next_version.fetch_add(1, Ordering::Relaxed) + 1;
        // "m" and the decimal digits, without the formatting machinery (a third of a
        // memory write's instructions went to `format!`).
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let mut version = String::with_capacity(1 + digits.len() - at);
        version.push('m');
        version.extend(digits[at..].iter().map(|&d| char::from(d)));
        Version::new(version)
    }
}

#[async_trait]
impl RawStore for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(MAX_VALUE).with_ttl()
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        let records = self.records();
        Ok(records
            .get(key)
            .filter(|e| e.live(Instant::now()))
            .map(|e| RawRecord {
                value: e.value.clone(),
                version: e.version.clone(),
                expires_at: e.expires.map(|(_, at)| at),
            }))
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(BACKEND, key, value.len(), MAX_VALUE)?;
        let mut records = self.records_mut();
        let now = Instant::now();
        // One lookup for the precondition and the write (hashing the key is most of it).
        let slot = records.get_mut(key);
        let current = slot.as_deref().filter(|e| e.live(now)).map(|e| &e.version);
        check_precondition(BACKEND, key, &options.precondition, current)?;
        let version = self.next_version();
        let expires = options.ttl.map(|ttl| (now + ttl, SystemTime::now() + ttl));
        let entry = Entry {
            value: SecretBytes::new(value.to_vec()),
            version: version.clone(),
            expires,
        };
        // Replacing in place keeps the stored key: no copy of its parts per overwrite.
        match slot {
            Some(slot) => *slot = entry,
            None => {
                records.insert(key.clone(), entry);
            }
        }
        Ok(version)
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        let mut records = self.records_mut();
        let now = Instant::now();
        let current = records.get(key).filter(|e| e.live(now)).map(|e| &e.version);
        check_precondition(BACKEND, key, precondition, current)?;
        let existed = current.is_some();
        records.remove(key);
        Ok(existed)
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let mut records = self.records_mut();
        let now = Instant::now();
        // Listing is a natural time to sweep: expired entries would otherwise linger.
        records.retain(|_, e| e.live(now));
        Ok(records
            .keys()
            .filter(|k| k.kind() == kind && filter.matches(k))
            .cloned()
            .map(ListEntry::Key)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_in_decimal() {
        let store = MemoryStore::new();
        assert_eq!(store.next_version().as_str(), "m1");
        store
            .inner
            .next_version
            .store(u64::MAX - 2, Ordering::Relaxed);
        assert_eq!(store.next_version().as_str(), format!("m{}", u64::MAX - 1));
        store.inner.next_version.store(9, Ordering::Relaxed);
        assert_eq!(store.next_version().as_str(), "m10");
    }
}
