//! TLS for `rediss://`: the PEM files of a [`TlsFiles`] and the rustls crypto provider.

use redis::{ClientTlsConfig, TlsCertificates};
use token_store_core::{Error, Result};

use crate::config::TlsFiles;

/// Makes sure rustls has a process-wide crypto provider before the `redis` client builds its
/// TLS configuration (it calls `rustls::ClientConfig::builder()`, which takes the process
/// default and panics when there is none it can pick, e.g. when both `ring` and `aws-lc-rs`
/// are compiled in). The `redis` crate takes no provider of its own, so this is the one place
/// to choose: an application's own choice, installed before the store is opened, is kept;
/// otherwise aws-lc-rs (rustls's default) is installed.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one first: a provider is there either way.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// Reads the PEM files; `None` without files (system roots, no client certificate).
pub(crate) fn load_certs(files: Option<&TlsFiles>) -> Result<Option<TlsCertificates>> {
    let Some(files) = files else {
        return Ok(None);
    };
    let root_cert = files
        .ca
        .as_deref()
        .map(|p| read(p, "CA file"))
        .transpose()?;
    let client_tls = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert, "client certificate")?,
            client_key: read(key, "client key")?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::config(
                "mutual TLS needs both cert= and key= (PEM files)",
            ));
        }
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config {
        message: format!("cannot read the TLS {what} {}", path.display()),
        source: Some(Box::new(e)),
    })
}
