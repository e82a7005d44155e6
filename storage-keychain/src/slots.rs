//! Keychains reached through keyring-core (kernel keyutils, macOS Keychain, Windows
//! Credential Manager) seen as named byte slots, and the one [`RawStore`] built on them.
//!
//! Platform-independent on purpose, so the parts no Linux test could otherwise reach
//! (chunking for Windows' 2560-byte limit) run here against keyutils and in unit tests.
//!
//! - Every record lives in a *head* slot named `ts1-<128-bit digest of the encoded key>`:
//!   keys can be 16 KiB long, slot names cannot (keyutils descriptions stop at 4 KiB,
//!   Windows user names at 513 characters). The envelope inside repeats the full key.
//! - An envelope longer than the platform's slot limit is split: the chunks go to
//!   `<head>.<write id>.<n>` first, then the head is switched to a manifest (count, length,
//!   digest, write id), then the previous write's chunks are deleted. A crash leaves at
//!   worst unreferenced chunks, never a half-written record.
//! - None of these platforms can list by our attributes (keyutils cannot list at all), so an
//!   *index* slot `ts1-index` holds the encoded keys. It is a superset: a key is added
//!   before its record is first written and removed after the record is deleted, and `scan`
//!   reads every listed record, dropping keys whose record is gone or expired.
//! - Every change runs under the key's locks (this process' mutex, then the host-wide lock
//!   file, see [`crate::host_lock`]), and an index update additionally under the index's,
//!   taken after the key's. Reads take only this process' mutex: a record in one slot is
//!   read in one call, and a chunked record that changes under a read (another process
//!   deleted the chunks it was reading) is read again under the host lock.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use token_store_core::backend::{check_precondition, check_size};
use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, Scope, SecretBytes, StorageKey, Version, async_trait,
};

use crate::envelope::{Envelope, Reader};
use crate::host_lock::{Held, HostLocks};
use crate::lock;

/// One keychain namespace as byte slots. Called on blocking threads only.
pub(crate) trait Slots: Send + Sync + 'static {
    /// The backend name for errors.
    fn backend(&self) -> &'static str;
    /// Identifies the keychain namespace for the process-wide locks.
    fn namespace(&self) -> &str;
    /// The largest payload one slot takes.
    fn slot_limit(&self) -> usize;
    /// A slot's bytes, `None` when absent.
    fn get(&self, name: &str) -> Result<Option<SecretBytes>>;
    /// Creates or replaces a slot. `label` describes it for keychain viewers (no secret).
    fn set(&self, name: &str, bytes: &[u8], label: &str) -> Result<()>;
    /// Deletes a slot; whether it existed.
    fn delete(&self, name: &str) -> Result<bool>;
}

const MANIFEST: &[u8; 4] = b"TSKM";
const INDEX_SLOT: &str = "ts1-index";
const INDEX_KEY: &str = "(index)";

/// The head slot of a key.
pub(crate) fn head_name(encoded: &str) -> String {
    format!("ts1-{}", Version::of_bytes(encoded.as_bytes()))
}

struct Manifest {
    count: u32,
    total: u32,
    digest: String,
    write_id: String,
}

impl Manifest {
    fn chunk_name(&self, head: &str, n: u32) -> String {
        format!("{head}.{}.{n}", self.write_id)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = MANIFEST.to_vec();
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.total.to_be_bytes());
        for s in [&self.digest, &self.write_id] {
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Manifest> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(4)? != MANIFEST {
            return None;
        }
        let count = r.u32()?;
        let total = r.u32()?;
        let mut text = || {
            let n = r.take(1)?[0] as usize;
            String::from_utf8(r.take(n)?.to_vec()).ok()
        };
        let digest = text()?;
        let write_id = text()?;
        Some(Manifest {
            count,
            total,
            digest,
            write_id,
        })
    }
}

/// What a head slot held.
enum Loaded {
    Absent,
    Found(Envelope, Option<Manifest>),
    /// Unreadable: the error to report, and the chunks to delete when overwriting it.
    Corrupt(Error, Option<Manifest>),
}

fn corrupt(backend: &'static str, location: &str, message: impl Into<String>) -> Error {
    Error::Corrupt {
        backend,
        key: location.to_owned(),
        message: message.into(),
        source: None,
    }
}

