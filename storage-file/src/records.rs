//! Record I/O under the current key: reading one record, conditional writes and deletes
//! (under the lock), listing, and sweeping expired records.

use token_store_core::backend::{Cipher, check_precondition};
use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, Result, StorageKey, Version,
};

use crate::BACKEND;
use crate::dir::io_error;
use crate::format::{self, MAX_FILE, Record, is_record_file_name};
use crate::store::Keyed;

/// A key with its canonical encoding and the name of its record file, computed once per call
/// (the name, the plaintext and the read's key check all start from the encoding).
pub(crate) struct Named<'k> {
    pub(crate) key: &'k StorageKey,
    pub(crate) encoded: String,
    pub(crate) name: String,
}

impl<'k> Named<'k> {
    pub(crate) fn new(keyed: &Keyed, key: &'k StorageKey) -> Self {
        let encoded = key.encode();
        let name = keyed.cipher.keyed_name(encoded.as_bytes());
        Named { key, encoded, name }
    }
}

/// Reads the record of `key` from its file (expired or not); `Ok(None)` when there is no file.
pub(crate) fn read_record(keyed: &Keyed, key: &Named<'_>) -> Result<Option<Record>> {
    let Some(read) = keyed.data.read(&key.name, MAX_FILE, key.key)? else {
        return Ok(None);
    };
    let record = format::open(&keyed.cipher, &key.name, &read.bytes, key.key, |embedded| {
        if embedded == key.encoded {
            Ok(Some(key.key.clone()))
        } else {
            Err(Error::Integrity {
                backend: BACKEND,
                key: key.key.to_string(),
                message: "the file holds another key's record".into(),
            })
        }
    })?;
    Ok(Some(record))
}

/// Reads the record file `name` found by listing (`None`: deleted since): its embedded key
/// must be the one its name stands for.
pub(crate) fn read_named(keyed: &Keyed, name: &str) -> Result<Option<Record>> {
    let Some(read) = keyed.data.read(name, MAX_FILE, &name)? else {
        return Ok(None);
    };
    open_named(&keyed.cipher, name, &read.bytes).map(Some)
}

fn open_named(cipher: &Cipher, name: &str, bytes: &[u8]) -> Result<Record> {
    let record = format::open(cipher, name, bytes, &name, |embedded| {
        Ok(StorageKey::decode(embedded))
    })?;
    if cipher.keyed_name(record.key.encode().as_bytes()) != name {
        return Err(Error::Integrity {
            backend: BACKEND,
            key: name.to_owned(),
            message: "the record's key does not match its file name".into(),
        });
    }
    Ok(record)
}

/// What a key's file holds, for a locked operation.
enum Current {
    /// No file.
    Absent,
    /// A record whose TTL has passed: absent, but its file is still there.
    Expired,
    /// A corrupt or tampered file (only for unconditional operations, see `current_for`).
    Unreadable,
    /// A live record.
    Live(Record),
}

impl Current {
    fn version(&self) -> Option<&Version> {
        match self {
            Current::Live(r) => Some(&r.version),
            _ => None,
        }
    }
}

/// The current record for a locked operation. An unreadable record (corrupt, tampered, or
/// not a regular file) fails a conditional operation (its version is unknown) but not an
/// unconditional one, which replaces or removes it: that is how a damaged record is cleared.
fn current_for(keyed: &Keyed, key: &Named<'_>, precondition: &Precondition) -> Result<Current> {
    match read_record(keyed, key) {
        Ok(Some(r)) if r.expired(format::now_ms()) => Ok(Current::Expired),
        Ok(Some(r)) => Ok(Current::Live(r)),
        Ok(None) => Ok(Current::Absent),
        Err(Error::Corrupt { .. } | Error::Integrity { .. })
            if *precondition == Precondition::Any =>
        {
            Ok(Current::Unreadable)
        }
        Err(e) => Err(e),
    }
}

/// A put, under the lock.
pub(crate) fn write_locked(
    keyed: &Keyed,
    key: &StorageKey,
    value: &[u8],
    options: &PutOptions,
) -> Result<Version> {
    let named = Named::new(keyed, key);
    let name = &named.name;
    // An unconditional put replaces whatever is there (even an unreadable file) without
    // looking at it.
    if options.precondition != Precondition::Any {
        let current = current_for(keyed, &named, &options.precondition)?;
        check_precondition(BACKEND, key, &options.precondition, current.version())?;
    }
    let version = Version::random()?;
    let file = format::seal(
        &keyed.cipher,
        name,
        &named.encoded,
        &version,
        format::expiry_ms(options.ttl),
        value,
    )?;
    keyed
        .data
        .replace(name, &file)
        .map_err(|e| io_error("write", &keyed.data.path_of(name), e))?;
    Ok(version)
}

/// A delete, under the lock.
pub(crate) fn remove_locked(
    keyed: &Keyed,
    key: &StorageKey,
    precondition: &Precondition,
) -> Result<bool> {
    let named = Named::new(keyed, key);
    let name = &named.name;
    let current = current_for(keyed, &named, precondition)?;
    check_precondition(BACKEND, key, precondition, current.version())?;
    if matches!(current, Current::Absent) {
        return Ok(false);
    }
    keyed
        .data
        .remove(name)
        .map_err(|e| io_error("remove", &keyed.data.path_of(name), e))?;
    Ok(!matches!(current, Current::Expired))
}

/// What a listing found: the entries to return, and expired records to sweep.
pub(crate) struct Scanned {
    pub entries: Vec<ListEntry>,
    pub expired: Vec<(String, Version)>,
}

/// Lists the keys of `kind` matching `filter`. Everything else in the record directory
/// (foreign names, damaged records, links, FIFOs, sockets, devices, directories) is reported
/// as [`ListEntry::Unreadable`] by name; nothing is followed and nothing can block.
pub(crate) fn scan_dir(keyed: &Keyed, kind: KeyKind, filter: &ListFilter) -> Result<Scanned> {
    let now = format::now_ms();
    let mut scanned = Scanned {
        entries: Vec::new(),
        expired: Vec::new(),
    };
    for name in keyed.data.names()? {
        // Temporary files of writers in flight (or of a crash, removed at the next open).
        if name.starts_with('.') {
            continue;
        }
        if !is_record_file_name(&name) {
            scanned
                .entries
                .push(unreadable(name, "not a record file of this store".into()));
            continue;
        }
        match read_named(keyed, &name) {
            // Deleted since the listing.
            Ok(None) => {}
            Ok(Some(r)) if r.expired(now) => scanned.expired.push((name, r.version)),
            Ok(Some(r)) => {
                if r.key.kind() == kind && filter.matches(&r.key) {
                    scanned.entries.push(ListEntry::Key(r.key));
                }
            }
            Err(e) => scanned.entries.push(unreadable(name, e.to_string())),
        }
    }
    Ok(scanned)
}

fn unreadable(location: String, reason: String) -> ListEntry {
    tracing::warn!(entry = %location, %reason, "skipping an unreadable entry of the file store");
    ListEntry::Unreadable { location, reason }
}

/// Removes the records found expired by a scan, unless they were rewritten since.
pub(crate) fn sweep_locked(keyed: &Keyed, expired: &[(String, Version)]) -> Result<()> {
    let now = format::now_ms();
    for (name, version) in expired {
        if let Ok(Some(r)) = read_named(keyed, name)
            && r.version == *version
            && r.expired(now)
        {
            keyed
                .data
                .remove(name)
                .map_err(|e| io_error("remove", &keyed.data.path_of(name), e))?;
        }
    }
    Ok(())
}
