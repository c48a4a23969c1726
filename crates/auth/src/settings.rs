//! The `auth` block of the hub's configuration.
//!
//! ```yaml
//! auth:
//!   anonymous: [metrics]               # what a request without credentials may do
//!   users:
//!     - user: alice
//!       password: "$argon2id$v=19$..."  # mediamesh auth hash-password
//!       digest: "5f4dcc3b..."           # optional, for RTSP Digest (also printed by it)
//!       permissions: ["read:edge-1/*", api]
//!   jwt:
//!     keyFile: jwt-public.pem          # and/or jwksUrl: https://id.example.com/jwks
//!     issuer: https://id.example.com/
//!     audience: mediamesh
//!   hook: {url: "https://auth.internal/mediamesh", cache: 10s, timeout: 5s}
//!   failures: {maxFailures: 10, window: 60s, block: 60s}
//! ```

use std::path::{Path, PathBuf};

use mediamesh_tunnel::settings::Seconds;
use serde::{Deserialize, Serialize};

use crate::permission::Permission;
use crate::{Secret, password};

/// The `auth` block.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthSettings {
    /// What requests without credentials may do (`[read]` makes every stream public).
    #[serde(default)]
    pub anonymous: Vec<Permission>,
    /// Internal users.
    #[serde(default)]
    pub users: Vec<UserSettings>,
    /// JSON Web Tokens.
    #[serde(default)]
    pub jwt: Option<JwtSettings>,
    /// An HTTP service that decides what the other methods do not.
    #[serde(default)]
    pub hook: Option<HookSettings>,
    /// The limit on failed attempts per client address.
    #[serde(default)]
    pub failures: FailureSettings,
}

/// An internal user.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSettings {
    /// The user name.
    pub user: String,
    /// An argon2id hash of the password (`mediamesh auth hash-password`).
    pub password: Secret,
    /// `MD5(user:mediamesh:password)`, for RTSP Digest; without it the user can use Basic only.
    #[serde(default)]
    pub digest: Option<Secret>,
    /// What the user may do.
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// JWT verification.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSettings {
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519) tokens are signed with; for HS256,
    /// HS384 and HS512 the file holds the shared secret.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// A JWKS URL (an identity provider's `jwks_uri`) to take keys from, refreshed every
    /// `jwksRefresh` and when a token names a key the set does not have.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again. Default 300 s.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: Seconds,
    /// CA bundle (PEM) for an `https` JWKS URL; default: the system's.
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// Algorithms a token may use. Default `[RS256, ES256, EdDSA]`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Required `iss`, if set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's), if set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30 s.
    #[serde(default = "default_leeway")]
    pub leeway: Seconds,
    /// The claim that lists the token's permissions. Default `mediamesh_permissions`.
    #[serde(default = "default_claim")]
    pub claim: String,
}

/// The HTTP hook: `POST url` with the request as JSON; a 2xx answer allows it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookSettings {
    /// `http://` or `https://` URL.
    pub url: String,
    /// How long an answer is reused for the same request. Default 10 s; `0` asks every time.
    #[serde(default = "default_hook_cache")]
    pub cache: Seconds,
    /// How long the hook may take. Default 5 s.
    #[serde(default = "default_hook_timeout")]
    pub timeout: Seconds,
    /// CA bundle (PEM) for an `https` URL; default: the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The limit on failed attempts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailureSettings {
    /// Failures one address may have within `window` before it is refused. Default 10.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Default 60 s.
    #[serde(default = "default_window")]
    pub window: Seconds,
    /// How long an address over the limit is refused (429) after its last failure. Default 60 s.
    #[serde(default = "default_window")]
    pub block: Seconds,
}

