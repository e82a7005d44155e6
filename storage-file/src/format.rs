//! The bytes on disk: the `store.json` header and the record files (see the crate docs for
//! the layout; this module is its only reader and writer).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use token_store_core::backend::{Cipher, KeyHeader};
use token_store_core::{Error, MAX_ENCODED_KEY_LEN, Result, SecretBytes, StorageKey, Version};
use zeroize::Zeroizing;

use crate::BACKEND;

/// The first bytes of every record file: `TSF` and the file format byte.
pub(crate) const FILE_MAGIC: &[u8; 4] = b"TSF\x01";
const FILE_MAGIC_PREFIX: &[u8; 3] = b"TSF";
/// The layout of the decrypted plaintext.
const RECORD_FORMAT: u8 = 1;
/// The name of the header file in the store directory.
pub(crate) const HEADER_FILE: &str = "store.json";
/// The name of the lock file in the store directory.
pub(crate) const LOCK_FILE: &str = ".lock";
const HEADER_MAGIC: &str = "token-store-file";
const HEADER_FORMAT: u32 = 1;
/// The prefix of record directory names (`d-` and 32 hex digits).
pub(crate) const RECORD_DIR_PREFIX: &str = "d-";
/// The largest value a record holds.
pub(crate) const MAX_VALUE: usize = crate::MAX_VALUE_SIZE;
/// No record file can be longer than this; longer files are rejected before being read.
pub(crate) const MAX_FILE: usize = MAX_VALUE + MAX_ENCODED_KEY_LEN + 4096;
/// No `store.json` is longer than this (it is a few hundred bytes); longer ones are refused
/// unread.
pub(crate) const MAX_HEADER: usize = 64 * 1024;

/// `store.json`: which key opens the store and which directory holds its records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoreHeader {
    pub magic: String,
    pub format: u32,
    /// The record directory of the current key, `d-<32 hex>`. Changed only by a re-key, in
    /// the same atomic replacement of this file that changes `key`.
    pub records: String,
    pub key: KeyHeader,
}

impl StoreHeader {
    pub(crate) fn new(records: String, key: KeyHeader) -> Self {
        StoreHeader {
            magic: HEADER_MAGIC.to_owned(),
            format: HEADER_FORMAT,
            records,
            key,
        }
    }

    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| {
            Error::backend(BACKEND, format!("cannot encode {HEADER_FILE}: {e}"), None)
        })?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    pub(crate) fn parse(bytes: &[u8]) -> Result<Self> {
        let header: StoreHeader =
            serde_json::from_slice(bytes).map_err(|e| corrupt_header(format!("not JSON: {e}")))?;
        if header.magic != HEADER_MAGIC {
            return Err(corrupt_header("not a token-store file store header".into()));
        }
        if header.format != HEADER_FORMAT {
            return Err(Error::config(format!(
                "{HEADER_FILE} has format {}, this version reads format {HEADER_FORMAT}",
                header.format
            )));
        }
        // The name becomes a path: a tampered header must not point outside the store.
        if !is_record_dir_name(&header.records) {
            return Err(corrupt_header("bad record directory name".into()));
        }
        Ok(header)
    }
}

fn corrupt_header(message: String) -> Error {
    Error::Corrupt {
        backend: BACKEND,
        key: HEADER_FILE.to_owned(),
        message,
        source: None,
    }
}

/// Whether `name` is a record directory name (`d-` and 32 lowercase hex digits).
pub(crate) fn is_record_dir_name(name: &str) -> bool {
    name.strip_prefix(RECORD_DIR_PREFIX)
        .is_some_and(|h| h.len() == 32 && is_lower_hex(h))
}

/// Whether `name` is one of the store's own entries in the store directory (the lock file,
/// the header, record directories, temporary files): what may be there when the store
/// narrows the directory's mode.
pub(crate) fn is_store_entry(name: &str) -> bool {
    name == LOCK_FILE
        || name == HEADER_FILE
        || is_record_dir_name(name)
        || name.starts_with(".tmp-")
}

