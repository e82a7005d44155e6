//! The secret values the suites write, all marked with one canary string, so a leak check
//! can search logs, error messages and `Debug` output for every one of them at once.
//!
//! Every access token, refresh token, ID token, client secret, PKCE verifier and passphrase
//! the conformance suite (and the torture suites) use is made by [`secret`]: it contains
//! [`CANARY`] in its middle. A [`Secret::preview`](token_store_core::Secret::preview) shows
//! only the first and last four characters, which never include the canary.

use std::fmt;

/// The marker inside every secret the suites use. Not a word any library logs by itself.
pub const CANARY: &str = "Cnry7Qx";

/// A secret value for `tag`: `"<tag>-Cnry7Qx-sEcReT"`.
pub fn secret(tag: impl fmt::Display) -> String {
    format!("{tag}-{CANARY}-sEcReT")
}

/// A counter carried as a token value (`"<n>-Cnry7Qx-sEcReT"`), for read-modify-write cases.
pub fn counter(n: u64) -> String {
    secret(n)
}

/// The number in a [`counter`] value, `None` for anything else.
pub fn counter_value(token: &str) -> Option<u64> {
    token.split('-').next()?.parse().ok()
}

/// Where in `text` any of `needles` (or the canary) occurs, as short excerpts with the
/// found value blanked out, so a report can show where a secret leaked without repeating it.
pub fn find_leaks(text: &str, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let canary = CANARY.to_owned();
    for needle in std::iter::once(&canary).chain(needles.iter()) {
        if needle.len() < 6 {
            // Too short to mean anything in a log (it would match by accident).
            continue;
        }
        let mut from = 0;
        while let Some(at) = text[from..].find(needle.as_str()) {
            let at = from + at;
            let start = floor_char(text, at.saturating_sub(80));
            let end = floor_char(text, (at + needle.len() + 80).min(text.len()));
            let excerpt = text[start..end].replace(needle.as_str(), "<SECRET>");
            found.push(excerpt.replace('\n', "\\n"));
            from = at + needle.len();
            if found.len() >= 20 {
                return found;
            }
        }
    }
    found
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
