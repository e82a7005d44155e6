//! Keys: the typed keys callers use ([`TokenKey`], [`ClientKey`]) and the one structured
//! [`StorageKey`] every backend stores under.
//!
//! The token key and its encoding follow the Python `mcp-agent` token store exactly, so that a
//! Redis shared with mcp-agent sees the same keys: four parts, each percent-encoded with no
//! safe characters (Python's `quote(part, safe="")`), joined with `:`. Everything else we store
//! (client registrations, PKCE states, leases, store metadata) is encoded with a leading marker
//! segment that starts with `#`, a character `quote` always escapes, so no such key can ever be
//! parsed as an mcp-agent token key.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Upper bound on the encoded length of a key. Long enough for 2 KB URLs in every part after
/// percent-encoding, short enough that no backend path or attribute limit is reached.
pub const MAX_ENCODED_KEY_LEN: usize = 16 * 1024;

/// Identifies one token set: whose it is, for which protected resource, from which
/// authorization server, with which scopes. Part meanings match mcp-agent's `TokenStoreKey`.
///
/// The parts are private so a key built here is always canonical (the same server written
/// two ways is one key). Only [`TokenKey::from_storage_key`] yields a key exactly as stored,
/// so that a record another program wrote with a non-canonical URL can still be addressed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey {
    // The storage key itself (parts: user, resource, issuer or "", scopes): a read borrows
    // it instead of building one, and the order is the parts' order (an absent issuer is "",
    // below every present one, as `None` was).
    key: StorageKey,
}

/// The `user_key` used by [`TokenKey::for_server`] for single-user clients. It is the same
/// synthetic identity mcp-agent uses for pre-configured tokens.
pub const DEFAULT_USER_KEY: &str = "mcp-agent:preconfigured-tokens";

const USER: usize = 0;
const RESOURCE: usize = 1;
const ISSUER: usize = 2;
const SCOPES: usize = 3;

impl TokenKey {
    /// A key with every part canonicalised: the resource and authorization server URLs via
    /// [`canonical_url`], the scopes via [`scope_fingerprint`].
    pub fn new<S: AsRef<str>>(
        user_key: impl Into<String>,
        resource: &str,
        authorization_server: Option<&str>,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        TokenKey {
            key: StorageKey {
                kind: KeyKind::Token,
                parts: vec![
                    user_key.into(),
                    canonical_url(resource),
                    authorization_server.map(canonical_url).unwrap_or_default(),
                    scope_fingerprint(scopes),
                ],
            },
        }
    }

    /// The key a plain one-user client uses: just the MCP server URL.
    ///
    /// ```
    /// use token_store_core::TokenKey;
    /// let key = TokenKey::for_server("HTTPS://MCP.Example.com/mcp/?x=1#f");
    /// assert_eq!(key.resource(), "https://mcp.example.com/mcp");
    /// ```
    pub fn for_server(resource: &str) -> Self {
        Self::new(DEFAULT_USER_KEY, resource, None, std::iter::empty::<&str>())
    }

    fn part(&self, i: usize) -> &str {
        self.key.parts.get(i).map_or("", String::as_str)
    }

    fn set_part(&mut self, i: usize, value: String) {
        if let Some(part) = self.key.parts.get_mut(i) {
            *part = value;
        }
    }

    /// Who the token belongs to (e.g. `"{issuer}:{subject}"`, or [`DEFAULT_USER_KEY`]).
    pub fn user_key(&self) -> &str {
        self.part(USER)
    }

    /// The resource (MCP server) URL.
    pub fn resource(&self) -> &str {
        self.part(RESOURCE)
    }

    /// The authorization server (issuer), when known.
    pub fn authorization_server(&self) -> Option<&str> {
        Some(self.part(ISSUER)).filter(|s| !s.is_empty())
    }

    /// The sorted, de-duplicated, space-joined scopes.
    pub fn scope_fingerprint(&self) -> &str {
        self.part(SCOPES)
    }

    /// The same key with another user.
    pub fn with_user(mut self, user_key: impl Into<String>) -> Self {
        self.set_part(USER, user_key.into());
        self
    }

    /// The same key with an authorization server (canonicalised).
    pub fn with_authorization_server(mut self, issuer: &str) -> Self {
        self.set_part(ISSUER, canonical_url(issuer));
        self
    }

