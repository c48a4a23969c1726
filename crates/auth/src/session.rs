//! Sign-in sessions: an internal user's name and password exchanged once for a random bearer
//! token. A browser page cannot send `Authorization` on a WebSocket, so it would otherwise have
//! to put the password in a URL; with a session it keeps and sends a token that the hub can end.
//!
//! Tokens are opaque (`mms_` and 32 random bytes in base64url), held only as a SHA-256 of
//! themselves, expire after a fixed time, and name the user, whose permissions are looked up on
//! every request: a reload that removes the user or changes what it may do applies at once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::Secret;

/// What every session token starts with, so it is told apart from a JWT without a lookup.
pub const PREFIX: &str = "mms_";
/// How long a session lasts.
pub const TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions held; a new one beyond this replaces the one closest to expiring.
pub const MAX: usize = 10_000;

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// Why a session token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Never issued by this hub, signed out, or replaced when the store was full.
    #[error("the sign-in session is unknown to this hub (signed out, or the hub restarted)")]
    Unknown,
    /// Past its expiry.
    #[error("the sign-in session has expired; sign in again")]
    Expired,
    /// No random bytes for a token.
    #[error("no random bytes for a session token")]
    Random,
}

#[derive(Debug)]
struct Entry {
    user: String,
    expires: Instant,
}

/// The sessions of one hub, shared by the authenticators a reload replaces.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    max: usize,
    by_digest: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(TTL, MAX)
    }
}

impl Sessions {
    /// Sessions lasting `ttl`, at most `max` at once.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self { ttl, max: max.max(1), by_digest: Mutex::default() }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether `token` is a session token by its form (a JWT has dots, a session token none).
    pub fn looks_like(token: &str) -> bool {
        token.strip_prefix(PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest.len() <= 64
                && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    }

    /// A new session for `user`.
    pub fn issue(&self, user: &str, now: Instant) -> Result<Secret, SessionError> {
        let mut raw = [0u8; TOKEN_BYTES];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| SessionError::Random)?;
        let token = format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
        let mut map = self.lock();
        map.retain(|_, e| e.expires > now);
        if map.len() >= self.max
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(digest(&token), Entry { user: user.to_owned(), expires: now + self.ttl });
        Ok(Secret::new(token))
    }

    /// The user of a live session.
    pub fn user(&self, token: &str, now: Instant) -> Result<String, SessionError> {
        let key = digest(token);
        let mut map = self.lock();
        match map.get(&key) {
            Some(e) if e.expires > now => Ok(e.user.clone()),
            Some(_) => {
                map.remove(&key);
                Err(SessionError::Expired)
            }
            None => Err(SessionError::Unknown),
        }
    }

    /// Ends a session; whether it existed.
    pub fn end(&self, token: &str) -> bool {
        self.lock().remove(&digest(token)).is_some()
    }

    /// Sessions held (expired ones included until they are next swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.by_digest.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_session_names_its_user_until_it_expires_or_ends() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        let token = s.issue("alice", t0).unwrap();
        assert!(Sessions::looks_like(token.expose()), "{}", token.expose().len());
        assert!(!token.expose().contains('.'), "a session token must not look like a JWT");
        assert_eq!(s.user(token.expose(), t0 + Duration::from_secs(59)).unwrap(), "alice");
        assert_eq!(s.user(token.expose(), t0 + Duration::from_secs(60)), Err(SessionError::Expired));
        assert_eq!(s.user(token.expose(), t0), Err(SessionError::Unknown), "an expired session is forgotten");

        let other = s.issue("bob", t0).unwrap();
        assert_ne!(other.expose(), token.expose());
        assert!(s.end(other.expose()));
        assert!(!s.end(other.expose()));
        assert_eq!(s.user(other.expose(), t0), Err(SessionError::Unknown));
        assert_eq!(s.user("mms_made-up", t0), Err(SessionError::Unknown));
    }

    #[test]
    fn a_full_store_replaces_the_session_closest_to_expiring() {
        let s = Sessions::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let first = s.issue("a", t0).unwrap();
        let rest: Vec<_> = (1..=3).map(|i| s.issue("b", t0 + Duration::from_secs(i)).unwrap()).collect();
        assert_eq!(s.len(), 3);
        assert_eq!(s.user(first.expose(), t0), Err(SessionError::Unknown));
        for t in &rest {
            assert_eq!(s.user(t.expose(), t0 + Duration::from_secs(5)).unwrap(), "b");
        }
    }

    #[test]
    fn the_form_check_refuses_jwts_and_junk() {
        assert!(!Sessions::looks_like("eyJhbGciOiJIUzI1NiJ9.e30.sig"));
        assert!(!Sessions::looks_like("mms_"));
        assert!(!Sessions::looks_like("mms_a.b"));
        assert!(!Sessions::looks_like(&format!("mms_{}", "a".repeat(65))));
        assert!(Sessions::looks_like("mms_abc-_09"));
    }
}
