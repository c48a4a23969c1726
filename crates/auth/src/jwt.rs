//! JSON Web Tokens: a token is accepted when its algorithm is on the allow-list, its signature
//! checks with the configured key of that algorithm's kind, and `exp`, `nbf`, `iss` and `aud`
//! hold (with a small leeway). Its permissions are the strings in one claim
//! (`mediamesh_permissions` by default), written as in the configuration (`read:edge-1/*`).
//!
//! `alg: none` is not an algorithm here, and a token's algorithm must match its key's kind: an
//! HS256 token "signed" with an RSA public key as the secret is refused.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::jwks::JwksCache;
use crate::permission::{Permission, PermissionError};
use crate::settings::{AuthError, JwtSettings};

/// Why a signing key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not an algorithm name.
    #[error(
        "{0:?} is not a JWT algorithm; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384 or HS512"
    )]
    Algorithm(String),
    /// The system could not make a key.
    #[error("cannot make an Ed25519 key: {0}")]
    Generate(aws_lc_rs::error::Unspecified),
    /// The PEM is not a private key of the algorithm's kind.
    #[error("not a {alg:?} private key: {source}")]
    NotAKey {
        /// The algorithm asked for.
        alg: Algorithm,
        /// What the parser said.
        source: jsonwebtoken::errors::Error,
    },
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// Reads an algorithm name as JWT headers write it.
pub fn algorithm(name: &str) -> Result<Algorithm, KeyError> {
    name.parse::<Algorithm>().map_err(|_| KeyError::Algorithm(name.to_owned()))
}

/// Why a token was refused. The text is safe to answer with: it never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64 parts with a JSON header naming a known algorithm.
    #[error("not a valid JWT ({0})")]
    Malformed(String),
    /// The header's algorithm is not on the allow-list.
    #[error("the token's algorithm {0:?} is not allowed")]
    Algorithm(String),
    /// No configured key of the algorithm's kind.
    #[error("no key for the token's algorithm {0:?}")]
    NoKey(String),
    /// The signature does not check.
    #[error("the token's signature does not match the key")]
    Signature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// `iss` differs.
    #[error("the token's issuer is not the one configured")]
    Issuer,
    /// `aud` does not hold the configured audience.
    #[error("the token is for another audience")]
    Audience,
    /// A required claim is missing or has the wrong type.
    #[error("claim {0}")]
    Claim(String),
    /// The token names a key (`kid`) the key set does not hold, even after fetching it again.
    #[error("no key {0:?} in the hub's key set")]
    UnknownKey(String),
    /// The key set has never been fetched, so no token can be checked.
    #[error("the hub cannot fetch its token keys: {0}")]
    KeysUnavailable(String),
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `sub`, or `token` if it has none (for logs).
    pub subject: String,
    /// Its permissions.
    pub permissions: Vec<Permission>,
}

/// Checks tokens against a static key.
pub struct JwtVerifier {
    keys: Vec<DecodingKey>,
    jwks: Option<Arc<JwksCache>>,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("algorithms", &self.algorithms).finish_non_exhaustive()
    }
}

/// Reads a key file: a PEM public key of any supported kind, or, for HMAC algorithms, the
/// shared secret (surrounding whitespace ignored).
fn load_keys(path: &Path, algorithms: &[Algorithm]) -> Result<Vec<DecodingKey>, AuthError> {
    let bytes = std::fs::read(path)
        .map_err(|e| AuthError::new("jwt.keyFile", format!("cannot read {}: {e}", path.display())))?;
    let mut keys = Vec::new();
    if bytes.starts_with(b"-----BEGIN") {
        let pem =
            [DecodingKey::from_rsa_pem(&bytes), DecodingKey::from_ec_pem(&bytes), DecodingKey::from_ed_pem(&bytes)];
        keys.extend(pem.into_iter().filter_map(Result::ok));
        if keys.is_empty() {
            return Err(AuthError::new(
                "jwt.keyFile",
                format!("{} is PEM but not an RSA, EC or Ed25519 public key", path.display()),
            ));
        }
    } else if algorithms.iter().any(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac) {
        let secret = String::from_utf8_lossy(&bytes).trim().to_owned();
        if secret.len() < 32 {
            return Err(AuthError::new("jwt.keyFile", "an HMAC secret must be at least 32 bytes"));
        }
        keys.push(DecodingKey::from_secret(secret.as_bytes()));
    } else {
        return Err(AuthError::new(
            "jwt.keyFile",
            format!("{} is not a PEM public key (and no HS* algorithm is allowed)", path.display()),
        ));
    }
    let usable = keys.iter().any(|k| algorithms.iter().any(|a| a.family() == k.family()));
    if !usable {
        return Err(AuthError::new(
            "jwt.algorithms",
            format!("none of the allowed algorithms can use the key in {}", path.display()),
        ));
    }
    Ok(keys)
}

