//! Enrollment: an edge with a one-time join token gets a certificate signed for its node.
//!
//! The edge makes its own key and a certificate request ([`request`]); the hub signs the
//! request's public key into a short-lived client certificate for exactly the node the token
//! was made for ([`sign_for_node`]), whatever the request names. The edge has no CA yet, so it
//! trusts the hub by the CA's fingerprint carried in the token, as kubeadm's discovery hash
//! does: the hub sends its CA in the TLS chain, and [`PinnedCaVerifier`] accepts the hub's
//! certificate only if it chains to a CA certificate with that SHA-256 fingerprint.
//!
//! Enrollment and renewal connections use their own ALPN protocol ([`ALPN_ENROLL`]) on the
//! tunnel port, so the hub tells them from tunnels before reading a byte.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{TlsError, provider};

/// How far back an issued certificate's validity starts, for edges whose clock is a little
/// behind the hub's.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// The ALPN protocol of enrollment and renewal connections on the tunnel port.
pub const ALPN_ENROLL: &[u8] = b"mediamesh-enroll/1";

/// A certificate's DER as PEM.
pub fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The SHA-256 fingerprint of the first certificate in a PEM file (a CA bundle).
pub fn file_fingerprint(path: &std::path::Path) -> Result<String, TlsError> {
    let certs = crate::load_certs(path)?;
    Ok(certs.first().map(|c| fingerprint(c)).unwrap_or_default())
}

/// The SHA-256 of a certificate's DER, as lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new key (PKCS#8 PEM) and a certificate request for it (PEM) naming `node`.
pub fn request(node: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![node.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// The CA that signs enrolled edges: its certificate and key.
pub struct EnrollCa {
    issuer: rcgen::Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for EnrollCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollCa").finish_non_exhaustive()
    }
}

impl EnrollCa {
    /// From the CA's certificate and private key files (PEM).
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, TlsError> {
        let read = |what, path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|source| TlsError::Read { what, path: path.into(), source })
        };
        let (cert_pem, key_pem) = (read("CA certificate", cert)?, read("CA private key", key)?);
        if let Some(mode) = crate::readable_by_others(key) {
            tracing::warn!(file = %key.display(), mode = %format!("{mode:o}"), "the CA key is readable by other users; chmod 600 it");
        }
        let key_pair = KeyPair::from_pem(&key_pem)
            .map_err(|e| TlsError::Pem { path: key.into(), reason: format!("not a usable private key: {e}") })?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&cert_pem, key_pair)
            .map_err(|e| TlsError::Pem { path: cert.into(), reason: format!("not a usable CA certificate: {e}") })?;
        Ok(Self { issuer, cert_pem })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A client certificate for `node` valid for `ttl`, carrying the public key of `csr_pem`
    /// (whose signature must check); everything else the request asks for is ignored.
    pub fn sign_for_node(&self, csr_pem: &str, node: &str, ttl: Duration) -> Result<(String, SystemTime), TlsError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::new(vec![node.to_owned()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "mediamesh enrolled edge");
        dn.push(DnType::CommonName, node);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(i64::try_from(BACKDATE.as_secs()).unwrap_or(60));
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let not_after = now + time::Duration::seconds(ttl_secs);
        params.not_after = not_after;
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| TlsError::NoIdentity("no random bytes for a serial".into()))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let signed = CertificateSigningRequestParams { params, public_key: csr.public_key }.signed_by(&self.issuer)?;
        let expires =
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after.unix_timestamp()).unwrap_or(0));
        Ok((signed.pem(), expires))
    }
}

/// When a certificate (DER) became valid, and when it stops being valid.
pub fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let at = |t: i64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).ok()?.min(u64::MAX / 2)));
    let v = cert.validity();
    Some((at(v.not_before.timestamp())?, at(v.not_after.timestamp())?))
}

/// Trusts a server whose chain holds a CA certificate with a given SHA-256 fingerprint, and
/// whose certificate that CA signed for the name dialled. Keeps the CA for the caller.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    fingerprint: String,
    ca: Mutex<Option<CertificateDer<'static>>>,
}

impl PinnedCaVerifier {
    /// Pins `fingerprint` (lowercase hex SHA-256 of the CA certificate's DER).
    pub fn new(fingerprint: &str) -> Arc<Self> {
        Arc::new(Self { fingerprint: fingerprint.to_ascii_lowercase(), ca: Mutex::new(None) })
    }

    /// The pinned CA's certificate, once a handshake has found it.
    pub fn ca(&self) -> Option<CertificateDer<'static>> {
        self.ca.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates.iter().find(|c| fingerprint(c) == self.fingerprint).ok_or_else(|| {
            rustls::Error::General(
                "the hub's certificate chain holds no CA with the fingerprint in the join token: \
                 the token is for another hub, or something between is impersonating it"
                    .into(),
            )
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| rustls::Error::General(format!("unusable CA: {e}")))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified = inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        *self.ca.lock().unwrap_or_else(PoisonError::into_inner) = Some(ca.clone().into_owned());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration for enrolling: no client certificate, the hub trusted by `pin`.
pub fn join_client_config(pin: Arc<PinnedCaVerifier>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { context: "enrollment client", source })?
        .dangerous()
        .with_custom_certificate_verifier(pin)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_ENROLL.to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration for renewing: the edge's current identity, on the enrollment ALPN.
pub fn renew_client_config(files: &crate::TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let base = crate::tunnel_client_config(files)?;
    let mut cfg = (*base).clone();
    cfg.alpn_protocols = vec![ALPN_ENROLL.to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_signed_for_the_tokens_node_whatever_it_names() {
        let ca = crate::dev::DevCa::generate("test CA").unwrap();
        let dir = std::env::temp_dir().join(format!("mm-enroll-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca.pem().cert).unwrap();
        std::fs::write(dir.join("ca.key"), &ca.pem().key).unwrap();
        let signer = EnrollCa::load(&dir.join("ca.pem"), &dir.join("ca.key")).unwrap();
        let (_, csr) = request("edge-evil").unwrap();
        let (cert, expires) = signer.sign_for_node(&csr, "edge-7", Duration::from_secs(3600)).unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
            .map(|c: CertificateDer<'_>| c.into_owned())
            .unwrap();
        assert_eq!(crate::node_identity(std::slice::from_ref(&der)).unwrap(), "edge-7");
        let (from, until) = validity(&der).unwrap();
        assert!(until > SystemTime::now() + Duration::from_secs(3500) && from < SystemTime::now());
        assert!(expires.duration_since(until).unwrap_or_default() < Duration::from_secs(2));
        assert!(signer.sign_for_node("not a request", "edge-7", Duration::from_secs(60)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
