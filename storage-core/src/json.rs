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

    #[inline]
    fn put(&mut self, data: &[u8]) {
        let needed = self.0.len() + data.len();
        if needed > self.0.capacity() {
            let mut bigger = Vec::with_capacity(needed.max(self.0.capacity() * 2));
            bigger.extend_from_slice(&self.0);
            // The old buffer is zeroized (its whole capacity) as it is dropped here.
            self.0 = Zeroizing::new(bigger);
        }
        self.0.extend_from_slice(data);
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

/// Whether `s` holds a byte JSON must escape (`"`, `\\` or a control character), eight
/// bytes at a time: a word has a byte below 0x20, or equal to `"` or `\\`, exactly when
/// these borrow tricks leave a high bit set.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    let words = s.chunks_exact(8);
    let tail = words.remainder();
    for word in words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let v = u64::from_le_bytes(bytes);
        let quote = v ^ (ONES * u64::from(b'"'));
        let backslash = v ^ (ONES * u64::from(b'\\'));
        if below(v, 0x20) | below(quote, 1) | below(backslash, 1) != 0 {
            return true;
        }
    }
    tail.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

fn string(out: Out<'_>, s: &str) -> serde_json::Result<()> {
    if needs_escape(s.as_bytes()) {
        return serde_json::to_writer(out, s);
    }
    out.put(b"\"");
    out.put(s.as_bytes());
    out.put(b"\"");
    Ok(())
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

/// `"name":` preceded by a comma.
fn field(out: Out<'_>, name: &[u8]) -> serde_json::Result<()> {
    raw(out, b",\"")?;
    raw(out, name)?;
    raw(out, b"\":")
}

fn object_entries(out: Out<'_>, map: &Map<String, Value>) -> serde_json::Result<()> {
    for (k, v) in map {
        raw(out, b",")?;
        string(out, k)?;
        raw(out, b":")?;
        serde_json::to_writer(&mut *out, v)?;
    }
    Ok(())
}

/// Writes `record` exactly as `serde_json::to_writer(out, record)` would.
pub(crate) fn write_record(out: Out<'_>, record: &TokenRecord) -> serde_json::Result<()> {
    raw(out, b"{\"access_token\":")?;
    string(out, record.access_token.expose())?;
    field(out, b"refresh_token")?;
    opt_string(out, record.refresh_token.as_ref().map(Secret::expose))?;
    field(out, b"scopes")?;
    raw(out, b"[")?;
    for (i, scope) in record.scopes.iter().enumerate() {
        if i > 0 {
            raw(out, b",")?;
        }
        string(out, scope)?;
    }
    raw(out, b"]")?;
    field(out, b"expires_at")?;
    number(out, record.expires_at)?;
    field(out, b"token_type")?;
    string(out, &record.token_type)?;
    field(out, b"resource")?;
    opt_string(out, record.resource.as_deref())?;
    field(out, b"authorization_server")?;
    opt_string(out, record.authorization_server.as_deref())?;
    field(out, b"obtained_at")?;
    number(out, Some(record.obtained_at))?;
    field(out, b"metadata")?;
    raw(out, b"{")?;
    let mut first = true;
    for (k, v) in &record.metadata {
        if !first {
            raw(out, b",")?;
        }
        first = false;
        string(out, k)?;
        raw(out, b":")?;
        serde_json::to_writer(&mut *out, v)?;
    }
    raw(out, b"}")?;
    if let Some(id_token) = &record.id_token {
        field(out, b"id_token")?;
        string(out, id_token.expose())?;
    }
    if let Some(client_id) = &record.client_id {
        field(out, b"client_id")?;
        string(out, client_id)?;
    }
    if let Some(at) = record.refresh_expires_at {
        field(out, b"refresh_expires_at")?;
        number(out, Some(at))?;
    }
    if let Some(schema) = record.token_store_schema {
        field(out, b"token_store_schema")?;
        serde_json::to_writer(&mut *out, &schema)?;
    }
    object_entries(out, &record.extra)?;
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
        for b in 0..=255u8 {
            for pos in 0..20 {
                let mut s = vec![b'a'; 20];
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
