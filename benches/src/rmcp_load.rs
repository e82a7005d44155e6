//! rmcp's per-request read: `CredentialStore::load()` through the adapter
//! (`RmcpCredentialStore`), as `AuthorizationManager::get_access_token` calls it before every
//! MCP request, with the read cache (the adapter's default) and without.

use rmcp::transport::auth::CredentialStore;
use token_store::rmcp::RmcpCredentialStore;
use token_store_core::{Precondition, TokenKey, TokenStore, async_trait};

use crate::fixture;
use crate::ops::{BResult, Op, Target, fail};

/// `load()` of one adapter; only [`Op::GetHit`].
pub struct RmcpLoad {
    adapter: RmcpCredentialStore,
    label: String,
}

impl RmcpLoad {
    /// The adapter over `store` for `key`, reading through the read cache or not.
    pub fn new(store: TokenStore, key: TokenKey, cached: bool) -> BResult<Self> {
        // Leases are never taken here; the check only refuses stores shared wider than
        // their CAS reaches, which no benchmarked store is.
        let adapter = RmcpCredentialStore::new(store, key)?;
        let (adapter, label) = if cached {
            (adapter, "load() with the read cache")
        } else {
            (adapter.without_cache(), "load(), no cache")
        };
        Ok(RmcpLoad {
            adapter,
            label: label.to_owned(),
        })
    }
}

#[async_trait]
impl Target for RmcpLoad {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn supports(&self, op: Op) -> bool {
        op == Op::GetHit
    }

    /// Stores the benchmark record (1 KB access token valid for an hour, a client id, so
    /// `load` needs no second read) under the adapter's key.
    async fn setup(&self) -> BResult<()> {
        self.adapter
            .store()
            .put(self.adapter.key(), &fixture::record(1), Precondition::Any)
            .await?;
        Ok(())
    }

    async fn run(&self, _op: Op, _i: usize) -> BResult<()> {
        let loaded = self
            .adapter
            .load()
            .await
            .map_err(|e| fail(format!("load: {e}")))?;
        std::hint::black_box(loaded.ok_or_else(|| fail("load: nothing stored"))?);
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        self.adapter
            .store()
            .delete(self.adapter.key(), Precondition::Any)
            .await?;
        Ok(())
    }
}
