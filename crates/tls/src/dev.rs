//! Development certificates: a CA, a hub certificate and edge certificates.
//!
//! Not for production (keys are written unencrypted, validity is open-ended), but real X.509:
//! the same verification paths run as with an operator's PKI.
//!
//! [`issue`] keeps what a folder already holds: an existing CA signs the new certificates (so a
//! second site can be added without stranding the first), and no file is replaced unless asked.
//! Private keys are created with mode 0600, never written readable and narrowed afterwards.

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

    /// An existing CA, from its certificate and private key (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TlsError::Read { what, path: path.into(), source })
        };
        let pem = PemPair { cert: read("CA certificate", cert)?, key: read("CA private key", key)? };
        let key_pair = KeyPair::from_pem(&pem.key)
            .map_err(|e| TlsError::Pem { path: key.into(), reason: format!("not a usable private key: {e}") })?;
        let issuer = Issuer::from_ca_cert_pem(&pem.cert, key_pair)
            .map_err(|e| TlsError::Pem { path: cert.into(), reason: format!("not a usable CA certificate: {e}") })?;
        Ok(Self { pem, issuer })
    }

    /// The CA's certificate and key.
    pub fn pem(&self) -> &PemPair {
        &self.pem
    }

    /// A certificate for the hub, valid for `names` (DNS names or IP addresses), marked as a
    /// hub's ([`crate::HUB_URI`]) and usable as a client certificate too: the hubs of a cluster
    /// dial each other with it.
    pub fn issue_hub(&self, names: &[String]) -> Result<PemPair, TlsError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = dn(names.first().map_or("mediamesh-hub", String::as_str));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let uri = rcgen::string::Ia5String::try_from(crate::HUB_URI)
            .map_err(|e| TlsError::NoIdentity(format!("hub URI {}: {e}", crate::HUB_URI)))?;
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
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

/// The names a hub certificate gets when none are given: this machine only.
pub const LOCAL_HUB_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// What [`issue`] is asked to write into a folder.
#[derive(Debug, Clone, Default)]
pub struct IssueRequest {
    /// Issue a hub certificate for these names (DNS names or IP addresses). `None`: only if the
    /// folder has none yet, for [`LOCAL_HUB_NAMES`].
    pub hub_names: Option<Vec<String>>,
    /// Issue an edge certificate for each of these nodes.
    pub nodes: Vec<String>,
    /// Replace certificates and keys that exist (never the CA's).
    pub force: bool,
}

/// What [`issue`] did.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// Whether the CA was created now (else an existing one signed).
    pub ca_created: bool,
    /// The hub certificate written now, and its names.
    pub hub: Option<(TlsFiles, Vec<String>)>,
    /// The edge certificates written now.
    pub edges: Vec<(String, TlsFiles)>,
}

/// Writes into `dir` what `request` asks: `ca.pem`/`ca.key` (created only if absent; an existing
/// CA signs), `hub.pem`/`hub.key`, and `edge-<node>.pem`/`.key`. Checks everything first and
/// writes nothing if a file it would replace exists and `force` is not set
/// ([`TlsError::Exists`]).
pub fn issue(dir: &Path, request: &IssueRequest) -> Result<Issued, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
        what: "output directory",
        path: dir.into(),
        source,
    })?;
    let pair = |stem: &str| (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    let (ca_cert, ca_key) = pair("ca");
    let ca_exists = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => true,
        (false, false) => false,
        (true, false) => return Err(TlsError::Incomplete { present: ca_cert, missing: ca_key }),
        (false, true) => return Err(TlsError::Incomplete { present: ca_key, missing: ca_cert }),
    };
    let hub_files = pair("hub");
    let hub_names = match &request.hub_names {
        Some(names) => Some(names.clone()),
        None if !hub_files.0.exists() && !hub_files.1.exists() => Some(LOCAL_HUB_NAMES.map(String::from).to_vec()),
        None => None,
    };
    let mut planned: Vec<(PathBuf, PathBuf)> = Vec::new();
    if hub_names.is_some() {
        planned.push(hub_files.clone());
    }
    planned.extend(request.nodes.iter().map(|n| pair(&format!("edge-{n}"))));
    if !request.force
        && let Some(existing) = planned.iter().flat_map(|(c, k)| [c, k]).find(|p| p.exists())
    {
        return Err(TlsError::Exists { path: existing.clone() });
    }

    let ca = if ca_exists { DevCa::load(&ca_cert, &ca_key)? } else { DevCa::generate(&unique_ca_name())? };
    if !ca_exists {
        write_pair(&ca_cert, &ca_key, ca.pem())?;
    }
    let hub = match hub_names {
        Some(names) => {
            write_pair(&hub_files.0, &hub_files.1, &ca.issue_hub(&names)?)?;
            let files = TlsFiles { ca: ca_cert.clone(), cert: hub_files.0, key: hub_files.1 };
            Some((files, names))
        }
        None => None,
    };
    let mut edges = Vec::new();
    for node in &request.nodes {
        let (cert, key) = pair(&format!("edge-{node}"));
        write_pair(&cert, &key, &ca.issue_edge(node)?)?;
        edges.push((node.clone(), TlsFiles { ca: ca_cert.clone(), cert, key }));
    }
    Ok(Issued { ca_cert, ca_created: !ca_exists, hub, edges })
}

