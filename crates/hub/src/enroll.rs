//! Edge enrollment and revocation on the hub.
//!
//! - **Join** (`POST /api/v1/enroll`, no client certificate): a one-time token from
//!   `mediamesh token create` and a certificate request; the answer is a certificate for the
//!   node the token was made for, valid `enrollment.certificateTtl`.
//! - **Renew** (`POST /api/v1/renew`, the edge's current certificate): a new certificate for
//!   the node that certificate names.
//! - **Revoke**: the node's control channel and data tunnels are closed at once, its sessions
//!   end with the reason, and certificates for it issued before the revocation are refused
//!   from then on (kept in `stateDir`, so also after a restart). `mediamesh node revoke`
//!   writes the same file; the hub notices within a second.
//!
//! Both requests come on the tunnel port over TLS with the enrollment ALPN protocol, one
//! HTTP/1.1 exchange within the handshake timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mediamesh_tls::enroll::{BACKDATE, EnrollCa};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

use crate::registry::NodeRegistry;
use crate::session::{SessionEvent, Sessions};
use crate::state::{JoinError, JoinToken, StateError, StateStore};

/// Largest enrollment request body.
const MAX_BODY: usize = 64 * 1024;

/// The join request.
#[derive(Debug, Deserialize)]
struct JoinRequest {
    token: String,
    csr: String,
}

/// The renew request.
#[derive(Debug, Deserialize)]
struct RenewRequest {
    csr: String,
}

/// The answer to both.
#[derive(Debug, Serialize, Deserialize)]
pub struct Issued {
    /// The node the certificate names.
    pub node: String,
    /// The certificate (PEM).
    pub certificate: String,
    /// When it expires (Unix seconds).
    pub expires: u64,
}

/// Nodes revoked, in memory and (with `stateDir`) on disk.
#[derive(Debug)]
pub(crate) struct Revocations {
    store: Option<StateStore>,
    nodes: RwLock<BTreeMap<String, SystemTime>>,
    seen: Mutex<Option<SystemTime>>,
}

impl Revocations {
    pub(crate) fn new(store: Option<StateStore>) -> Result<Self, StateError> {
        let nodes = match &store {
            Some(s) => s.revocations()?,
            None => BTreeMap::new(),
        };
        let seen = store.as_ref().and_then(StateStore::revocations_changed);
        Ok(Self { store, nodes: RwLock::new(nodes), seen: Mutex::new(seen) })
    }

    /// When `node` was revoked, if it was.
    pub(crate) fn revoked_at(&self, node: &str) -> Option<SystemTime> {
        self.nodes.read().unwrap_or_else(PoisonError::into_inner).get(node).copied()
    }

    /// Whether a certificate for `node` valid from `not_before` is refused.
    pub(crate) fn refuses(&self, node: &str, not_before: Option<SystemTime>) -> bool {
        match (self.revoked_at(node), not_before) {
            (None, _) => false,
            (Some(at), Some(nb)) => nb <= at,
            (Some(_), None) => true,
        }
    }

    /// Revokes `node` now; written to `stateDir` when there is one.
    pub(crate) fn revoke(&self, node: &str) -> Result<(), StateError> {
        let now = SystemTime::now();
        if let Some(s) = &self.store {
            s.revoke(node, now)?;
        }
        self.nodes.write().unwrap_or_else(PoisonError::into_inner).insert(node.to_owned(), now);
        Ok(())
    }

    /// Re-reads the file if it changed; the nodes revoked since the last look.
    fn refresh(&self) -> Vec<String> {
        let Some(store) = &self.store else { return Vec::new() };
        let changed = store.revocations_changed();
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == changed {
                return Vec::new();
            }
            *seen = changed;
        }
        let fresh = match store.revocations() {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "cannot read the revoked nodes; keeping the ones known");
                return Vec::new();
            }
        };
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        let newly: Vec<String> =
            fresh.iter().filter(|(n, at)| nodes.get(*n).is_none_or(|old| old < *at)).map(|(n, _)| n.clone()).collect();
        nodes.extend(fresh);
        newly
    }
}

/// Closes everything `node` has open: its control channel, its data tunnels (its sessions end,
/// telling their viewers why).
pub(crate) fn cut(node: &str, registry: &NodeRegistry, sessions: &Sessions) {
    if let Some((_, entry)) = registry.snapshot().into_iter().find(|(n, _)| n == node) {
        entry.cancel.cancel();
    }
    registry.forget(node);
    for s in sessions.snapshot().into_iter().filter(|s| s.key.node == node) {
        s.try_report(SessionEvent::UpstreamEnded(format!("node {node:?} was revoked")));
    }
}

