//! A token record's JSON, written directly: the bytes `serde_json` writes for the derived
//! `Serialize` (tested equal), in a fraction of the instructions. The derived form goes
//! through `flatten` (a map serializer, one small write per punctuation mark) and escapes
//! strings byte by byte; a record is mostly one long token that needs no escaping, which
//! this writer checks sixteen bytes at a time and copies whole. Numbers, free-form values
//! and any string that does need escaping still go through `serde_json`.

use std::io::Write;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::record::{Secret, TokenRecord};

/// A JSON buffer for secrets: every buffer it outgrows is wiped before it is freed (and
/// itself when dropped), so a growing record leaves no copy of its tokens behind.
pub(crate) struct SecretJson(pub(crate) Zeroizing<Vec<u8>>);

impl SecretJson {
    pub(crate) fn with_capacity(n: usize) -> Self {
        SecretJson(Zeroizing::new(Vec::with_capacity(n)))
    }

    /// Room for `extra` more bytes. Growing copies into a new buffer and drops the old one,
    /// which `Zeroizing` wipes (its whole capacity): `Vec`'s own growth would not.
    #[inline]
    fn reserve(&mut self, extra: usize) {
        let needed = self.0.len() + extra;
        if needed > self.0.capacity() {
            self.grow(needed);
        }
    }

    #[cold]
    fn grow(&mut self, needed: usize) {
        let mut bigger = Vec::with_capacity(needed.max(self.0.capacity() * 2));
        bigger.extend_from_slice(&self.0);
        self.0 = Zeroizing::new(bigger);
    }

    #[inline]
    fn put(&mut self, data: &[u8]) {
        self.reserve(data.len());
        self.0.extend_from_slice(data);
    }

    /// A string that needs no escaping, quoted: one capacity check, no call for the quotes.
    #[inline]
    fn quoted(&mut self, s: &[u8]) {
        self.reserve(s.len() + 2);
        self.0.push(b'"');
        self.0.extend_from_slice(s);
        self.0.push(b'"');
    }
}

