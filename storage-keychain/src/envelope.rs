//! The bytes a keychain item holds: the caller's value wrapped with what a keychain cannot
//! store for us (a version for compare-and-swap, an expiry, the key it belongs to).
//!
//! Layout, all integers big-endian:
//!
//! ```text
//! "TSK1" | u8 version_len | version (ASCII) | u64 written_at (ns since the epoch)
//!        | u64 expires_at (ms since the epoch, 0 = never) | u32 key_len | encoded key | value
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use token_store_core::{Error, Result, SecretBytes, StorageKey, Version};

const MAGIC: &[u8; 4] = b"TSK1";

/// A decoded envelope.
pub(crate) struct Envelope {
    pub version: Version,
    /// Orders duplicate items of one key left behind by an interrupted write: newest wins.
    pub written_at: u64,
    pub expires_at: Option<SystemTime>,
    pub key: String,
    pub value: SecretBytes,
}

impl Envelope {
    /// A new envelope for a write happening now.
    pub fn new(key: &StorageKey, value: &[u8], ttl: Option<Duration>) -> Result<Self> {
        let now = SystemTime::now();
        Ok(Envelope {
            version: Version::random()?,
            written_at: nanos(now),
            expires_at: ttl.map(|t| now + t),
            key: key.encode(),
            value: SecretBytes::new(value.to_vec()),
        })
    }

    /// Whether the record has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The expiry in milliseconds since the epoch (0 for none), as stored.
    pub fn expires_millis(&self) -> u64 {
        self.expires_at.map_or(0, |at| millis_ceil(at).max(1))
    }

    /// Serialises the envelope.
    pub fn encode(&self) -> SecretBytes {
        let version = self.version.as_str().as_bytes();
        let key = self.key.as_bytes();
        let mut out =
            Vec::with_capacity(4 + 1 + version.len() + 16 + 4 + key.len() + self.value.len());
        out.extend_from_slice(MAGIC);
        // Versions are 32 hex chars; anything longer is cut to stay within one length byte.
        let version = &version[..version.len().min(255)];
        out.push(version.len() as u8);
        out.extend_from_slice(version);
        out.extend_from_slice(&self.written_at.to_be_bytes());
        out.extend_from_slice(&self.expires_millis().to_be_bytes());
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&self.value);
        SecretBytes::new(out)
    }

    /// Parses stored bytes; `location` names the item in errors.
    pub fn decode(backend: &'static str, location: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |what: &str| Error::Corrupt {
            backend,
            key: location.to_owned(),
            message: format!("not a token-store keychain item: {what}"),
            source: None,
        };
        let mut r = Reader { bytes, pos: 0 };
        if r.take(4).ok_or_else(|| corrupt("too short"))? != MAGIC {
            return Err(corrupt("unknown format marker"));
        }
        let vlen = r.take(1).ok_or_else(|| corrupt("truncated"))?[0] as usize;
        let version = std::str::from_utf8(r.take(vlen).ok_or_else(|| corrupt("truncated"))?)
            .map_err(|_| corrupt("version is not text"))?;
        let written_at = r.u64().ok_or_else(|| corrupt("truncated"))?;
        let expires = r.u64().ok_or_else(|| corrupt("truncated"))?;
        let klen = r.u32().ok_or_else(|| corrupt("truncated"))? as usize;
        let key = std::str::from_utf8(r.take(klen).ok_or_else(|| corrupt("truncated"))?)
            .map_err(|_| corrupt("key is not text"))?;
        Ok(Envelope {
            version: Version::new(version),
            written_at,
            expires_at: (expires != 0).then(|| UNIX_EPOCH + Duration::from_millis(expires)),
            key: key.to_owned(),
            value: SecretBytes::new(r.rest().to_vec()),
        })
    }
}

pub(crate) struct Reader<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.bytes[self.pos.min(self.bytes.len())..];
        self.pos = self.bytes.len();
        s
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn millis_ceil(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if d.subsec_nanos() % 1_000_000 != 0 {
            ms.saturating_add(1)
        } else {
            ms
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_store_core::KeyKind;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let key = StorageKey::single(KeyKind::Meta, "x").unwrap();
        let env = Envelope::new(&key, b"\0value\xff", Some(Duration::from_secs(60))).unwrap();
        let bytes = env.encode();
        let back = Envelope::decode("t", "loc", &bytes).unwrap();
        assert_eq!(back.version, env.version);
        assert_eq!(back.key, key.encode());
        assert_eq!(back.value.as_slice(), b"\0value\xff");
        assert_eq!(back.written_at, env.written_at);
        assert!(!back.expired(SystemTime::now()));
        assert!(back.expired(SystemTime::now() + Duration::from_secs(61)));
        for bad in [
            &b""[..],
            b"TSK1",
            b"XXXX\0",
            &bytes[..bytes.len() - 8 - key.encode().len()],
        ] {
            assert!(matches!(
                Envelope::decode("t", "loc", bad),
                Err(Error::Corrupt { .. })
            ));
        }
        let none = Envelope::new(&key, b"", None).unwrap();
        let back = Envelope::decode("t", "l", &none.encode()).unwrap();
        assert!(back.expires_at.is_none() && back.value.is_empty());
    }
}
