//! Re-keying: every record re-encrypted into a new record directory, then one atomic
//! replacement of `store.json` switches key and directory together.

use token_store_core::backend::{Cipher, KeyHeader};
use token_store_core::{Error, KeySource, Result};

use crate::BACKEND;
use crate::dir::{Dir, io_error};
use crate::format::{self, StoreHeader, is_record_file_name};
use crate::header::{cleanup, new_record_dir_name, read_header, write_header};
use crate::records::read_named;
use crate::store::{FileStore, Inner, Keyed, blocking};

impl FileStore {
    /// Re-encrypts every record under `new_key` and makes it the store's key; returns how
    /// many records were re-encrypted (expired ones are dropped).
    ///
    /// Crash-safe: the records are written under the new key into a new record directory,
    /// and one atomic replacement of `store.json` switches key and directory together. A
    /// crash before it leaves the store as it was (old key), after it the new store (new
    /// key); either way nothing is lost, and the next open removes the leftover directory.
    /// Writers in every process wait during the re-key. Other open handles (this process
    /// or others) fail with [`Error::WrongKey`] afterwards and must be reopened.
    ///
    /// An unreadable record (corrupt, tampered, not a regular file) or a foreign file among
    /// the records stops the re-key before anything changes: delete it first (it would be
    /// lost otherwise).
    pub async fn rekey(&self, new_key: KeySource) -> Result<usize> {
        let params = self.inner.params;
        let (key_header, cipher) = blocking(move || KeyHeader::create(&new_key, params)).await?;
        self.locked(move |inner, keyed| inner.rekey(keyed, key_header, cipher))
            .await
    }
}

impl Inner {
    fn rekey(&self, old: &Keyed, key_header: KeyHeader, cipher: Cipher) -> Result<usize> {
        let records = new_record_dir_name()?;
        let new_dir = self.dir.create_subdir(&records)?;
        let count = match copy_reencrypted(old, &cipher, &new_dir) {
            Ok(n) => n,
            Err(e) => {
                let _ = self.dir.remove_tree(&records);
                return Err(e);
            }
        };
        // The commit point: one rename switches key and record directory together.
        let header = StoreHeader::new(records.clone(), key_header);
        if let Err(e) = write_header(&self.dir, &header) {
            // The rename may have happened before the failure (a failed directory fsync):
            // then the new directory is the store and must stay.
            let committed = read_header(&self.dir)
                .ok()
                .flatten()
                .is_some_and(|h| h.records == records);
            if !committed {
                let _ = self.dir.remove_tree(&records);
                return Err(e);
            }
            tracing::warn!(dir = %self.dir.path().display(), error = %e, "re-key committed, but syncing the directory failed");
        }
        self.set_keyed(Keyed::new(cipher, records.clone(), new_dir));
        cleanup(&self.dir, &records, &self.keyed().data);
        tracing::info!(dir = %self.dir.path().display(), records = count, "re-keyed the file store");
        Ok(count)
    }
}

/// Writes every live record of `old` into `new_dir`, sealed with `cipher`; durable on return.
fn copy_reencrypted(old: &Keyed, cipher: &Cipher, new_dir: &Dir) -> Result<usize> {
    let now = format::now_ms();
    let mut count = 0;
    for name in old.data.names()? {
        if name.starts_with('.') {
            continue;
        }
        if !is_record_file_name(&name) {
            return Err(Error::Corrupt {
                backend: BACKEND,
                key: name,
                message: "a foreign file is among the records; move it away before re-keying"
                    .into(),
                source: None,
            });
        }
        let Some(record) = read_named(old, &name)? else {
            continue;
        };
        if record.expired(now) {
            continue;
        }
        let encoded = record.key.encode();
        let new_name = cipher.keyed_name(encoded.as_bytes());
        let sealed = format::seal(
            cipher,
            &new_name,
            &encoded,
            &record.version,
            record.expires_ms,
            &record.value,
        )?;
        new_dir
            .create(&new_name, &sealed)
            .map_err(|e| io_error("write", &new_dir.path_of(&new_name), e))?;
        count += 1;
    }
    new_dir
        .sync()
        .map_err(|e| io_error("sync", new_dir.path(), e))?;
    Ok(count)
}
