//! The decision: who is asking, and may they do this.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Secret;
use crate::credentials::Credentials;
pub use crate::denial::{Denial, DenialReason};
use crate::digest::{self, NonceCheck, Nonces};
use crate::hook::{AnswerCache, Hook, HookAnswer, HookQuery};
use crate::jwt::{JwtVerifier, TokenError};
use crate::limiter::{FailureLimiter, LimitConfig};
use crate::password::{self, PasswordHashString};
use crate::permission::{Action, Permission, allowed};
use crate::session::Sessions;
use crate::settings::{AuthError, AuthSettings};

/// How long a checked user and password is remembered, so an RTSP client's several requests
/// cost one argon2id hash, not one each.
const VERIFIED_FOR: Duration = Duration::from_secs(300);
/// Most remembered checks.
const VERIFIED_MAX: usize = 4096;

/// One request to decide on.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// What it does.
    pub action: Action,
    /// The stream, for `read`.
    pub stream: Option<(&'a str, &'a str)>,
    /// The client's address.
    pub remote: IpAddr,
    /// What it presented.
    pub credentials: &'a Credentials,
    /// The request method, which a Digest response covers (RTSP: `DESCRIBE`, `SETUP`, …).
    pub method: &'a str,
    /// Where it came in (`http`, `ws`, `rtsp`), for the hook.
    pub protocol: &'static str,
}

/// Who was let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials; the `anonymous` permissions allowed it.
    Anonymous,
    /// An internal user.
    User(String),
    /// A token's subject.
    Token(String),
    /// Allowed by the HTTP hook (the user name, if one was sent).
    Hook(Option<String>),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::User(u) => write!(f, "user {u:?}"),
            Identity::Token(s) => write!(f, "token for {s:?}"),
            Identity::Hook(Some(u)) => write!(f, "user {u:?} (hook)"),
            Identity::Hook(None) => f.write_str("a client the hook allowed"),
        }
    }
}

/// Passwords already checked against their argon2 hash: (user, digest of the password) → when.
type VerifiedCache = Arc<Mutex<HashMap<(String, [u8; 32]), Instant>>>;

struct User {
    hash: PasswordHashString,
    digest: Option<Secret>,
    permissions: Vec<Permission>,
}

/// Decides requests by the `auth` block.
pub struct Authenticator {
    anonymous: Vec<Permission>,
    users: HashMap<String, User>,
    jwt: Option<JwtVerifier>,
    /// Shared with the authenticator a reload replaces, so a reload does not forgive.
    limiter: Arc<Mutex<FailureLimiter>>,
    nonces: Arc<Nonces>,
    verified: VerifiedCache,
    /// Checked for unknown users too, so the time taken does not tell which users exist.
    decoy: PasswordHashString,
    hook: Option<Arc<dyn Hook>>,
    hook_answers: AnswerCache,
    /// Sign-in sessions, shared with the authenticator a reload replaces.
    sessions: Arc<Sessions>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("anonymous", &self.anonymous)
            .field("users", &self.users.len())
            .field("jwt", &self.jwt.is_some())
            .field("hook", &self.hook.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// From the settings (reads the JWT key file).
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
        let limiter = Arc::new(Mutex::new(FailureLimiter::new(limit_config(settings))));
        let nonces = Arc::new(Nonces::new().ok_or_else(|| AuthError::new("", "no random bytes for Digest nonces"))?);
        Self::build(settings, None, limiter, nonces, Arc::default(), Arc::default())
    }

    /// The authenticator of a reloaded configuration, keeping this one's failure counts.
    pub fn reloaded(&self, settings: &AuthSettings) -> Result<Self, AuthError> {
        let new = Self::build(
            settings,
            self.jwt.as_ref(),
            self.limiter.clone(),
            self.nonces.clone(),
            Arc::default(),
            self.sessions.clone(),
        )?;
        new.limiter.lock().unwrap_or_else(PoisonError::into_inner).set_config(limit_config(settings));
        Ok(new)
    }

