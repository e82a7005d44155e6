//! The raw clients: each backend's operations done directly with the client library an
//! application would otherwise use, with the same value bytes (the typed layer's JSON for
//! [`crate::fixture::record`]) and keys of the same length. They are the baselines of the
//! ours/raw ratio.
//!
//! | backend | raw client |
//! | --- | --- |
//! | memory | `tokio::sync::Mutex<HashMap<String, Vec<u8>>>` |
//! | file | `std::fs` read; write + fsync + rename + directory fsync; `flock` for CAS |
//! | sqlite | one `rusqlite` connection, one prepared (cached) statement per operation, autocommit |
//! | redis (all topologies) | `redis` crate, one multiplexed (or cluster) connection: GET, SET, DEL, SCAN, a minimal Lua CAS |
//! | vault | `reqwest`: one KV v2 HTTP call per operation (`cas` option for CAS) |
//! | secret service | `secret-service` crate: search + get secret, create item (replace), search + delete, search + attributes of each item |
//! | postgres | one `tokio-postgres` connection (no pool), one prepared statement per operation, autocommit, on the store's own table |

mod file;
mod memory;
mod postgres;
mod redis;
mod secret_service;
mod sqlite;
mod vault;

pub use self::file::RawFile;
pub use self::memory::RawMemory;
pub use self::postgres::RawPostgres;
pub use self::redis::RawRedis;
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
