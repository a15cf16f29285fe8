//! `serve --tls-cert FILE --tls-key FILE`: the operator's certificate chain and private key
//! (PEM), read and checked before the server listens, as a rustls server configuration on the
//! `ring` provider (no OpenSSL, no aws-lc's cmake and nasm). The accept loop
//! (`api/listen.rs`) terminates TLS with it.
//!
//! Every way the files can be wrong is a clear error naming the file: unreadable, not PEM, no
//! certificate, no private key, or a key that is not the certificate's.

use anyhow::{anyhow, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

/// The server configuration for the certificate chain in `cert` (the server's certificate
/// first, then any intermediates) and the private key in `key`.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = read_chain(cert)?;
    let private = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            anyhow!(
                "--tls-key {} does not go with --tls-cert {} ({e}): give the private key of the \
                 certificate's first entry",
                key.display(),
                cert.display()
            )
        })?;
    // The accept loop speaks HTTP/1.1 only (hyper's http1); say so to clients that ask.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in the PEM file `path`, in order; at least one.
fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let what = || format!("--tls-cert {}", path.display());
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow!("cannot read {}: {}", what(), why(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{} is not a PEM certificate file: {}", what(), why(e)))?;
    if chain.is_empty() {
        anyhow::bail!(
            "{} holds no certificate (a PEM block `-----BEGIN CERTIFICATE-----`)",
            what()
        );
    }
    Ok(chain)
}

/// The first private key in the PEM file `path` (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => anyhow!(
            "--tls-key {} holds no private key (a PEM block `-----BEGIN PRIVATE KEY-----`)",
            path.display()
        ),
        e => anyhow!("cannot read --tls-key {}: {}", path.display(), why(e)),
    })
}

/// A PEM error in words: an I/O error as the operating system says it.
fn why(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        e => e.to_string(),
    }
}