/// A development PKI in `dir` for the demo and tests: the CA there (created if absent) signs a
/// hub certificate for `hub_names` and edge certificates for `nodes`, replacing any there.
pub fn write_pki(dir: &Path, hub_names: &[String], nodes: &[String]) -> Result<DevPki, TlsError> {
    let request = IssueRequest { hub_names: Some(hub_names.to_vec()), nodes: nodes.to_vec(), force: true };
    let issued = issue(dir, &request)?;
    let (hub, _) = issued.hub.ok_or_else(|| TlsError::NoIdentity("no hub certificate was issued".into()))?;
    Ok(DevPki { ca_cert: issued.ca_cert, hub, edges: issued.edges })
}

/// A CA name no other development CA has: two CAs with one name make a verifier check the wrong
/// CA's signature and report a bad signature instead of an unknown issuer.
fn unique_ca_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("mediamesh development CA {:08x}", h.finish() as u32)
}

/// Writes a certificate (mode 0644) and its key (created with mode 0600), replacing them.
fn write_pair(cert: &Path, key: &Path, pair: &PemPair) -> Result<(), TlsError> {
    write_file(cert, &pair.cert, 0o644)?;
    write_file(key, &pair.key, 0o600)
}

fn write_file(path: &Path, data: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Read { what: "output", path: path.to_path_buf(), source };
    // A file being replaced may have looser permissions; a new one gets `mode` as it is made.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io)?;
    f.write_all(data.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::{load_certs, node_identity, tunnel_client_config, tunnel_server_config};

    fn temp(tag: &str) -> PathBuf {
        let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
        std::env::temp_dir().join(format!("mm-dev-{tag}-{}-{micros}", std::process::id()))
    }

    #[test]
    fn a_second_call_adds_an_edge_signed_by_the_same_ca_and_replaces_nothing() {
        let dir = temp("second");
        let first = issue(&dir, &IssueRequest { nodes: vec!["edge-1".into()], ..Default::default() }).unwrap();
        assert!(first.ca_created);
        let (hub, names) = first.hub.unwrap();
        assert_eq!(names, LOCAL_HUB_NAMES);
        let ca_before = std::fs::read(&first.ca_cert).unwrap();
        let hub_before = std::fs::read(&hub.cert).unwrap();

        let second = issue(&dir, &IssueRequest { nodes: vec!["edge-2".into()], ..Default::default() }).unwrap();
        assert!(!second.ca_created && second.hub.is_none());
        assert_eq!(std::fs::read(&first.ca_cert).unwrap(), ca_before, "the CA is kept");
        assert_eq!(std::fs::read(&hub.cert).unwrap(), hub_before, "the hub certificate is kept");
        // Both edges chain to the one CA the hub trusts.
        let server = tunnel_server_config(&hub, false).unwrap();
        drop(server);
        for (node, files) in first.edges.iter().chain(&second.edges) {
            tunnel_client_config(files).unwrap();
            assert_eq!(&node_identity(&load_certs(&files.cert).unwrap()).unwrap(), node);
            let roots = crate::load_roots(&files.ca).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), crate::provider())
                .build()
                .unwrap();
            let chain = load_certs(&files.cert).unwrap();
            verifier
                .verify_client_cert(&chain[0], &[], rustls::pki_types::UnixTime::now())
                .unwrap_or_else(|e| panic!("{node}'s certificate does not chain to the CA: {e}"));
        }

        // Asking again for what exists is refused without --force, and writes nothing.
        let again = IssueRequest { nodes: vec!["edge-3".into(), "edge-2".into()], ..Default::default() };
        match issue(&dir, &again) {
            Err(TlsError::Exists { path }) => assert!(path.ends_with("edge-edge-2.pem"), "{path:?}"),
            other => panic!("{other:?}"),
        }
        assert!(!dir.join("edge-edge-3.pem").exists(), "nothing written when refusing");
        let hub_again = IssueRequest { hub_names: Some(vec!["hub.example.com".into()]), ..Default::default() };
        assert!(matches!(issue(&dir, &hub_again), Err(TlsError::Exists { .. })));
        let forced = issue(&dir, &IssueRequest { force: true, ..hub_again }).unwrap();
        assert_eq!(forced.hub.unwrap().1, ["hub.example.com"]);
        assert_eq!(std::fs::read(&first.ca_cert).unwrap(), ca_before, "--force never replaces the CA");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_are_private_from_the_start() {
        let dir = temp("modes");
        let issued = issue(&dir, &IssueRequest { nodes: vec!["n1".into()], ..Default::default() }).unwrap();
        for key in [dir.join("ca.key"), issued.hub.unwrap().0.key, issued.edges[0].1.key.clone()] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key:?}");
            assert_eq!(crate::load::readable_by_others(&key), None);
        }
        let cert = dir.join("ca.pem");
        std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(crate::load::readable_by_others(&cert), Some(0o644));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn half_a_ca_is_refused() {
        let dir = temp("half");
        issue(&dir, &IssueRequest::default()).unwrap();
        std::fs::remove_file(dir.join("ca.key")).unwrap();
        assert!(matches!(issue(&dir, &IssueRequest::default()), Err(TlsError::Incomplete { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
