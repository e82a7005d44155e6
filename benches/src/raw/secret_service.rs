use std::collections::HashMap;

use secret_service::{EncryptionType, SecretService};
use token_store_core::async_trait;

use super::RawKeys;
use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// The `secret-service` crate on one D-Bus connection (session bus, Diffie-Hellman
/// session): a get is a search by attributes plus `GetSecret`, a put creates an item with
/// `replace = true` in the default collection, a delete searches and deletes, a list
/// searches by user and reads each item's attributes (where its key is). There is no
/// compare-and-swap to compare with.
pub struct RawSecretService {
    ss: SecretService<'static>,
    service: String,
    keys: RawKeys,
    value: Vec<u8>,
    /// Attribution variant: gets make the backend's calls (default collection, lock check,
    /// search in the collection, get secret).
    backend_calls: bool,
}

impl RawSecretService {
    /// Connects to the session bus's Secret Service; items carry `service=<service>`.
    pub async fn connect(service: &str, run_id: &str) -> BResult<Self> {
        Ok(RawSecretService {
            ss: SecretService::connect(EncryptionType::Dh).await?,
            service: service.to_owned(),
            keys: RawKeys::new(run_id),
            value: fixture::record_bytes(1),
            backend_calls: false,
        })
    }

    /// The attribution variant: a get makes the backend's D-Bus calls (`ReadAlias` of the
    /// default collection, its `Locked` property, `SearchItems` in it, `GetSecret`) instead
    /// of the service-wide search and `GetSecret`; only gets.
    pub fn with_backend_calls(mut self) -> Self {
        self.backend_calls = true;
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
            &self.value,
            true,
            "application/octet-stream",
        )
        .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> BResult<Option<Vec<u8>>> {
        if self.backend_calls {
            let coll = self.ss.get_default_collection().await?;
            if coll.is_locked().await? {
                return Err(fail("locked"));
            }
            let items = coll
                .search_items(HashMap::from([
                    ("service", self.service.as_str()),
                    ("key", key),
                ]))
                .await?;
            return match items.first() {
                Some(item) => Ok(Some(item.get_secret().await?)),
                None => Ok(None),
            };
        }
        let found = self
            .ss
            .search_items(HashMap::from([
                ("service", self.service.as_str()),
                ("key", key),
            ]))
            .await?;
        match found.unlocked.first() {
            Some(item) => Ok(Some(item.get_secret().await?)),
            None => Ok(None),
        }
    }

    async fn delete(&self, key: &str) -> BResult<bool> {
        let found = self
            .ss
            .search_items(HashMap::from([
                ("service", self.service.as_str()),
                ("key", key),
            ]))
            .await?;
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
        if self.backend_calls {
            return "secret-service crate, the backend's calls (collection, lock check, search, secret)"
                .to_owned();
        }
        "secret-service crate, one connection".to_owned()
    }

    fn supports(&self, op: Op) -> bool {
        if self.backend_calls {
            return matches!(op, Op::GetHit | Op::GetMiss);
        }
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
                self.get(&self.keys.hit[k])
                    .await?
                    .ok_or_else(|| fail("missing"))?;
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
                    if item.get_attributes().await?.contains_key("key") {
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
