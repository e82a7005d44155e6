//! The scale section's floors: a get of a random record among N done the least way (a map
//! of N parsed records; one `rusqlite` connection on the store's own file), so that our
//! growth with N stands beside the growth of the floor on the same records: what the
//! memory hierarchy costs any client, and what is ours.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::Connection;
use token_store_core::{StorageKey, TokenRecord, async_trait};

use super::sqlite::{Cols, cols, connect, get};
use crate::ops::{BResult, Op, Target, fail};

/// A map of parsed records shared by the floors of one size sequence (grown as the store is).
pub type RecordMap = Arc<RwLock<HashMap<Cols, TokenRecord>>>;

enum Source {
    Map(RecordMap),
    Sqlite(Mutex<Connection>),
}

/// Gets of sampled keys from a map or a SQLite file holding N records.
pub struct ScaleFloor {
    source: Source,
    keys: Vec<Cols>,
}

impl ScaleFloor {
    /// Gets of `sample` from `map` (a get clones the parsed record).
    pub fn map(map: RecordMap, sample: &[StorageKey]) -> Self {
        ScaleFloor {
            source: Source::Map(map),
            keys: sample.iter().map(cols).collect(),
        }
    }

    /// Gets of `sample` from the SQLite database at `path`, with the store's settings.
    pub fn sqlite(path: &Path, sample: &[StorageKey]) -> BResult<Self> {
        Ok(ScaleFloor {
            source: Source::Sqlite(Mutex::new(connect(path)?)),
            keys: sample.iter().map(cols).collect(),
        })
    }

    /// Adds `keys`, each holding a clone of `record`, to `map`.
    pub fn insert(map: &RecordMap, keys: impl Iterator<Item = StorageKey>, record: &TokenRecord) {
        let mut map = map.write().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            map.insert(cols(&key), record.clone());
        }
    }
}

#[async_trait]
impl Target for ScaleFloor {
    fn label(&self) -> String {
        "scale floor".to_owned()
    }

    fn supports(&self, op: Op) -> bool {
        op == Op::GetHit
    }

    async fn setup(&self) -> BResult<()> {
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        if op != Op::GetHit {
            return Err(fail("a scale floor only gets"));
        }
        let key = &self.keys[i % self.keys.len()];
        let found = match &self.source {
            Source::Map(map) => {
                let map = map.read().unwrap_or_else(|p| p.into_inner());
                std::hint::black_box(map.get(key).cloned()).is_some()
            }
            Source::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                std::hint::black_box(get(&conn, key)?).is_some()
            }
        };
        if found {
            Ok(())
        } else {
            Err(fail("scale floor: missing record"))
        }
    }

    async fn cleanup(&self) -> BResult<()> {
        Ok(())
    }
}