/// Reads the record in `head` (following a manifest), checking it belongs to `expect_key`.
fn load<S: Slots + ?Sized>(
    slots: &S,
    head: &str,
    expect_key: &str,
    location: &str,
) -> Result<Loaded> {
    let backend = slots.backend();
    let Some(bytes) = slots.get(head)? else {
        return Ok(Loaded::Absent);
    };
    let (bytes, manifest) = if bytes.starts_with(MANIFEST) {
        let Some(m) = Manifest::decode(&bytes) else {
            return Ok(Loaded::Corrupt(
                corrupt(backend, location, "unreadable chunk manifest"),
                None,
            ));
        };
        let mut joined = SecretBytes::new(Vec::with_capacity(m.total as usize));
        for n in 0..m.count {
            match slots.get(&m.chunk_name(head, n))? {
                Some(chunk) => joined.extend_from_slice(&chunk),
                None => {
                    let e = corrupt(
                        backend,
                        location,
                        format!("chunk {n} of {} is missing", m.count),
                    );
                    return Ok(Loaded::Corrupt(e, Some(m)));
                }
            }
        }
        if joined.len() != m.total as usize || Version::of_bytes(&joined).as_str() != m.digest {
            let e = corrupt(backend, location, "chunks do not match their manifest");
            return Ok(Loaded::Corrupt(e, Some(m)));
        }
        (joined, Some(m))
    } else {
        (bytes, None)
    };
    match Envelope::decode(backend, location, &bytes) {
        Ok(env) if env.key == expect_key => Ok(Loaded::Found(env, manifest)),
        Ok(_) => Ok(Loaded::Corrupt(
            corrupt(backend, location, "the item belongs to another key"),
            manifest,
        )),
        Err(e) => Ok(Loaded::Corrupt(e, manifest)),
    }
}

/// Writes `bytes` as the record in `head`, chunked when over the slot limit, then deletes
/// the chunks of the record it replaces.
fn store<S: Slots + ?Sized>(
    slots: &S,
    head: &str,
    bytes: &[u8],
    old: Option<Manifest>,
    label: &str,
) -> Result<()> {
    let limit = slots.slot_limit();
    if bytes.len() <= limit {
        slots.set(head, bytes, label)?;
    } else {
        let total = u32::try_from(bytes.len())
            .map_err(|_| Error::invalid_input("record too large to chunk"))?;
        let manifest = Manifest {
            count: bytes.len().div_ceil(limit) as u32,
            total,
            digest: Version::of_bytes(bytes).to_string(),
            write_id: Version::random()?.as_str()[..16].to_owned(),
        };
        for (n, chunk) in bytes.chunks(limit).enumerate() {
            slots.set(&manifest.chunk_name(head, n as u32), chunk, label)?;
        }
        slots.set(head, &manifest.encode(), label)?;
    }
    if let Some(old) = old {
        delete_chunks(slots, head, &old);
    }
    Ok(())
}

fn delete_chunks<S: Slots + ?Sized>(slots: &S, head: &str, m: &Manifest) {
    for n in 0..m.count {
        // Best effort: a chunk left behind is garbage, never read again (its write id is gone).
        if let Err(e) = slots.delete(&m.chunk_name(head, n)) {
            tracing::warn!(backend = slots.backend(), error = %e, "could not delete an old chunk");
        }
    }
}

fn erase<S: Slots + ?Sized>(slots: &S, head: &str, manifest: Option<Manifest>) -> Result<()> {
    slots.delete(head)?;
    if let Some(m) = manifest {
        delete_chunks(slots, head, &m);
    }
    Ok(())
}

/// The encoded keys in the index.
fn index_read<S: Slots + ?Sized>(slots: &S) -> Result<(Vec<String>, Option<Manifest>)> {
    match load(slots, INDEX_SLOT, INDEX_KEY, INDEX_SLOT)? {
        Loaded::Absent => Ok((Vec::new(), None)),
        Loaded::Found(env, m) => {
            let text = std::str::from_utf8(&env.value)
                .map_err(|_| corrupt(slots.backend(), INDEX_SLOT, "index is not text"))?;
            Ok((
                text.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
                m,
            ))
        }
        Loaded::Corrupt(e, _) => Err(e),
    }
}

