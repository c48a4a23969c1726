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
pub mod enroll;
pub mod explain;
mod load;

use std::path::PathBuf;
use std::sync::Arc;

pub use load::{load_certs, load_key, load_roots, readable_by_others};
pub use rustls;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// ALPN protocol id for HTTP/1.1, which carries the WebSocket upgrade.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN protocol id for HTTP/2: the stream port's REST API and LL-HLS (many parallel blocking
/// requests over one connection).
pub const ALPN_H2: &[u8] = b"h2";

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
    /// A file that would be replaced exists.
    #[error("{} already exists", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// One file of a pair (a certificate and its key) exists without the other.
    #[error("{} exists but {} does not", present.display(), missing.display())]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// Its missing partner.
        missing: PathBuf,
    },
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
/// certificate that chains to `files.ca`. A refused client certificate is logged with the
/// subject and names it presented ([`ExplainingVerifier`]).
///
/// With `enrollment`, a client may also connect without a certificate, on the enrollment ALPN
/// protocol only (the hub checks that after the handshake), and the hub's chain carries the CA
/// so that a joining edge can pin it by the fingerprint in its token ([`enroll`]).
pub fn tunnel_server_config(files: &TlsFiles, enrollment: bool) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = Arc::new(load_roots(&files.ca)?);
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider());
    if enrollment {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build().map_err(|e| TlsError::Verifier { path: files.ca.clone(), reason: e.to_string() })?;
    let verifier = Arc::new(ExplainingVerifier { inner: verifier, ca: files.ca.clone(), warned: Default::default() });
    let mut chain = load_certs(&files.cert)?;
    if enrollment {
        chain.extend(load_certs(&files.ca)?);
    }
    let mut cfg = server_builder()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, load_key(&files.key)?)
        .map_err(|source| TlsError::Rustls { context: "tunnel server certificate", source })?;
    cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    if enrollment {
        cfg.alpn_protocols.push(enroll::ALPN_ENROLL.to_vec());
    }
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
    // HTTP/2 first for the clients that speak it; a browser still opens its WebSockets over
    // HTTP/1.1 (the hub does not offer RFC 8441's extended CONNECT).
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(cfg))
}

/// The edge's configuration: verifies the hub against `files.ca` and presents the edge's
/// certificate. A hub certificate for other names fails with a [`NameMismatch`] that names
/// them.
pub fn tunnel_client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = Arc::new(load_roots(&files.ca)?);
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier { path: files.ca.clone(), reason: e.to_string() })?;
    let mut cfg = client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamingServerVerifier { inner }))
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

/// A client certificate verifier that logs, for each certificate it refuses, who presented it:
/// the subject and names in the certificate and why it was refused, in words. The log line
/// carries the connection's span (its remote address).
#[derive(Debug)]
pub struct ExplainingVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ca: PathBuf,
    /// When the last warning went out, and how many were held back since: a client in a loop
    /// presenting a bad certificate must not fill the log.
    warned: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

/// At most one "refused an edge certificate" warning per this interval.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl rustls::server::danger::ClientCertVerifier for ExplainingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now).inspect_err(|e| {
            let (subject, names) = describe_certificate(end_entity);
            let held_back = {
                let mut w = self.warned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = std::time::Instant::now();
                if w.0.is_some_and(|t| now.saturating_duration_since(t) < WARN_EVERY) {
                    w.1 += 1;
                    None
                } else {
                    w.0 = Some(now);
                    Some(std::mem::take(&mut w.1))
                }
            };
            match held_back {
                Some(suppressed) => tracing::warn!(
                    %subject,
                    names = %names.join(", "),
                    ca = %self.ca.display(),
                    reason = %explain::error(e),
                    suppressed,
                    "refused an edge certificate"
                ),
                None => tracing::debug!(%subject, reason = %explain::error(e), "refused an edge certificate"),
            }
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server certificate that does not name what was dialled: both, as plain names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("it is for {} but {dialled} was dialled", if presented.is_empty() { "no name".to_owned() } else { presented.join(", ") })]
pub struct NameMismatch {
    /// The name (DNS name or IP address) the client verified against.
    pub dialled: String,
    /// The DNS and IP names in the certificate.
    pub presented: Vec<String>,
}

/// The standard server certificate verification (it is the one that decides), which reports a
/// name mismatch as a [`NameMismatch`] inside [`rustls::CertificateError::Other`]: rustls's
/// own report of it lists the names in Rust's `Debug` form.
#[derive(Debug)]
struct NamingServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl rustls::client::danger::ServerCertVerifier for NamingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now).map_err(|e| match e {
            rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                let mismatch = NameMismatch {
                    dialled: server_name.to_str().into_owned(),
                    presented: describe_certificate(end_entity).1,
                };
                rustls::Error::InvalidCertificate(C::Other(rustls::OtherError(Arc::new(mismatch))))
            }
            other => other,
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A certificate's subject and its DNS and IP subject alternative names, for logs.
pub fn describe_certificate(der: &CertificateDer<'_>) -> (String, Vec<String>) {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return ("(unparsable certificate)".into(), Vec::new());
    };
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => <[u8; 4]>::try_from(*b).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(*b).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    (cert.subject().to_string(), names)
}

/// The URI subject alternative name that marks a hub's certificate: hubs of a cluster dial
/// each other's tunnel ports with it ([`is_hub_certificate`]).
pub const HUB_URI: &str = "urn:mediamesh:hub";

/// Whether a verified peer certificate chain is a hub's: its end-entity certificate carries the
/// URI subject alternative name [`HUB_URI`], or one starting with it and `:` (a hub's name).
/// Enrollment never issues such a certificate, so an edge cannot become a hub.
pub fn is_hub_certificate(chain: &[CertificateDer<'_>]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Some(Ok((_, cert))) = chain.first().map(|c| x509_parser::parse_x509_certificate(c)) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|n| match n {
        GeneralName::URI(uri) => uri.strip_prefix(HUB_URI).is_some_and(|rest| rest.is_empty() || rest.starts_with(':')),
        _ => false,
    })
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
