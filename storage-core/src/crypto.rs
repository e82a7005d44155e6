//! Encryption shared by the encryption layer and the encrypted-file backend.
//!
//! - A 32-byte master key comes from a raw key, a key file, or a passphrase through Argon2id
//!   (parameters and salt kept in a [`KeyHeader`] beside the data, so they can be raised later).
//!   It is derived once per open and zeroized on drop.
//! - Two subkeys are derived from it with HMAC-SHA-256: one for XChaCha20-Poly1305, one for
//!   keyed names ([`Cipher::keyed_name`]) so that file names reveal nothing.
//! - Every sealed value is bound to its storage key through the AEAD associated data: a value
//!   copied or moved to another key fails to open.
//! - A key check value in the header makes a wrong passphrase a clear error at open time.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Magic and format byte at the start of every sealed value.
const SEALED_MAGIC: &[u8; 4] = b"TSE\x01";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const SEAL_OVERHEAD: usize = SEALED_MAGIC.len() + NONCE_LEN + TAG_LEN;

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Backend {
        backend: "crypto",
        message: format!("the system random source failed: {e}"),
        source: None,
    })
}

/// Lower-case hex of `bytes`: versions, keyed file names, random ids. One allocation, no
/// per-byte formatting (it is on the read path of several backends).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// OWASP's first recommended Argon2id setting (m=19 MiB, t=2, p=1), the floor we accept.
    pub const MINIMUM: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    /// What new stores use: m=64 MiB, t=3, p=1 (about 0.2 s on a small server).
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };

    /// The most a key header may ask for: twice the default memory and passes, four lanes
    /// (at most about four times the default's cost). The header is stored beside the data
    /// without authentication, so whoever can write it (a co-tenant of a shared Redis prefix)
    /// must not be able to make every opener spend gigabytes and seconds before failing.
    pub const MAXIMUM: KdfParams = KdfParams {
        m_kib: 2 * 64 * 1024,
        t: 2 * 3,
        p: 4,
    };

    /// Refuses parameters below [`KdfParams::MINIMUM`] (a new store must not get a weak key)
    /// or above [`KdfParams::MAXIMUM`].
    pub fn check(&self) -> Result<()> {
        let min = Self::MINIMUM;
        if self.m_kib < min.m_kib || self.t < min.t || self.p < min.p {
            return Err(Error::config(format!(
                "Argon2id parameters m={} KiB, t={}, p={} are below the minimum m={} KiB, t={}, p={}",
                self.m_kib, self.t, self.p, min.m_kib, min.t, min.p
            )));
        }
        self.check_upper_bound()
    }

    fn check_upper_bound(&self) -> Result<()> {
        let max = Self::MAXIMUM;
        if self.m_kib > max.m_kib || self.t > max.t || self.p > max.p {
            return Err(Error::config(format!(
                "Argon2id parameters m={} KiB, t={}, p={} are above the maximum m={} KiB, t={}, p={}",
                self.m_kib, self.t, self.p, max.m_kib, max.t, max.p
            )));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where the master key comes from.
#[derive(Clone)]
#[non_exhaustive]
pub enum KeySource {
    /// A raw 32-byte key.
    Raw(Zeroizing<[u8; 32]>),
    /// A file holding 32 raw bytes (created 0600 with a random key when missing).
    KeyFile(PathBuf),
    /// A passphrase, stretched with Argon2id.
    Passphrase(SecretString),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Raw(_) => f.write_str("KeySource::Raw([REDACTED])"),
            KeySource::KeyFile(p) => write!(f, "KeySource::KeyFile({})", p.display()),
            KeySource::Passphrase(_) => f.write_str("KeySource::Passphrase([REDACTED])"),
        }
    }
}

impl KeySource {
    /// A raw 32-byte key (moved into zeroizing storage).
    pub fn raw(key: [u8; 32]) -> Self {
        KeySource::Raw(Zeroizing::new(key))
    }

