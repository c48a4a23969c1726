//! Internal users' passwords: argon2id hashes in the PHC string format
//! (`$argon2id$v=19$m=19456,t=2,p=1$…`), made by `mediamesh auth hash-password`, and the
//! MD5 digest RTSP Digest needs.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::Secret;

/// Why a password hash is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Not a PHC string.
    #[error("not a password hash in PHC format ($argon2id$v=19$...): {0}")]
    Format(String),
    /// A PHC string of another algorithm.
    #[error("the hash is {0}; only argon2id hashes are accepted (make one with `mediamesh auth hash-password`)")]
    Algorithm(String),
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// No random bytes for the salt.
    #[error("no random bytes for the salt")]
    Random,
}

/// A parsed argon2id hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashString(String);

impl std::fmt::Debug for PasswordHashString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not the password, but it is what an offline guesser needs.
        f.write_str("$argon2id$***")
    }
}

impl PasswordHashString {
    /// Checks that `phc` is an argon2id hash.
    pub fn parse(phc: &str) -> Result<Self, PasswordError> {
        let parsed = PasswordHash::new(phc).map_err(|e| PasswordError::Format(e.to_string()))?;
        if parsed.algorithm.as_str() != "argon2id" {
            return Err(PasswordError::Algorithm(parsed.algorithm.to_string()));
        }
        Ok(Self(phc.to_owned()))
    }

    /// Whether `password` is the one hashed. Costs tens of milliseconds of CPU by design: run it
    /// off the async threads.
    pub fn verify(&self, password: &Secret) -> bool {
        PasswordHash::new(&self.0)
            .is_ok_and(|h| Argon2::default().verify_password(password.expose().as_bytes(), &h).is_ok())
    }

    /// The PHC string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Hashes `password` with argon2id (OWASP's parameters: 19 MiB, 2 passes) and a random salt.
pub fn hash(password: &Secret) -> Result<PasswordHashString, PasswordError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| PasswordError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let phc =
        hasher.hash_password(password.expose().as_bytes(), &salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(PasswordHashString(phc.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash(&Secret::new("correct horse")).unwrap();
        assert!(h.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", h.as_str());
        assert!(h.verify(&Secret::new("correct horse")));
        assert!(!h.verify(&Secret::new("correct horse ")));
        let again = PasswordHashString::parse(h.as_str()).unwrap();
        assert!(again.verify(&Secret::new("correct horse")));
        assert_eq!(format!("{again:?}"), "$argon2id$***");
    }

    #[test]
    fn other_formats_are_refused_with_a_reason() {
        assert!(matches!(PasswordHashString::parse("hunter2"), Err(PasswordError::Format(_))));
        let bcrypt_like = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Zm9vYmFyYmF6cXV4";
        assert!(matches!(PasswordHashString::parse(bcrypt_like), Err(PasswordError::Algorithm(a)) if a == "argon2i"));
    }
}
