//! `store.json`: reading and replacing it, noticing cheaply when another handle replaced it
//! (a re-key), and opening a store through it: creating a new store, or checking the key
//! against an existing one; then removing what a crash left behind.

use std::fs::File;
use std::io;
use std::sync::{Mutex, MutexGuard};

use token_store_core::backend::{KeyHeader, fill_random, hex};
use token_store_core::{Error, KdfParams, KeySource, Result};

use crate::BACKEND;
use crate::dir::{Dir, FileId, ReadFile, io_error};
use crate::format::{HEADER_FILE, MAX_HEADER, RECORD_DIR_PREFIX, StoreHeader, is_record_dir_name};
use crate::lock::FileLock;
use crate::store::Keyed;

/// Reads `store.json`; `None` when there is none.
pub(crate) fn read_header(dir: &Dir) -> Result<Option<StoreHeader>> {
    match dir.read(HEADER_FILE, MAX_HEADER, &HEADER_FILE)? {
        Some(read) => StoreHeader::parse(&read.bytes).map(Some),
        None => Ok(None),
    }
}

/// Replaces `store.json` atomically and durably: the commit point of creating and of
/// re-keying a store.
pub(crate) fn write_header(dir: &Dir, header: &StoreHeader) -> Result<()> {
    dir.replace(HEADER_FILE, &header.to_bytes()?)
        .map_err(|e| io_error("write", &dir.path_of(HEADER_FILE), e))
}

pub(crate) fn missing_header() -> Error {
    Error::Corrupt {
        backend: BACKEND,
        key: HEADER_FILE.to_owned(),
        message: "the store header was removed".into(),
        source: None,
    }
}

/// The record directory `store.json` named when last read, so that checking it again is one
/// `stat` while it is the same file.
pub(crate) struct HeaderCache(Mutex<Option<CachedHeader>>);

struct CachedHeader {
    /// Held open so the file's inode stays allocated: while it is, no later `store.json`
    /// can get its inode number, so an equal [`FileId`] means this very file.
    _file: File,
    id: FileId,
    records: String,
}

impl HeaderCache {
    pub(crate) fn new() -> Self {
        HeaderCache(Mutex::new(None))
    }

    fn lock(&self) -> MutexGuard<'_, Option<CachedHeader>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `store.json` in `dir` still names the record directory `records` (no re-key
    /// replaced it).
    ///
    /// One `stat` when it is the file read last time; a changed file is read and parsed
    /// again. A missing or unreadable header is an error, as when it was read every time.
    pub(crate) fn still_names(&self, dir: &Dir, records: &str) -> Result<bool> {
        let id = match dir.file_id(HEADER_FILE) {
            Ok(id) => id,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing_header()),
            Err(e) => return Err(io_error("stat", &dir.path_of(HEADER_FILE), e)),
        };
        if let Some(id) = id
            && let Some(cached) = self.lock().as_ref()
            && cached.id == id
        {
            return Ok(cached.records == records);
        }
        let Some(ReadFile { file, id, bytes }) = dir.read(HEADER_FILE, MAX_HEADER, &HEADER_FILE)?
        else {
            return Err(missing_header());
        };
        let header = StoreHeader::parse(&bytes)?;
        let current = header.records == records;
        // The identity of the file read, taken before reading it (not the one above, which
        // may be an older file): a change since makes the next check read it again.
        *self.lock() = id.map(|id| CachedHeader {
            _file: file,
            id,
            records: header.records,
        });
        Ok(current)
    }
}

