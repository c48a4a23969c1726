//! Fuzzing entry points, shared by `fuzz/fuzz_targets/auth_parse.rs` (cargo fuzz) and the
//! property tests, so CI exercises the same code the fuzzer does.

use jsonwebtoken::Algorithm;

use crate::credentials::Credentials;
use crate::jwt::JwtVerifier;
use crate::permission::Permission;

/// Every parser that reads what a client or a key server sends: `Authorization` headers,
/// `?token=` queries, permissions (claims and configuration), JWT headers and JWKS documents.
/// Panics only on a real bug.
pub fn auth_parse(data: &[u8]) {
    let _ = Credentials::parse_header(data);
    let text = String::from_utf8_lossy(data);
    let _ = Credentials::from_query(&text);
    let _ = JwtVerifier::looks_like_jwt(&text);
    let _ = jsonwebtoken::decode_header(text.as_bytes());
    if let Ok(p) = text.parse::<Permission>() {
        assert_eq!(p.to_string().parse::<Permission>().ok(), Some(p), "a permission must print back as itself");
    }
    let all = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256];
    if let Ok(keys) = crate::jwks::parse(data, &all) {
        assert!(!keys.is_empty() && keys.len() <= crate::jwks::MAX_KEYS);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_auth_parsers_survive_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            super::auth_parse(&data);
        }

        #[test]
        fn the_auth_parsers_survive_near_miss_headers(
            scheme in "(Basic|Bearer|Digest|basic|DIGEST) ?",
            rest in "[ -~]{0,300}",
        ) {
            super::auth_parse(format!("{scheme}{rest}").as_bytes());
            super::auth_parse(format!("Digest username=\"{rest}\", realm=\"x\", nonce=\"{rest}\", uri=\"/\", response=\"{rest}\"").as_bytes());
            super::auth_parse(format!("{{\"keys\":[{{\"kty\":\"{rest}\",\"crv\":\"Ed25519\",\"x\":\"{rest}\"}}]}}").as_bytes());
            super::auth_parse(format!("read:{rest}").as_bytes());
        }
    }
}