impl JwtVerifier {
    /// From the `jwt` settings (reads the key file).
    pub fn new(s: &JwtSettings) -> Result<Self, AuthError> {
        Self::reusing(s, None)
    }

    /// From the `jwt` settings, keeping `previous`'s fetched key set if the URL is the same (a
    /// reload must not leave the hub without keys until the next fetch).
    pub fn reusing(s: &JwtSettings, previous: Option<&JwtVerifier>) -> Result<Self, AuthError> {
        let algorithms: Vec<Algorithm> = s
            .algorithms
            .iter()
            .enumerate()
            .map(|(i, a)| algorithm(a).map_err(|e| AuthError::new(format!("jwt.algorithms[{i}]"), e)))
            .collect::<Result<_, _>>()?;
        let keys = match s.key_file.as_deref() {
            Some(path) => load_keys(path, &algorithms)?,
            None if s.jwks_url.is_some() => Vec::new(),
            None => return Err(AuthError::new("jwt.keyFile", "set the key tokens are signed with, or jwt.jwksUrl")),
        };
        let jwks = s.jwks_url.as_deref().map(|url| {
            previous
                .and_then(|p| p.jwks.as_ref())
                .filter(|c| c.url() == url)
                .cloned()
                .unwrap_or_else(|| Arc::new(JwksCache::new(url, s.jwks_refresh.get())))
        });
        Ok(Self {
            keys,
            jwks,
            algorithms,
            issuer: s.issuer.clone(),
            audience: s.audience.clone(),
            leeway: s.leeway.get().as_secs(),
            claim: s.claim.clone(),
        })
    }

    /// Whether `text` looks like a JWT (three base64url parts), to tell a token in a password
    /// field from a password.
    pub fn looks_like_jwt(text: &str) -> bool {
        let mut parts = text.split('.');
        let ok = |p: Option<&str>| {
            p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        };
        ok(parts.next()) && ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
    }

    /// The key set fetched from `jwksUrl`, if configured.
    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        self.jwks.as_ref()
    }

    /// The algorithms tokens may use.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Checks `token` and reads what it grants.
    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(describe(&e)))?;
        let alg = header.alg;
        if !self.algorithms.contains(&alg) {
            return Err(TokenError::Algorithm(format!("{alg:?}")));
        }
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let fetched = self.jwks.as_ref().map(|c| c.keys());
        let from_set = fetched
            .iter()
            .flat_map(|keys| keys.iter())
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .map(|k| &k.key);
        let candidates: Vec<&DecodingKey> =
            self.keys.iter().chain(from_set).filter(|k| k.family() == alg.family()).collect();
        if candidates.is_empty()
            && let Some(cache) = &self.jwks
        {
            // The set may lack the key because it cannot be fetched: say so, as that is what an
            // operator must fix.
            if let Some(e) = cache.last_error() {
                return Err(TokenError::KeysUnavailable(e));
            }
            if let Some(kid) = &header.kid {
                return Err(TokenError::UnknownKey(kid.chars().take(64).collect()));
            }
        }
        let mut last = TokenError::NoKey(format!("{alg:?}"));
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => return self.grant(&data.claims),
                Err(e) => {
                    last = classify(&e);
                    if last != TokenError::Signature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn grant(&self, claims: &Map<String, Value>) -> Result<Grant, TokenError> {
        let subject = claims.get("sub").and_then(Value::as_str).unwrap_or("token").to_owned();
        let list = match claims.get(&self.claim) {
            Some(Value::Array(items)) => items,
            Some(_) => return Err(TokenError::Claim(format!("{} is not a list of permissions", self.claim))),
            None => return Err(TokenError::Claim(format!("{} is missing: the token grants nothing", self.claim))),
        };
        let mut permissions = Vec::with_capacity(list.len().min(64));
        for item in list.iter().take(256) {
            let text = item.as_str().ok_or_else(|| TokenError::Claim(format!("{} holds a non-string", self.claim)))?;
            let p: Permission =
                text.parse().map_err(|e: PermissionError| TokenError::Claim(format!("{}: {e}", self.claim)))?;
            permissions.push(p);
        }
        Ok(Grant { subject, permissions })
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidToken => "not three dot-separated parts".into(),
        K::Base64(_) => "a part is not base64url".into(),
        K::Json(_) => "the header is not JSON with a known algorithm".into(),
        K::Utf8(_) => "a part is not UTF-8".into(),
        _ => "unreadable".into(),
    }
}

