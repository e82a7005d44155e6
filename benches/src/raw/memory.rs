use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use token_store_core::{TokenRecord, async_trait};

use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// The floor under any in-process store of tokens: a bare map of parsed records with a
/// version each, behind the same blocking `RwLock` the memory store uses. A get clones the
/// record (the API hands out an owned record), a put stores a clone of the caller's record
/// under a new version, a CAS put compares the version first, a list collects and sorts the
/// user's keys. Keys are the four parts of a token key (user, resource, issuer, scopes), as
/// the typed API takes and lists them. No bytes, no JSON: what a program keeping its tokens
/// in a `HashMap` pays.
pub struct RawMemory {
    map: RwLock<Map>,
    keys: Keys,
    record: TokenRecord,
    versions: Vec<AtomicU64>,
    next: AtomicU64,
}

type Parts = [String; 4];
type Map = HashMap<Parts, (TokenRecord, u64)>;

struct Keys {
    user: String,
    hit: Vec<Parts>,
    miss: Vec<Parts>,
    del: Vec<Parts>,
}

fn parts(user: &str, i: usize) -> Parts {
    let key = fixture::key(user, i);
    [
        key.user_key().to_owned(),
        key.resource().to_owned(),
        key.authorization_server().unwrap_or_default().to_owned(),
        key.scope_fingerprint().to_owned(),
    ]
}

impl RawMemory {
    /// An empty map.
    pub fn new(run_id: &str) -> Self {
        RawMemory {
            map: RwLock::new(HashMap::new()),
            keys: {
                let user = format!("{run_id}-rawhit");
                Keys {
                    hit: (0..LIST_SIZE).map(|i| parts(&user, i)).collect(),
                    miss: (0..SIDE_KEYS)
                        .map(|i| parts(&format!("{run_id}-rawmiss"), i))
                        .collect(),
                    del: (0..SIDE_KEYS)
                        .map(|i| parts(&format!("{run_id}-rawdel"), i))
                        .collect(),
                    user,
                }
            },
            record: fixture::record(1),
            versions: (0..LIST_SIZE).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicU64::new(1),
        }
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn map_mut(&self) -> std::sync::RwLockWriteGuard<'_, Map> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    fn version(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

#[async_trait]
impl Target for RawMemory {
    fn label(&self) -> String {
        "HashMap<[String; 4], (TokenRecord, version)> + RwLock".to_owned()
    }

    async fn setup(&self) -> BResult<()> {
        let mut map = self.map_mut();
        for (k, key) in self.keys.hit.iter().enumerate() {
            let v = self.version();
            self.versions[k].store(v, Ordering::Relaxed);
            map.insert(key.clone(), (self.record.clone(), v));
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            let k = self.keys.del[i % SIDE_KEYS].clone();
            let v = self.version();
            self.map_mut().insert(k, (self.record.clone(), v));
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let k = i % LIST_SIZE;
        match op {
            Op::GetHit => {
                let found = self.map().get(&self.keys.hit[k]).cloned();
                std::hint::black_box(found.ok_or_else(|| fail("missing"))?);
            }
            Op::GetMiss => {
                let found = self.map().get(&self.keys.miss[i % SIDE_KEYS]).cloned();
                if found.is_some() {
                    return Err(fail("found"));
                }
            }
            Op::Put | Op::CasPut => {
                let record = self.record.clone();
                let v = self.version();
                let mut map = self.map_mut();
                let slot = map
                    .get_mut(&self.keys.hit[k])
                    .ok_or_else(|| fail("missing"))?;
                if op == Op::CasPut && slot.1 != self.versions[k].load(Ordering::Relaxed) {
                    return Err(fail("CAS mismatch"));
                }
                *slot = (record, v);
                drop(map);
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::Delete => {
                if self
                    .map_mut()
                    .remove(&self.keys.del[i % SIDE_KEYS])
                    .is_none()
                {
                    return Err(fail("nothing deleted"));
                }
            }
            Op::List => {
                let mut keys: Vec<Parts> = self
                    .map()
                    .keys()
                    .filter(|k| k[0] == self.keys.user)
                    .cloned()
                    .collect();
                keys.sort_unstable();
                if keys.len() != LIST_SIZE {
                    return Err(fail(format!("listed {}", keys.len())));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        self.map_mut().clear();
        Ok(())
    }
}
