//! What a client presents, read from an `Authorization` header (HTTP, WebSocket, RTSP) or a
//! `token` query parameter. Parsers take untrusted bytes: they check lengths first, never
//! panic, and say what was wrong without repeating the secret.

use base64::Engine;

use crate::Secret;

/// Longest `Authorization` value read (a JWT with many claims fits easily).
pub const MAX_HEADER: usize = 8 * 1024;

/// What a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing.
    None,
    /// A user and password (HTTP Basic, RTSP Basic, a URL's user info). The password may be a
    /// JWT, for RTSP clients that cannot send a bearer token.
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A bearer token (`Authorization: Bearer`, `?token=`).
    Bearer(Secret),
    /// An RTSP Digest response (RFC 2617).
    Digest(DigestResponse),
}

/// The fields of a Digest `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestResponse {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`, as the server issued it.
    pub nonce: String,
    /// `uri`, as the client sent it in the request line.
    pub uri: String,
    /// `response`: the hex MD5 the client computed.
    pub response: String,
    /// `qop`, `nc` and `cnonce`, when the client uses `qop=auth`.
    pub qop: Option<String>,
    /// `nc`.
    pub nc: Option<String>,
    /// `cnonce`.
    pub cnonce: Option<String>,
    /// `algorithm` (only MD5 is supported).
    pub algorithm: Option<String>,
}

/// Why an `Authorization` header cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Longer than [`MAX_HEADER`].
    #[error("the Authorization header is {0} bytes; at most {MAX_HEADER} are read")]
    TooLong(usize),
    /// Not Basic, Bearer or Digest.
    #[error("unsupported authorization scheme {0:?}; use Basic, Bearer or Digest")]
    Scheme(String),
    /// Basic credentials that are not base64 of `user:password` in UTF-8.
    #[error("Basic credentials are not base64 of user:password")]
    BadBasic,
    /// An empty bearer token.
    #[error("the bearer token is empty")]
    EmptyToken,
    /// A Digest header without a required field, or with a malformed list.
    #[error("Digest credentials: {0}")]
    BadDigest(&'static str),
}

