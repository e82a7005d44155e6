use std::collections::HashMap;

use token_store_core::async_trait;
use tokio::sync::Mutex;

use super::RawKeys;
use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// A `HashMap` of bytes behind the same async mutex the memory store uses: the floor under
/// any in-process store (no key structure, no JSON, no versions).
pub struct RawMemory {
    map: Mutex<HashMap<String, Vec<u8>>>,
    keys: RawKeys,
    value: Vec<u8>,
}

impl RawMemory {
    /// An empty map.
    pub fn new(run_id: &str) -> Self {
        RawMemory {
            map: Mutex::new(HashMap::new()),
            keys: RawKeys::new(run_id),
            value: fixture::record_bytes(1),
        }
    }
}

#[async_trait]
impl Target for RawMemory {
    fn label(&self) -> String {
        "HashMap<String, Vec<u8>> + Mutex".to_owned()
    }

    async fn setup(&self) -> BResult<()> {
        let mut map = self.map.lock().await;
        for k in &self.keys.hit {
            map.insert(k.clone(), self.value.clone());
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            let k = self.keys.del[i % SIDE_KEYS].clone();
            self.map.lock().await.insert(k, self.value.clone());
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let k = i % LIST_SIZE;
        match op {
            Op::GetHit => {
                let v = self.map.lock().await.get(&self.keys.hit[k]).cloned();
                v.ok_or_else(|| fail("missing"))?;
            }
            Op::GetMiss => {
                let v = self
                    .map
                    .lock()
                    .await
                    .get(&self.keys.miss[i % SIDE_KEYS])
                    .cloned();
                if v.is_some() {
                    return Err(fail("found"));
                }
            }
            Op::Put | Op::CasPut => {
                let key = self.keys.hit[k].clone();
                let mut map = self.map.lock().await;
                // CAS: the check a versioned map needs (compare the current value).
                if op == Op::CasPut && map.get(&key).is_none_or(|v| *v != self.value) {
                    return Err(fail("CAS mismatch"));
                }
                map.insert(key, self.value.clone());
            }
            Op::Delete => {
                if self
                    .map
                    .lock()
                    .await
                    .remove(&self.keys.del[i % SIDE_KEYS])
                    .is_none()
                {
                    return Err(fail("nothing deleted"));
                }
            }
            Op::List => {
                let prefix = self.keys.user_prefix();
                let n = self
                    .map
                    .lock()
                    .await
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .count();
                if n != LIST_SIZE {
                    return Err(fail(format!("listed {n}")));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        self.map.lock().await.clear();
        Ok(())
    }
}