impl Write for SecretJson {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.put(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type Out<'a> = &'a mut SecretJson;

/// Whether `s` holds a byte JSON must escape (`"`, `\\` or a control character). Whole
/// 32-byte blocks are folded without an early exit, which the compiler turns into vector
/// compares (an access token is a kilobyte or more that needs no escaping); the first block
/// with such a byte ends the search.
fn needs_escape(s: &[u8]) -> bool {
    let escape = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let blocks = s.chunks_exact(32);
    let tail = blocks.remainder();
    for block in blocks {
        if block.iter().fold(false, |any, &b| any | escape(b)) {
            return true;
        }
    }
    tail.iter().any(|&b| escape(b))
}

fn string(out: Out<'_>, s: &str) -> serde_json::Result<()> {
    if needs_escape(s.as_bytes()) {
        return serde_json::to_writer(out, s);
    }
    out.quoted(s.as_bytes());
    Ok(())
}

/// A free-form value: strings (most metadata) through [`string`], the rest through `serde_json`.
fn value(out: Out<'_>, v: &Value) -> serde_json::Result<()> {
    match v {
        Value::String(s) => string(out, s),
        other => serde_json::to_writer(out, other),
    }
}

fn raw(out: Out<'_>, bytes: &[u8]) -> serde_json::Result<()> {
    out.put(bytes);
    Ok(())
}

fn opt_string(out: Out<'_>, s: Option<&str>) -> serde_json::Result<()> {
    match s {
        Some(s) => string(out, s),
        None => raw(out, b"null"),
    }
}

fn number(out: Out<'_>, n: Option<f64>) -> serde_json::Result<()> {
    serde_json::to_writer(out, &n)
}

/// `,"name":`, one constant per field.
macro_rules! field {
    ($out:expr, $name:literal) => {
        raw($out, concat!(",\"", $name, "\":").as_bytes())
    };
}

/// A map's entries, each preceded by a comma when `comma` (and every one after the first).
fn entries(out: Out<'_>, map: &Map<String, Value>, mut comma: bool) -> serde_json::Result<()> {
    for (k, v) in map {
        if comma {
            raw(out, b",")?;
        }
        comma = true;
        string(out, k)?;
        raw(out, b":")?;
        value(out, v)?;
    }
    Ok(())
}

/// Writes `record` exactly as `serde_json::to_writer(out, record)` would.
pub(crate) fn write_record(out: Out<'_>, record: &TokenRecord) -> serde_json::Result<()> {
    raw(out, b"{\"access_token\":")?;
    string(out, record.access_token.expose())?;
    field!(out, "refresh_token")?;
    opt_string(out, record.refresh_token.as_ref().map(Secret::expose))?;
    field!(out, "scopes")?;
    raw(out, b"[")?;
    for (i, scope) in record.scopes.iter().enumerate() {
        if i > 0 {
            raw(out, b",")?;
        }
        string(out, scope)?;
    }
    raw(out, b"]")?;
    field!(out, "expires_at")?;
    number(out, record.expires_at)?;
    field!(out, "token_type")?;
    string(out, &record.token_type)?;
    field!(out, "resource")?;
    opt_string(out, record.resource.as_deref())?;
    field!(out, "authorization_server")?;
    opt_string(out, record.authorization_server.as_deref())?;
    field!(out, "obtained_at")?;
    number(out, Some(record.obtained_at))?;
    field!(out, "metadata")?;
    raw(out, b"{")?;
    entries(out, &record.metadata, false)?;
    raw(out, b"}")?;
    if let Some(id_token) = &record.id_token {
        field!(out, "id_token")?;
        string(out, id_token.expose())?;
    }
    if let Some(client_id) = &record.client_id {
        field!(out, "client_id")?;
        string(out, client_id)?;
    }
    if let Some(at) = record.refresh_expires_at {
        field!(out, "refresh_expires_at")?;
        number(out, Some(at))?;
    }
    if let Some(schema) = record.token_store_schema {
        field!(out, "token_store_schema")?;
        serde_json::to_writer(&mut *out, &schema)?;
    }
    entries(out, &record.extra, true)?;
    raw(out, b"}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(record: &TokenRecord) -> Vec<u8> {
        // Small on purpose: the growth path is exercised too.
        let mut out = SecretJson::with_capacity(8);
        write_record(&mut out, record).unwrap();
        out.0.to_vec()
    }

    #[test]
    fn the_escape_check_finds_every_byte_that_needs_one() {
        // Positions in the vector blocks and in the tail.
        for b in 0..=255u8 {
            for pos in 0..70 {
                let mut s = vec![b'a'; 70];
                s[pos] = b;
                let expected = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(needs_escape(&s), expected, "byte {b} at {pos}");
            }
        }
    }

    #[test]
    fn writes_what_serde_writes() {
        let plain = TokenRecord::new("at");
        let mut full = TokenRecord::new("a\"b\\c\u{1}d\u{7f}é/\u{2028}x".repeat(40))
            .with_refresh_token("rt\n")
            .with_scopes(["read", "wr\"ite", ""]);
        full.expires_at = Some(1_700_000_000.5);
        full.obtained_at = 1e21;
        full.resource = Some("https://r.example/\u{0}".into());
        full.authorization_server = Some("https://as.example".into());
        full.token_type = "mac".into();
        full.id_token = Some(Secret::new("id"));
        full.client_id = Some("c\t".into());
        full.refresh_expires_at = Some(f64::NAN);
        full.token_store_schema = None;
        full.metadata.insert(
            "k\"".into(),
            serde_json::json!({"n": [1, 2.5, null, "s\u{1}"]}),
        );
        full.metadata.insert("a".into(), serde_json::json!(true));
        full.extra
            .insert("vendor".into(), serde_json::json!({"x": "y"}));
        full.extra.insert("z\\".into(), serde_json::json!(-0.0));
        let mut odd = TokenRecord::new("");
        odd.expires_at = Some(f64::INFINITY);
        odd.scopes = (0..50).map(|i| format!("scope-{i}")).collect();
        for record in [plain, full, odd, crate::TokenRecord::new("x".repeat(5000))] {
            assert_eq!(
                String::from_utf8(ours(&record)).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_strings_are_written_as_serde_writes_them(
            access in "\\PC{0,40}|[\\x00-\\x7f]{0,40}",
            scope in "[ -~]{0,8}|\\PC{0,8}",
            key in "[\\x00-\\x7f]{0,6}",
        ) {
            let mut record = TokenRecord::new(access).with_scopes([scope]);
            record.extra.insert(key.clone(), Value::String(key));
            proptest::prop_assert_eq!(
                String::from_utf8(ours(&record)).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
        }
    }
}
