//! Where a key's record lives below the prefix, and back: one-to-one, so a listing decodes
//! exactly the keys that were written.

use token_store_core::backend::percent_encode;
use token_store_core::{KeyKind, StorageKey};

/// One path segment from an already percent-encoded string. The encoded form only holds
/// `A-Za-z0-9_.-~%` (and `:` between parts), but `""`, `.` and `..` are no usable segment,
/// so they get forms the encoder never produces (`!`, `%2E`, `%2E%2E`).
pub(super) fn segment(encoded: &str) -> String {
    match encoded {
        "" => "!".to_owned(),
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        other => other.to_owned(),
    }
}

fn unsegment(segment: &str) -> &str {
    match segment {
        "!" => "",
        "%2E" => ".",
        "%2E%2E" => "..",
        other => other,
    }
}

/// Vault decodes the request path once, so the `%` of our encoding is itself escaped on the
/// wire; the stored KV key then holds exactly `segment()`'s text.
pub(super) fn wire(path: &str) -> String {
    path.replace('%', "%25")
}

/// The path of a key below the prefix (unescaped): `<kind>/<first part>/<other parts>` for
/// tokens and clients, so one LIST finds one user's tokens; `<kind>/<part>` otherwise.
pub(super) fn key_path(key: &StorageKey) -> String {
    let parts = key.parts();
    let kind = key.kind().as_str();
    match parts {
        [first, rest @ ..] if !rest.is_empty() => {
            let leaf: Vec<String> = rest.iter().map(|p| percent_encode(p)).collect();
            format!(
                "{kind}/{}/{}",
                segment(&percent_encode(first)),
                segment(&leaf.join(":"))
            )
        }
        [only] => format!("{kind}/{}", segment(&percent_encode(only))),
        _ => format!("{kind}/!"),
    }
}

/// The key stored at `<kind>/<dir>/<leaf>` (or `<kind>/<leaf>`), only if that is the
/// canonical path of the key it decodes to (no aliases).
pub(super) fn key_at(kind: KeyKind, dir: Option<&str>, leaf: &str) -> Option<StorageKey> {
    let mut encoded = String::new();
    if let Some(marker) = kind.marker() {
        encoded.push_str(marker);
        encoded.push(':');
    }
    if let Some(dir) = dir {
        encoded.push_str(unsegment(dir));
        encoded.push(':');
    }
    encoded.push_str(unsegment(leaf));
    let key = StorageKey::decode(&encoded)?;
    let expected = match dir {
        Some(d) => format!("{}/{d}/{leaf}", kind.as_str()),
        None => format!("{}/{leaf}", kind.as_str()),
    };
    (key.kind() == kind && key_path(&key) == expected).then_some(key)
}

/// Whether keys of this kind live one folder deeper (per user, or per authorization server).
pub(super) fn two_level(kind: KeyKind) -> bool {
    kind.arity() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_for_odd_parts() {
        let odd = ["", ".", "..", "!", "%2E", "a:b/c", "ü %", "~"];
        for kind in KeyKind::ALL {
            for p in odd {
                let parts: Vec<String> = (0..kind.arity()).map(|_| p.to_owned()).collect();
                let key = StorageKey::new(kind, parts).unwrap();
                let path = key_path(&key);
                let segs: Vec<&str> = path.split('/').collect();
                for s in &segs {
                    assert!(!s.is_empty() && *s != "." && *s != "..", "{path}");
                }
                let back = match segs.as_slice() {
                    [_, dir, leaf] => key_at(kind, Some(dir), leaf),
                    [_, leaf] => key_at(kind, None, leaf),
                    _ => None,
                };
                assert_eq!(back, Some(key), "{path}");
            }
        }
    }

    #[test]
    fn aliases_are_not_keys() {
        // `%41` is `A` written another way: not the canonical path of any key.
        assert_eq!(key_at(KeyKind::Meta, None, "%41"), None);
        assert_eq!(
            key_at(KeyKind::Meta, None, "A").map(|k| k.parts()[0].clone()),
            Some("A".into())
        );
        assert_eq!(key_at(KeyKind::Token, Some("u"), "only-one-part"), None);
    }
}
