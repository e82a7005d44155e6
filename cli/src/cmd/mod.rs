//! One module per command. Each returns a [`Report`](crate::out::Report) (text and JSON) or
//! a [`Failure`](crate::exit::Failure).

pub(crate) mod bench;
pub(crate) mod bundle;
pub(crate) mod delete;
pub(crate) mod doctor;
pub(crate) mod get;
pub(crate) mod list;
pub(crate) mod logout;
pub(crate) mod migrate;
pub(crate) mod put;
pub(crate) mod rekey;
pub(crate) mod status;

use serde_json::{Value, json};
use token_store::{KeyKind, StorageKey, TokenKey};

use crate::out::{clean, shell_quote};
use crate::store::Opened;

/// An entry that could not be read, with how to remove it.
pub(crate) struct Unreadable {
    /// The storage key, when known (a record whose key is fine but whose value is not).
    pub(crate) storage_key: Option<StorageKey>,
    /// Where the backend says it is (a file name, a Redis key, a row).
    pub(crate) location: String,
    pub(crate) reason: String,
    /// The exact command that deletes it, when there is one.
    pub(crate) delete_command: Option<String>,
}

impl Unreadable {
    /// A record whose key is known but whose value cannot be read.
    pub(crate) fn at_key(opened: &Opened, key: &StorageKey, reason: String) -> Self {
        Unreadable {
            storage_key: Some(key.clone()),
            location: key.encode(),
            reason,
            delete_command: Some(opened.delete_command(key)),
        }
    }

    /// An entry a listing reported.
    pub(crate) fn listed(opened: &Opened, u: &token_store::Unreadable) -> Self {
        // The keychains report an entry by its encoded key.
        let key = StorageKey::decode(&u.location)
            .filter(|k| matches!(k.kind(), KeyKind::Token | KeyKind::Client));
        let delete_command = match (&key, &opened.file_dir) {
            (Some(k), _) => Some(opened.delete_command(k)),
            // The file store reports a file of its record directory by name.
            (None, Some(dir)) if !u.location.contains('/') => Some(format!(
                "find {} -maxdepth 2 -type f -name {} -delete",
                shell_quote(&dir.display().to_string()),
                shell_quote(&find_pattern(&u.location))
            )),
            _ => None,
        };
        Unreadable {
            storage_key: key,
            location: u.location.clone(),
            reason: u.reason.clone(),
            delete_command,
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "storage_key": self.storage_key.as_ref().map(StorageKey::encode),
            "location": self.location,
            "reason": self.reason,
            "delete_command": self.delete_command,
        })
    }

    /// Two lines: what and why, then how to remove it.
    pub(crate) fn text(&self, opened: &Opened) -> String {
        let mut out = format!(
            "unreadable: {}\n    why: {}\n",
            clean(&self.location),
            clean(&self.reason)
        );
        match &self.delete_command {
            Some(cmd) => {
                out.push_str(&format!("    delete with: {cmd}\n"));
                if opened.command_hides_secret() && cmd.starts_with("tokenstore") {
                    out.push_str("    (put the store URL's password back in)\n");
                }
            }
            None => out.push_str(
                "    not addressable through token-store: remove it with the backend's own tools\n",
            ),
        }
        out
    }
}

/// Unreadable entries of several listings, each once (a backend that cannot tell an
/// unreadable entry's kind reports it in the token and in the client listing).
pub(crate) fn dedup_unreadable<'a>(
    opened: &Opened,
    lists: impl IntoIterator<Item = &'a token_store::Unreadable>,
) -> Vec<Unreadable> {
    let mut seen = std::collections::BTreeSet::new();
    lists
        .into_iter()
        .filter(|u| seen.insert(u.location.clone()))
        .map(|u| Unreadable::listed(opened, u))
        .collect()
}

/// A file name as a `find -name` pattern matching only itself.
fn find_pattern(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A token key's parts as JSON.
pub(crate) fn token_key_json(key: &TokenKey) -> Value {
    json!({
        "storage_key": key.storage_key().encode(),
        "user": key.user_key(),
        "resource": key.resource(),
        "issuer": key.authorization_server(),
        "scopes": key.scope_fingerprint(),
    })
}