    /// A passphrase source.
    pub fn passphrase(passphrase: impl Into<String>) -> Self {
        KeySource::Passphrase(SecretString::from(passphrase.into()))
    }

    /// The passphrase held in a file, read with the checks of a private key (not a symbolic
    /// link, a regular file owned by this user, mode 0600 or stricter, at most 4 KiB);
    /// surrounding whitespace and a trailing newline are not part of it.
    pub fn passphrase_file(path: &Path) -> Result<Self> {
        let bytes = crate::fs::read_private_file(path, 4096, "passphrase file")?;
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::config(format!(
                "passphrase file {} is not UTF-8 text",
                path.display()
            ))
        })?;
        let passphrase = text.trim();
        if passphrase.is_empty() {
            return Err(Error::config(format!(
                "passphrase file {} is empty",
                path.display()
            )));
        }
        Ok(Self::passphrase(passphrase))
    }

    /// `TOKEN_STORE_PASSPHRASE`, else `TOKEN_STORE_KEY_FILE`, else `None`.
    pub fn from_env() -> Option<Self> {
        if let Ok(p) = std::env::var("TOKEN_STORE_PASSPHRASE")
            && !p.is_empty()
        {
            return Some(Self::passphrase(p));
        }
        std::env::var_os("TOKEN_STORE_KEY_FILE")
            .filter(|p| !p.is_empty())
            .map(|p| KeySource::KeyFile(PathBuf::from(p)))
    }

    fn kdf_name(&self) -> &'static str {
        match self {
            KeySource::Passphrase(_) => "argon2id",
            KeySource::Raw(_) | KeySource::KeyFile(_) => "raw",
        }
    }
}

/// Reads a 32-byte key file, creating it (0600, random key) when it does not exist.
pub fn read_or_create_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            let buf = crate::fs::read_private_file(path, 32, "key file")?;
            if buf.len() != 32 {
                return Err(Error::config(format!(
                    "key file {} holds {} bytes, not 32",
                    path.display(),
                    buf.len()
                )));
            }
            key.copy_from_slice(&buf);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fill_random(key.as_mut())?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::fs::create_private_dir(dir)?;
            }
            let mut file =
                crate::fs::create_private_file(path).map_err(|e| key_file_error(path, e))?;
            file.write_all(key.as_ref())
                .map_err(|e| key_file_error(path, e))?;
            file.sync_all().map_err(|e| key_file_error(path, e))?;
        }
        Err(e) => return Err(key_file_error(path, e)),
    }
    Ok(key)
}

fn key_file_error(path: &Path, e: std::io::Error) -> Error {
    Error::Config {
        message: format!("cannot use key file {}", path.display()),
        source: Some(Box::new(e)),
    }
}

/// The non-secret description of how a store's key is derived, kept beside the data.
///
/// Format 2 adds a random store id that every sealed value and the key check are bound to
/// (through the AEAD associated data): a record copied from another store that shares the
/// key file fails as [`Error::Integrity`], and a header whose id was changed fails as
/// [`Error::WrongKey`]. Format 1 headers (no id) still open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyHeader {
    /// Header format version.
    pub format: u32,
    /// `"argon2id"` or `"raw"`.
    pub kdf: String,
    /// Argon2id parameters (for `argon2id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<KdfParams>,
    /// Argon2id salt, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// A sealed constant: opens only with the right key.
    pub check: String,
    /// The store's random id, hex (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
}

/// The header format new stores get.
const HEADER_FORMAT: u32 = 2;

const KEY_CHECK_AAD: &[u8] = b"token-store/key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"token-store key check v1";

