//! TLS for mediamesh: rustls configurations (aws-lc-rs provider only), mutual TLS between edge
//! and hub, the node identity a certificate proves, and development certificates.
//!
//! - The hub's tunnel port requires a client certificate chaining to `tlsTunnelCAFile`
//!   ([`tunnel_server_config`]); the node name is the certificate's DNS subject alternative
//!   name ([`node_identity`]), never what the peer claims.
//! - The edge verifies the hub against the same CA ([`tunnel_client_config`]); there is no
//!   skip-verify switch.
//! - [`dev`] creates a CA, a hub certificate and edge certificates (`mediamesh certs`, the
//!   demo, tests).

#![forbid(unsafe_code)]

pub mod dev;
mod load;

use std::path::PathBuf;
use std::sync::Arc;

pub use load::{load_certs, load_key, load_roots};
pub use rustls;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// ALPN protocol id for HTTP/1.1, which carries the WebSocket upgrade.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Errors building TLS configurations or reading identities.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        /// Which file (e.g. "certificate").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file held no usable PEM item of the expected kind.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration ({context}): {source}")]
    Rustls {
        /// Which configuration was being built.
        context: &'static str,
        /// rustls' error.
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built (e.g. an empty CA file).
    #[error("client certificate verifier from {path}: {reason}")]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The peer presented no certificate, or one without a usable node name.
    #[error("peer certificate does not name a node: {0}")]
    NoIdentity(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The three files of a TLS identity plus the CA that verifies the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle that verifies the peer.
    pub ca: PathBuf,
    /// This side's certificate chain (PEM).
    pub cert: PathBuf,
    /// This side's private key (PEM).
    pub key: PathBuf,
}

/// The only crypto provider mediamesh uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, TlsError> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { context: "server protocol versions", source })
}

fn client_builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsError> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { context: "client protocol versions", source })
}

/// The hub's tunnel-port configuration: its own certificate, and a required client
/// certificate that chains to `files.ca`.
pub fn tunnel_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = Arc::new(load_roots(&files.ca)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier { path: files.ca.clone(), reason: e.to_string() })?;
    let mut cfg = server_builder()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|source| TlsError::Rustls { context: "tunnel server certificate", source })?;
    cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(cfg))
}

/// The hub's stream-port configuration: its certificate, and, if `client_ca` is given, a
/// required client certificate chaining to it.
pub fn stream_server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = server_builder()?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Verifier { path: ca.to_path_buf(), reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|source| TlsError::Rustls { context: "stream server certificate", source })?;
    cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(cfg))
}

/// The edge's configuration: verifies the hub against `files.ca` and presents the edge's
/// certificate.
pub fn tunnel_client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = load_roots(&files.ca)?;
    let mut cfg = client_builder()?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|source| TlsError::Rustls { context: "tunnel client certificate", source })?;
    cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration trusting `roots` and presenting no certificate (viewers).
pub fn viewer_client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    let mut cfg = client_builder()?.with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(cfg))
}

/// The node name a verified peer certificate chain proves: the first DNS subject alternative
/// name of its end-entity certificate. Wildcard names are refused.
pub fn node_identity(chain: &[CertificateDer<'_>]) -> Result<String, TlsError> {
    let leaf = chain.first().ok_or_else(|| TlsError::NoIdentity("no certificate presented".into()))?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| TlsError::NoIdentity(format!("unparsable certificate: {e}")))?;
    let name = cert
        .valid_dns_names()
        .next()
        .ok_or_else(|| TlsError::NoIdentity("certificate has no DNS subject alternative name".into()))?;
    if name.contains('*') {
        return Err(TlsError::NoIdentity(format!("wildcard name {name:?} cannot identify a node")));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests;