/// Adds or removes one key in the index, under the index locks. The caller holds the key's.
fn index_update<S: Slots + ?Sized>(
    slots: &S,
    locks: &Locks,
    key: &str,
    present: bool,
) -> Result<()> {
    let _held = locks.index(slots)?;
    let (mut keys, manifest) = index_read(slots)?;
    let had = keys.iter().any(|k| k == key);
    if had == present {
        return Ok(());
    }
    if present {
        keys.push(key.to_owned());
    } else {
        keys.retain(|k| k != key);
    }
    let mut text = keys.join("\n");
    text.push('\n');
    let index_key = StorageKey::single(KeyKind::Meta, INDEX_KEY)?;
    let mut env = Envelope::new(&index_key, text.as_bytes(), None)?;
    env.key = INDEX_KEY.to_owned();
    store(
        slots,
        INDEX_SLOT,
        &env.encode(),
        manifest,
        "token-store index",
    )
}

/// A keychain label for a key: what it is and for which server, never a value.
pub(crate) fn label(key: &StorageKey) -> String {
    let parts = key.parts();
    let first = parts.first().map(String::as_str).unwrap_or_default();
    let text = match key.kind() {
        KeyKind::Token => {
            let resource = parts.get(1).map(String::as_str).unwrap_or_default();
            if first == token_store_core::DEFAULT_USER_KEY {
                format!("MCP OAuth token for {resource}")
            } else {
                format!("MCP OAuth token for {resource} ({first})")
            }
        }
        KeyKind::Client => format!("OAuth client registration at {first}"),
        KeyKind::State => "token-store pending authorization".to_owned(),
        KeyKind::Lease => format!("token-store refresh lease {first}"),
        _ => format!("token-store {} {first}", key.kind().as_str()),
    };
    // Viewers show one line, and Windows comments stop at 256 characters.
    text.chars().take(200).collect()
}

/// The store on top of [`Slots`].
pub(crate) struct SlotStore<S> {
    slots: Arc<S>,
    host: HostLocks,
    max_value: usize,
    timeout: Duration,
    persistent: bool,
}

/// Which locks [`SlotStore::run`] takes before its task starts.
enum Guard {
    /// None: the task takes what it needs itself.
    Nothing,
    /// This process' lock of the key only (reads).
    Local(String),
    /// This process' lock of the key, then the host-wide lock (changes).
    Both(String),
}

/// The locks a task on a blocking thread takes itself, within its call's deadline.
pub(crate) struct Locks {
    host: HostLocks,
    deadline: Instant,
}

impl Locks {
    /// Both locks of `encoded`.
    fn key<S: Slots + ?Sized>(&self, slots: &S, encoded: &str) -> Result<Held> {
        self.host
            .lock_both_blocking(slots.namespace(), encoded, self.deadline)
    }

    /// Both locks of the index.
    fn index<S: Slots + ?Sized>(&self, slots: &S) -> Result<Held> {
        self.host
            .lock_index_both_blocking(slots.namespace(), INDEX_SLOT, self.deadline)
    }
}

impl<S: Slots> SlotStore<S> {
    pub(crate) fn new(
        slots: S,
        host: HostLocks,
        max_value: usize,
        timeout: Duration,
        persistent: bool,
    ) -> Self {
        SlotStore {
            slots: Arc::new(slots),
            host,
            max_value,
            timeout,
            persistent,
        }
    }

    /// Runs `f` on a blocking thread holding the locks `guard` names until `f` returns,
    /// even when the caller stops waiting at the timeout. Locks `f` takes itself are waited
    /// for until the same deadline.
    async fn run<T: Send + 'static>(
        &self,
        op: &str,
        guard: Guard,
        f: impl FnOnce(&S, &Locks) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let backend = self.slots.backend();
        let slots = self.slots.clone();
        let deadline = Instant::now() + self.timeout;
        let locks = Locks {
            host: self.host.clone(),
            deadline,
        };
        let work = async move {
            let held = match &guard {
                Guard::Nothing => (None, None),
                Guard::Local(k) => (None, Some(lock::lock(slots.namespace(), k).await)),
                Guard::Both(k) => (
                    Some(locks.host.lock_both(slots.namespace(), k, deadline).await?),
                    None,
                ),
            };
            tokio::task::spawn_blocking(move || {
                let _held = held;
                f(&slots, &locks)
            })
            .await
            .map_err(|e| Error::backend(backend, "keychain task failed", Some(Box::new(e))))?
        };
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(r) => r,
            Err(_) => Err(Error::unavailable(
                backend,
                format!("{op} timed out after {:?}", self.timeout),
                None,
            )),
        }
    }
}

