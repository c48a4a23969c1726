//! The hub's side of authentication: one policy ([`mediamesh_auth`]) for every protocol, its
//! denials counted by protocol and reason for `/metrics`, and the reload of it.
//!
//! Without an `auth` block the hub is open, which [`crate::config::HubConfig::validate`]
//! allows only on a loopback address.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mediamesh_auth::hook::{Hook, HookAnswer, HookError, HookFuture, HookQuery};
use mediamesh_auth::jwks::{self, JwksCache};
use mediamesh_auth::{AuthError, AuthSettings, Authenticator, Denial, DenialReason, Identity, Request};
use mediamesh_tunnel::settings::Live;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::listener::Bounded;
use crate::outbound::{OutboundError, Target};

/// Where a request came in, as named in `/metrics` (label `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The REST API and `/metrics`.
    Http,
    /// WebSocket viewers.
    Ws,
    /// MSE viewers (fragmented MP4 over a WebSocket).
    Mse,
    /// LL-HLS clients (playlists, parts, segments).
    Hls,
    /// RTSP viewers.
    Rtsp,
    /// WebRTC viewers (WHEP).
    Webrtc,
}

impl Protocol {
    pub(crate) const ALL: [Protocol; 6] =
        [Protocol::Http, Protocol::Ws, Protocol::Mse, Protocol::Hls, Protocol::Rtsp, Protocol::Webrtc];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Ws => "ws",
            Protocol::Mse => "mse",
            Protocol::Hls => "hls",
            Protocol::Rtsp => "rtsp",
            Protocol::Webrtc => "webrtc",
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
    /// The policy's background work: the JWKS fetcher.
    background: Mutex<Background>,
}

/// A policy and what must run beside it, made by [`HubAuth::prepare`].
#[derive(Debug)]
pub(crate) struct Prepared {
    policy: Policy,
    jwks: Option<JwksJob>,
}

/// Fetching one policy's key set.
#[derive(Debug, Clone)]
struct JwksJob {
    cache: Arc<JwksCache>,
    target: Target,
    algorithms: Vec<jsonwebtoken::Algorithm>,
}

#[derive(Debug, Default)]
struct Background {
    /// The hub's shutdown and task tracker, once [`HubAuth::start`] ran.
    shutdown: Option<(CancellationToken, TaskTracker)>,
    /// What the policy in force needs, started or waiting for `start`.
    jwks: Option<JwksJob>,
    /// Stops the running fetcher.
    running: Option<CancellationToken>,
}

/// The longest a JWKS fetch may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);