/// Whether `name` can be a record file name (64 lowercase hex digits, a keyed name).
pub(crate) fn is_record_file_name(name: &str) -> bool {
    name.len() == 64 && is_lower_hex(name)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A decrypted record.
pub(crate) struct Record {
    pub key: StorageKey,
    pub version: Version,
    /// Unix milliseconds; 0 means no expiry.
    pub expires_ms: u64,
    pub value: SecretBytes,
}

impl Record {
    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now_ms
    }

    pub(crate) fn expires_at(&self) -> Option<SystemTime> {
        (self.expires_ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(self.expires_ms))
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

/// The expiry of a record written now with `ttl`, in Unix milliseconds (0: none).
pub(crate) fn expiry_ms(ttl: Option<Duration>) -> u64 {
    match ttl {
        // Never 0, which means "no expiry": a zero TTL expires at once.
        Some(ttl) => to_ms(SystemTime::now() + ttl).max(1),
        None => 0,
    }
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(1)
}

/// The associated data of a record file: the file magic and the file name, so a file is
/// bound to its format and to its name (and through the keyed name, to its key).
fn aad(name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(FILE_MAGIC.len() + name.len());
    aad.extend_from_slice(FILE_MAGIC);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// The bytes of the record file `name`.
pub(crate) fn seal(
    cipher: &Cipher,
    name: &str,
    encoded_key: &str,
    version: &Version,
    expires_ms: u64,
    value: &[u8],
) -> Result<Vec<u8>> {
    let version = version.as_str().as_bytes();
    let mut plain = Zeroizing::new(Vec::with_capacity(
        1 + 4 + encoded_key.len() + 4 + version.len() + 8 + 4 + value.len(),
    ));
    plain.push(RECORD_FORMAT);
    put_bytes(&mut plain, encoded_key.as_bytes())?;
    put_bytes(&mut plain, version)?;
    plain.extend_from_slice(&expires_ms.to_le_bytes());
    put_bytes(&mut plain, value)?;
    let sealed = cipher.seal(&aad(name), &plain)?;
    let mut file = Vec::with_capacity(FILE_MAGIC.len() + sealed.len());
    file.extend_from_slice(FILE_MAGIC);
    file.extend_from_slice(&sealed);
    Ok(file)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| Error::invalid_input("a record field is longer than 4 GiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Decrypts and decodes the record file `name`. `label` names it in errors (the storage key
/// when the caller knows it, else the file name); it is only formatted for an error.
/// `embedded` turns the key the record holds (encoded) into the record's key, `None` when it
/// is undecodable: a listing decodes it, a read of a known key compares it with that key's
/// encoding instead (the encoding is canonical, so equal encodings are equal keys) and skips
/// decoding.
pub(crate) fn open(
    cipher: &Cipher,
    name: &str,
    file: &[u8],
    label: &dyn std::fmt::Display,
    embedded: impl FnOnce(&str) -> Result<Option<StorageKey>>,
) -> Result<Record> {
    let corrupt = |message: &str| Error::Corrupt {
        backend: BACKEND,
        key: label.to_string(),
        message: message.to_owned(),
        source: None,
    };
    if file.is_empty() {
        return Err(corrupt("empty file"));
    }
    if file.len() < FILE_MAGIC.len() || !file.starts_with(FILE_MAGIC_PREFIX) {
        return Err(corrupt("not a token-store record file"));
    }
    if file[3] != FILE_MAGIC[3] {
        return Err(corrupt(&format!(
            "record file format {} is not understood by this version",
            file[3]
        )));
    }
    let mut plain = cipher
        .open(&aad(name), &file[FILE_MAGIC.len()..])
        .map_err(|e| e.into_error(BACKEND, label.to_string()))?;
    let mut r = Reader(&plain);
    let format = r.take(1).ok_or_else(|| corrupt("empty plaintext"))?[0];
    if format != RECORD_FORMAT {
        return Err(corrupt(&format!(
            "record format {format} is not understood by this version"
        )));
    }
    let undecodable = || corrupt("undecodable record");
    let encoded_key =
        std::str::from_utf8(r.field().ok_or_else(undecodable)?).map_err(|_| undecodable())?;
    let key = embedded(encoded_key)?.ok_or_else(undecodable)?;
    let version =
        std::str::from_utf8(r.field().ok_or_else(undecodable)?).map_err(|_| undecodable())?;
    let expires: [u8; 8] = r
        .take(8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(undecodable)?;
    let value_len = r.field().ok_or_else(undecodable)?.len();
    if !r.0.is_empty() {
        return Err(undecodable());
    }
    let version = Version::new(version);
    // The value is the plaintext's last field: the plaintext buffer becomes the value (its
    // header moved out of the way) instead of being copied and wiped twice. What the move
    // leaves past the end stays in the buffer's capacity, which the wipe covers.
    let start = plain.len() - value_len;
    plain.drain(..start);
    Ok(Record {
        key,
        version,
        expires_ms: u64::from_le_bytes(expires),
        value: plain,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        self.take(usize::try_from(len).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_store_core::KeyKind;

    fn cipher(b: u8) -> Cipher {
        Cipher::from_master(&[b; 32])
    }

    fn decoded(embedded: &str) -> Result<Option<StorageKey>> {
        Ok(StorageKey::decode(embedded))
    }

    #[test]
    fn round_trip_and_binding() {
        let c = cipher(1);
        let key = StorageKey::single(KeyKind::Meta, "k").unwrap();
        let name = c.keyed_name(key.encode().as_bytes());
        let v = Version::new("abc");
        let file = seal(&c, &name, &key.encode(), &v, 42, b"value").unwrap();
        let r = open(&c, &name, &file, &"x", decoded).unwrap();
        assert_eq!(r.key, key);
        // What the embedded key becomes is the caller's: a read of a known key compares.
        let refused = open(&c, &name, &file, &"x", |embedded| {
            assert_eq!(embedded, key.encode());
            Err(Error::invalid_key("another key"))
        });
        assert!(matches!(refused, Err(Error::InvalidKey { .. })));
        assert_eq!(r.version, v);
        assert_eq!(r.expires_ms, 42);
        assert_eq!(r.value.as_slice(), b"value");
        let other = "0".repeat(64);
        assert!(matches!(
            open(&c, &other, &file, &"x", decoded),
            Err(Error::Integrity { .. })
        ));
        assert!(matches!(
            open(&cipher(2), &name, &file, &"x", decoded),
            Err(Error::Integrity { .. })
        ));
        assert!(matches!(
            open(&c, &name, b"", &"x", decoded),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            open(&c, &name, &file[..10], &"x", decoded),
            Err(Error::Corrupt { .. })
        ));
        let mut future = file.clone();
        future[3] = 9;
        assert!(matches!(
            open(&c, &name, &future, &"x", decoded),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn a_value_of_any_length_opens_as_exactly_itself() {
        // The plaintext buffer becomes the value: every length must come out whole, with
        // nothing of the header before it.
        let c = cipher(3);
        let key = StorageKey::single(KeyKind::Meta, "k").unwrap();
        let name = c.keyed_name(key.encode().as_bytes());
        for len in [0, 1, 15, 16, 17, 255, 1600, 70_000] {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let file = seal(&c, &name, &key.encode(), &Version::new("v"), 0, &value).unwrap();
            let r = open(&c, &name, &file, &"x", decoded).unwrap();
            assert_eq!(r.value.as_slice(), value.as_slice(), "length {len}");
            assert_eq!(r.version, Version::new("v"));
        }
    }

    #[test]
    fn names() {
        assert!(is_record_dir_name(&format!("d-{}", "a".repeat(32))));
        assert!(!is_record_dir_name("d-../../etc"));
        assert!(!is_record_file_name("store.json"));
        assert!(is_record_file_name(&"f".repeat(64)));
    }
}
