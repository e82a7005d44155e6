//! The secrets a grant store hands out (tokens, codes, client secrets), what it keeps of them
//! (digests), and the keys derived from them that wrap a grant's key.
//!
//! Every secret is 32 bytes from the operating system's random source, written as 64
//! lower-case hex characters. The store keeps only a domain-separated SHA-256 of the 32
//! bytes, so a dump of the store yields no usable secret; a second, differently separated
//! SHA-256 is the key that wraps the grant's key, which only a holder of the secret can
//! derive. SHA-256 is enough as a key derivation here: the input is a uniformly random
//! 256-bit value, not a password.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use token_store_core::backend::{Cipher, fill_random, hex};
use token_store_core::{Result, Secret};
use zeroize::Zeroizing;

/// What a secret is, so one kind's secret never opens another kind's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Code,
    Access,
    Refresh,
    ClientSecret,
    Registration,
}

impl Kind {
    fn label(self) -> &'static [u8] {
        match self {
            Kind::Code => b"code",
            Kind::Access => b"access",
            Kind::Refresh => b"refresh",
            Kind::ClientSecret => b"client-secret",
            Kind::Registration => b"registration",
        }
    }
}

/// The 32 random bytes of a secret, wiped on drop.
pub(crate) struct Raw(Zeroizing<[u8; 32]>);

impl Raw {
    /// A fresh secret from the OS random source.
    pub(crate) fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        fill_random(bytes.as_mut())?;
        Ok(Raw(bytes))
    }

    /// The secret as presented: exactly 64 hex digits, else `None` (no store read is
    /// spent on a string that cannot be one of ours).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (out, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *out = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Raw(bytes))
    }

    /// The text handed to the holder.
    pub(crate) fn to_secret(&self) -> Secret {
        Secret::new(hex(self.0.as_ref()))
    }

    /// What the store keeps: the digest naming the record (hex, 64 characters).
    pub(crate) fn id(&self, kind: Kind) -> String {
        hex(&derive(b"id", kind, &self.0))
    }

    /// The key that wraps the grant's key for this secret's holder.
    pub(crate) fn wrapping_cipher(&self, kind: Kind) -> Cipher {
        let key = Zeroizing::new(derive(b"wrap", kind, &self.0));
        Cipher::from_master(&key)
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn derive(purpose: &[u8], kind: Kind, raw: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"token-store/grants/v1/");
    h.update(purpose);
    h.update(b"/");
    h.update(kind.label());
    h.update([0u8]);
    h.update(raw);
    h.finalize().into()
}

/// Whether two digests (hex) are equal, in time independent of where they differ.
pub(crate) fn digest_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A grant's own key: 32 random bytes that seal its properties, wrapped under each token.
pub(crate) struct GrantKey(Zeroizing<[u8; 32]>);

impl GrantKey {
    pub(crate) fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        fill_random(bytes.as_mut())?;
        Ok(GrantKey(bytes))
    }

    pub(crate) fn cipher(&self) -> Cipher {
        Cipher::from_master(&self.0)
    }

    /// This key sealed for the holder of `raw`, bound to the grant and the secret's kind.
    pub(crate) fn wrap(&self, raw: &Raw, kind: Kind, grant_id: &str) -> Result<String> {
        let sealed = raw
            .wrapping_cipher(kind)
            .seal(&wrap_aad(grant_id, kind), self.0.as_ref())?;
        Ok(STANDARD_NO_PAD.encode(sealed))
    }

    /// The key `wrap` sealed, or `None` when `raw` is not the secret it was sealed for.
    pub(crate) fn unwrap(raw: &Raw, kind: Kind, grant_id: &str, wrapped: &str) -> Option<Self> {
        let sealed = STANDARD_NO_PAD.decode(wrapped).ok()?;
        let opened = raw
            .wrapping_cipher(kind)
            .open(&wrap_aad(grant_id, kind), &sealed)
            .ok()?;
        let bytes: [u8; 32] = opened.as_slice().try_into().ok()?;
        Some(GrantKey(Zeroizing::new(bytes)))
    }
}

fn wrap_aad(grant_id: &str, kind: Kind) -> Vec<u8> {
    let mut aad = b"token-store/grants/v1/key\0".to_vec();
    aad.extend_from_slice(grant_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(kind.label());
    aad
}

/// The associated data of a grant's sealed properties: the grant id, as the design says, so
/// properties copied to another grant do not open.
pub(crate) fn props_aad(grant_id: &str) -> Vec<u8> {
    let mut aad = b"token-store/grants/v1/props\0".to_vec();
    aad.extend_from_slice(grant_id.as_bytes());
    aad
}

/// Base64 (standard, unpadded) of sealed bytes, as records store them.
pub(crate) fn encode_sealed(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// The bytes of [`encode_sealed`].
pub(crate) fn decode_sealed(text: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD.decode(text).ok()
}

/// A fresh random identifier (128 bits, hex): grant ids and client ids. Not secret.
pub(crate) fn random_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    Ok(hex(&bytes))
}

/// PKCE S256: whether `verifier` hashes to `challenge`, compared in constant time.
pub(crate) fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.len() == challenge.len() && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// The S256 challenge of a verifier, for clients and tests.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636: 43 to 128 characters of `A-Z a-z 0-9 - . _ ~`.
pub(crate) fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// An S256 challenge is the unpadded base64url of 32 bytes: 43 such characters.
pub(crate) fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_back_and_derive_distinct_values_per_kind() {
        let raw = Raw::generate().unwrap();
        let text = raw.to_secret();
        assert_eq!(text.expose().len(), 64);
        let back = Raw::parse(text.expose()).unwrap();
        assert_eq!(back.id(Kind::Access), raw.id(Kind::Access));
        assert_ne!(raw.id(Kind::Access), raw.id(Kind::Refresh));
        assert!(!raw.id(Kind::Access).contains(text.expose()));
        assert!(Raw::parse(&text.expose()[1..]).is_none());
        assert!(Raw::parse(&"g".repeat(64)).is_none());
    }

    #[test]
    fn a_wrapped_key_opens_only_for_its_secret_kind_and_grant() {
        let key = GrantKey::generate().unwrap();
        let raw = Raw::generate().unwrap();
        let other = Raw::generate().unwrap();
        let wrapped = key.wrap(&raw, Kind::Access, "g1").unwrap();
        let opened = GrantKey::unwrap(&raw, Kind::Access, "g1", &wrapped).unwrap();
        assert_eq!(opened.0.as_ref(), key.0.as_ref());
        assert!(GrantKey::unwrap(&other, Kind::Access, "g1", &wrapped).is_none());
        assert!(GrantKey::unwrap(&raw, Kind::Refresh, "g1", &wrapped).is_none());
        assert!(GrantKey::unwrap(&raw, Kind::Access, "g2", &wrapped).is_none());
    }

    #[test]
    fn pkce_s256_matches_an_independent_computation() {
        // `printf %s VERIFIER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_'`, unpadded.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOEjXk";
        let challenge = "bwWFMyPfdG9qreDhH2lmftFx_dFeLDalzcT1gb_j68g";
        assert_eq!(pkce_challenge(verifier), challenge);
        assert!(pkce_s256_matches(verifier, challenge));
        assert!(!pkce_s256_matches("x", challenge));
        assert!(valid_verifier(verifier) && valid_challenge(challenge));
        assert!(!valid_verifier("short") && !valid_challenge("short"));
    }
}