fn classify(e: &jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => TokenError::Signature,
        K::ExpiredSignature => TokenError::Expired,
        K::ImmatureSignature => TokenError::NotYetValid,
        K::InvalidIssuer => TokenError::Issuer,
        K::InvalidAudience => TokenError::Audience,
        K::MissingRequiredClaim(c) => TokenError::Claim(format!("{c} is required")),
        K::InvalidClaimFormat(c) => TokenError::Claim(format!("{c} has the wrong type")),
        K::InvalidAlgorithm | K::InvalidKeyFormat => TokenError::NoKey("its kind".into()),
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => TokenError::Malformed(describe(e)),
        _ => TokenError::Signature,
    }
}

/// A private key to mint tokens with, for the demo and `mediamesh auth token`.
pub struct Minter {
    key: EncodingKey,
    alg: Algorithm,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter").field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// A fresh Ed25519 key pair: the minter, and the public key as PEM for `jwt.keyFile`.
pub fn ed25519_pair() -> Result<(Minter, String, String), KeyError> {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).map_err(KeyError::Generate)?;
    let pair =
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Generate(aws_lc_rs::error::Unspecified))?;
    // SubjectPublicKeyInfo for Ed25519 (RFC 8410): the algorithm identifier, then the key.
    let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    spki.extend_from_slice(pair.public_key().as_ref());
    let minter = Minter { key: EncodingKey::from_ed_der(pkcs8.as_ref()), alg: Algorithm::EdDSA };
    Ok((minter, pem("PUBLIC KEY", &spki), pem("PRIVATE KEY", pkcs8.as_ref())))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl Minter {
    /// From a PEM private key (RSA, EC or Ed25519) and the algorithm to sign with.
    pub fn from_pem(pem: &[u8], alg: Algorithm) -> Result<Self, KeyError> {
        use jsonwebtoken::AlgorithmFamily as F;
        let key = match alg.family() {
            F::Rsa => EncodingKey::from_rsa_pem(pem),
            F::Ec => EncodingKey::from_ec_pem(pem),
            F::Ed => EncodingKey::from_ed_pem(pem),
            F::Hmac => Ok(EncodingKey::from_secret(String::from_utf8_lossy(pem).trim().as_bytes())),
        }
        .map_err(|source| KeyError::NotAKey { alg, source })?;
        Ok(Self { key, alg })
    }

    /// A token for `subject` granting `permissions` until `exp` (Unix seconds), with `iss`
    /// and `aud` if given.
    pub fn mint(
        &self,
        subject: &str,
        permissions: &[Permission],
        exp: u64,
        issuer: Option<&str>,
        audience: Option<&str>,
        claim: &str,
    ) -> Result<String, KeyError> {
        let mut claims = Map::new();
        claims.insert("sub".into(), subject.into());
        claims.insert("exp".into(), exp.into());
        claims.insert("iat".into(), jsonwebtoken::get_current_timestamp().into());
        if let Some(i) = issuer {
            claims.insert("iss".into(), i.into());
        }
        if let Some(a) = audience {
            claims.insert("aud".into(), a.into());
        }
        claims.insert(claim.into(), permissions.iter().map(|p| Value::from(p.to_string())).collect());
        jsonwebtoken::encode(&Header::new(self.alg), &claims, &self.key).map_err(KeyError::Sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::JwtSettings;
    use mediamesh_tunnel::settings::Seconds;

    struct Setup {
        _dir: std::path::PathBuf,
        minter: Minter,
        verifier: JwtVerifier,
        public_pem: String,
    }

    fn setup(tweak: impl FnOnce(&mut JwtSettings)) -> Setup {
        let (minter, public_pem, _) = ed25519_pair().unwrap();
        let dir = std::env::temp_dir().join(format!(
            "mm-jwt-{}-{}",
            std::process::id(),
            crate::digest::ha1("x", &format!("{:?}", std::time::Instant::now()))
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("pub.pem");
        std::fs::write(&key, &public_pem).unwrap();
        let mut s = JwtSettings {
            key_file: Some(key),
            jwks_url: None,
            jwks_refresh: Seconds::new(300),
            jwks_ca_file: None,
            algorithms: vec!["EdDSA".into()],
            issuer: Some("https://id.example".into()),
            audience: Some("mediamesh".into()),
            leeway: Seconds::new(30),
            claim: "mediamesh_permissions".into(),
        };
        tweak(&mut s);
        let verifier = JwtVerifier::new(&s).unwrap();
        Setup { _dir: dir, minter, verifier, public_pem }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn perms(list: &[&str]) -> Vec<Permission> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    fn token(s: &Setup, exp: u64, iss: &str, aud: &str) -> String {
        s.minter
            .mint("viewer-7", &perms(&["read:edge-1/cam1"]), exp, Some(iss), Some(aud), "mediamesh_permissions")
            .unwrap()
    }

    #[test]
    fn a_valid_token_grants_its_permissions() {
        let s = setup(|_| {});
        let g = s.verifier.verify(&token(&s, now() + 600, "https://id.example", "mediamesh")).unwrap();
        assert_eq!(g.subject, "viewer-7");
        assert_eq!(g.permissions, perms(&["read:edge-1/cam1"]));
        assert!(JwtVerifier::looks_like_jwt(&token(&s, now() + 600, "i", "a")));
        assert!(!JwtVerifier::looks_like_jwt("hunter2"));
    }

    #[test]
    fn expired_early_foreign_or_misaddressed_tokens_are_refused() {
        let s = setup(|_| {});
        let v = |t: String| s.verifier.verify(&t).unwrap_err();
        assert_eq!(v(token(&s, now() - 120, "https://id.example", "mediamesh")), TokenError::Expired);
        assert!(
            s.verifier.verify(&token(&s, now() - 10, "https://id.example", "mediamesh")).is_ok(),
            "within the leeway"
        );
        assert_eq!(v(token(&s, now() + 600, "https://evil.example", "mediamesh")), TokenError::Issuer);
        assert_eq!(v(token(&s, now() + 600, "https://id.example", "other")), TokenError::Audience);
        let mut claims = Map::new();
        claims.insert("exp".into(), (now() + 600).into());
        claims.insert("nbf".into(), (now() + 300).into());
        claims.insert("iss".into(), "https://id.example".into());
        claims.insert("aud".into(), "mediamesh".into());
        claims.insert("mediamesh_permissions".into(), vec![Value::from("read")].into());
        let early = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &s.minter.key).unwrap();
        assert_eq!(v(early), TokenError::NotYetValid);
        let (other, _, _) = ed25519_pair().unwrap();
        let forged = other
            .mint(
                "x",
                &perms(&["read"]),
                now() + 600,
                Some("https://id.example"),
                Some("mediamesh"),
                "mediamesh_permissions",
            )
            .unwrap();
        assert_eq!(v(forged), TokenError::Signature, "signed with an unknown key");
    }

    #[test]
    fn alg_none_and_hs256_signed_with_the_public_key_are_refused() {
        let s = setup(|_| {});
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let body = format!(
            r#"{{"exp":{},"iss":"https://id.example","aud":"mediamesh","mediamesh_permissions":["read","admin"]}}"#,
            now() + 600
        );
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&body));
        assert!(matches!(s.verifier.verify(&none), Err(TokenError::Malformed(_))), "alg none");
        let hs = Minter::from_pem(s.public_pem.as_bytes(), Algorithm::HS256).unwrap();
        let confused = hs
            .mint(
                "x",
                &perms(&["admin"]),
                now() + 600,
                Some("https://id.example"),
                Some("mediamesh"),
                "mediamesh_permissions",
            )
            .unwrap();
        assert_eq!(s.verifier.verify(&confused).unwrap_err(), TokenError::Algorithm("HS256".into()));
        // Even with HS256 on the allow-list, a public key is never an HMAC secret.
        let lax = setup(|j| j.algorithms = vec!["EdDSA".into(), "HS256".into()]);
        let hs = Minter::from_pem(lax.public_pem.as_bytes(), Algorithm::HS256).unwrap();
        let confused = hs
            .mint(
                "x",
                &perms(&["admin"]),
                now() + 600,
                Some("https://id.example"),
                Some("mediamesh"),
                "mediamesh_permissions",
            )
            .unwrap();
        assert!(matches!(lax.verifier.verify(&confused), Err(TokenError::NoKey(_))));
    }

    #[test]
    fn a_token_without_the_claim_grants_nothing() {
        let s = setup(|_| {});
        let t =
            s.minter.mint("x", &[], now() + 600, Some("https://id.example"), Some("mediamesh"), "other_claim").unwrap();
        assert!(matches!(s.verifier.verify(&t), Err(TokenError::Claim(_))));
    }
}
