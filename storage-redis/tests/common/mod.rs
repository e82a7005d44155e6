//! Shared test helpers: service addresses, the rustls provider, store factories.
#![allow(dead_code)]

use std::sync::{Arc, Once};

use token_store_conformance::{Instance, services};
use token_store_core::{RawStore, Result};
use token_store_redis::{RedisConfig, RedisStore, TlsFiles};

/// The library leaves the provider choice to the application; tests are the application.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

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
    install_crypto_provider();
    let url = services::require("TOKEN_STORE_TEST_REDIS_TLS_URL")?;
    let ca = services::require("TOKEN_STORE_TEST_TLS_CA")?;
    let mut files = TlsFiles::default();
    files.ca = Some(ca.into());
    Some(RedisConfig::standalone(url).with_tls(files))
}

pub fn mtls() -> Option<RedisConfig> {
    install_crypto_provider();
    let url = services::require("TOKEN_STORE_TEST_REDIS_MTLS_URL")?;
    let mut files = TlsFiles::default();
    files.ca = Some(services::require("TOKEN_STORE_TEST_TLS_CA")?.into());
    files.cert = Some(services::require("TOKEN_STORE_TEST_TLS_CLIENT_CERT")?.into());
    files.key = Some(services::require("TOKEN_STORE_TEST_TLS_CLIENT_KEY")?.into());
    Some(RedisConfig::standalone(url).with_tls(files))
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
            let store: Arc<dyn RawStore> = Arc::new(RedisStore::open(config.clone()).await?);
            Ok(Instance::with_reopen(store, move || {
                let config = config.clone();
                async move {
                    let s: Arc<dyn RawStore> = Arc::new(RedisStore::open(config).await?);
                    Ok(s)
                }
            }))
        })
    }
}
