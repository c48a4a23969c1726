use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::*;

#[test]
fn edge_certificate_names_its_node() {
    let ca = dev::DevCa::generate("test CA").unwrap();
    let edge = ca.issue_edge("site-7").unwrap();
    let der = CertificateDer::from_pem_slice(edge.cert.as_bytes()).unwrap();
    assert_eq!(node_identity(&[der]).unwrap(), "site-7");
}

#[test]
fn only_a_hub_certificate_is_a_hubs() {
    let ca = dev::DevCa::generate("test CA").unwrap();
    let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let hub = der(&ca.issue_hub(&["localhost".into(), "127.0.0.1".into()]).unwrap().cert);
    assert!(is_hub_certificate(std::slice::from_ref(&hub)));
    // Its DNS name still names it, for the edges that dial it.
    assert_eq!(node_identity(&[hub]).unwrap(), "localhost");
    // An edge, even one named like a hub, is not one.
    assert!(!is_hub_certificate(&[der(&ca.issue_edge("urn.mediamesh.hub").unwrap().cert)]));
    assert!(!is_hub_certificate(&[]));
    // Nor is a URI that only starts like the mark.
    let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI("urn:mediamesh:hubx".try_into().unwrap()));
    let key = rcgen::KeyPair::generate().unwrap();
    assert!(!is_hub_certificate(&[params.self_signed(&key).unwrap().der().clone()]));
    params.subject_alt_names.push(rcgen::SanType::URI("urn:mediamesh:hub:hub-a".try_into().unwrap()));
    assert!(is_hub_certificate(&[params.self_signed(&key).unwrap().der().clone()]));
}

#[test]
fn no_certificate_is_no_identity() {
    let e = node_identity(&[]).unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
}

#[test]
fn written_pki_builds_configs_and_bad_files_name_their_path() {
    let dir = std::env::temp_dir().join(format!("mm-tls-test-{}", std::process::id()));
    let pki = dev::write_pki(&dir, &["localhost".into(), "127.0.0.1".into()], &["n1".into()]).unwrap();
    tunnel_server_config(&pki.hub, false).unwrap();
    tunnel_client_config(&pki.edges[0].1).unwrap();
    stream_server_config(&pki.hub.cert, &pki.hub.key, None).unwrap();

    // A key that does not match the certificate is refused.
    let mismatched = TlsFiles { key: pki.edges[0].1.key.clone(), ..pki.hub.clone() };
    assert!(tunnel_server_config(&mismatched, false).is_err());

    let missing = dir.join("nope.pem");
    let e = load_certs(&missing).unwrap_err().to_string();
    assert!(e.contains("nope.pem"), "{e}");
    let e = load_certs(&pki.hub.key).unwrap_err().to_string();
    assert!(e.contains("no CERTIFICATE"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
