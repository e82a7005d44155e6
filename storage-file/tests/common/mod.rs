//! Helpers shared by the file store's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use token_store_core::crypto::{KdfParams, KeySource};
use token_store_core::{RawStore, Result};
use token_store_file::FileStore;

/// Argon2id parameters that make tests fast; the real floor is checked separately.
pub const FAST: KdfParams = KdfParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

pub async fn open(dir: &Path, key: KeySource) -> Result<FileStore> {
    FileStore::open_insecure_for_tests(dir, key, FAST).await
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