    /// Asks `hook` what the other methods do not decide (the `hook` block; the hub's HTTP
    /// client implements it).
    pub fn with_hook(mut self, hook: Arc<dyn Hook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The key set fetched from `jwt.jwksUrl`, if configured (the hub's fetcher fills it).
    pub fn jwks(&self) -> Option<&Arc<crate::jwks::JwksCache>> {
        self.jwt.as_ref().and_then(JwtVerifier::jwks)
    }

    /// The algorithms a token may use (for reading a key set).
    pub fn jwt_algorithms(&self) -> &[jsonwebtoken::Algorithm] {
        self.jwt.as_ref().map_or(&[], JwtVerifier::algorithms)
    }

    fn build(
        settings: &AuthSettings,
        previous_jwt: Option<&JwtVerifier>,
        limiter: Arc<Mutex<FailureLimiter>>,
        nonces: Arc<Nonces>,
        verified: VerifiedCache,
        sessions: Arc<Sessions>,
    ) -> Result<Self, AuthError> {
        settings.validate()?;
        let mut users = HashMap::new();
        for (i, u) in settings.users.iter().enumerate() {
            let hash = PasswordHashString::parse(u.password.expose())
                .map_err(|e| AuthError::new(format!("users[{i}].password"), e))?;
            let user = User { hash, digest: u.digest.clone(), permissions: u.permissions.clone() };
            users.insert(u.user.clone(), user);
        }
        let jwt = settings.jwt.as_ref().map(|s| JwtVerifier::reusing(s, previous_jwt)).transpose()?;
        let hook_answers = AnswerCache::new(settings.hook.as_ref().map_or(Duration::ZERO, |h| h.cache.get()));
        let mut seed = [0u8; 16];
        aws_lc_rs::rand::fill(&mut seed).map_err(|_| AuthError::new("", "no random bytes"))?;
        let decoy = password::hash(&Secret::new(String::from_utf8_lossy(&seed))).map_err(|e| AuthError::new("", e))?;
        Ok(Self {
            anonymous: settings.anonymous.clone(),
            users,
            jwt,
            limiter,
            nonces,
            verified,
            decoy,
            hook: None,
            hook_answers,
            sessions,
        })
    }

    /// Whether anonymous clients may do `action` (on `stream`).
    pub fn anonymous_may(&self, action: Action, stream: Option<(&str, &str)>) -> bool {
        allowed(&self.anonymous, action, stream)
    }

    /// `WWW-Authenticate` values for an HTTP 401: what this hub can check.
    pub fn http_challenges(&self) -> Vec<String> {
        let mut v = Vec::new();
        // Session tokens are bearer tokens too.
        if self.jwt.is_some() || self.hook.is_some() || !self.users.is_empty() {
            v.push(format!("Bearer realm=\"{}\"", digest::REALM));
        }
        if !self.users.is_empty() || self.hook.is_some() {
            v.push(format!("Basic realm=\"{}\", charset=\"UTF-8\"", digest::REALM));
        }
        v
    }

    /// `WWW-Authenticate` values for an RTSP 401: Digest first when a user can use it, and
    /// Basic for passwords and for tokens in the password field.
    pub fn rtsp_challenges(&self, now_unix: u64, stale: bool) -> Vec<String> {
        let mut v = Vec::new();
        if self.users.values().any(|u| u.digest.is_some()) {
            v.push(digest::challenge(&self.nonces.issue(now_unix), stale));
        }
        if !self.users.is_empty() || self.jwt.is_some() || self.hook.is_some() {
            v.push(format!("Basic realm=\"{}\"", digest::REALM));
        }
        v
    }

    /// Decides `req`.
    pub async fn check(&self, req: &Request<'_>) -> Result<Identity, Denial> {
        let now = Instant::now();
        if let Err(retry_after) = self.limiter().check(req.remote, now) {
            return Err(Denial::RateLimited { retry_after });
        }
        let result = self.authenticate(req).await;
        match &result {
            Err(d) if d.is_failure() => self.limiter().failed(req.remote, Instant::now()),
            Ok((Identity::Anonymous, _)) | Err(_) => {}
            Ok(_) => self.limiter().succeeded(req.remote),
        }
        let (who, permissions) = result?;
        if allowed(&permissions, req.action, req.stream) {
            return Ok(who);
        }
        if who == Identity::Anonymous && (!self.users.is_empty() || self.jwt.is_some() || self.hook.is_some()) {
            return Err(Denial::NoCredentials);
        }
        Err(Denial::Forbidden {
            who: who.to_string(),
            action: req.action,
            stream: req.stream.map(|(n, s)| format!("{n}/{s}")),
        })
    }

    /// Exchanges an internal user's name and password for a session token ([`crate::session`]),
    /// under the same failure limit as every other check. Other credentials are refused: a
    /// token holder already has a token, and the hook's users are not the hub's to keep.
    pub async fn sign_in(&self, remote: IpAddr, credentials: &Credentials) -> Result<(String, Secret), Denial> {
        let now = Instant::now();
        if let Err(retry_after) = self.limiter().check(remote, now) {
            return Err(Denial::RateLimited { retry_after });
        }
        let result = match credentials {
            Credentials::None => Err(Denial::NoCredentials),
            Credentials::Basic { user, password } => match self.users.get(user) {
                Some(u) if self.password_ok(user, &u.hash, password).await => {
                    self.sessions.issue(user, now).map(|t| (user.clone(), t)).map_err(Denial::Session)
                }
                Some(_) => Err(Denial::WrongPassword),
                None => {
                    let _ = self.password_ok(user, &self.decoy, password).await;
                    Err(Denial::UnknownUser)
                }
            },
            Credentials::Bearer(_) | Credentials::Digest(_) => {
                Err(Denial::Unsupported("sign in with an internal user's name and password (HTTP Basic)"))
            }
        };
        match &result {
            Err(d) if d.is_failure() => self.limiter().failed(remote, Instant::now()),
            Err(_) => {}
            Ok(_) => self.limiter().succeeded(remote),
        }
        result
    }

    /// Ends the session of `token`; whether there was one.
    pub fn sign_out(&self, token: &str) -> bool {
        Sessions::looks_like(token) && self.sessions.end(token)
    }

    /// How long a session lasts.
    pub fn session_ttl(&self) -> Duration {
        self.sessions.ttl()
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, FailureLimiter> {
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn authenticate(&self, req: &Request<'_>) -> Result<(Identity, Cow<'_, [Permission]>), Denial> {
        match req.credentials {
            Credentials::None if self.hook.is_some() && !allowed(&self.anonymous, req.action, req.stream) => {
                self.ask_hook(req).await
            }
            Credentials::None => Ok((Identity::Anonymous, Cow::Borrowed(&self.anonymous))),
            Credentials::Basic { user, password } => match self.users.get(user) {
                Some(u) => {
                    if self.password_ok(user, &u.hash, password).await {
                        Ok((Identity::User(user.clone()), Cow::Borrowed(&u.permissions)))
                    } else {
                        Err(Denial::WrongPassword)
                    }
                }
                None if self.jwt.is_some() && JwtVerifier::looks_like_jwt(password.expose()) => {
                    self.token(password.expose()).await
                }
                None if self.hook.is_some() => self.ask_hook(req).await,
                None => {
                    // As long as a real check, so the answer's timing does not list users.
                    let _ = self.password_ok(user, &self.decoy, password).await;
                    Err(Denial::UnknownUser)
                }
            },
            Credentials::Digest(r) => {
                let Some(u) = self.users.get(&r.username) else { return Err(Denial::UnknownUser) };
                let Some(ha1) = &u.digest else {
                    return Err(Denial::Unsupported("this user has no Digest entry; use Basic"));
                };
                match self.nonces.check(&r.nonce, unix_now()) {
                    NonceCheck::Valid => {}
                    NonceCheck::Stale => return Err(Denial::StaleNonce),
                    NonceCheck::Invalid => return Err(Denial::WrongPassword),
                }
                if digest::verify(r, req.method, &ha1.expose().to_ascii_lowercase()) {
                    Ok((Identity::User(r.username.clone()), Cow::Borrowed(&u.permissions)))
                } else {
                    Err(Denial::WrongPassword)
                }
            }
            Credentials::Bearer(token) if Sessions::looks_like(token.expose()) => {
                let user = self.sessions.user(token.expose(), Instant::now()).map_err(Denial::Session)?;
                // A reload may have removed the user since it signed in.
                let u = self.users.get(&user).ok_or(Denial::Session(crate::session::SessionError::Unknown))?;
                Ok((Identity::User(user), Cow::Borrowed(&u.permissions)))
            }
            Credentials::Bearer(token)
                if self.hook.is_some() && (self.jwt.is_none() || !JwtVerifier::looks_like_jwt(token.expose())) =>
            {
                self.ask_hook(req).await
            }
            Credentials::Bearer(token) => self.token(token.expose()).await,
        }
    }

    async fn token(&self, token: &str) -> Result<(Identity, Cow<'_, [Permission]>), Denial> {
        let jwt = self.jwt.as_ref().ok_or(Denial::Unsupported("bearer tokens are not configured on this hub"))?;
        let mut verdict = jwt.verify(token);
        // A key the set does not have yet: the provider may have rotated. Fetch the set (if the
        // gap allows) and try once more.
        if matches!(verdict, Err(TokenError::UnknownKey(_) | TokenError::KeysUnavailable(_)))
            && let Some(cache) = jwt.jwks()
            && cache.refresh().await
        {
            verdict = jwt.verify(token);
        }
        let grant = verdict.map_err(Denial::Token)?;
        Ok((Identity::Token(grant.subject), Cow::Owned(grant.permissions)))
    }

    /// Asks the hook about `req`; its answer grants exactly `req`.
    async fn ask_hook(&self, req: &Request<'_>) -> Result<(Identity, Cow<'_, [Permission]>), Denial> {
        let Some(hook) = &self.hook else { return Err(Denial::NoCredentials) };
        let (user, password, token) = match req.credentials {
            Credentials::Basic { user, password } => (Some(user.clone()), Some(password.expose().to_owned()), None),
            Credentials::Bearer(t) => (None, None, Some(t.expose().to_owned())),
            Credentials::Digest(d) => (Some(d.username.clone()), None, None),
            Credentials::None => (None, None, None),
        };
        let query = HookQuery {
            user,
            password,
            token,
            ip: req.remote.to_string(),
            action: req.action.name(),
            path: req.stream.map(|(n, s)| format!("{n}/{s}")),
            protocol: req.protocol,
        };
        let now = Instant::now();
        let answer = match self.hook_answers.get(&query, now) {
            Some(a) => a,
            None => {
                let a = hook.ask(&query).await.map_err(Denial::Hook)?;
                self.hook_answers.put(&query, a, now);
                a
            }
        };
        match answer {
            HookAnswer::Allow => {
                let text = match req.stream {
                    Some((n, s)) => format!("{}:{n}/{s}", req.action.name()),
                    None => req.action.name().to_owned(),
                };
                let grant: Permission = text.parse().map_err(|_| Denial::HookRefused)?;
                Ok((Identity::Hook(query.user), Cow::Owned(vec![grant])))
            }
            HookAnswer::Deny if req.credentials.is_none() => Err(Denial::NoCredentials),
            HookAnswer::Deny => Err(Denial::HookRefused),
        }
    }

    async fn password_ok(&self, user: &str, hash: &PasswordHashString, password: &Secret) -> bool {
        let fingerprint: [u8; 32] = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, password.expose().as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        let key = (user.to_owned(), fingerprint);
        let now = Instant::now();
        {
            let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.get(&key).is_some_and(|until| *until > now) {
                return true;
            }
            cache.retain(|_, until| *until > now);
        }
        let (hash, password) = (hash.clone(), password.clone());
        let ok = tokio::task::spawn_blocking(move || hash.verify(&password)).await.unwrap_or(false);
        if ok {
            let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() < VERIFIED_MAX {
                cache.insert(key, now + VERIFIED_FOR);
            }
        }
        ok
    }
}

fn limit_config(s: &AuthSettings) -> LimitConfig {
    LimitConfig {
        max_failures: s.failures.max_failures,
        window: s.failures.window.get(),
        block: s.failures.block.get(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::UserSettings;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn settings() -> AuthSettings {
        let hash = password::hash(&Secret::new("s3cret")).unwrap();
        AuthSettings {
            anonymous: vec!["metrics".parse().unwrap()],
            users: vec![UserSettings {
                user: "alice".into(),
                password: Secret::new(hash.as_str()),
                digest: Some(Secret::new(digest::ha1("alice", "s3cret"))),
                permissions: vec!["read:edge-1/cam1".parse().unwrap(), "api".parse().unwrap()],
            }],
            ..Default::default()
        }
    }

    fn req<'a>(action: Action, stream: Option<(&'a str, &'a str)>, c: &'a Credentials, n: u8) -> Request<'a> {
        Request { action, stream, remote: ip(n), credentials: c, method: "DESCRIBE", protocol: "rtsp" }
    }

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic { user: user.into(), password: Secret::new(password) }
    }

    #[tokio::test]
    async fn users_get_their_permissions_and_no_more() {
        let a = Authenticator::new(&settings()).unwrap();
        let alice = basic("alice", "s3cret");
        assert_eq!(
            a.check(&req(Action::Read, Some(("edge-1", "cam1")), &alice, 1)).await,
            Ok(Identity::User("alice".into()))
        );
        let d = a.check(&req(Action::Read, Some(("edge-1", "cam2")), &alice, 1)).await.unwrap_err();
        assert_eq!((d.status(), d.reason()), (403, DenialReason::Forbidden));
        assert_eq!(d.to_string(), "user \"alice\" may not read edge-1/cam2");
        assert_eq!(a.check(&req(Action::Admin, None, &alice, 1)).await.unwrap_err().status(), 403);
        let none = Credentials::None;
        assert_eq!(a.check(&req(Action::Metrics, None, &none, 1)).await, Ok(Identity::Anonymous));
        let d = a.check(&req(Action::Read, Some(("edge-1", "cam1")), &none, 1)).await.unwrap_err();
        assert_eq!((d.status(), d.reason()), (401, DenialReason::NoCredentials), "anonymous: asked to log in");
    }

    #[tokio::test]
    async fn a_signed_in_session_carries_the_users_permissions_until_it_ends() {
        let a = Authenticator::new(&settings()).unwrap();
        let (user, token) = a.sign_in(ip(5), &basic("alice", "s3cret")).await.unwrap();
        assert_eq!(user, "alice");
        let bearer = Credentials::Bearer(token.clone());
        assert_eq!(
            a.check(&req(Action::Read, Some(("edge-1", "cam1")), &bearer, 5)).await,
            Ok(Identity::User("alice".into()))
        );
        let d = a.check(&req(Action::Read, Some(("edge-1", "cam2")), &bearer, 5)).await.unwrap_err();
        assert_eq!(d.status(), 403, "a session grants the user's permissions and no more");

        let reloaded = a.reloaded(&settings()).unwrap();
        assert!(reloaded.check(&req(Action::Api, None, &bearer, 5)).await.is_ok(), "a reload keeps sessions");
        let mut without_alice = settings();
        without_alice.users.clear();
        without_alice.anonymous = vec!["read".parse().unwrap()];
        let d = a.reloaded(&without_alice).unwrap().check(&req(Action::Api, None, &bearer, 5)).await.unwrap_err();
        assert_eq!(d.reason(), DenialReason::InvalidToken, "a removed user's session ends");

        assert!(a.sign_out(token.expose()));
        let d = a.check(&req(Action::Api, None, &bearer, 5)).await.unwrap_err();
        assert_eq!((d.status(), d.reason()), (401, DenialReason::InvalidToken));

        let d = a.sign_in(ip(5), &basic("alice", "guess")).await.unwrap_err();
        assert_eq!(d.reason(), DenialReason::WrongPassword);
        let d = a.sign_in(ip(5), &basic("nobody", "guess")).await.unwrap_err();
        assert_eq!(d.reason(), DenialReason::UnknownUser);
        let d = a.sign_in(ip(5), &Credentials::Bearer(Secret::new("eyJ.a.b"))).await.unwrap_err();
        assert_eq!(d.reason(), DenialReason::Unsupported);
        let d = a.sign_in(ip(5), &Credentials::None).await.unwrap_err();
        assert_eq!(d.reason(), DenialReason::NoCredentials);
    }

    #[tokio::test]
    async fn repeated_failures_are_refused_until_the_block_ends() {
        let mut s = settings();
        s.failures.max_failures = 3;
        let a = Authenticator::new(&s).unwrap();
        let wrong = basic("alice", "guess");
        for _ in 0..3 {
            assert_eq!(
                a.check(&req(Action::Api, None, &wrong, 2)).await.unwrap_err().reason(),
                DenialReason::WrongPassword
            );
        }
        let right = basic("alice", "s3cret");
        let d = a.check(&req(Action::Api, None, &right, 2)).await.unwrap_err();
        assert_eq!((d.status(), d.reason()), (429, DenialReason::RateLimited), "even the right password waits");
        assert!(a.check(&req(Action::Api, None, &right, 3)).await.is_ok(), "another address is unaffected");
        assert_eq!(
            a.check(&req(Action::Api, None, &basic("mallory", "x"), 4)).await.unwrap_err().reason(),
            DenialReason::UnknownUser
        );
        let reloaded = a.reloaded(&s).unwrap();
        assert_eq!(
            reloaded.check(&req(Action::Api, None, &right, 2)).await.unwrap_err().status(),
            429,
            "a reload does not forgive"
        );
    }

    #[tokio::test]
    async fn digest_responses_are_checked_against_the_users_digest() {
        let a = Authenticator::new(&settings()).unwrap();
        let challenges = a.rtsp_challenges(unix_now(), false);
        assert!(challenges[0].starts_with("Digest realm=\"mediamesh\", nonce=\""), "{challenges:?}");
        assert_eq!(challenges[1], "Basic realm=\"mediamesh\"");
        let nonce = challenges[0].split('"').nth(3).unwrap().to_owned();
        let uri = "rtsp://127.0.0.1:8554/edge-1/cam1";
        let respond = |password: &str| {
            let ha1 = digest::ha1("alice", password);
            let ha2 = format!("{:x}", md5::Md5::digest(format!("DESCRIBE:{uri}").as_bytes()));
            let response = format!("{:x}", md5::Md5::digest(format!("{ha1}:{nonce}:{ha2}").as_bytes()));
            Credentials::Digest(crate::credentials::DigestResponse {
                username: "alice".into(),
                realm: "mediamesh".into(),
                nonce: nonce.clone(),
                uri: uri.into(),
                response,
                ..Default::default()
            })
        };
        use md5::Digest as _;
        let good = respond("s3cret");
        assert!(a.check(&req(Action::Read, Some(("edge-1", "cam1")), &good, 5)).await.is_ok());
        let bad = respond("S3cret");
        assert_eq!(
            a.check(&req(Action::Read, Some(("edge-1", "cam1")), &bad, 5)).await.unwrap_err().reason(),
            DenialReason::WrongPassword
        );
    }

    #[test]
    fn a_secret_never_appears_in_debug_output() {
        let s = settings();
        let shown = format!("{s:?} {}", serde_json::to_string(&s).unwrap());
        assert!(!shown.contains("s3cret") && !shown.contains(&digest::ha1("alice", "s3cret")), "{shown}");
        assert!(!shown.contains("$argon2id$v=19$m"), "{shown}");
    }
}
