//! Shared test helpers: service URLs, store factories on unique tables, and a raw
//! tokio-postgres client for what the tests do behind the store's back (killing its
//! connections, locking its table, planting foreign rows, dropping the test schemas).
//!
//! No test installs a rustls crypto provider: the crate must speak TLS without one.
#![allow(dead_code)]

use std::sync::Arc;

use token_store_conformance::{BoxFuture, Instance, services};
use token_store_core::{KeySource, RawStore, Result, StoreUrl};
use token_store_postgres::{Host, Password, PostgresConfig, SslMode};

/// The plain test server's URL (`postgres://tsapp:PW@127.0.0.1:PORT/tokenstore`).
pub fn plain_url() -> Option<String> {
    services::require("TOKEN_STORE_TEST_POSTGRES_URL")
}

/// The TLS-only server with `sslmode=verify-full&sslrootcert=<test CA>`.
pub fn tls_url() -> Option<String> {
    services::require("TOKEN_STORE_TEST_POSTGRES_TLS_URL")
}

/// The TLS-only server, role `tscert` authenticated by the test client certificate.
pub fn mtls_url() -> Option<String> {
    services::require("TOKEN_STORE_TEST_POSTGRES_MTLS_URL")
}

/// `url` with more query parameters.
pub fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// A unique lower-case identifier (schemas, tables, application names).
pub fn ident(prefix: &str) -> String {
    services::unique(prefix).replace('-', "_")
}

/// The configuration of `url` in a schema of its own.
pub fn config(url: &str) -> PostgresConfig {
    let url = with_params(url, &format!("schema={}", ident("ts")));
    PostgresConfig::from_url(&StoreUrl::parse(&url).unwrap()).unwrap()
}

pub fn plain() -> Option<PostgresConfig> {
    plain_url().map(|u| config(&u))
}

pub fn tls() -> Option<PostgresConfig> {
    tls_url().map(|u| config(&u))
}

pub fn mtls() -> Option<PostgresConfig> {
    mtls_url().map(|u| config(&u))
}

/// The store users get from `open` (the backend under the Timeout layer, and the Encrypted
/// layer when the config has a key), as the conformance crate takes it.
pub async fn open_raw(config: PostgresConfig) -> Result<Arc<dyn RawStore>> {
    Ok(token_store_postgres::open(config).await?.raw().clone())
}

/// A factory making a store on a fresh table, reopenable with a new pool.
pub fn factory(
    config: PostgresConfig,
) -> impl Fn() -> BoxFuture<'static, Result<Instance>> + Send + Sync + 'static {
    move || {
        let config = config.clone().with_table(ident("t"));
        Box::pin(async move {
            let store = open_raw(config.clone()).await?;
            Ok(Instance::with_reopen(store, move || {
                open_raw(config.clone())
            }))
        })
    }
}

/// The same under the encryption layer, with a key file per table in `dir`.
pub fn encrypted_factory(
    config: PostgresConfig,
    dir: Arc<tempfile::TempDir>,
) -> impl Fn() -> BoxFuture<'static, Result<Instance>> + Send + Sync + 'static {
    move || {
        let table = ident("t");
        let key = KeySource::KeyFile(dir.path().join(format!("{table}.key")));
        let config = config.clone().with_table(table).with_key(key);
        Box::pin(async move {
            let store = open_raw(config.clone()).await?;
            Ok(Instance::with_reopen(store, move || {
                open_raw(config.clone())
            }))
        })
    }
}

/// A raw tokio-postgres client to the server of `config` (its own connection task), TLS
/// with the config's CA file when the config asks for TLS.
pub async fn raw_client(config: &PostgresConfig) -> tokio_postgres::Client {
    let mut pg = tokio_postgres::Config::new();
    pg.user(&config.user);
    if let Some(Password::Given(p)) = &config.password {
        pg.password(p.expose());
    }
    pg.dbname(config.dbname.as_deref().unwrap_or(&config.user));
    for host in &config.hosts {
        match host {
            Host::Tcp { name, port } => {
                pg.host(name);
                pg.port(*port);
            }
            other => panic!("test hosts are TCP: {other:?}"),
        }
    }
    if config.ssl_mode == SslMode::Disable || config.ssl_mode == SslMode::Prefer {
        let (client, conn) = pg.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        return client;
    }
    let ca = config
        .ssl_root_cert
        .clone()
        .expect("TLS tests give sslrootcert");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let tls = match &config.ssl_client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    pg.ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = pg
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Drops the test's schema (and every table in it) when dropped; best effort.
pub struct DropSchema(pub PostgresConfig);

impl Drop for DropSchema {
    fn drop(&mut self) {
        let config = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = raw_client(&config).await;
                let _ = client
                    .batch_execute(&format!(
                        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                        config.schema
                    ))
                    .await;
            });
        })
        .join();
    }
}