    /// The same key with a scope set (fingerprinted).
    pub fn with_scopes<S: AsRef<str>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.set_part(SCOPES, scope_fingerprint(scopes));
        self
    }

    /// The storage key of this token key (a copy; [`TokenKey::as_storage_key`] borrows it).
    pub fn storage_key(&self) -> StorageKey {
        self.key.clone()
    }

    /// The storage key of this token key, borrowed.
    pub fn as_storage_key(&self) -> &StorageKey {
        &self.key
    }

    /// The token key of a storage key of kind [`KeyKind::Token`].
    pub fn from_storage_key(key: &StorageKey) -> Option<Self> {
        Self::from_owned_storage_key(key.clone())
    }

    /// [`TokenKey::from_storage_key`] taking the key by value (no copy).
    pub fn from_owned_storage_key(key: StorageKey) -> Option<Self> {
        (key.kind == KeyKind::Token && key.parts.len() == 4).then_some(TokenKey { key })
    }
}

impl fmt::Debug for TokenKey {
    // Keys are not secret, but a compact form reads better in logs than the derived one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey({})", self.key)
    }
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.key, f)
    }
}

/// Identifies one OAuth client registration (the result of dynamic client registration).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    // The storage key itself (parts: issuer, application), borrowed by reads.
    key: StorageKey,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("authorization_server", &self.authorization_server())
            .field("application", &self.application())
            .finish()
    }
}

impl ClientKey {
    /// The registration of the default application at `authorization_server`.
    pub fn new(authorization_server: &str) -> Self {
        ClientKey {
            key: StorageKey {
                kind: KeyKind::Client,
                parts: vec![canonical_url(authorization_server), String::new()],
            },
        }
    }

    /// The same key for a named application.
    pub fn with_application(mut self, application: impl Into<String>) -> Self {
        if let Some(part) = self.key.parts.get_mut(1) {
            *part = application.into();
        }
        self
    }

    /// The authorization server (issuer) the client is registered with.
    pub fn authorization_server(&self) -> &str {
        self.key.parts.first().map_or("", String::as_str)
    }

    /// Which application registered it, so several apps can share a store. Often empty.
    pub fn application(&self) -> &str {
        self.key.parts.get(1).map_or("", String::as_str)
    }

    /// The storage key of this client key.
    pub fn storage_key(&self) -> StorageKey {
        self.key.clone()
    }

    /// The storage key of this client key, borrowed.
    pub fn as_storage_key(&self) -> &StorageKey {
        &self.key
    }

    /// The client key of a storage key of kind [`KeyKind::Client`].
    pub fn from_storage_key(key: &StorageKey) -> Option<Self> {
        Self::from_owned_storage_key(key.clone())
    }

    /// [`ClientKey::from_storage_key`] taking the key by value (no copy).
    pub fn from_owned_storage_key(key: StorageKey) -> Option<Self> {
        (key.kind == KeyKind::Client && key.parts.len() == 2).then_some(ClientKey { key })
    }
}

/// What a storage key holds. Backends may lay kinds out differently (tables, path prefixes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyKind {
    /// An OAuth token record (four parts, mcp-agent layout).
    Token,
    /// An OAuth client registration (two parts: issuer, application).
    Client,
    /// A one-time PKCE/CSRF authorization state (one part: the state value's digest).
    State,
    /// A refresh lease (one part: the lease name).
    Lease,
    /// Store metadata, e.g. the encryption layer's key check (one part: the entry name).
    Meta,
    /// An authorization server's registered OAuth client (one part: the client id).
    AsClient,
    /// An authorization server's grant (two parts: the user, the grant id), so one user's
    /// grants list together.
    Grant,
    /// An authorization code (one part: the digest of the code, never the code).
    Code,
    /// An issued access token (one part: the digest of the token, never the token).
    AccessToken,
    /// An issued refresh token (one part: the digest of the token, never the token).
    RefreshToken,
}

impl KeyKind {
    /// Every kind, in a fixed order.
    pub const ALL: [KeyKind; 10] = [
        KeyKind::Token,
        KeyKind::Client,
        KeyKind::State,
        KeyKind::Lease,
        KeyKind::Meta,
        KeyKind::AsClient,
        KeyKind::Grant,
        KeyKind::Code,
        KeyKind::AccessToken,
        KeyKind::RefreshToken,
    ];

