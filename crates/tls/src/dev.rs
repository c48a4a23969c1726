//! Development certificates: a CA, a hub certificate and edge certificates.
//!
//! Not for production (keys are written unencrypted, validity is open-ended), but real X.509:
//! the same verification paths run as with an operator's PKI.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{TlsError, TlsFiles};

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// A certificate authority that can issue hub and edge certificates.
pub struct DevCa {
    pem: PemPair,
    issuer: Issuer<'static, KeyPair>,
}

impl DevCa {
    /// A new self-signed CA named `name`.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key)?;
        let pem = PemPair { cert: cert.pem(), key: key.serialize_pem() };
        Ok(Self { pem, issuer: Issuer::new(params, key) })
    }

    /// The CA's certificate and key.
    pub fn pem(&self) -> &PemPair {
        &self.pem
    }

    /// A server certificate for the hub, valid for `names` (DNS names or IP addresses).
    pub fn issue_hub(&self, names: &[String]) -> Result<PemPair, TlsError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = dn(names.first().map_or("mediamesh-hub", String::as_str));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate for the edge `node`: its DNS subject alternative name is the node
    /// name, which is what the hub takes as the node's identity.
    pub fn issue_edge(&self, node: &str) -> Result<PemPair, TlsError> {
        let mut params = CertificateParams::new(vec![node.to_owned()])?;
        params.distinguished_name = dn(node);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<PemPair, TlsError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair { cert: cert.pem(), key: key.serialize_pem() })
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mediamesh development");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Paths of a written development PKI.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The CA certificate (give it to both sides as `tls*CAFile`, and to viewers).
    pub ca_cert: PathBuf,
    /// The hub's tunnel/stream identity.
    pub hub: TlsFiles,
    /// Each edge's identity, by node name.
    pub edges: Vec<(String, TlsFiles)>,
}

/// Writes `ca.pem`/`ca.key`, `hub.pem`/`hub.key` and `edge-<node>.pem`/`.key` into `dir`.
pub fn write_pki(dir: &Path, hub_names: &[String], nodes: &[String]) -> Result<DevPki, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
        what: "output directory",
        path: dir.into(),
        source,
    })?;
    let ca = DevCa::generate("mediamesh development CA")?;
    let ca_cert = write_pair(dir, "ca", ca.pem())?.0;
    let (cert, key) = write_pair(dir, "hub", &ca.issue_hub(hub_names)?)?;
    let hub = TlsFiles { ca: ca_cert.clone(), cert, key };
    let mut edges = Vec::new();
    for node in nodes {
        let (cert, key) = write_pair(dir, &format!("edge-{node}"), &ca.issue_edge(node)?)?;
        edges.push((node.clone(), TlsFiles { ca: ca_cert.clone(), cert, key }));
    }
    Ok(DevPki { ca_cert, hub, edges })
}

fn write_pair(dir: &Path, stem: &str, pair: &PemPair) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    let write = |path: &Path, data: &str, private: bool| -> Result<(), TlsError> {
        let io = |source| TlsError::Read { what: "output", path: path.to_path_buf(), source };
        std::fs::write(path, data).map_err(io)?;
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        #[cfg(not(unix))]
        let _ = private;
        Ok(())
    };
    write(&cert, &pair.cert, false)?;
    write(&key, &pair.key, true)?;
    Ok((cert, key))
}
