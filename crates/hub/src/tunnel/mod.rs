//! The tunnel port: edges' control channels and data tunnels.
//!
//! Each connection: TCP accept → TLS with a required client certificate (the node name comes
//! from it) → WebSocket upgrade on [`TUNNEL_PATH`] with subprotocol [`SUBPROTOCOL`] → Hello,
//! all within the handshake timeout. The Hello's node must equal the certificate's; then the
//! connection becomes a control channel ([`control`]) or a data tunnel ([`data`]). Any failure
//! closes that connection only, with an Error message when the peer got far enough to read one.

mod control;
pub(crate) mod data;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use mediamesh_tunnel::liveness::HeartbeatConfig;
use mediamesh_tunnel::settings::Live;
use mediamesh_tunnel::transport::{Link, Tracked, ws_config};
use mediamesh_tunnel::wire::{
    Channel, ErrorCode, Hello, Limits, Message, OLDEST_VERSION, PROTOCOL_VERSION, Welcome, negotiate_version,
};
use mediamesh_tunnel::{SUBPROTOCOL, TUNNEL_PATH};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::enroll::{Enrollment, Revocations};
use crate::listener::{Accepted, Deadline, Gate, Remote};
use crate::registry::NodeRegistry;
use crate::session::Sessions;

/// A tunnel connection after TLS and the WebSocket upgrade.
pub(crate) type TunnelLink = Link<TlsStream<TcpStream>>;

/// What tunnel tasks share.
pub(crate) struct TunnelCtx {
    pub sessions: Arc<Sessions>,
    pub registry: Arc<NodeRegistry>,
    /// What a reload changes; each connection takes the settings current when it arrives.
    pub live: Arc<Live<TunnelSettings>>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub next_conn: AtomicU64,
    /// Revoked nodes: their certificates are refused.
    pub revocations: Arc<Revocations>,
    /// Joining and renewing edges, if the hub has an `enrollment` block.
    pub enrollment: Option<Arc<Enrollment>>,
}

/// The tunnel port's reloadable settings.
pub(crate) struct TunnelSettings {
    pub tls: TlsAcceptor,
    pub limits: Limits,
    pub heartbeat: HeartbeatConfig,
    pub handshake_timeout: Duration,
    pub write_deadline: Duration,
    /// How long sessions wait for an edge that went away (announced in Welcome).
    pub grace: Duration,
    pub hub_name: String,
    /// How to dial other hubs (relays), if this hub's certificate is a hub's.
    pub relay: Option<RelayTls>,
}

/// How this hub dials the tunnel ports of other hubs of its cluster: with its own tunnel
/// certificate, verifying theirs against the tunnel CA for the first DNS name of its own (the
/// hubs of a cluster share their names) and for the hub mark ([`mediamesh_tls::HUB_URI`]).
#[derive(Clone)]
pub(crate) struct RelayTls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl RelayTls {
    /// From the hub's tunnel files; `None` if its certificate is not marked as a hub's, or
    /// names no DNS name to check the other hubs' against (an IP-only certificate): the hub
    /// then serves relays to other hubs but cannot open them, and says so in a cluster.
    pub(crate) fn load(files: &mediamesh_tls::TlsFiles) -> Result<Option<Self>, mediamesh_tls::TlsError> {
        let chain = mediamesh_tls::load_certs(&files.cert)?;
        if !mediamesh_tls::is_hub_certificate(&chain) {
            return Ok(None);
        }
        let Ok(name) = mediamesh_tls::node_identity(&chain) else { return Ok(None) };
        let server_name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| mediamesh_tls::TlsError::NoIdentity(format!("hub certificate name {name:?}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(mediamesh_tls::tunnel_client_config(files)?);
        Ok(Some(Self { connector, server_name }))
    }
}

impl std::fmt::Debug for TunnelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelSettings").field("hub_name", &self.hub_name).finish_non_exhaustive()
    }
}

impl TunnelSettings {
    /// The Welcome for a connection that speaks protocol `version`.
    pub(crate) fn welcome(&self, version: u16) -> Message {
        Message::Welcome(Welcome {
            version,
            hub: self.hub_name.clone(),
            heartbeat_ms: u32::try_from(self.heartbeat.interval.as_millis()).unwrap_or(u32::MAX),
            max_frame_bytes: self.limits.max_frame_bytes,
            grace_ms: u32::try_from(self.grace.as_millis()).unwrap_or(u32::MAX),
        })
    }
}

/// Accepts tunnel connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, gate: Arc<Gate>, ctx: Arc<TunnelCtx>) {
    let conns = ctx.clone();
    crate::listener::serve(
        listener,
        gate,
        ctx.shutdown.clone(),
        ctx.tasks.clone(),
        move |Accepted { tcp, remote, id, gate }| {
            handle(conns.clone(), gate, tcp, remote).instrument(info_span!("tunnel", conn = id, %remote))
        },
    )
    .await;
}