    /// The `#` marker segment of non-token kinds, `None` for tokens.
    pub fn marker(self) -> Option<&'static str> {
        match self {
            KeyKind::Token => None,
            KeyKind::Client => Some("#client"),
            KeyKind::State => Some("#state"),
            KeyKind::Lease => Some("#lease"),
            KeyKind::Meta => Some("#meta"),
            // An authorization server's records: `#g...`, apart from a client's.
            KeyKind::AsClient => Some("#gclient"),
            KeyKind::Grant => Some("#grant"),
            KeyKind::Code => Some("#gcode"),
            KeyKind::AccessToken => Some("#gaccess"),
            KeyKind::RefreshToken => Some("#grefresh"),
        }
    }

    /// A short lowercase name, for tables, directories and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Token => "token",
            KeyKind::Client => "client",
            KeyKind::State => "state",
            KeyKind::Lease => "lease",
            KeyKind::Meta => "meta",
            KeyKind::AsClient => "as_client",
            KeyKind::Grant => "grant",
            KeyKind::Code => "code",
            KeyKind::AccessToken => "access_token",
            KeyKind::RefreshToken => "refresh_token",
        }
    }

    /// The kind named by [`KeyKind::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// How many parts a key of this kind has.
    pub fn arity(self) -> usize {
        match self {
            KeyKind::Token => 4,
            KeyKind::Client | KeyKind::Grant => 2,
            KeyKind::State
            | KeyKind::Lease
            | KeyKind::Meta
            | KeyKind::AsClient
            | KeyKind::Code
            | KeyKind::AccessToken
            | KeyKind::RefreshToken => 1,
        }
    }

    fn from_marker(marker: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.marker() == Some(marker))
    }
}

/// The structured key every backend stores under: a kind and its parts.
///
/// [`StorageKey::encode`] gives the one canonical string form (mcp-agent's layout for tokens),
/// which backends use as a Redis key suffix, as AEAD associated data, and to sort and page.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StorageKey {
    kind: KeyKind,
    parts: Vec<String>,
}

impl StorageKey {
    /// A key of `kind` with `parts`; fails when the number of parts does not fit the kind or
    /// the encoded key would be too long.
    pub fn new(kind: KeyKind, parts: Vec<String>) -> Result<Self> {
        if parts.len() != kind.arity() {
            return Err(Error::invalid_key(format!(
                "a {} key has {} parts, not {}",
                kind.as_str(),
                kind.arity(),
                parts.len()
            )));
        }
        let key = StorageKey { kind, parts };
        key.validate()?;
        Ok(key)
    }

    /// A one-part key (state, lease, meta).
    pub fn single(kind: KeyKind, name: impl Into<String>) -> Result<Self> {
        Self::new(kind, vec![name.into()])
    }

    /// What this key holds.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The raw (unencoded) parts.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    /// Checks the limits every backend shares: bounded length, no NUL.
    pub fn validate(&self) -> Result<()> {
        if self.parts.iter().any(|p| p.contains('\0')) {
            return Err(Error::invalid_key("key parts must not contain NUL"));
        }
        // A byte encodes to at most three: a key that cannot reach the limit even with every
        // byte escaped (any real one) skips counting its escapes, most of validation's cost.
        let raw: usize = self.parts.iter().map(String::len).sum();
        if self.fixed_encoded_len() + 3 * raw <= MAX_ENCODED_KEY_LEN {
            return Ok(());
        }
        let len = self.encoded_len();
        if len > MAX_ENCODED_KEY_LEN {
            return Err(Error::invalid_key(format!(
                "encoded key is {len} bytes, at most {MAX_ENCODED_KEY_LEN}"
            )));
        }
        Ok(())
    }

    /// The length of [`StorageKey::encode`], without building it.
    pub fn encoded_len(&self) -> usize {
        self.fixed_encoded_len()
            + self
                .parts
                .iter()
                .map(|p| percent_encoded_len(p))
                .sum::<usize>()
    }

    /// The encoding's bytes that do not come from the parts: the marker and separators.
    fn fixed_encoded_len(&self) -> usize {
        let marker = self.kind.marker().map_or(0, |m| m.len() + 1);
        marker + self.parts.len().saturating_sub(1)
    }