impl KeyHeader {
    /// Derives a new key from `source` (a fresh salt for passphrases) for a new store with a
    /// fresh store id, and describes it. Passphrase parameters must pass
    /// [`KdfParams::check`].
    pub fn create(source: &KeySource, params: KdfParams) -> Result<(KeyHeader, Cipher)> {
        let (salt, params) = match source {
            KeySource::Passphrase(_) => {
                params.check()?;
                let mut salt = [0u8; 16];
                fill_random(&mut salt)?;
                (Some(salt.to_vec()), Some(params))
            }
            _ => (None, None),
        };
        let mut id = [0u8; 16];
        fill_random(&mut id)?;
        let cipher = Cipher::from_master(&*derive_master(source, params, salt.as_deref())?)
            .bound_to_store(&id);
        let check = cipher.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)?;
        let header = KeyHeader {
            format: HEADER_FORMAT,
            kdf: source.kdf_name().to_owned(),
            params,
            salt: salt.as_deref().map(hex),
            check: hex(&check),
            store_id: Some(hex(&id)),
        };
        Ok((header, cipher))
    }

    /// Derives the key from `source` as this header says and checks it.
    pub fn unlock(&self, backend: &'static str, source: &KeySource) -> Result<Cipher> {
        let store_id = match (self.format, &self.store_id) {
            (1, None) => None,
            (2, Some(id)) => Some(unhex(id).ok_or_else(|| corrupt_header(backend, "store id"))?),
            (1 | 2, _) => return Err(corrupt_header(backend, "store id")),
            (format, _) => {
                return Err(Error::config(format!(
                    "key header format {format} is newer than this version understands"
                )));
            }
        };
        if self.kdf != source.kdf_name() {
            return Err(Error::config(format!(
                "this store is keyed by {}, but a {} key was given",
                if self.kdf == "raw" {
                    "a key file"
                } else {
                    "a passphrase"
                },
                if source.kdf_name() == "raw" {
                    "key file"
                } else {
                    "passphrase"
                },
            )));
        }
        let salt = match &self.salt {
            Some(s) => Some(unhex(s).ok_or_else(|| corrupt_header(backend, "salt"))?),
            None => None,
        };
        if let Some(p) = self.params
            && p.check_upper_bound().is_err()
        {
            // A tampered header must not make us allocate or spin without bound.
            return Err(corrupt_header(
                backend,
                "Argon2id parameters above the maximum",
            ));
        }
        let mut cipher =
            Cipher::from_master(&*derive_master(source, self.params, salt.as_deref())?);
        if let Some(id) = &store_id {
            cipher = cipher.bound_to_store(id);
        }
        let check = unhex(&self.check).ok_or_else(|| corrupt_header(backend, "key check"))?;
        match cipher.open(KEY_CHECK_AAD, &check) {
            Ok(pt) if pt.as_slice() == KEY_CHECK_PLAINTEXT => Ok(cipher),
            _ => Err(Error::WrongKey { backend }),
        }
    }
}

fn corrupt_header(backend: &'static str, what: &str) -> Error {
    Error::Corrupt {
        backend,
        key: "key header".to_owned(),
        message: format!("bad {what}"),
        source: None,
    }
}

fn derive_master(
    source: &KeySource,
    params: Option<KdfParams>,
    salt: Option<&[u8]>,
) -> Result<Zeroizing<[u8; 32]>> {
    match source {
        KeySource::Raw(k) => Ok(k.clone()),
        KeySource::KeyFile(path) => read_or_create_key_file(path),
        KeySource::Passphrase(pass) => {
            let p = params.unwrap_or_default();
            let salt = salt.ok_or_else(|| Error::config("a passphrase needs a salt"))?;
            let argon = argon2::Argon2::new(
                argon2::Algorithm::Argon2id,
                argon2::Version::V0x13,
                argon2::Params::new(p.m_kib, p.t, p.p, Some(32))
                    .map_err(|e| Error::config(format!("Argon2id parameters: {e}")))?,
            );
            let mut out = Zeroizing::new([0u8; 32]);
            argon
                .hash_password_into(pass.expose_secret().as_bytes(), salt, out.as_mut())
                .map_err(|e| Error::config(format!("Argon2id: {e}")))?;
            Ok(out)
        }
    }
}