async fn handle(ctx: Arc<TunnelCtx>, gate: Arc<Gate>, tcp: TcpStream, remote: Remote) {
    let settings = ctx.live.get();
    let deadline = Instant::now() + settings.handshake_timeout;
    let handshake = tokio::time::timeout_at(deadline.into(), establish(&settings, &ctx.revocations, tcp));
    let (link, peer) = match handshake.await {
        Ok(Ok(Established::Tunnel(link, peer))) => (link, peer),
        Ok(Ok(Established::Enroll(tls, node))) => {
            let serve = crate::enroll::serve(tls, node, ctx.enrollment.clone(), ctx.revocations.clone());
            if tokio::time::timeout_at(deadline.into(), serve).await.is_err() {
                gate.counters.missed(Deadline::Request);
                debug!("enrollment request timed out");
            }
            return;
        }
        // The certificate verifier has logged who presented what, and why it was refused.
        Ok(Err(Refusal::Certificate(reason))) => {
            debug!(%reason, "tunnel connection refused");
            return;
        }
        // Before the certificate names anyone, a client in a loop could fill the log: these
        // warnings are bounded per port (and every one is counted).
        Ok(Err(Refusal::Other(reason))) => {
            match gate.may_warn() {
                Some(suppressed) => warn!(%reason, suppressed, "tunnel connection refused"),
                None => debug!(%reason, "tunnel connection refused"),
            }
            return;
        }
        Err(_) => {
            gate.counters.missed(Deadline::Handshake);
            let timeout_s = settings.handshake_timeout.as_secs_f64();
            match gate.may_warn() {
                Some(suppressed) => warn!(timeout_s, suppressed, "tunnel handshake timed out"),
                None => debug!(timeout_s, "tunnel handshake timed out"),
            }
            return;
        }
    };
    let hello = match tokio::time::timeout_at(deadline.into(), read_hello(link, &peer)).await {
        Ok(Some(x)) => x,
        Ok(None) => return,
        Err(_) => {
            gate.counters.missed(Deadline::Handshake);
            warn!(%peer, timeout_s = settings.handshake_timeout.as_secs_f64(), "no Hello within the handshake timeout");
            return;
        }
    };
    let (link, hello, version) = hello;
    match (peer, hello.channel) {
        (Peer::Node(node), Channel::Control { instance, catalog, running }) => {
            let hello = control::ControlHello { agent: hello.agent, instance, catalog, running, version };
            control::run(ctx, settings, link, node, hello, remote).instrument(info_span!("control")).await;
        }
        (Peer::Node(node), Channel::Data { session, stream }) => {
            let span = info_span!("data", session);
            data::run(ctx, settings, link, node, session, stream, version).instrument(span).await;
        }
        (Peer::Hub, Channel::Relay { node, stream }) => {
            let span = info_span!("relay", hub = %hello.node, %node, %stream);
            let peer = crate::egress::relay::Peer { hub: hello.node, remote, version };
            crate::egress::relay::serve(ctx, settings, link, peer, node, stream).instrument(span).await;
        }
        (Peer::Node(node), Channel::Relay { .. }) => {
            warn!(%node, "tunnel refused: an edge asked for a relay");
            link.fail(ErrorCode::Unauthorized, "only a hub's certificate may open a relay").await;
        }
        (Peer::Hub, _) => {
            warn!(hub = %hello.node, "tunnel refused: a hub's certificate opened a control channel or data tunnel");
            link.fail(ErrorCode::Unauthorized, "a hub's certificate opens only relays").await;
        }
    }
}

/// Who is at the other end of a tunnel connection, as its certificate proves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    /// An edge: its certificate's node name.
    Node(String),
    /// Another hub of the cluster ([`mediamesh_tls::is_hub_certificate`]).
    Hub,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Node(node) => f.write_str(node),
            Peer::Hub => f.write_str("(a hub)"),
        }
    }
}

/// Why a tunnel connection was refused before its Hello.
enum Refusal {
    /// The edge's certificate was refused (already logged in detail by the verifier).
    Certificate(String),
    /// Anything else.
    Other(String),
}

/// What a tunnel-port connection is, once past TLS.
// Returned once per connection and matched at once: boxing the tunnel would only add an
// allocation to every tunnel.
#[allow(clippy::large_enum_variant)]
enum Established {
    /// A tunnel, upgraded, from the peer its certificate proves.
    Tunnel(TunnelLink, Peer),
    /// An enrollment or renewal request (the enrollment ALPN protocol), with the node of the
    /// client certificate if one was presented.
    Enroll(TlsStream<TcpStream>, Option<String>),
}