    /// The canonical string form: for tokens exactly mcp-agent's suffix after the prefix
    /// (`quote(user):quote(resource):quote(issuer):quote(scopes)`), for other kinds the same
    /// preceded by the kind's `#` marker.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// [`StorageKey::encode`] with [`StorageKey::validate`]'s checks, in one pass over the
    /// parts instead of two: for backends that address a key by its encoding (or a digest of
    /// it) on every call.
    pub fn encode_valid(&self) -> Result<String> {
        if self.parts.iter().any(|p| p.contains('\0')) {
            return Err(Error::invalid_key("key parts must not contain NUL"));
        }
        // Room for a few escapes; a key with more grows the string once.
        let raw: usize = self.parts.iter().map(String::len).sum();
        let mut out = String::with_capacity(raw + raw / 4 + 16);
        self.encode_into(&mut out);
        if out.len() > MAX_ENCODED_KEY_LEN {
            return Err(Error::invalid_key(format!(
                "encoded key is {} bytes, at most {MAX_ENCODED_KEY_LEN}",
                out.len()
            )));
        }
        Ok(out)
    }

    /// Appends [`StorageKey::encode`]'s form to `out`, so a backend can build
    /// `prefix + encoded key` in one allocation.
    pub fn encode_into(&self, out: &mut String) {
        if let Some(marker) = self.kind.marker() {
            out.push_str(marker);
            out.push(':');
        }
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            percent_encode_into(part, out);
        }
    }

    /// Compares two keys as their [`StorageKey::encode`] forms compare, without building
    /// them: listings sort by the encoded form (their cursors are encoded keys), and
    /// encoding every key just to sort it cost more than the rest of a listing.
    pub(crate) fn cmp_encoded(&self, other: &StorageKey) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        if self.kind != other.kind {
            // Different markers (never within one listing): compare the real thing.
            return self.encode().cmp(&other.encode());
        }
        let last = self.parts.len().min(other.parts.len());
        for (i, (a, b)) in self.parts.iter().zip(&other.parts).enumerate() {
            let (a, b) = (a.as_bytes(), b.as_bytes());
            // One pass finds both equality and where the parts differ.
            let common = common_prefix(a, b);
            if common == a.len() && common == b.len() {
                continue;
            }
            return match (a.get(common), b.get(common)) {
                (Some(&x), Some(&y)) => cmp_encoded_byte(x, y),
                // `a` ends first: what follows it (the separator, or the end of the key)
                // against the first encoded character of `b`'s next byte.
                (None, Some(&y)) if i + 1 < last => b':'.cmp(&first_encoded(y)),
                (None, Some(_)) => Ordering::Less,
                (Some(&x), None) if i + 1 < last => first_encoded(x).cmp(&b':'),
                (Some(_), None) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
        }
        self.parts.len().cmp(&other.parts.len())
    }

    /// Parses [`StorageKey::encode`]'s form back. Returns `None` for strings that are not one
    /// of our keys (foreign keys under a shared prefix are skipped, not errors).
    pub fn decode(encoded: &str) -> Option<Self> {
        let mut segments: Vec<&str> = encoded.split(':').collect();
        let kind = match segments.first().copied() {
            Some(first) if first.starts_with('#') => {
                let kind = KeyKind::from_marker(first)?;
                segments.remove(0);
                kind
            }
            _ => KeyKind::Token,
        };
        if segments.len() != kind.arity() {
            return None;
        }
        let parts = segments
            .into_iter()
            .map(canonical_percent_decode)
            .collect::<Option<Vec<_>>>()?;
        Some(StorageKey { kind, parts })
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageKey({})", self.encode())
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// Canonicalises a resource or issuer URL as mcp-agent does: scheme and host lower-cased,
/// query and fragment dropped, trailing `/` removed. Strings that are not URLs are only
/// trimmed of surrounding white space and trailing `/`.
///
/// ```
/// use token_store_core::canonical_url;
/// assert_eq!(canonical_url("HTTPS://Api.Example.COM:8443/MCP/?q=1#x"), "https://api.example.com:8443/MCP");
/// ```
pub fn canonical_url(raw: &str) -> String {
    let raw = raw.trim();
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.trim_end_matches('/').to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        authority.to_lowercase(),
        path.trim_end_matches('/')
    )
}

