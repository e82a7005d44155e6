//! Helpers shared by the file store's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use token_store_core::backend::Cipher;
use token_store_core::{KdfParams, KeySource, RawStore, Result, StorageKey};
use token_store_file::{FileConfig, FileStore};

/// The cheapest Argon2id parameters a store accepts, so tests run fast; the defaults are
/// checked separately.
pub const FAST: KdfParams = KdfParams::MINIMUM;

pub fn config(dir: &Path, key: KeySource) -> FileConfig {
    FileConfig::new(dir, key).with_kdf_params(FAST)
}

pub async fn open(dir: &Path, key: KeySource) -> Result<FileStore> {
    FileStore::open(&config(dir, key)).await
}

/// [`open`] as a `'static` future, to run on a thread or runtime of its own.
pub async fn open_owned(dir: PathBuf, key: KeySource) -> Result<FileStore> {
    open(&dir, key).await
}

pub fn pass(p: &str) -> KeySource {
    KeySource::passphrase(p)
}

/// Every regular file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The record files (64 hex digits) of the store in `dir`.
pub fn record_files(dir: &Path) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect()
}

pub fn arc(store: FileStore) -> Arc<dyn RawStore> {
    Arc::new(store)
}

/// Writes `bytes` to `path` as a private (0600) file, as a key or passphrase file must be.
pub fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::fs::write(path, bytes).unwrap();
    assert_eq!(
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The cipher of the key-file store in `dir` (bound to its store id, as its records are) and
/// its record directory, read from `store.json`: what is needed to find or forge a record.
pub fn store_cipher(dir: &Path, key_file: &Path) -> (Cipher, PathBuf) {
    let master: [u8; 32] = std::fs::read(key_file).unwrap().try_into().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("store.json")).unwrap()).unwrap();
    let id = header["key"]["store_id"].as_str().unwrap();
    let id: Vec<u8> = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap())
        .collect();
    let records = dir.join(header["records"].as_str().unwrap());
    (Cipher::from_master(&master).bound_to_store(&id), records)
}

/// The path of `key`'s record file in the key-file store in `dir`.
pub fn record_path(dir: &Path, key_file: &Path, key: &StorageKey) -> PathBuf {
    let (cipher, records) = store_cipher(dir, key_file);
    records.join(cipher.keyed_name(key.encode().as_bytes()))
}