/// Creates the store in `dir` or derives its key; returns what the key opens.
pub(crate) fn unlock_or_create(
    dir: &Dir,
    lock_file: &File,
    key: &KeySource,
    params: KdfParams,
) -> Result<Keyed> {
    loop {
        let Some(header) = read_header(dir)? else {
            let _flock = FileLock::acquire(lock_file, dir)?;
            if read_header(dir)?.is_some() {
                // Another process created the store meanwhile: open theirs.
                continue;
            }
            return create(dir, key, params);
        };
        if let Some(p) = header.key.params
            && p.check().is_err()
        {
            tracing::warn!(
                dir = %dir.path().display(),
                "this store's Argon2id parameters are below the recommended minimum; re-key it"
            );
        }
        // Argon2id without the lock: other processes keep writing meanwhile.
        let cipher = header.key.unlock(BACKEND, key)?;
        let _flock = FileLock::acquire(lock_file, dir)?;
        match read_header(dir)? {
            Some(now) if now.records == header.records => {}
            // Re-keyed between our read and the lock: derive again from the new header.
            _ => continue,
        }
        let Some(data) = dir.subdir(&header.records)? else {
            return Err(Error::Corrupt {
                backend: BACKEND,
                key: HEADER_FILE.to_owned(),
                message: format!("its record directory {} is missing", header.records),
                source: None,
            });
        };
        cleanup(dir, &header.records, &data);
        return Ok(Keyed::new(cipher, header.records, data));
    }
}

/// Creates a new store in `dir`, under the lock.
fn create(dir: &Dir, key: &KeySource, params: KdfParams) -> Result<Keyed> {
    // Records without a header are a damaged store, not an empty one: creating a new store
    // here would let cleanup() delete every record.
    if let Some(orphan) = existing_record_dir(dir)? {
        return Err(Error::Corrupt {
            backend: BACKEND,
            key: HEADER_FILE.to_owned(),
            message: format!(
                "{HEADER_FILE} is missing but record directory {orphan} exists; \
                 restore {HEADER_FILE} from a backup (records cannot be read without it)"
            ),
            source: None,
        });
    }
    let (key_header, cipher) = KeyHeader::create(key, params)?;
    let records = new_record_dir_name()?;
    let data = dir.create_subdir(&records)?;
    dir.sync().map_err(|e| io_error("sync", dir.path(), e))?;
    write_header(dir, &StoreHeader::new(records.clone(), key_header))?;
    cleanup(dir, &records, &data);
    tracing::debug!(dir = %dir.path().display(), "created a file store");
    Ok(Keyed::new(cipher, records, data))
}

/// A new record directory name, `d-` and 32 random hex digits.
pub(crate) fn new_record_dir_name() -> Result<String> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    Ok(format!("{RECORD_DIR_PREFIX}{}", hex(&bytes)))
}

/// The name of a record directory in `dir`, if there is one.
fn existing_record_dir(dir: &Dir) -> Result<Option<String>> {
    Ok(dir.names()?.into_iter().find(|n| is_record_dir_name(n)))
}

/// Removes what a crash can leave behind: record directories other than `current` (a re-key
/// that did not commit, or the old directory of one that did) and temporary files. Called
/// with the lock held, so no writer's temporary file is removed under it.
pub(crate) fn cleanup(dir: &Dir, current: &str, data: &Dir) {
    let leftover = |name: &str| name.starts_with(".tmp-");
    let result = remove_all(dir, |n| {
        leftover(n) || (is_record_dir_name(n) && n != current)
    })
    .and_then(|()| remove_all(data, leftover));
    if let Err(e) = result {
        // Leftovers are garbage, not data: failing to remove them must not fail the store.
        tracing::warn!(dir = %dir.path().display(), error = %e, "could not remove leftover files");
    }
}

/// Removes the entries of `dir` that `doomed` picks, then syncs it if it changed.
fn remove_all(dir: &Dir, doomed: impl Fn(&str) -> bool) -> Result<()> {
    let mut changed = false;
    for name in dir.names()?.into_iter().filter(|n| doomed(n)) {
        dir.remove_tree(&name)
            .map_err(|e| io_error("remove", &dir.path_of(&name), e))?;
        changed = true;
    }
    if changed {
        dir.sync().map_err(|e| io_error("sync", dir.path(), e))?;
    }
    Ok(())
}
