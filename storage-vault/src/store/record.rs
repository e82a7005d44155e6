//! What one KV v2 read says a key holds: our record (value, KV version, generation), a
//! tombstone or deleted version (absent), or data that is not ours.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use token_store_core::{Error, Result, SecretBytes, StorageKey, Version};

use crate::client::{BACKEND, Reply};

/// What a key holds right now, from one read.
pub(super) enum Current {
    /// No live record. `cas` is the version a create must name: 0 when the key has no
    /// metadata, else the version of the tombstone / soft-deleted / destroyed latest version;
    /// `tomb` what that latest version is.
    Absent { cas: u64, tomb: Tomb },
    /// A live record at KV version `n`, of generation `generation`.
    Present {
        n: u64,
        generation: String,
        value: SecretBytes,
    },
    /// KV data at version `n` that is neither ours nor a tombstone (no `value`, not base64:
    /// another writer, a KV v1 leftover). Unreadable, but an unconditional write or delete
    /// may replace it, as the file and keychain stores do.
    Undecodable { n: u64, why: &'static str },
}

/// What the latest version of a key that reads as absent is: what reclamation needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tomb {
    /// Nothing of ours: no version at all, or a version deleted or destroyed by someone else.
    Other,
    /// Our tombstone (a delete's final state), written at `written` by the server's clock,
    /// about `age` old (`None` when the answer lacks the times): only a first sorting for
    /// reclamation, which checks the age with the server's own times before it deletes.
    Tombstone {
        age: Option<Duration>,
        written: Option<SystemTime>,
    },
    /// A reclamation's marker (see `reclaim.rs`): in progress while younger than
    /// [`super::RECLAIM_LEASE`], abandoned after. `restore_cas_required`: the key had no
    /// `cas_required` of its own before the reclamation set it.
    Reclaiming {
        age: Option<Duration>,
        written: Option<SystemTime>,
        restore_cas_required: bool,
    },
}

impl Current {
    /// The key's state from a 404 (soft-deleted or destroyed latest version: its metadata
    /// may still name the version; nothing at all: 0).
    pub(super) fn from_not_found(reply: &Reply) -> Self {
        let cas = reply
            .body
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Current::Absent {
            cas,
            tomb: Tomb::Other,
        }
    }

    /// The key's state from a successful read.
    pub(super) fn from_data(key: &StorageKey, reply: &Reply) -> Result<Self> {
        // Without a version nothing can be written over it with `cas`: that stays an error
        // for every operation.
        let n = reply
            .body
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64)
            .ok_or_else(|| corrupt(key, "KV v2 answer without a version (is the mount KV v1?)"))?;
        let data = match reply.body.pointer("/data/data") {
            None | Some(Value::Null) => {
                return Ok(Current::Absent {
                    cas: n,
                    tomb: Tomb::Other,
                });
            }
            Some(d) => d,
        };
        if is_tombstone(data) {
            let written = created_time(reply);
            let tomb = if data.get("reclaim").and_then(Value::as_bool) == Some(true) {
                Tomb::Reclaiming {
                    age: version_age(reply),
                    written,
                    restore_cas_required: data
                        .get("restore_cas_required")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                }
            } else {
                Tomb::Tombstone {
                    age: rough_version_age(reply),
                    written,
                }
            };
            return Ok(Current::Absent { cas: n, tomb });
        }
        let Some(encoded) = data.get("value").and_then(Value::as_str) else {
            return Ok(Current::Undecodable {
                n,
                why: "no `value` field in the KV data (not written by token-store)",
            });
        };
        let Ok(bytes) = B64.decode(encoded) else {
            return Ok(Current::Undecodable {
                n,
                why: "`value` is not base64",
            });
        };
        // A record written by hand without a generation still gets a stable version.
        let generation = data
            .get("generation")
            .and_then(Value::as_str)
            .unwrap_or("0")
            .to_owned();
        Ok(Current::Present {
            n,
            generation,
            value: SecretBytes::new(bytes),
        })
    }

    pub(super) fn version(&self) -> Option<Version> {
        match self {
            Current::Absent { .. } | Current::Undecodable { .. } => None,
            Current::Present { n, generation, .. } => Some(make_version(*n, generation)),
        }
    }

    /// Whether `want` names this very record: its KV version *and* its generation.
    pub(super) fn matches(&self, want: &Version) -> bool {
        match self {
            Current::Present { n, generation, .. } => {
                parse_version(want) == Some((*n, generation.as_str()))
            }
            _ => false,
        }
    }
}

pub(super) fn corrupt(key: &StorageKey, message: &str) -> Error {
    Error::Corrupt {
        backend: BACKEND,
        key: key.to_string(),
        message: message.to_owned(),
        source: None,
    }
}

/// Our version string: the KV v2 version and the record's generation (random per creation),
/// so a record deleted and created again never repeats an old version (KV v2 restarts at 1
/// after a metadata delete, which would make a stale compare-and-swap succeed: ABA).
pub(super) fn make_version(n: u64, generation: &str) -> Version {
    Version::new(format!("{n}@{generation}"))
}

fn parse_version(v: &Version) -> Option<(u64, &str)> {
    let (n, g) = v.as_str().split_once('@')?;
    Some((n.parse().ok()?, g))
}

/// 64 random bits, hex: the generation of a create or unconditional write.
pub(super) fn new_generation() -> Result<String> {
    let mut b = [0u8; 8];
    token_store_core::backend::fill_random(&mut b)?;
    Ok(token_store_core::backend::hex(&b))
}

/// Our tombstone: `{"tombstone": true, ...}` in the KV data.
fn is_tombstone(data: &Value) -> bool {
    data.get("tombstone").and_then(Value::as_bool) == Some(true)
}

/// When the version a KV v2 answer is about was written, by the server's clock
/// (`created_time`, RFC 3339 in UTC), from a read (`data.metadata`) or a write (`data`).
pub(super) fn created_time(reply: &Reply) -> Option<SystemTime> {
    let text = reply
        .body
        .pointer("/data/metadata/created_time")
        .or_else(|| reply.body.pointer("/data/created_time"))
        .and_then(Value::as_str)?;
    humantime::parse_rfc3339(text).ok()
}

/// How old the answer's version is by the server's clock: its `Date` header (whole seconds,
/// so never more than the true age) minus the version's `created_time`; the local clock when
/// the server sent no `Date`. `None` without a `created_time`. For the reclamation lease,
/// which must never be thought over before it is.
pub(super) fn version_age(reply: &Reply) -> Option<Duration> {
    let written = created_time(reply)?;
    let now = reply.date.unwrap_or_else(SystemTime::now);
    Some(now.duration_since(written).unwrap_or(Duration::ZERO))
}

/// [`version_age`] by the later of the server's `Date` and the local clock: the `Date` header's
/// whole seconds would hide sub-second ages, and a local clock behind the server's would hide
/// more. May overestimate (a local clock ahead): only for choosing what to try to reclaim.
fn rough_version_age(reply: &Reply) -> Option<Duration> {
    let written = created_time(reply)?;
    let local = SystemTime::now();
    let now = reply.date.map_or(local, |d| d.max(local));
    Some(now.duration_since(written).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_carry_the_generation() {
        let v = make_version(3, "abcd");
        assert_eq!(parse_version(&v), Some((3, "abcd")));
        assert_eq!(parse_version(&Version::new("3")), None);
        assert_eq!(new_generation().unwrap().len(), 16);
    }
}
