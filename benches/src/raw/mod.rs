//! The raw clients: each backend's operations done directly with the client library an
//! application would otherwise use, with the same value bytes (the typed layer's JSON for
//! [`crate::fixture::record`]) and keys of the same length. They are the baselines of the
//! ours/raw ratio.
//!
//! Each is built twice (`Payload`): as a **byte** floor, timed beside ours as bytes
//! (`raw()` of the opened store), and as a **typed** floor, timed beside ours: the same
//! client whose caller also parses the value it read into a `TokenRecord` and serializes the
//! record it writes, since that is what the typed API hands back and takes. Both wipe the
//! values they read.
//!
//! What each floor does, and why nothing less gives the backend's guarantees, is the "Fair
//! floors" table of BENCHMARKS.md; in short:
//!
//! | backend | raw client |
//! | --- | --- |
//! | memory | a map of parsed records (a get clones one, a put stores a clone) |
//! | file | the same AEAD, associated data and record layout: keyed names, decrypt on read; write + fsync + rename + directory fsync under `flock` on `spawn_blocking` |
//! | sqlite | `rusqlite`, one prepared (cached) statement per operation, autocommit; reads live rows on the calling thread, writes on a thread of their own |
//! | redis (all topologies) | `redis` crate, one multiplexed (or cluster) connection: bounded `GETRANGE` (+ a step telling absent from empty), SHA-1 version, `SET`, a Lua CAS, `DEL`, `SCAN` |
//! | vault | `reqwest`: the requests a correct KV v2 client makes (CAS 2, delete 3, list + a read per key) |
//! | secret service | `secret-service` crate: search + get secret (+ `Locked` on a miss), create item (replace), search + delete, search + attributes |
//! | postgres | `tokio-postgres` through a `deadpool-postgres` pool, the backend's own statements on its own table (and, as a variant, one connection without a pool) |
//! | scale | a get among N records: a map of N parsed records; one `rusqlite` connection on the store's file |

mod file;
mod memory;
mod postgres;
mod redis;
mod scale;
mod secret_service;
mod sqlite;
mod vault;

pub use self::file::RawFile;
pub use self::memory::RawMemory;
pub use self::postgres::RawPostgres;
pub use self::redis::RawRedis;
pub use self::scale::{RecordMap, ScaleFloor};
pub use self::secret_service::RawSecretService;
pub use self::sqlite::{RawSqlite, Variant as SqliteVariant};
pub use self::vault::RawVault;

use token_store_core::{KeyKind, StorageKey, TokenRecord};
use zeroize::Zeroizing;

use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, SIDE_KEYS, fail};

/// The keys of a raw target as the typed layer encodes them (`StorageKey::encode`), so raw
/// keys are as long as ours: hits/puts/list under one user, misses and deletes under others.
pub(crate) struct RawKeys {
    /// The user whose `LIST_SIZE` records are read, overwritten and listed.
    pub user: String,
    pub hit: Vec<String>,
    pub miss: Vec<String>,
    pub del: Vec<String>,
}

impl RawKeys {
    pub(crate) fn new(run_id: &str) -> Self {
        let enc = |user: &str, i: usize| fixture::key(user, i).storage_key().encode();
        let user = format!("{run_id}-rawhit");
        RawKeys {
            hit: (0..LIST_SIZE).map(|i| enc(&user, i)).collect(),
            miss: (0..SIDE_KEYS)
                .map(|i| enc(&format!("{run_id}-rawmiss"), i))
                .collect(),
            del: (0..SIDE_KEYS)
                .map(|i| enc(&format!("{run_id}-rawdel"), i))
                .collect(),
            user,
        }
    }

    /// The encoded-key prefix of every hit key (`quote(user) + ":"`).
    pub(crate) fn user_prefix(&self) -> String {
        format!("{}:", token_store_core::backend::percent_encode(&self.user))
    }
}

/// The value a floor writes, and what its caller does with a value it read.
///
/// A **byte** floor (timed beside ours as bytes) writes prepared bytes and hands back what
/// it read. A **typed** floor (timed beside ours, whose API takes and returns a
/// [`TokenRecord`]) does what a caller of the raw client must do to offer the same: it
/// serializes the record for every write (`serde_json::to_vec`, the derived `Serialize`) and
/// parses every value it read (`serde_json::from_slice`, the decoder the typed layer uses),
/// on the bytes just read, so it meets them as cold as ours does.
///
/// Either way a value read is wiped when dropped (`zeroize`), as ours are (`SecretBytes`),
/// and so is the JSON a typed floor serialized: a token left in freed memory is what the
/// wipe guarantees against.
pub(crate) struct Payload {
    typed: bool,
    bytes: Vec<u8>,
    record: TokenRecord,
}

impl Payload {
    /// A byte floor's payload: [`fixture::record`] of seed 1 and its JSON (one record: its
    /// expiry is taken from the clock when it is built).
    pub(crate) fn bytes() -> Self {
        let record = fixture::record(1);
        Payload {
            typed: false,
            bytes: serde_json::to_vec(&record).unwrap_or_default(),
            record,
        }
    }

    /// The same payload, typed.
    pub(crate) fn typed(mut self) -> Self {
        self.typed = true;
        self
    }

    /// The bytes a write sends: serialized now by a typed floor, the prepared ones otherwise
    /// (the same bytes either way).
    pub(crate) fn value(&self) -> Value<'_> {
        if self.typed {
            Value::Encoded(Zeroizing::new(
                serde_json::to_vec(&self.record).unwrap_or_default(),
            ))
        } else {
            Value::Prepared(&self.bytes)
        }
    }

    /// What a read hands its caller: the value from byte `skip` on, which a typed floor
    /// parses into a [`TokenRecord`]; wiped when done.
    pub(crate) fn take(&self, value: Vec<u8>, skip: usize) -> BResult<()> {
        let value = Zeroizing::new(value);
        if self.typed {
            let json = value.get(skip..).ok_or_else(|| fail("short value"))?;
            let record: TokenRecord = serde_json::from_slice(json)?;
            std::hint::black_box(record);
        } else {
            std::hint::black_box(&value);
        }
        Ok(())
    }

    /// Whether a listed key (encoded) counts: a typed floor decodes it into a `StorageKey`,
    /// as the typed API hands back keys, not strings; a byte floor takes it as found.
    pub(crate) fn listed(&self, encoded: &str) -> bool {
        !self.typed || StorageKey::decode(encoded).is_some()
    }

    /// The same for a key listed as its parts (an SQL row): a typed floor builds and checks
    /// the token key (`None` when it is not one); a byte floor takes the row as found.
    pub(crate) fn listed_parts(&self, parts: [String; 4]) -> Option<Option<StorageKey>> {
        if !self.typed {
            return Some(None);
        }
        StorageKey::new(KeyKind::Token, parts.into()).ok().map(Some)
    }

    /// `label` of a byte floor, or of the typed floor built on it.
    pub(crate) fn label(&self, label: &str) -> String {
        if self.typed {
            format!("{label} + serde_json (the typed record)")
        } else {
            label.to_owned()
        }
    }
}

/// A value a floor writes: its prepared bytes, or the record just serialized (wiped when
/// dropped).
pub(crate) enum Value<'a> {
    Prepared(&'a [u8]),
    Encoded(Zeroizing<Vec<u8>>),
}

impl std::ops::Deref for Value<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Value::Prepared(bytes) => bytes,
            Value::Encoded(bytes) => bytes,
        }
    }
}
