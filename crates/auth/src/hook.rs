//! The HTTP hook: an operator's service decides what users and tokens do not. The hub sends
//! `POST url` with a [`HookQuery`] as JSON; a 2xx answer allows the request, a 4xx refuses it,
//! anything else (or no answer in time) makes the request fail as unavailable, never allowed.
//! Answers are reused for `cache` seconds for the same query, so a client's several requests
//! (RTSP sends three or four) cost one call.
//!
//! This crate does no I/O: the hub implements [`Hook`] with its HTTP client.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Most answers remembered.
pub const CACHE_MAX: usize = 4096;

/// What the hook is asked (the JSON body). Field names follow MediaMTX's hook, so a service
/// written for it needs few changes.
#[derive(Clone, Serialize)]
pub struct HookQuery {
    /// The user name, if the client sent one.
    pub user: Option<String>,
    /// The password, if the client sent one (Basic).
    pub password: Option<String>,
    /// The bearer token, if the client sent one (header or `?token=`).
    pub token: Option<String>,
    /// The client's address.
    pub ip: String,
    /// `read`, `api`, `admin` or `metrics`.
    pub action: &'static str,
    /// `node/stream`, for `read`.
    pub path: Option<String>,
    /// `http`, `ws` or `rtsp`.
    pub protocol: &'static str,
}

impl std::fmt::Debug for HookQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |v: &Option<String>| v.as_ref().map(|_| mediamesh_tunnel::redact::MASK);
        f.debug_struct("HookQuery")
            .field("user", &self.user)
            .field("password", &masked(&self.password))
            .field("token", &masked(&self.token))
            .field("ip", &self.ip)
            .field("action", &self.action)
            .field("path", &self.path)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// What the hook said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAnswer {
    /// 2xx.
    Allow,
    /// 4xx.
    Deny,
}

/// Why the hook gave no answer. The text is safe to log and to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// Connecting or talking to it failed.
    #[error("the authentication hook cannot be reached: {0}")]
    Unreachable(String),
    /// It took longer than its `timeout`.
    #[error("the authentication hook did not answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// It answered neither 2xx nor 4xx.
    #[error("the authentication hook answered HTTP {0}")]
    Status(u16),
}

/// A future the hook returns.
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<HookAnswer, HookError>> + Send + 'a>>;

/// Asks the hook (the hub's HTTP client).
pub trait Hook: Send + Sync + std::fmt::Debug {
    /// Sends `query`; the answer or why there is none.
    fn ask<'a>(&'a self, query: &'a HookQuery) -> HookFuture<'a>;
}

/// Answers reused for a while, keyed by a SHA-256 of the whole query (the password and token
/// are not kept).
#[derive(Debug)]
pub struct AnswerCache {
    ttl: Duration,
    answers: Mutex<HashMap<[u8; 32], (Instant, HookAnswer)>>,
}

impl AnswerCache {
    /// Answers live for `ttl` (zero: not cached).
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, answers: Mutex::default() }
    }

    fn key(query: &HookQuery) -> [u8; 32] {
        let json = serde_json::to_vec(query).unwrap_or_default();
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// A remembered answer to `query` at `now`.
    pub fn get(&self, query: &HookQuery, now: Instant) -> Option<HookAnswer> {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        answers.get(&Self::key(query)).filter(|(until, _)| *until > now).map(|(_, a)| *a)
    }

    /// Remembers `answer` to `query` from `now`.
    pub fn put(&self, query: &HookQuery, answer: HookAnswer, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.len() >= CACHE_MAX {
            answers.retain(|_, (until, _)| *until > now);
        }
        if answers.len() < CACHE_MAX {
            answers.insert(Self::key(query), (now + self.ttl, answer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(password: &str) -> HookQuery {
        HookQuery {
            user: Some("alice".into()),
            password: Some(password.into()),
            token: None,
            ip: "10.0.0.1".into(),
            action: "read",
            path: Some("edge-1/cam1".into()),
            protocol: "rtsp",
        }
    }

    #[test]
    fn answers_are_reused_for_the_same_query_until_they_age() {
        let t0 = Instant::now();
        let cache = AnswerCache::new(Duration::from_secs(10));
        cache.put(&query("right"), HookAnswer::Allow, t0);
        assert_eq!(cache.get(&query("right"), t0 + Duration::from_secs(9)), Some(HookAnswer::Allow));
        assert_eq!(cache.get(&query("wrong"), t0), None, "another password is another query");
        assert_eq!(cache.get(&query("right"), t0 + Duration::from_secs(10)), None);
        let none = AnswerCache::new(Duration::ZERO);
        none.put(&query("right"), HookAnswer::Allow, t0);
        assert_eq!(none.get(&query("right"), t0), None);
    }

    #[test]
    fn debug_output_masks_the_password_and_token() {
        let mut q = query("hunter2");
        q.token = Some("eyJhbGciOi".into());
        let shown = format!("{q:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("eyJ"), "{shown}");
    }
}
