//! The hub's side of authentication: one policy ([`mediamesh_auth`]) for every protocol, its
//! denials counted by protocol and reason for `/metrics`, and the reload of it.
//!
//! Without an `auth` block the hub is open, which [`crate::config::HubConfig::validate`]
//! allows only on a loopback address.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mediamesh_auth::{AuthError, AuthSettings, Authenticator, Denial, DenialReason, Identity, Request};
use mediamesh_tunnel::settings::Live;
use tracing::{debug, warn};

use crate::listener::Bounded;

/// Where a request came in, as named in `/metrics` (label `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The REST API and `/metrics`.
    Http,
    /// WebSocket viewers.
    Ws,
    /// RTSP viewers.
    Rtsp,
}

impl Protocol {
    pub(crate) const ALL: [Protocol; 3] = [Protocol::Http, Protocol::Ws, Protocol::Rtsp];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Ws => "ws",
            Protocol::Rtsp => "rtsp",
        }
    }
}

/// Denials since start, per protocol and reason.
#[derive(Debug, Default)]
struct Counters([[AtomicU64; DenialReason::ALL.len()]; Protocol::ALL.len()]);

impl Counters {
    fn slot(&self, p: Protocol, r: DenialReason) -> &AtomicU64 {
        let pi = Protocol::ALL.iter().position(|x| *x == p).unwrap_or(0);
        let ri = DenialReason::ALL.iter().position(|x| *x == r).unwrap_or(0);
        &self.0[pi][ri]
    }
}

/// The policy in force.
#[derive(Debug)]
pub(crate) enum Policy {
    /// No `auth` block: everything is allowed (loopback only).
    Open,
    /// The `auth` block's.
    Checked(Box<Authenticator>),
}

/// Authentication for every port.
#[derive(Debug)]
pub(crate) struct HubAuth {
    policy: Live<Policy>,
    counters: Counters,
    /// Failed credentials are worth a warning, but a guessing client must not flood the log.
    warnings: Mutex<Bounded>,
}

/// At most one warning about failed credentials per this interval; the rest are counted in it.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl HubAuth {
    pub(crate) fn new(settings: Option<&AuthSettings>) -> Result<Self, AuthError> {
        let policy = match settings {
            None => Policy::Open,
            Some(s) => Policy::Checked(Box::new(Authenticator::new(s)?)),
        };
        Ok(Self {
            policy: Live::new(policy),
            counters: Counters::default(),
            warnings: Mutex::new(Bounded::new(WARN_EVERY)),
        })
    }

    /// The policy of a reloaded configuration, not yet in force ([`HubAuth::apply`]).
    pub(crate) fn prepare(&self, settings: Option<&AuthSettings>) -> Result<Policy, AuthError> {
        Ok(match (settings, &*self.policy.get()) {
            (None, _) => Policy::Open,
            (Some(s), Policy::Checked(current)) => Policy::Checked(Box::new(current.reloaded(s)?)),
            (Some(s), Policy::Open) => Policy::Checked(Box::new(Authenticator::new(s)?)),
        })
    }

    pub(crate) fn apply(&self, policy: Policy) {
        self.policy.set(policy);
    }

    /// The policy now (for challenges).
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.policy.get()
    }

    /// Decides `req`, counting and logging a denial.
    pub(crate) async fn check(&self, protocol: Protocol, req: &Request<'_>) -> Result<Identity, Denial> {
        let policy = self.policy.get();
        let Policy::Checked(a) = &*policy else { return Ok(Identity::Anonymous) };
        let result = a.check(req).await;
        if let Err(d) = &result {
            self.counters.slot(protocol, d.reason()).fetch_add(1, Ordering::Relaxed);
            debug!(
                protocol = protocol.name(),
                remote = %req.remote,
                action = %req.action,
                stream = ?req.stream.map(|(n, s)| format!("{n}/{s}")),
                user = ?req.credentials.user(),
                reason = d.reason().name(),
                "denied: {d}"
            );
            if d.is_failure() || matches!(d, Denial::RateLimited { .. }) {
                let allowed = self.warnings.lock().unwrap_or_else(PoisonError::into_inner).allow(Instant::now());
                if let Some(held_back) = allowed {
                    warn!(
                        protocol = protocol.name(),
                        remote = %req.remote,
                        user = ?req.credentials.user(),
                        reason = d.reason().name(),
                        more = held_back,
                        "authentication failed: {d} (`more` failures since the last warning; \
                         mediamesh_auth_denials_total counts them all)"
                    );
                }
            }
        }
        result
    }

    /// Counts a request refused before the policy saw it (an unreadable `Authorization`).
    pub(crate) fn count(&self, protocol: Protocol, reason: DenialReason) {
        self.counters.slot(protocol, reason).fetch_add(1, Ordering::Relaxed);
    }

    /// Every `(protocol, reason, count)`, for `/metrics`.
    pub(crate) fn denials(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for p in Protocol::ALL {
            for r in DenialReason::ALL {
                out.push((p.name(), r.name(), self.counters.slot(p, r).load(Ordering::Relaxed)));
            }
        }
        out
    }
}