/// At most one warning about failed credentials per this interval; the rest are counted in it.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl HubAuth {
    pub(crate) fn new(settings: Option<&AuthSettings>) -> Result<Self, AuthError> {
        let Prepared { policy, jwks } = Self::build(settings, None)?;
        Ok(Self {
            policy: Live::new(policy),
            counters: Counters::default(),
            warnings: Mutex::new(Bounded::new(WARN_EVERY)),
            background: Mutex::new(Background { jwks, ..Background::default() }),
        })
    }

    fn build(settings: Option<&AuthSettings>, current: Option<&Authenticator>) -> Result<Prepared, AuthError> {
        let Some(s) = settings else { return Ok(Prepared { policy: Policy::Open, jwks: None }) };
        let mut a = match current {
            Some(c) => c.reloaded(s)?,
            None => Authenticator::new(s)?,
        };
        if let Some(h) = &s.hook {
            let target = Target::new(&h.url, h.ca_file.as_deref())
                .map_err(|e| AuthError { key: "hook.url".into(), reason: e.to_string() })?;
            a = a.with_hook(Arc::new(HttpHook { target, timeout: h.timeout.get() }));
        }
        let jwks = match (a.jwks(), s.jwt.as_ref()) {
            (Some(cache), Some(j)) => {
                let target = Target::new(cache.url(), j.jwks_ca_file.as_deref())
                    .map_err(|e| AuthError { key: "jwt.jwksUrl".into(), reason: e.to_string() })?;
                Some(JwksJob { cache: cache.clone(), target, algorithms: a.jwt_algorithms().to_vec() })
            }
            _ => None,
        };
        Ok(Prepared { policy: Policy::Checked(Box::new(a)), jwks })
    }

    /// The policy of a reloaded configuration, not yet in force ([`HubAuth::apply`]).
    pub(crate) fn prepare(&self, settings: Option<&AuthSettings>) -> Result<Prepared, AuthError> {
        let current = self.policy.get();
        let current = match &*current {
            Policy::Checked(a) => Some(&**a),
            Policy::Open => None,
        };
        Self::build(settings, current)
    }

    /// Puts a prepared policy in force, restarting its background work.
    pub(crate) fn apply(&self, prepared: Prepared) {
        self.policy.set(prepared.policy);
        let mut bg = self.background.lock().unwrap_or_else(PoisonError::into_inner);
        bg.jwks = prepared.jwks;
        Self::restart(&mut bg);
    }

    /// Starts the background work (the JWKS fetcher) in `tasks`; it ends with `shutdown`.
    pub(crate) fn start(&self, shutdown: &CancellationToken, tasks: &TaskTracker) {
        let mut bg = self.background.lock().unwrap_or_else(PoisonError::into_inner);
        bg.shutdown = Some((shutdown.clone(), tasks.clone()));
        Self::restart(&mut bg);
    }

    fn restart(bg: &mut Background) {
        if let Some(old) = bg.running.take() {
            old.cancel();
        }
        let (Some((shutdown, tasks)), Some(job)) = (&bg.shutdown, &bg.jwks) else { return };
        let stop = shutdown.child_token();
        bg.running = Some(stop.clone());
        tasks.spawn(fetch_keys(job.clone(), stop));
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
            self.warn_failure(protocol, req.remote, req.credentials.user(), d);
        }
        result
    }

    /// Warns about failed credentials, at most once per [`WARN_EVERY`].
    fn warn_failure(&self, protocol: Protocol, remote: std::net::IpAddr, user: Option<&str>, d: &Denial) {
        if !d.is_failure() && !matches!(d, Denial::RateLimited { .. }) {
            return;
        }
        let allowed = self.warnings.lock().unwrap_or_else(PoisonError::into_inner).allow(Instant::now());
        if let Some(held_back) = allowed {
            warn!(
                protocol = protocol.name(),
                %remote,
                user = ?user,
                reason = d.reason().name(),
                more = held_back,
                "authentication failed: {d} (`more` failures since the last warning; \
                 mediamesh_auth_denials_total counts them all)"
            );
        }
    }

    /// Exchanges an internal user's name and password for a session token, counting and
    /// logging a denial like [`HubAuth::check`]. `None`: the hub has no `auth` block, so there
    /// is nothing to sign in to.
    pub(crate) async fn sign_in(
        &self,
        remote: std::net::IpAddr,
        credentials: &mediamesh_auth::Credentials,
    ) -> Option<Result<(String, mediamesh_auth::Secret, Duration), Denial>> {
        let policy = self.policy.get();
        let Policy::Checked(a) = &*policy else { return None };
        let result = a.sign_in(remote, credentials).await.map(|(user, token)| (user, token, a.session_ttl()));
        match &result {
            Ok((user, _, _)) => info!(%remote, user = %user, "signed in: session token issued"),
            Err(d) => {
                self.counters.slot(Protocol::Http, d.reason()).fetch_add(1, Ordering::Relaxed);
                debug!(%remote, user = ?credentials.user(), reason = d.reason().name(), "sign-in refused: {d}");
                self.warn_failure(Protocol::Http, remote, credentials.user(), d);
            }
        }
        Some(result)
    }

    /// Ends the session of a token; whether there was one.
    pub(crate) fn sign_out(&self, token: &str) -> bool {
        match &*self.policy.get() {
            Policy::Checked(a) => a.sign_out(token),
            Policy::Open => false,
        }
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

/// Keeps a policy's key set fresh ([`mediamesh_auth::jwks::Schedule`] decides when).
async fn fetch_keys(job: JwksJob, stop: CancellationToken) {
    let url = mediamesh_tunnel::redact::text(job.cache.url()).into_owned();
    let mut failing = false;
    loop {
        if job.cache.schedule().poll_start(Instant::now()) {
            let outcome = match job.target.send(http::Method::GET, None, jwks::MAX_BYTES, JWKS_TIMEOUT).await {
                Ok((status, body)) if status.is_success() => {
                    jwks::parse(&body, &job.algorithms).map_err(|e| e.to_string())
                }
                Ok((status, _)) => Err(format!("the key set URL answered HTTP {status}")),
                Err(e) => Err(e.to_string()),
            };
            match &outcome {
                Ok(keys) => {
                    let before = job.cache.keys();
                    let kids =
                        |k: &[jwks::Key]| k.iter().map(|k| k.kid.clone().unwrap_or_default()).collect::<Vec<_>>();
                    if failing || kids(&before) != kids(keys) {
                        info!(url = %url, keys = keys.len(), kids = %kids(keys).join(","), "token keys fetched");
                    }
                    failing = false;
                }
                Err(e) => {
                    warn!(
                        url = %url,
                        error = %e,
                        keys_kept = job.cache.keys().len(),
                        "cannot fetch the token keys; the keys fetched before stay in use"
                    );
                    failing = true;
                }
            }
            let ok = outcome.is_ok();
            job.cache.store(outcome);
            job.cache.schedule().done(ok, Instant::now());
            continue;
        }
        let wake = job.cache.schedule().poll_timeout().unwrap_or_else(|| Instant::now() + jwks::MIN_GAP);
        tokio::select! {
            () = stop.cancelled() => return,
            () = job.cache.wanted() => {}
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// The `hook` block's service, asked over HTTP.
#[derive(Debug)]
struct HttpHook {
    target: Target,
    timeout: Duration,
}

/// Largest hook answer read (its body is ignored; only the status counts).
const HOOK_ANSWER_MAX: usize = 64 * 1024;

impl Hook for HttpHook {
    fn ask<'a>(&'a self, query: &'a HookQuery) -> HookFuture<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(query).map_err(|e| HookError::Unreachable(e.to_string()))?;
            match self.target.send(http::Method::POST, Some(body), HOOK_ANSWER_MAX, self.timeout).await {
                Ok((status, _)) if status.is_success() => Ok(HookAnswer::Allow),
                Ok((status, _)) if status.is_client_error() => Ok(HookAnswer::Deny),
                Ok((status, _)) => Err(HookError::Status(status.as_u16())),
                Err(OutboundError::Timeout { .. }) => Err(HookError::Timeout(self.timeout)),
                Err(e) => Err(HookError::Unreachable(e.to_string())),
            }
        })
    }
}
