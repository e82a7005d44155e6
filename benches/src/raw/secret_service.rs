use std::collections::HashMap;

use secret_service::{EncryptionType, Item, SearchItemsResult, SecretService};
use token_store_core::async_trait;

use super::{Payload, RawKeys};
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// The `secret-service` crate on one D-Bus connection (session bus, Diffie-Hellman
/// session): a get is a search by attributes plus `GetSecret`, a put creates an item with
/// `replace = true` in the default collection, a delete searches and deletes, a list
/// searches by user and reads each item's attributes (where its key is). There is no
/// compare-and-swap to compare with.
///
/// A get keeps to the default collection's items and, on a miss, asks whether that
/// collection is locked: KeePassXC answers a search of a locked database with nothing, and
/// without the check a locked keyring would read as "no token" (a needless login). That is
/// the backend's guarantee, so the floor makes the same calls.
pub struct RawSecretService {
    ss: SecretService<'static>,
    service: String,
    keys: RawKeys,
    payload: Payload,
    /// The default collection's path, looked up once (as the backend remembers it).
    backend_calls: Option<zbus::zvariant::OwnedObjectPath>,
}

impl RawSecretService {
    /// Connects to the session bus's Secret Service; items carry `service=<service>`.
    pub async fn connect(service: &str, run_id: &str) -> BResult<Self> {
        let ss = SecretService::connect(EncryptionType::Dh).await?;
        let path = ss.get_default_collection().await?.collection_path;
        Ok(RawSecretService {
            ss,
            service: service.to_owned(),
            keys: RawKeys::new(run_id),
            payload: Payload::bytes(),
            backend_calls: Some(path),
        })
    }

    /// The typed floor (`Payload`): the record serialized on a write, parsed on a read.
    pub fn typed(mut self) -> Self {
        self.payload = self.payload.typed();
        self
    }

    fn attrs<'a>(&'a self, key: &'a str) -> HashMap<&'a str, &'a str> {
        let user = key.split(':').next().unwrap_or_default();
        HashMap::from([
            ("service", self.service.as_str()),
            ("key", key),
            ("user", user),
        ])
    }

    async fn put(&self, key: &str) -> BResult<()> {
        let coll = self.ss.get_default_collection().await?;
        coll.create_item(
            "token-store-bench raw item",
            self.attrs(key),
            &self.payload.value(),
            true,
            "application/octet-stream",
        )
        .await?;
        Ok(())
    }

    /// The service-wide search for one key's items.
    async fn search(&self, key: &str) -> BResult<SearchItemsResult<Item<'_>>> {
        Ok(self
            .ss
            .search_items(HashMap::from([
                ("service", self.service.as_str()),
                ("key", key),
            ]))
            .await?)
    }

    async fn get(&self, key: &str) -> BResult<Option<Vec<u8>>> {
        if let Some(collection) = &self.backend_calls {
            let found = self.search(key).await?;
            let prefix = format!("{}/", collection.as_str());
            let ours = found
                .unlocked
                .iter()
                .find(|item| item.item_path.as_str().starts_with(&prefix));
            if let Some(item) = ours {
                return Ok(Some(item.get_secret().await?));
            }
            let coll = self.ss.get_collection_by_path(collection.clone()).await?;
            if coll.is_locked().await? {
                return Err(fail("locked"));
            }
            return Ok(None);
        }
        let found = self.search(key).await?;
        match found.unlocked.first() {
            Some(item) => Ok(Some(item.get_secret().await?)),
            None => Ok(None),
        }
    }

    async fn delete(&self, key: &str) -> BResult<bool> {
        let found = self.search(key).await?;
        let mut any = false;
        for item in &found.unlocked {
            item.delete().await?;
            any = true;
        }
        Ok(any)
    }
}

#[async_trait]
impl Target for RawSecretService {
    fn label(&self) -> String {
        self.payload.label("secret-service crate, one connection (get: search; secret on a hit, the collection's Locked on a miss)")
    }

    fn supports(&self, op: Op) -> bool {
        op != Op::CasPut
    }

    async fn setup(&self) -> BResult<()> {
        for k in &self.keys.hit {
            self.put(k).await?;
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            self.put(&self.keys.del[i % SIDE_KEYS]).await?;
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let k = i % LIST_SIZE;
        match op {
            Op::GetHit => {
                let value = self
                    .get(&self.keys.hit[k])
                    .await?
                    .ok_or_else(|| fail("missing"))?;
                self.payload.take(value, 0)?;
            }
            Op::GetMiss => {
                if self.get(&self.keys.miss[i % SIDE_KEYS]).await?.is_some() {
                    return Err(fail("found"));
                }
            }
            Op::Put | Op::CasPut => self.put(&self.keys.hit[k]).await?,
            Op::Delete => {
                if !self.delete(&self.keys.del[i % SIDE_KEYS]).await? {
                    return Err(fail("nothing deleted"));
                }
            }
            Op::List => {
                let user = self.keys.user_prefix();
                let user = user.trim_end_matches(':');
                let found = self
                    .ss
                    .search_items(HashMap::from([
                        ("service", self.service.as_str()),
                        ("user", user),
                    ]))
                    .await?;
                // SearchItems returns object paths: the keys are in each item's attributes.
                let mut n = 0;
                for item in &found.unlocked {
                    if item
                        .get_attributes()
                        .await?
                        .get("key")
                        .is_some_and(|k| self.payload.listed(k))
                    {
                        n += 1;
                    }
                }
                if n != LIST_SIZE {
                    return Err(fail(format!("listed {n}")));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        for k in self.keys.hit.iter().chain(&self.keys.del) {
            self.delete(k).await?;
        }
        Ok(())
    }
}