type HmacSha256 = Hmac<sha2::Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// An unlocked store key: seals and opens values, and derives keyed names.
///
/// The AEAD key lives in the cipher state of `chacha20poly1305` (built with its `zeroize`
/// feature, so it is wiped on drop) and is never copied to an unzeroized stack buffer.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
    name_key: Zeroizing<[u8; 32]>,
    /// Prefix of every associated data: empty, or the store id (format 2 headers).
    context: Vec<u8>,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher([REDACTED])")
    }
}

impl Cipher {
    /// A cipher from a 32-byte master key, bound to no store.
    pub fn from_master(master: &[u8; 32]) -> Self {
        let enc = Zeroizing::new(hmac(master, &[b"token-store/v1/encryption"]));
        let name_key = Zeroizing::new(hmac(master, &[b"token-store/v1/names"]));
        // new_from_slice reads the key in place: `Key::from(*enc)` would leave a copy on the
        // stack that nothing wipes.
        let aead = XChaCha20Poly1305::new_from_slice(enc.as_ref())
            .unwrap_or_else(|_| unreachable!("the key is 32 bytes"));
        Cipher {
            aead,
            name_key,
            context: Vec::new(),
        }
    }

    /// The same cipher with every value bound to a store id, so values do not move between
    /// stores that share a key.
    pub fn bound_to_store(mut self, store_id: &[u8]) -> Self {
        self.context = b"token-store/v2/store\0".to_vec();
        self.context.extend_from_slice(store_id);
        self.context.push(0);
        self
    }

    fn full_aad<'a>(&self, aad: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if self.context.is_empty() {
            std::borrow::Cow::Borrowed(aad)
        } else {
            let mut full = Vec::with_capacity(self.context.len() + aad.len());
            full.extend_from_slice(&self.context);
            full.extend_from_slice(aad);
            std::borrow::Cow::Owned(full)
        }
    }

    /// Encrypts `plaintext` bound to `aad`: `magic | nonce | ciphertext+tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let aad = &*self.full_aad(aad);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let ct = self
            .aead
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::backend("crypto", "encryption failed", None))?;
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.extend_from_slice(SEALED_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts a value sealed by [`Cipher::seal`] with the same `aad`.
    pub fn open(
        &self,
        aad: &[u8],
        sealed: &[u8],
    ) -> std::result::Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError::Malformed("shorter than its header"));
        }
        if &sealed[..SEALED_MAGIC.len()] != SEALED_MAGIC {
            return Err(OpenError::Malformed("not a sealed token-store value"));
        }
        let nonce_end = SEALED_MAGIC.len() + NONCE_LEN;
        let nonce = XNonce::try_from(&sealed[SEALED_MAGIC.len()..nonce_end])
            .map_err(|_| OpenError::Malformed("bad nonce"))?;
        let aad = &*self.full_aad(aad);
        self.aead
            .decrypt(
                &nonce,
                Payload {
                    msg: &sealed[nonce_end..],
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Authentication)
    }

    /// A keyed name for `data` (hex HMAC-SHA-256, 64 characters): stable for one key,
    /// meaningless without it.
    pub fn keyed_name(&self, data: &[u8]) -> String {
        hex(&hmac(self.name_key.as_ref(), &[data]))
    }
}

/// Why [`Cipher::open`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The bytes are not a sealed value at all.
    Malformed(&'static str),
    /// Wrong key, wrong associated data, or tampered bytes.
    Authentication,
}

