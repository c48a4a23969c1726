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