impl Credentials {
    /// Reads an `Authorization` header value.
    pub fn parse_header(value: &[u8]) -> Result<Self, CredentialsError> {
        if value.len() > MAX_HEADER {
            return Err(CredentialsError::TooLong(value.len()));
        }
        let value = std::str::from_utf8(value).map_err(|_| CredentialsError::Scheme("(not UTF-8)".into()))?.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let raw = base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| CredentialsError::BadBasic)?;
            let text = String::from_utf8(raw).map_err(|_| CredentialsError::BadBasic)?;
            let (user, password) = text.split_once(':').ok_or(CredentialsError::BadBasic)?;
            Ok(Credentials::Basic { user: user.to_owned(), password: Secret::new(password) })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if rest.is_empty() {
                return Err(CredentialsError::EmptyToken);
            }
            Ok(Credentials::Bearer(Secret::new(rest)))
        } else if scheme.eq_ignore_ascii_case("digest") {
            parse_digest(rest).map(Credentials::Digest)
        } else {
            let shown: String = scheme.chars().take(20).collect();
            Err(CredentialsError::Scheme(shown))
        }
    }

    /// The `token` (or, as MediaMTX names it, `jwt`) parameter of a query string (`a=1&token=…`),
    /// percent-decoded, if present.
    pub fn from_query(query: &str) -> Option<Self> {
        if query.len() > MAX_HEADER {
            return None;
        }
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            ((k == "token" || k == "jwt") && !v.is_empty()).then(|| Credentials::Bearer(Secret::new(percent_decode(v))))
        })
    }

    /// Whether there is anything.
    pub fn is_none(&self) -> bool {
        matches!(self, Credentials::None)
    }

    /// The user named, if any (for logs and the hook).
    pub fn user(&self) -> Option<&str> {
        match self {
            Credentials::Basic { user, .. } => Some(user),
            Credentials::Digest(d) => Some(&d.username),
            Credentials::None | Credentials::Bearer(_) => None,
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads `key=value, key="quoted value", …` (RFC 7235 auth-params).
fn parse_digest(s: &str) -> Result<DigestResponse, CredentialsError> {
    let mut d = DigestResponse::default();
    let mut rest = s.trim();
    let mut fields = 0;
    while !rest.is_empty() {
        fields += 1;
        if fields > 32 {
            return Err(CredentialsError::BadDigest("too many fields"));
        }
        let eq = rest.find('=').ok_or(CredentialsError::BadDigest("a field without a value"))?;
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, c)) => v.push(c),
                        None => break,
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let end = end.ok_or(CredentialsError::BadDigest("an unterminated quoted value"))?;
            value = v;
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        match key.as_str() {
            "username" => d.username = value,
            "realm" => d.realm = value,
            "nonce" => d.nonce = value,
            "uri" => d.uri = value,
            "response" => d.response = value,
            "qop" => d.qop = Some(value),
            "nc" => d.nc = Some(value),
            "cnonce" => d.cnonce = Some(value),
            "algorithm" => d.algorithm = Some(value),
            _ => {} // opaque and extensions carry nothing we check
        }
    }
    for (name, v) in [("username", &d.username), ("nonce", &d.nonce), ("uri", &d.uri), ("response", &d.response)] {
        if v.is_empty() {
            return Err(CredentialsError::BadDigest(match name {
                "username" => "no username",
                "nonce" => "no nonce",
                "uri" => "no uri",
                _ => "no response",
            }));
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_bearer_and_digest_are_read() {
        let basic = Credentials::parse_header(b"Basic YWxpY2U6cDpzcw==").unwrap();
        assert_eq!(basic, Credentials::Basic { user: "alice".into(), password: Secret::new("p:ss") });
        assert_eq!(
            Credentials::parse_header(b"bearer abc.def.ghi").unwrap(),
            Credentials::Bearer(Secret::new("abc.def.ghi"))
        );
        let digest = Credentials::parse_header(
            br#"Digest username="alice", realm="mediamesh", nonce="n1", uri="rtsp://h/a/b", response="0123", qop=auth, nc=00000001, cnonce="c\"1""#,
        )
        .unwrap();
        let Credentials::Digest(d) = digest else { panic!("digest") };
        assert_eq!((d.username.as_str(), d.uri.as_str(), d.qop.as_deref()), ("alice", "rtsp://h/a/b", Some("auth")));
        assert_eq!(d.cnonce.as_deref(), Some("c\"1"));
    }

    #[test]
    fn bad_headers_are_errors_that_do_not_repeat_the_secret() {
        assert_eq!(Credentials::parse_header(b"Basic !!!").unwrap_err(), CredentialsError::BadBasic);
        assert_eq!(Credentials::parse_header(b"Basic YWxpY2U=").unwrap_err(), CredentialsError::BadBasic);
        assert_eq!(Credentials::parse_header(b"Bearer ").unwrap_err(), CredentialsError::EmptyToken);
        assert!(
            matches!(Credentials::parse_header(b"Negotiate xyz"), Err(CredentialsError::Scheme(s)) if s == "Negotiate")
        );
        assert!(matches!(Credentials::parse_header(&vec![b'a'; MAX_HEADER + 1]), Err(CredentialsError::TooLong(_))));
        assert!(matches!(
            Credentials::parse_header(br#"Digest username="a", nonce="unterminated"#),
            Err(CredentialsError::BadDigest(_))
        ));
        assert!(matches!(
            Credentials::parse_header(br#"Digest username="a""#),
            Err(CredentialsError::BadDigest("no nonce"))
        ));
        let e = Credentials::parse_header(b"Basic c2VjcmV0").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn the_token_query_parameter_is_found_and_decoded() {
        assert_eq!(Credentials::from_query("a=1&token=x%2By+z"), Some(Credentials::Bearer(Secret::new("x+y z"))));
        assert_eq!(Credentials::from_query("tokens=1"), None);
        assert_eq!(Credentials::from_query("token="), None);
        assert_eq!(Credentials::from_query("token=%zz%4"), Some(Credentials::Bearer(Secret::new("%zz%4"))));
    }
}