impl OpenError {
    /// The matching store error for a value at `key`.
    pub fn into_error(self, backend: &'static str, key: String) -> Error {
        match self {
            OpenError::Malformed(why) => Error::Corrupt {
                backend,
                key,
                message: why.to_owned(),
                source: None,
            },
            OpenError::Authentication => Error::Integrity {
                backend,
                key,
                message: "authentication failed: tampered, moved from another key, or sealed with another key".to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_round_trips() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
    }

    fn fast() -> KdfParams {
        KdfParams::MINIMUM
    }

    #[test]
    fn kdf_parameters_are_bounded_on_both_sides() {
        let weak = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        assert!(matches!(
            KeyHeader::create(&KeySource::passphrase("p"), weak),
            Err(Error::Config { .. })
        ));
        // A header tampered to ask for 1 GiB fails before any derivation (no 30 s, no 1 GB).
        let (mut header, _) = KeyHeader::create(&KeySource::passphrase("p"), fast()).unwrap();
        header.params = Some(KdfParams {
            m_kib: 1024 * 1024,
            t: 32,
            p: 1,
        });
        let started = std::time::Instant::now();
        assert!(matches!(
            header.unlock("t", &KeySource::passphrase("p")),
            Err(Error::Corrupt { .. })
        ));
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
    }

    #[test]
    fn values_are_bound_to_their_store_and_the_header_to_its_id() {
        let key = KeySource::Raw(Zeroizing::new([9u8; 32]));
        let (a_header, a) = KeyHeader::create(&key, fast()).unwrap();
        let (_, b) = KeyHeader::create(&key, fast()).unwrap();
        let sealed = a.seal(b"k", b"token").unwrap();
        assert_eq!(
            b.open(b"k", &sealed).unwrap_err(),
            OpenError::Authentication,
            "a record moved to another store with the same key opened"
        );
        let reopened = a_header.unlock("t", &key).unwrap();
        assert_eq!(reopened.open(b"k", &sealed).unwrap().as_slice(), b"token");
        // Changing or dropping the id in the header is detected at unlock.
        let mut changed = a_header.clone();
        changed.store_id = Some("00".repeat(16));
        assert!(matches!(
            changed.unlock("t", &key),
            Err(Error::WrongKey { .. })
        ));
        let mut downgraded = a_header;
        downgraded.format = 1;
        downgraded.store_id = None;
        assert!(matches!(
            downgraded.unlock("t", &key),
            Err(Error::WrongKey { .. })
        ));
        // A format-1 header (written before store ids) still opens with the unbound cipher.
        let legacy = Cipher::from_master(&[9u8; 32]);
        let check = legacy.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT).unwrap();
        let old = KeyHeader {
            format: 1,
            kdf: "raw".into(),
            params: None,
            salt: None,
            check: hex(&check),
            store_id: None,
        };
        let opened = old.unlock("t", &key).unwrap();
        let v = legacy.seal(b"k", b"old").unwrap();
        assert_eq!(opened.open(b"k", &v).unwrap().as_slice(), b"old");
    }

    #[test]
    fn seal_open_is_bound_to_aad() {
        let (_, c) = KeyHeader::create(&KeySource::Raw(Zeroizing::new([7u8; 32])), fast()).unwrap();
        let sealed = c.seal(b"key-a", b"secret").unwrap();
        assert_eq!(c.open(b"key-a", &sealed).unwrap().as_slice(), b"secret");
        assert_eq!(
            c.open(b"key-b", &sealed).unwrap_err(),
            OpenError::Authentication
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            c.open(b"key-a", &flipped).unwrap_err(),
            OpenError::Authentication
        );
        assert!(matches!(
            c.open(b"key-a", &sealed[..10]),
            Err(OpenError::Malformed(_))
        ));
    }

    #[test]
    fn wrong_passphrase_is_detected_at_unlock() {
        let (header, _) = KeyHeader::create(&KeySource::passphrase("right"), fast()).unwrap();
        assert!(header.unlock("t", &KeySource::passphrase("right")).is_ok());
        assert!(matches!(
            header.unlock("t", &KeySource::passphrase("wrong")),
            Err(Error::WrongKey { .. })
        ));
    }
}
