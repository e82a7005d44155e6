//! Shared test helpers: service addresses, store factories.
//!
//! No test installs a rustls crypto provider: the crate must speak TLS without one.
#![allow(dead_code)]
// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use token_store_conformance::{Instance, services};
use token_store_core::{RawStore, Result};
use token_store_redis::{RedisConfig, TlsFiles};

/// A fresh, unique prefix so runs never see each other's keys.
pub fn prefix() -> String {
    format!("ts-test:{}", services::unique("redis"))
}

pub fn standalone() -> Option<RedisConfig> {
    services::require("TOKEN_STORE_TEST_REDIS_URL").map(RedisConfig::standalone)
}

pub fn cluster() -> Option<RedisConfig> {
    services::require("TOKEN_STORE_TEST_REDIS_CLUSTER_URLS")
        .map(|urls| RedisConfig::cluster(urls.split(',').map(str::trim).filter(|s| !s.is_empty())))
}

pub fn tls() -> Option<RedisConfig> {
    let url = services::require("TOKEN_STORE_TEST_REDIS_TLS_URL")?;
    let ca = services::require("TOKEN_STORE_TEST_TLS_CA")?;
    Some(RedisConfig::standalone(url).with_tls(TlsFiles::new().with_ca(ca)))
}

pub fn mtls() -> Option<RedisConfig> {
    let url = services::require("TOKEN_STORE_TEST_REDIS_MTLS_URL")?;
    let files = TlsFiles::new()
        .with_ca(services::require("TOKEN_STORE_TEST_TLS_CA")?)
        .with_client_cert(
            services::require("TOKEN_STORE_TEST_TLS_CLIENT_CERT")?,
            services::require("TOKEN_STORE_TEST_TLS_CLIENT_KEY")?,
        );
    Some(RedisConfig::standalone(url).with_tls(files))
}

/// The store users get from `open` (the raw backend under the per-call time limit), as the
/// conformance crate takes it.
pub async fn open_raw(config: RedisConfig) -> Result<Arc<dyn RawStore>> {
    Ok(token_store_redis::open(config).await?.raw().clone())
}

/// A factory making a store under a fresh prefix, reopenable with a new connection.
pub fn factory(
    config: RedisConfig,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Instance>> + Send>>
+ Send
+ Sync
+ 'static {
    move || {
        let config = config.clone().with_prefix(prefix());
        Box::pin(async move {
            let store = open_raw(config.clone()).await?;
            Ok(Instance::with_reopen(store, move || {
                open_raw(config.clone())
            }))
        })
    }
}
