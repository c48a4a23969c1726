//! TLS failures in words an operator can act on. rustls describes its errors with Rust's
//! `Debug` (`invalid peer certificate: UnknownIssuer`); these say what happened instead.

use rustls::{AlertDescription, CertificateError};

/// What a rustls error means, in a sentence fragment.
pub fn error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => certificate(c),
        rustls::Error::AlertReceived(a) => format!("the peer ended the handshake: {}", alert(*a)),
        rustls::Error::NoCertificatesPresented => "no certificate was presented".into(),
        rustls::Error::PeerIncompatible(_) => "the peer has no TLS version or cipher suite in common with us".into(),
        rustls::Error::PeerMisbehaved(_) | rustls::Error::InvalidMessage(_) => {
            "the peer broke the TLS protocol (is it a TLS server on this port?)".into()
        }
        other => other.to_string(),
    }
}

/// What a certificate verification failure means.
pub fn certificate(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => "it is not signed by the configured CA".into(),
        CertificateError::BadEncoding => "it cannot be parsed".into(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired".into(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet (is this machine's clock right?)".into()
        }
        CertificateError::Revoked => "it has been revoked".into(),
        CertificateError::BadSignature => "its signature does not verify".into(),
        CertificateError::NotValidForName => "it does not name the address that was dialled".into(),
        CertificateError::NotValidForNameContext { expected, presented } => format!(
            "it is for {} but {} was dialled",
            if presented.is_empty() { "no name".to_owned() } else { presented.join(", ") },
            expected.to_str()
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not for this use (a client certificate where a server one is needed, or the reverse)".into()
        }
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "it is signed with an algorithm this build does not support".into()
        }
        CertificateError::Other(other) => match other.0.downcast_ref::<crate::NameMismatch>() {
            Some(mismatch) => mismatch.to_string(),
            None => format!("it was refused: {}", other.0),
        },
        other => format!("it was refused ({})", rustls::Error::InvalidCertificate(other.clone())),
    }
}

/// What a TLS alert from the peer means.
pub fn alert(a: AlertDescription) -> String {
    let text = match a {
        AlertDescription::BadCertificate => "it refused our certificate",
        AlertDescription::UnknownCA => "it does not trust the CA that signed our certificate",
        AlertDescription::CertificateExpired => "it says our certificate has expired",
        AlertDescription::CertificateRevoked => "it says our certificate is revoked",
        AlertDescription::CertificateUnknown | AlertDescription::UnsupportedCertificate => {
            "it could not accept our certificate"
        }
        AlertDescription::CertificateRequired => "it requires a client certificate",
        AlertDescription::DecryptError => "a signature on our certificate or handshake did not verify",
        AlertDescription::HandshakeFailure => "no acceptable parameters in common",
        AlertDescription::ProtocolVersion => "no TLS version in common",
        AlertDescription::NoApplicationProtocol => "no application protocol in common",
        AlertDescription::AccessDenied => "access denied",
        other => return format!("TLS alert {}", u8::from(other)),
    };
    text.into()
}

/// The name mismatch inside a certificate error, if that is what it is.
pub fn name_mismatch(e: &CertificateError) -> Option<&crate::NameMismatch> {
    match e {
        CertificateError::Other(other) => other.0.downcast_ref(),
        _ => None,
    }
}

/// Whether a peer's alert says it refused our certificate.
pub fn alert_refuses_certificate(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::DecryptError
    )
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;

    use super::*;

    #[test]
    fn failures_read_as_sentences_without_rust_names() {
        let name = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("hub.example.com").unwrap(),
            presented: vec!["localhost".into(), "127.0.0.1".into()],
        };
        assert_eq!(certificate(&name), "it is for localhost, 127.0.0.1 but hub.example.com was dialled");
        assert_eq!(
            error(&rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)),
            "it is not signed by the configured CA"
        );
        assert_eq!(alert(AlertDescription::UnknownCA), "it does not trust the CA that signed our certificate");
        assert_eq!(alert(AlertDescription::UnrecognisedName), "TLS alert 112");
        for text in [certificate(&name), alert(AlertDescription::BadCertificate)] {
            assert!(!text.contains("Context") && !text.contains('{'), "{text}");
        }
    }
}