/// Applies revocations made by the command line: looks at `revoked.json` every second.
pub(crate) async fn watch_revocations(
    revocations: Arc<Revocations>,
    registry: Arc<NodeRegistry>,
    sessions: Arc<Sessions>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for node in revocations.refresh() {
            warn!(%node, "node revoked: closing its tunnels and refusing its certificates");
            cut(&node, &registry, &sessions);
        }
    }
}

/// What the enrollment endpoint needs.
#[derive(Debug)]
pub(crate) struct Enrollment {
    pub store: StateStore,
    pub ca: EnrollCa,
    pub ttl: Duration,
}

/// Serves one enrollment connection (already past TLS on the enrollment ALPN protocol).
/// `node` is the identity of a client certificate, if one was presented.
pub(crate) async fn serve(
    tls: TlsStream<TcpStream>,
    node: Option<String>,
    enrollment: Option<Arc<Enrollment>>,
    revocations: Arc<Revocations>,
) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let (node, enrollment, revocations) = (node.clone(), enrollment.clone(), revocations.clone());
        async move { Ok::<_, std::convert::Infallible>(answer(req, node, enrollment, &revocations).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().keep_alive(false).serve_connection(TokioIo::new(tls), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "enrollment connection failed");
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn refuse(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(status, serde_json::json!({ "error": code, "message": message.to_string() }))
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    node: Option<String>,
    enrollment: Option<Arc<Enrollment>>,
    revocations: &Revocations,
) -> Response<Full<Bytes>> {
    let Some(enrollment) = enrollment else {
        return refuse(StatusCode::NOT_FOUND, "enrollment_off", "this hub has no enrollment block");
    };
    let path = req.uri().path().to_owned();
    if req.method() != hyper::Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "method", "POST only");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body is over {MAX_BODY} bytes"));
        }
    };
    let (node, csr) = match path.as_str() {
        "/api/v1/enroll" => {
            let Ok(r) = serde_json::from_slice::<JoinRequest>(&body) else {
                return refuse(StatusCode::BAD_REQUEST, "bad_request", "expected {\"token\", \"csr\"}");
            };
            let token = match JoinToken::parse(&r.token) {
                Ok(t) => t,
                Err(e) => return refuse(StatusCode::UNAUTHORIZED, "bad_token", e),
            };
            let node = match enrollment.store.consume_token(&token, SystemTime::now()) {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    warn!(token_id = %token.id, reason = %e, "join refused");
                    return refuse(StatusCode::UNAUTHORIZED, "bad_token", e);
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the join tokens");
                    return refuse(StatusCode::SERVICE_UNAVAILABLE, "state", "the hub cannot read its join tokens");
                }
            };
            (node, r.csr)
        }
        "/api/v1/renew" => {
            let Some(node) = node else {
                return refuse(StatusCode::UNAUTHORIZED, "no_certificate", "renewal needs the current certificate");
            };
            let Ok(r) = serde_json::from_slice::<RenewRequest>(&body) else {
                return refuse(StatusCode::BAD_REQUEST, "bad_request", "expected {\"csr\"}");
            };
            (node, r.csr)
        }
        _ => return refuse(StatusCode::NOT_FOUND, "not_found", "POST /api/v1/enroll or /api/v1/renew"),
    };
    if revocations.revoked_at(&node).is_some_and(|at| at + BACKDATE > SystemTime::now()) {
        // A certificate is backdated by a minute; one issued now would start before the
        // revocation and be refused. Say so rather than issue a useless one.
        let e = JoinError::Revoked(node.clone());
        return refuse(StatusCode::CONFLICT, "revoked", format!("{e} less than a minute ago; try again shortly"));
    }
    match enrollment.ca.sign_for_node(&csr, &node, enrollment.ttl) {
        Ok((certificate, expires)) => {
            let expires = expires.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            info!(%node, kind = %path.trim_start_matches("/api/v1/"), expires, "certificate issued");
            reply(StatusCode::OK, serde_json::to_value(Issued { node, certificate, expires }).unwrap_or_default())
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, "bad_csr", format!("the certificate request is not usable: {e}")),
    }
}