/// The scope fingerprint mcp-agent uses: scopes trimmed, empty ones dropped, de-duplicated,
/// sorted, joined with one space.
///
/// ```
/// use token_store_core::scope_fingerprint;
/// assert_eq!(scope_fingerprint(["write", " read", "write", ""]), "read write");
/// ```
pub fn scope_fingerprint<S: AsRef<str>>(scopes: impl IntoIterator<Item = S>) -> String {
    let set: std::collections::BTreeSet<String> = scopes
        .into_iter()
        .map(|s| s.as_ref().trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    set.into_iter().collect::<Vec<_>>().join(" ")
}

/// Python's `urllib.parse.quote(part, safe="")`: every byte of the UTF-8 form except
/// `A-Z a-z 0-9 _ . - ~` becomes `%XX` (upper-case hex).
pub fn percent_encode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    percent_encode_into(part, &mut out);
    out
}

fn is_unreserved(b: u8) -> bool {
    UNRESERVED[usize::from(b)]
}

/// [`is_unreserved`] as a table: the encoder's per-byte test is one load.
const UNRESERVED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-' || c == b'~';
        b += 1;
    }
    t
};

/// The length of the longest common prefix, compared eight bytes at a time: a word's first
/// differing byte is its lowest set bit of difference (little-endian), with no call out to
/// `memcmp` per word.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let mut same = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) else {
            break;
        };
        let diff = u64::from_le_bytes(x) ^ u64::from_le_bytes(y);
        if diff != 0 {
            // At most 7: the cast cannot truncate.
            return same + (diff.trailing_zeros() / 8) as usize;
        }
        same += 8;
    }
    let rest = match (a.get(same..), b.get(same..)) {
        (Some(x), Some(y)) => x.iter().zip(y).take_while(|(x, y)| x == y).count(),
        _ => 0,
    };
    same + rest
}

/// The first character byte `b` encodes to: itself, or the `%` of its escape.
fn first_encoded(b: u8) -> u8 {
    if is_unreserved(b) { b } else { b'%' }
}

/// How two different bytes' encodings compare: an escape (`%`) sorts below every
/// unreserved character, and two escapes compare as their bytes (upper-case hex keeps the
/// order).
fn cmp_encoded_byte(x: u8, y: u8) -> std::cmp::Ordering {
    let (fx, fy) = (first_encoded(x), first_encoded(y));
    if fx == fy { x.cmp(&y) } else { fx.cmp(&fy) }
}

fn percent_encoded_len(part: &str) -> usize {
    part.bytes()
        .map(|b| if is_unreserved(b) { 1 } else { 3 })
        .sum()
}

fn percent_encode_into(part: &str, out: &mut String) {
    // Copy runs of unreserved bytes at once: most parts (URLs, scopes) are long runs. An
    // escape is one copy out of a table (three pushes cost ~4x that, each checking room).
    let mut run = 0;
    for (i, b) in part.bytes().enumerate() {
        if is_unreserved(b) {
            continue;
        }
        // A run holds only ASCII bytes, so its ends are char boundaries; `get` keeps that
        // reasoning from ever becoming a panic.
        if let Some(ascii) = part.get(run..i) {
            out.push_str(ascii);
        }
        let at = 3 * usize::from(b);
        if let Some(escape) = ESCAPES.get(at..at + 3) {
            out.push_str(escape);
        }
        run = i + 1;
    }
    if let Some(ascii) = part.get(run..) {
        out.push_str(ascii);
    }
}

/// Every byte's escape, `%XX` in upper-case hex, byte `b` at `3 * b`.
const ESCAPES: &str = {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    const BYTES: [u8; 768] = {
        let mut t = [0u8; 768];
        let mut b = 0;
        while b < 256 {
            t[3 * b] = b'%';
            t[3 * b + 1] = HEX[b >> 4];
            t[3 * b + 2] = HEX[b & 0x0f];
            b += 1;
        }
        t
    };
    match std::str::from_utf8(&BYTES) {
        Ok(s) => s,
        // Evaluated when the crate is compiled: a table that were not ASCII would fail the
        // build, never a run.
        Err(_) => panic!("the escape table is ASCII"),
    }
};

