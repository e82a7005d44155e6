//! The raw clients: each backend's operations done directly with the client library an
//! application would otherwise use, with the same value bytes (the typed layer's JSON for
//! [`crate::fixture::record`]) and keys of the same length. They are the baselines of the
//! ours/raw ratio.
//!
//! What each floor does, and why nothing less gives the backend's guarantees, is the "Fair
//! floors" table of BENCHMARKS.md; in short:
//!
//! | backend | raw client |
//! | --- | --- |
//! | memory | a map of parsed records (a get clones one, a put stores a clone) |
//! | file | the same AEAD and record layout: keyed names, decrypt on read; write + fsync + rename + directory fsync under `flock` |
//! | sqlite | one `rusqlite` connection, one prepared (cached) statement per operation, autocommit |
//! | redis (all topologies) | `redis` crate, one multiplexed (or cluster) connection: bounded `GETRANGE` (+ a step telling absent from empty), SHA-1 version, `SET`, a Lua CAS, `DEL`, `SCAN` |
//! | vault | `reqwest`: the requests a correct KV v2 client makes (CAS 2, delete 3, list + a read per key) |
//! | secret service | `secret-service` crate: search + get secret (+ `Locked` on a miss), create item (replace), search + delete, search + attributes |
//! | postgres | one `tokio-postgres` connection (no pool), the backend's own statements on its own table |
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

use crate::fixture;
use crate::ops::{LIST_SIZE, SIDE_KEYS};

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