impl<S: Slots> SlotStore<S> {
    /// Deletes every record in the index, then the index if no other process added to it
    /// meanwhile; how many records went.
    pub(crate) async fn clear(&self) -> Result<usize> {
        self.run("clear", Guard::Nothing, |s, locks| {
            let (keys, _) = {
                let _held = locks.index(s)?;
                index_read(s)?
            };
            let mut n = 0;
            for encoded in &keys {
                // Key by key, as `remove` does, so that a record another process creates
                // meanwhile keeps its index entry.
                let _held = locks.key(s, encoded)?;
                let head = head_name(encoded);
                match load(s, &head, encoded, encoded)? {
                    Loaded::Absent => {}
                    Loaded::Found(_, m) | Loaded::Corrupt(_, m) => {
                        erase(s, &head, m)?;
                        n += 1;
                    }
                }
                index_update(s, locks, encoded, false)?;
            }
            let _held = locks.index(s)?;
            match load(s, INDEX_SLOT, INDEX_KEY, INDEX_SLOT)? {
                Loaded::Found(env, m) if env.value.iter().all(|&b| b == b'\n') => {
                    erase(s, INDEX_SLOT, m)?
                }
                Loaded::Corrupt(_, m) => erase(s, INDEX_SLOT, m)?,
                Loaded::Found(..) | Loaded::Absent => {}
            }
            Ok(n)
        })
        .await
    }
}

impl<S: Slots> std::fmt::Debug for SlotStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeychainStore")
            .field("backend", &self.slots.backend())
            .field("namespace", &self.slots.namespace())
            .field("slot_limit", &self.slots.slot_limit())
            .finish_non_exhaustive()
    }
}

fn live(env: Envelope) -> Option<Envelope> {
    (!env.expired(SystemTime::now())).then_some(env)
}