/// [`percent_decode`] of only the form [`percent_encode`] produces: an unreserved byte
/// escaped, a reserved one bare or lower-case hex gives `None`, since "%41" and "A" would
/// otherwise name the same key twice.
fn canonical_percent_decode(encoded: &str) -> Option<String> {
    fn upper_hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = upper_hex(*bytes.get(i + 1)?)?;
            let lo = upper_hex(*bytes.get(i + 2)?)?;
            let decoded = (hi << 4) | lo;
            if is_unreserved(decoded) {
                return None;
            }
            out.push(decoded);
            i += 3;
        } else if is_unreserved(b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The inverse of [`percent_encode`]; `None` for malformed escapes or non-UTF-8 results.
pub fn percent_decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_key_encoding_matches_mcp_agent() {
        let key = TokenKey::new(
            "mcp-agent:preconfigured-tokens",
            "https://api.example.com/mcp",
            Some("https://auth.example.com"),
            ["write", "read"],
        );
        assert_eq!(
            key.storage_key().encode(),
            "mcp-agent%3Apreconfigured-tokens:https%3A%2F%2Fapi.example.com%2Fmcp:https%3A%2F%2Fauth.example.com:read%20write"
        );
    }

    #[test]
    fn encode_decode_round_trip_for_every_kind() {
        let odd = "ü :/%#\u{1F600}\t";
        for kind in KeyKind::ALL {
            let parts = (0..kind.arity()).map(|i| format!("{odd}{i}")).collect();
            let key = StorageKey::new(kind, parts).unwrap();
            assert_eq!(StorageKey::decode(&key.encode()), Some(key.clone()));
        }
    }

    #[test]
    fn other_kinds_never_parse_as_tokens() {
        let client = ClientKey::new("https://as.example").storage_key();
        let decoded = StorageKey::decode(&client.encode()).unwrap();
        assert_eq!(decoded.kind(), KeyKind::Client);
        assert!(TokenKey::from_storage_key(&decoded).is_none());
        // A foreign key under the prefix is not ours.
        assert_eq!(StorageKey::decode("a:b"), None);
        assert_eq!(StorageKey::decode("a:b:c:%4"), None);
        // Non-canonical escapes are not accepted as aliases.
        assert_eq!(StorageKey::decode("%41:b:c:d"), None);
        // Lower-case hex and bare reserved bytes are not the canonical form either.
        assert_eq!(StorageKey::decode("%2f:b:c:d"), None);
        assert_eq!(StorageKey::decode("a/b:b:c:d"), None);
        assert_eq!(StorageKey::decode("%+1:b:c:d"), None);
        let odd = StorageKey::new(
            KeyKind::Token,
            vec!["ü s/r".into(), "%41".into(), String::new(), "~_.-".into()],
        )
        .unwrap();
        assert_eq!(odd.encoded_len(), odd.encode().len());
        assert_eq!(StorageKey::decode(&odd.encode()), Some(odd));
    }

    /// The byte-at-a-time encoder the fast one replaced: the reference for the property.
    fn reference_encode(part: &str) -> String {
        part.bytes()
            .map(|b| {
                if is_unreserved(b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn encoding_is_the_reference_and_decodes_back(parts in proptest::collection::vec(".{0,12}", 4)) {
            let key = StorageKey { kind: KeyKind::Token, parts: parts.clone() };
            let expected = parts.iter().map(|p| reference_encode(p)).collect::<Vec<_>>().join(":");
            proptest::prop_assert_eq!(key.encode(), expected.clone());
            proptest::prop_assert_eq!(key.encoded_len(), expected.len());
            proptest::prop_assert_eq!(StorageKey::decode(&expected), Some(key));
        }

        #[test]
        fn comparing_unencoded_keys_orders_them_as_their_encodings(
            a in proptest::collection::vec("[a-c:/%~ .\u{e9}-]{0,5}", 4),
            b in proptest::collection::vec("[a-c:/%~ .\u{e9}-]{0,5}", 4),
        ) {
            let a = StorageKey { kind: KeyKind::Token, parts: a };
            let b = StorageKey { kind: KeyKind::Token, parts: b };
            proptest::prop_assert_eq!(a.cmp_encoded(&b), a.encode().cmp(&b.encode()));
            proptest::prop_assert_eq!(b.cmp_encoded(&a), b.encode().cmp(&a.encode()));
            proptest::prop_assert_eq!(a.cmp_encoded(&a), std::cmp::Ordering::Equal);
            let (c, d) = (
                StorageKey { kind: KeyKind::Client, parts: a.parts[..2].to_vec() },
                StorageKey { kind: KeyKind::Client, parts: b.parts[..2].to_vec() },
            );
            proptest::prop_assert_eq!(c.cmp_encoded(&d), c.encode().cmp(&d.encode()));
        }

        #[test]
        fn long_parts_sharing_a_prefix_order_as_their_encodings(
            prefix in "[a-c/%.\u{e9}]{0,20}",
            a in proptest::collection::vec("[a-c:/%~ .\u{e9}-]{0,12}", 4),
            b in proptest::collection::vec("[a-c:/%~ .\u{e9}-]{0,12}", 4),
        ) {
            // Parts longer than a word, equal for a while: where they differ falls in every
            // position of an eight-byte word, or past the words.
            let long = |parts: Vec<String>| StorageKey {
                kind: KeyKind::Token,
                parts: parts.into_iter().map(|p| format!("{prefix}{p}")).collect(),
            };
            let (a, b) = (long(a), long(b));
            proptest::prop_assert_eq!(a.cmp_encoded(&b), a.encode().cmp(&b.encode()));
            proptest::prop_assert_eq!(b.cmp_encoded(&a), b.encode().cmp(&a.encode()));
            proptest::prop_assert_eq!(a.cmp_encoded(&a.clone()), std::cmp::Ordering::Equal);
        }

        #[test]
        fn common_prefix_is_the_bytewise_one(
            a in proptest::collection::vec(0u8..4, 0..40),
            at in 0usize..40,
            byte in 0u8..4,
            cut in 0usize..40,
        ) {
            // `b` is `a` with one byte changed and cut short: differences anywhere.
            let mut b = a.clone();
            if let Some(x) = b.get_mut(at) {
                *x = byte;
            }
            b.truncate(cut.max(at));
            let expected = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            proptest::prop_assert_eq!(common_prefix(&a, &b), expected);
            proptest::prop_assert_eq!(common_prefix(&a, &a), a.len());
        }

        #[test]
        fn only_the_canonical_form_decodes(s in "[a-zA-Z0-9%:/ _~.-]{0,24}") {
            if let Some(key) = StorageKey::decode(&s) {
                proptest::prop_assert_eq!(key.encode(), s);
            }
        }
    }

    #[test]
    fn nul_and_oversized_keys_are_rejected() {
        assert!(StorageKey::single(KeyKind::Meta, "a\0b").is_err());
        assert!(StorageKey::single(KeyKind::Meta, "%".repeat(MAX_ENCODED_KEY_LEN)).is_err());
    }

    #[test]
    fn validate_agrees_with_the_encoding_around_its_shortcut() {
        // The shortcut takes keys up to a third of the limit; just past it the escapes are
        // counted. Both sides, all-escaped and unescaped, must agree with the real encoding.
        let third = (MAX_ENCODED_KEY_LEN - "#meta:".len()) / 3;
        for len in (third - 2..third + 3).chain(MAX_ENCODED_KEY_LEN - 8..MAX_ENCODED_KEY_LEN) {
            for part in [
                "%".repeat(len),
                "x".repeat(len),
                format!("{}%", "x".repeat(len)),
            ] {
                let key = StorageKey {
                    kind: KeyKind::Meta,
                    parts: vec![part],
                };
                let fits = key.encode().len() <= MAX_ENCODED_KEY_LEN;
                assert_eq!(key.validate().is_ok(), fits, "raw length {len}");
            }
        }
    }

    #[test]
    fn encode_valid_is_encode_plus_validate() {
        let key = TokenKey::new(
            "u:1",
            "https://mcp.example.com/mcp",
            Some("https://as"),
            ["a b"],
        )
        .storage_key();
        assert_eq!(key.encode_valid().unwrap(), key.encode());
        // Keys built around the constructor's checks (as a listing's foreign row could be):
        // right at the limit passes; over it, and NUL, do not.
        let at_limit = StorageKey {
            kind: KeyKind::Meta,
            parts: vec!["x".repeat(MAX_ENCODED_KEY_LEN - "#meta:".len())],
        };
        assert_eq!(at_limit.encode_valid().unwrap().len(), MAX_ENCODED_KEY_LEN);
        let over = StorageKey {
            kind: KeyKind::Meta,
            parts: vec!["%".repeat(MAX_ENCODED_KEY_LEN / 3)],
        };
        assert!(matches!(over.encode_valid(), Err(Error::InvalidKey { .. })));
        let nul = StorageKey {
            kind: KeyKind::Meta,
            parts: vec!["a\0b".into()],
        };
        assert!(matches!(nul.encode_valid(), Err(Error::InvalidKey { .. })));
    }
}
