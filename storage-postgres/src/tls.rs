//! TLS through rustls: the client configuration each `sslmode` asks for, with the crypto
//! provider handed to it (aws-lc-rs), so nothing is installed process-wide and an
//! application's own provider choice is left alone.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use token_store_core::backend::fs::read_private_file;
use token_store_core::{Error, Result};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Host, PostgresConfig, SslMode};

/// How connections are secured: the `sslmode` to hand to tokio-postgres and, unless TLS is
/// off, the connector.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) mode: tokio_postgres::config::SslMode,
    pub(crate) connector: Option<MakeRustlsConnect>,
}

impl Tls {
    pub(crate) fn new(config: &PostgresConfig) -> Result<Tls> {
        let all_sockets = config
            .effective_hosts()
            .iter()
            .all(|h| matches!(h, Host::Unix { .. }));
        let mode = match config.ssl_mode {
            // libpq too leaves Unix sockets alone whatever the mode: nothing leaves the host.
            _ if all_sockets => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        };
        if mode == tokio_postgres::config::SslMode::Disable {
            return Ok(Tls {
                mode,
                connector: None,
            });
        }
        let client = client_config(config)?;
        Ok(Tls {
            mode,
            connector: Some(MakeRustlsConnect::new(client)),
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Config {
        message: format!("TLS: {what}"),
        source: Some(Box::new(e)),
    }
}

fn client_config(config: &PostgresConfig) -> Result<ClientConfig> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match (config.ssl_mode, &config.ssl_root_cert) {
        // libpq's `prefer`, and `require` without a CA file: encrypted, not authenticated.
        (SslMode::Prefer, _) | (SslMode::Require, None) => Arc::new(Unverified(provider.clone())),
        (SslMode::Require | SslMode::VerifyCa, _) => Arc::new(ChainOnly(webpki(
            roots(config.ssl_root_cert.as_deref())?,
            &provider,
        )?)),
        _ => webpki(roots(config.ssl_root_cert.as_deref())?, &provider)?,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("no usable protocol version", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &config.ssl_client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates(cert, "client certificate")?;
            let key_pem = read_private_file(key, 64 * 1024, "TLS client key")?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                tls_error(&format!("{} holds no PEM private key", key.display()), e)
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error("the client certificate and key do not fit", e))
        }
    }
}

fn webpki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_error("cannot build the certificate verifier", e))
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| tls_error(&format!("cannot read the {what} {}", path.display()), e))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "TLS: the {what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The CA certificates of `sslrootcert`, or the system's trust store.
fn roots(path: Option<&Path>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match path {
        Some(path) => {
            for cert in certificates(path, "CA file")? {
                store.add(cert).map_err(|e| {
                    tls_error(
                        &format!("a certificate of {} is unusable", path.display()),
                        e,
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(Error::config(
                    "TLS: the system trust store holds no CA certificate; give sslrootcert=PATH",
                ));
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must lead to a trusted CA, the name in the certificate may be any.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`, and `require` without a CA file: any certificate is accepted (the handshake
/// signatures are still checked, so the session is encrypted to whoever holds its key).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