impl Default for FailureSettings {
    fn default() -> Self {
        Self { max_failures: default_max_failures(), window: default_window(), block: default_window() }
    }
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_leeway() -> Seconds {
    Seconds::new(30)
}
fn default_jwks_refresh() -> Seconds {
    Seconds::new(300)
}
fn default_hook_cache() -> Seconds {
    Seconds::new(10)
}
fn default_hook_timeout() -> Seconds {
    Seconds::new(5)
}
fn default_claim() -> String {
    "mediamesh_permissions".into()
}
fn default_max_failures() -> u32 {
    10
}
fn default_window() -> Seconds {
    Seconds::new(60)
}

/// A value in the `auth` block that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth.{key}: {reason}")]
pub struct AuthError {
    /// The key below `auth`, e.g. `users[0].password`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl AuthError {
    pub(crate) fn new(key: impl Into<String>, reason: impl ToString) -> Self {
        Self { key: key.into(), reason: reason.to_string() }
    }
}

impl AuthSettings {
    /// Checks what types alone cannot (hashes parse, names are unique, keys are readable is
    /// checked where they are loaded).
    pub fn validate(&self) -> Result<(), AuthError> {
        let mut seen = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if u.user.is_empty() || u.user.contains(':') {
                return Err(AuthError::new(format!("users[{i}].user"), "must be non-empty, without ':'"));
            }
            if !seen.insert(u.user.as_str()) {
                return Err(AuthError::new(format!("users[{i}].user"), format!("{:?} is listed twice", u.user)));
            }
            password::PasswordHashString::parse(u.password.expose())
                .map_err(|e| AuthError::new(format!("users[{i}].password"), e))?;
            if let Some(d) = &u.digest
                && (d.expose().len() != 32 || !d.expose().bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(AuthError::new(
                    format!("users[{i}].digest"),
                    "must be 32 hex digits, MD5(user:mediamesh:password), as `mediamesh auth hash-password` prints",
                ));
            }
        }
        if let Some(j) = &self.jwt {
            if j.key_file.is_none() && j.jwks_url.is_none() {
                return Err(AuthError::new("jwt.keyFile", "set the key tokens are signed with, or jwt.jwksUrl"));
            }
            if let Some(url) = &j.jwks_url {
                check_url(url).map_err(|e| AuthError::new("jwt.jwksUrl", e))?;
                if j.jwks_refresh.get() < std::time::Duration::from_secs(10) {
                    return Err(AuthError::new("jwt.jwksRefresh", "must be at least 10 s"));
                }
            }
            if j.algorithms.is_empty() {
                return Err(AuthError::new("jwt.algorithms", "list at least one algorithm"));
            }
            for (i, a) in j.algorithms.iter().enumerate() {
                crate::jwt::algorithm(a).map_err(|e| AuthError::new(format!("jwt.algorithms[{i}]"), e))?;
            }
            if j.claim.is_empty() {
                return Err(AuthError::new("jwt.claim", "must not be empty"));
            }
        }
        if let Some(h) = &self.hook {
            check_url(&h.url).map_err(|e| AuthError::new("hook.url", e))?;
            if h.timeout.get().is_zero() {
                return Err(AuthError::new("hook.timeout", "must be greater than 0"));
            }
        }
        if self.failures.max_failures == 0 {
            return Err(AuthError::new("failures.maxFailures", "must be at least 1"));
        }
        Ok(())
    }

    /// Makes relative paths absolute against `base` (the configuration file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let jwt = self.jwt.as_mut().map(|j| [j.key_file.as_mut(), j.jwks_ca_file.as_mut()]);
        let hook = self.hook.as_mut().map(|h| h.ca_file.as_mut());
        for p in jwt.into_iter().flatten().chain(hook).flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// An instance with every optional part filled in, so that serialized it lists every key
    /// there is (for "did you mean" and typed environment overrides).
    pub fn schema() -> Self {
        Self {
            anonymous: Vec::new(),
            users: vec![UserSettings {
                user: String::new(),
                password: Secret::default(),
                digest: Some(Secret::default()),
                permissions: Vec::new(),
            }],
            jwt: Some(JwtSettings {
                key_file: Some(PathBuf::new()),
                jwks_url: Some(String::new()),
                jwks_refresh: default_jwks_refresh(),
                jwks_ca_file: Some(PathBuf::new()),
                algorithms: default_algorithms(),
                issuer: Some(String::new()),
                audience: Some(String::new()),
                leeway: default_leeway(),
                claim: default_claim(),
            }),
            hook: Some(HookSettings {
                url: String::new(),
                cache: default_hook_cache(),
                timeout: default_hook_timeout(),
                ca_file: Some(PathBuf::new()),
            }),
            failures: FailureSettings::default(),
        }
    }

    /// Whether RTSP clients should be offered Digest (some user can use it).
    pub fn offers_digest(&self) -> bool {
        self.users.iter().any(|u| u.digest.is_some())
    }
}

/// An `http://` or `https://` URL with a host.
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    if rest.split(['/', '?']).next().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    if url.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err("must not contain spaces or control characters");
    }
    Ok(())
}