/// TLS, then for a tunnel (a client certificate required) the WebSocket upgrade; returns the
/// node name the certificate proves. Certificates of revoked nodes are refused here.
async fn establish(ctx: &TunnelSettings, revocations: &Revocations, tcp: TcpStream) -> Result<Established, Refusal> {
    let tls = ctx.tls.accept(tcp).await.map_err(|e| {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(r @ rustls::Error::InvalidCertificate(_)) => {
                Refusal::Certificate(format!("edge certificate refused: {}", mediamesh_tls::explain::error(r)))
            }
            Some(r) => Refusal::Other(format!("TLS handshake failed: {}", mediamesh_tls::explain::error(r))),
            None => Refusal::Other(format!("TLS handshake failed: {e}")),
        }
    })?;
    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let identity = mediamesh_tls::node_identity(certs);
    if let Ok(node) = &identity {
        let not_before = certs.first().and_then(|c| mediamesh_tls::enroll::validity(c)).map(|(nb, _)| nb);
        if revocations.refuses(node, not_before) {
            return Err(Refusal::Other(format!("node {node:?} is revoked; its certificate is refused")));
        }
    }
    if tls.get_ref().1.alpn_protocol() == Some(mediamesh_tls::enroll::ALPN_ENROLL) {
        return Ok(Established::Enroll(tls, identity.ok()));
    }
    let peer = if mediamesh_tls::is_hub_certificate(certs) {
        Peer::Hub
    } else {
        Peer::Node(identity.map_err(|e| Refusal::Other(e.to_string()))?)
    };
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(Tracked::new(tls), check_upgrade, Some(ws_config(&ctx.limits)))
            .await
            .map_err(|e| Refusal::Other(format!("WebSocket upgrade from {peer} failed: {e}")))?;
    Ok(Established::Tunnel(Link::new(ws, ctx.limits, ctx.write_deadline), peer))
}

#[allow(clippy::result_large_err)] // the signature is tungstenite's callback type
fn check_upgrade(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let reject = |status: StatusCode, msg: &str| {
        let mut r = ErrorResponse::new(Some(msg.to_owned()));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != TUNNEL_PATH {
        return Err(reject(StatusCode::NOT_FOUND, "not a mediamesh tunnel endpoint"));
    }
    let offers_ours = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offers_ours {
        return Err(reject(StatusCode::BAD_REQUEST, "missing WebSocket subprotocol mediamesh.tunnel.v1"));
    }
    resp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(SUBPROTOCOL));
    Ok(resp)
}

/// Reads and checks the Hello: version, and the claimed node against the certificate's (a
/// hub's Hello names the hub, which its certificate does not prove; it is for logs).
/// Reads and checks the Hello; returns it with the protocol version the connection speaks.
async fn read_hello(mut link: TunnelLink, peer: &Peer) -> Option<(TunnelLink, Hello, u16)> {
    let node = peer.to_string();
    let hello = match link.recv().await {
        Ok(Some(Message::Hello(h))) => h,
        Ok(Some(other)) => {
            let msg = format!("expected Hello as the first message, got {}", other.name());
            warn!(%node, %msg, "tunnel refused");
            link.fail(ErrorCode::Protocol, msg).await;
            return None;
        }
        Ok(None) => {
            debug!(%node, "closed before Hello");
            return None;
        }
        Err(e) => {
            warn!(%node, error = %e, "tunnel refused: bad Hello");
            link.fail(ErrorCode::Protocol, e.to_string()).await;
            return None;
        }
    };
    let Some(version) = negotiate_version(hello.min_version, hello.max_version) else {
        let msg = format!(
            "no common protocol version: edge speaks {}..={}, hub speaks {OLDEST_VERSION}..={PROTOCOL_VERSION}",
            hello.min_version, hello.max_version
        );
        warn!(%node, %msg, "tunnel refused");
        link.fail(ErrorCode::UnsupportedVersion, msg).await;
        return None;
    };
    if matches!(peer, Peer::Node(n) if *n != hello.node) {
        let msg = format!("the certificate identifies node {node:?}, but the Hello claims {:?}", hello.node);
        warn!(%node, claimed = %hello.node, "tunnel refused: identity mismatch");
        link.fail(ErrorCode::Unauthorized, msg).await;
        return None;
    }
    info!(%node, agent = %hello.agent, version, "hello accepted");
    Some((link, hello, version))
}

/// Microseconds since the Unix epoch, for frame receive stamps.
pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::RelayTls;

    #[test]
    fn a_hub_certificate_for_an_address_only_loads_but_opens_no_relays() {
        let dir = std::env::temp_dir().join(format!("mediamesh-relaytls-{}", std::process::id()));
        let ip_only = mediamesh_tls::dev::write_pki(&dir.join("ip"), &["127.0.0.1".to_owned()], &[]).unwrap();
        let named = mediamesh_tls::dev::write_pki(&dir.join("dns"), &["hub.example".to_owned()], &[]).unwrap();
        let relay = |files: &mediamesh_tls::TlsFiles| {
            let files = mediamesh_tls::TlsFiles { ca: ip_only.ca_cert.clone(), ..files.clone() };
            RelayTls::load(&files).map(|r| r.is_some())
        };
        let (a, b) = (relay(&ip_only.hub), relay(&named.hub));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!a.unwrap(), "no DNS name to check other hubs against: no relays, but the hub starts");
        assert!(b.unwrap());
    }
}