#[async_trait]
impl<S: Slots> RawStore for SlotStore<S> {
    fn backend(&self) -> &'static str {
        self.slots.backend()
    }

    fn capabilities(&self) -> Capabilities {
        // Atomic across this host's token-store processes (the host lock), not across hosts.
        Capabilities::new(self.max_value)
            .with_sharing(Scope::Host)
            .with_cas(Scope::Host)
            .with_ttl()
            .with_persistence(self.persistent)
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        key.validate()?;
        let encoded = key.encode();
        // This process' lock keeps its own writers from deleting the chunks being read;
        // another process' writer may still do so, which shows as a chunked record that
        // does not add up: read it once more with every writer on the host shut out.
        self.run("get", Guard::Local(encoded.clone()), move |s, locks| {
            let head = head_name(&encoded);
            let loaded = match load(s, &head, &encoded, &encoded)? {
                Loaded::Corrupt(_, Some(_)) => {
                    let _host = locks.host.lock_key_blocking(&encoded, locks.deadline)?;
                    load(s, &head, &encoded, &encoded)?
                }
                other => other,
            };
            match loaded {
                Loaded::Absent => Ok(None),
                Loaded::Corrupt(e, _) => Err(e),
                Loaded::Found(env, _) => Ok(live(env)
                    .map(|env| RawRecord::new(env.value, env.version).with_expiry(env.expires_at))),
            }
        })
        .await
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        let backend = self.backend();
        check_size(backend, key, value.len(), self.max_value)?;
        let encoded = key.encode();
        let env = Envelope::new(key, value, options.ttl)?;
        let version = env.version.clone();
        let bytes = env.encode();
        let precondition = options.precondition.clone();
        let label = label(key);
        let key = key.clone();
        self.run("put", Guard::Both(encoded.clone()), move |s, locks| {
            let head = head_name(&encoded);
            let (current, old) = match load(s, &head, &encoded, &encoded)? {
                Loaded::Absent => (None, None),
                Loaded::Found(env, m) => (live(env), m),
                // Only an unconditional write may replace what it cannot read.
                Loaded::Corrupt(e, m) => match precondition {
                    Precondition::Any => (None, m),
                    _ => return Err(e),
                },
            };
            check_precondition(
                backend,
                &key,
                &precondition,
                current.as_ref().map(|e| &e.version),
            )?;
            if current.is_none() {
                index_update(s, locks, &encoded, true)?;
            }
            store(s, &head, &bytes, old, &label)?;
            Ok(())
        })
        .await?;
        Ok(version)
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        let backend = self.backend();
        let encoded = key.encode();
        let precondition = precondition.clone();
        let key = key.clone();
        self.run("delete", Guard::Both(encoded.clone()), move |s, locks| {
            let head = head_name(&encoded);
            let (existed, manifest) = match load(s, &head, &encoded, &encoded)? {
                Loaded::Absent => {
                    check_precondition(backend, &key, &precondition, None)?;
                    return Ok(false);
                }
                Loaded::Found(env, m) => {
                    let current = live(env);
                    check_precondition(
                        backend,
                        &key,
                        &precondition,
                        current.as_ref().map(|e| &e.version),
                    )?;
                    (current.is_some(), m)
                }
                Loaded::Corrupt(e, m) => match precondition {
                    Precondition::Any => (true, m),
                    _ => return Err(e),
                },
            };
            erase(s, &head, manifest)?;
            index_update(s, locks, &encoded, false)?;
            Ok(existed)
        })
        .await
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let filter = filter.clone();
        self.run("list", Guard::Nothing, move |s, locks| {
            let keys = {
                // The host lock too: the index may be chunked, and another process may be
                // replacing it.
                let _held = locks.index(s)?;
                index_read(s)?.0
            };
            let mut out = Vec::new();
            for encoded in keys {
                let Some(key) = StorageKey::decode(&encoded) else {
                    out.push(ListEntry::Unreadable {
                        location: INDEX_SLOT.to_owned(),
                        reason: "the index lists a key that does not parse".to_owned(),
                    });
                    continue;
                };
                if key.kind() != kind || !filter.matches(&key) {
                    continue;
                }
                // Both locks: the record may be swept or its entry pruned.
                let _held = locks.key(s, &encoded)?;
                let head = head_name(&encoded);
                match load(s, &head, &encoded, &encoded)? {
                    Loaded::Found(env, m) => {
                        if live(env).is_some() {
                            out.push(ListEntry::Key(key));
                        } else {
                            // Listing sweeps expired records; the keychain would keep them.
                            erase(s, &head, m)?;
                            index_update(s, locks, &encoded, false)?;
                        }
                    }
                    Loaded::Absent => index_update(s, locks, &encoded, false)?,
                    Loaded::Corrupt(e, _) => out.push(ListEntry::Unreadable {
                        location: encoded,
                        reason: e.to_string(),
                    }),
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! The chunking and index logic on plain in-process slots with a tiny item limit, so the
    //! Windows-style layout (many chunks per record) is exercised on any OS. The real
    //! keychains run the same code in `tests/`.
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct MapSlots {
        map: Mutex<HashMap<String, Vec<u8>>>,
        limit: usize,
        namespace: String,
    }

    impl MapSlots {
        fn new(limit: usize) -> Self {
            let mut id = [0u8; 8];
            token_store_core::backend::fill_random(&mut id).unwrap();
            MapSlots {
                limit,
                namespace: format!("map-{id:?}"),
                ..Default::default()
            }
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<_> = self.map.lock().unwrap().keys().cloned().collect();
            v.sort();
            v
        }
    }

    impl Slots for MapSlots {
        fn backend(&self) -> &'static str {
            "map"
        }
        fn namespace(&self) -> &str {
            &self.namespace
        }
        fn slot_limit(&self) -> usize {
            self.limit
        }
        fn get(&self, name: &str) -> Result<Option<SecretBytes>> {
            Ok(self
                .map
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .map(SecretBytes::new))
        }
        fn set(&self, name: &str, bytes: &[u8], label: &str) -> Result<()> {
            assert!(bytes.len() <= self.limit, "slot over the platform limit");
            assert!(!label.contains("SECRET"), "a value reached a label");
            self.map
                .lock()
                .unwrap()
                .insert(name.to_owned(), bytes.to_vec());
            Ok(())
        }
        fn delete(&self, name: &str) -> Result<bool> {
            Ok(self.map.lock().unwrap().remove(name).is_some())
        }
    }

    fn store(limit: usize) -> (SlotStore<MapSlots>, Arc<MapSlots>) {
        let slots = MapSlots::new(limit);
        // The default lock directory, as a real store uses; the namespace is random.
        let host = HostLocks::open("map", &slots.namespace, None).unwrap();
        let s = SlotStore::new(slots, host, KEYRING_MAX, Duration::from_secs(5), true);
        let slots = s.slots.clone();
        (s, slots)
    }

    const KEYRING_MAX: usize = crate::KEYRING_MAX_VALUE;

    fn key(n: &str) -> StorageKey {
        StorageKey::single(KeyKind::Meta, n).unwrap()
    }

    #[tokio::test]
    async fn big_records_are_chunked_and_old_chunks_deleted() {
        let (s, slots) = store(crate::WINDOWS_ITEM_LIMIT);
        let k = key("big");
        let big: Vec<u8> = (0..10_000u32).map(|n| (n % 253) as u8).collect();
        let v1 = s.write(&k, &big, &PutOptions::default()).await.unwrap();
        // head + 4 chunks (10 000 B + a ~70 B envelope in 2 560 B pieces) + index
        let names = slots.names();
        assert_eq!(names.len(), 1 + 4 + 1, "{names:?}");
        let got = s.read(&k).await.unwrap().unwrap();
        assert_eq!(got.value.as_slice(), big.as_slice());
        assert_eq!(got.version, v1);
        // Overwrite with a small record: the chunks go, the head holds the envelope itself.
        s.write(&k, b"small SECRET", &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(slots.names().len(), 2, "{:?}", slots.names());
        assert_eq!(
            s.read(&k).await.unwrap().unwrap().value.as_slice(),
            b"small SECRET"
        );
        // And back to big, then delete: nothing is left but the (empty) index.
        s.write(&k, &big, &PutOptions::default()).await.unwrap();
        assert!(s.remove(&k, &Precondition::Any).await.unwrap());
        assert_eq!(slots.names(), vec![INDEX_SLOT.to_owned()]);
        assert!(
            s.scan(KeyKind::Meta, &ListFilter::all())
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_missing_or_altered_chunk_is_corrupt_and_can_be_overwritten() {
        let (s, slots) = store(100);
        let k = key("c");
        s.write(&k, &[7u8; 1000], &PutOptions::default())
            .await
            .unwrap();
        let chunk = slots
            .names()
            .into_iter()
            .find(|n| n.ends_with(".3"))
            .unwrap();
        slots.map.lock().unwrap().get_mut(&chunk).unwrap()[0] ^= 1;
        assert!(matches!(s.read(&k).await, Err(Error::Corrupt { .. })));
        slots.delete(&chunk).unwrap();
        assert!(matches!(s.read(&k).await, Err(Error::Corrupt { .. })));
        // A conditional write must not replace what it cannot read; an unconditional may.
        let cas = PutOptions::new(Precondition::IfAbsent);
        assert!(matches!(
            s.write(&k, b"x", &cas).await,
            Err(Error::Corrupt { .. })
        ));
        s.write(&k, b"x", &PutOptions::default()).await.unwrap();
        assert_eq!(s.read(&k).await.unwrap().unwrap().value.as_slice(), b"x");
        // Orphaned chunks of the corrupt record are deleted with it (minus the one removed).
        assert_eq!(slots.names().len(), 2, "{:?}", slots.names());
    }

    #[tokio::test]
    async fn the_index_is_chunked_too_and_prunes_vanished_records() {
        let (s, slots) = store(128);
        for n in 0..20 {
            s.write(&key(&format!("k{n:02}")), b"v", &PutOptions::default())
                .await
                .unwrap();
        }
        // A record deleted behind our back (another process, a reboot for keyutils).
        slots.delete(&head_name(&key("k05").encode())).unwrap();
        let listed = s.scan(KeyKind::Meta, &ListFilter::all()).await.unwrap();
        assert_eq!(listed.len(), 19);
        let (index, _) = index_read(&*slots).unwrap();
        assert_eq!(index.len(), 19, "the stale entry was pruned");
    }

    #[tokio::test]
    async fn conformance_on_windows_sized_chunks() {
        token_store_conformance::run("slots-2560", || async {
            Ok(token_store_conformance::Instance::new(Arc::new(
                store(crate::WINDOWS_ITEM_LIMIT).0,
            )))
        })
        .await
        .assert_ok();
    }

    #[test]
    fn model_on_tiny_chunks() {
        token_store_conformance::model_check(
            "slots-64",
            || async {
                Ok(token_store_conformance::Instance::new(Arc::new(
                    store(64).0,
                )))
            },
            token_store_conformance::model_check_cases(128),
        );
    }

    #[test]
    fn labels_name_the_server_not_the_token() {
        let k = token_store_core::TokenKey::for_server("https://mcp.example.com/mcp").storage_key();
        assert_eq!(label(&k), "MCP OAuth token for https://mcp.example.com/mcp");
        let k = token_store_core::TokenKey::for_server("https://x")
            .with_user("alice")
            .storage_key();
        assert_eq!(label(&k), "MCP OAuth token for https://x (alice)");
        let long = token_store_core::TokenKey::for_server(&format!("https://{}", "a".repeat(500)));
        assert_eq!(label(&long.storage_key()).chars().count(), 200);
    }
}
