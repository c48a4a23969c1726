//! The upstream of every session in a cluster: the node's edge when it is connected to this
//! hub, else a relay from the hub it is connected to, decided at each start.
//!
//! When a session's node is connected to another hub (the [`super::ClusterView`] says which),
//! this hub dials that hub's tunnel port with its own certificate, a hub's, and asks for the
//! stream with a relay Hello. The frames that come back go into the session's log exactly as
//! from an edge's data tunnel ([`crate::tunnel::data::ingest`]): the session, its viewers of
//! every format and its lifecycle do not know the difference. Each hub pair carries one relay
//! per stream however many viewers watch, and the edge one upstream however many hubs do.
//!
//! A relay that breaks is dialled again (looking the node up afresh: it may have moved to
//! another hub) while the session waits for it as for an edge that went away. If the node has
//! come to this hub meanwhile (its hub died and it fell back here), the session asks the edge
//! directly, as an [`EdgeUpstream`] would, and its viewers stay. The other way round, a session
//! whose edge left for another hub is told the node is back when the registry shows it there
//! ([`crate::session::Sessions::node_elsewhere`]), starts again, and gets a relay; a data tunnel
//! or relay that still delivers is replaced only when the new one attaches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mediamesh_tunnel::backoff::{Backoff, BackoffConfig};
use mediamesh_tunnel::settings::Live;
use mediamesh_tunnel::transport::{Link, Tracked, ws_config};
use mediamesh_tunnel::wire::{Channel, ErrorCode, Hello, Message, OLDEST_VERSION, PROTOCOL_VERSION, SessionId};
use mediamesh_tunnel::{SUBPROTOCOL, TUNNEL_PATH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use super::Cluster;
use crate::registry::NodeError;
use crate::session::upstream::{EdgeUpstream, StartError, Upstream, UpstreamKind};
use crate::session::{Session, SessionEvent, StreamKey};
use crate::tunnel::data::{End, Sender, UpstreamGuard, ingest};
use crate::tunnel::{RelayTls, TunnelSettings};

/// A relay link to another hub.
type RelayLink = Link<tokio_rustls::client::TlsStream<TcpStream>>;

/// Redial schedule after a relay broke or could not be opened.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Why a relay could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// This hub's certificate is not a hub's: it cannot dial other hubs.
    #[error("this hub's tunnel certificate is not marked as a hub's ({uri}); relays need one", uri = mediamesh_tls::HUB_URI)]
    NoHubCertificate,
    /// The registry cannot be used now.
    #[error(transparent)]
    Registry(#[from] super::ClusterError),
    /// No other hub lists the node now.
    #[error("node {node:?} is not connected to another hub of the cluster")]
    NodeNotElsewhere {
        /// The node.
        node: String,
    },
    /// The TCP connect failed.
    #[error("cannot connect to hub {hub} at {address}: {source}")]
    Connect {
        /// The hub.
        hub: String,
        /// Its tunnel address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS, the upgrade, or the Hello failed.
    #[error("relay handshake with hub {hub} failed: {reason}")]
    Handshake {
        /// The hub.
        hub: String,
        /// Why.
        reason: String,
    },
    /// The other hub's certificate is not a hub's.
    #[error("hub {hub} presented a certificate that is not a hub's")]
    NotAHub {
        /// The hub.
        hub: String,
    },
    /// The other hub refused the relay.
    #[error("hub {hub} refused the relay ({code}): {message}")]
    Refused {
        /// The hub.
        hub: String,
        /// Its error code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The handshake took too long.
    #[error("no answer from hub {hub} within {secs:.1} s")]
    Timeout {
        /// The hub.
        hub: String,
        /// The handshake timeout.
        secs: f64,
    },
}

/// Streams of nodes connected to other hubs of the cluster.
pub struct RelayUpstream {
    cluster: Arc<Cluster>,
    /// Nodes connected here, for a session whose node came here.
    edges: EdgeUpstream,
    registry: Arc<crate::registry::NodeRegistry>,
    tunnel: Arc<Live<TunnelSettings>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The relay task of each session that asked (a generation, to tell tasks apart), to stop
    /// it.
    running: Mutex<HashMap<SessionId, Running>>,
    next_id: AtomicU64,
    /// Itself, for the tasks it spawns.
    this: std::sync::Weak<RelayUpstream>,
}

/// A session this upstream serves.
#[derive(Debug)]
enum Running {
    /// Its relay task (a generation, to tell tasks apart).
    Relay(u64, CancellationToken),
    /// Its node is connected here: the edge was asked directly. A relay that delivered before
    /// goes on until the edge's data tunnel replaces it (make-before-break), and is stopped
    /// with the session.
    Edge(Option<CancellationToken>),
}

/// What became of a relay attempt.
enum Attempt {
    /// The relay ran and ended so.
    Ran(End),
    /// The node is connected to this hub now: ask its edge.
    NodeHere,
}

impl std::fmt::Debug for RelayUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayUpstream").field("hub", &self.cluster.name).finish_non_exhaustive()
    }
}

impl RelayUpstream {
    /// Relays for `cluster`'s hub, dialling with the tunnel settings current at each attempt.
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        registry: Arc<crate::registry::NodeRegistry>,
        tunnel: Arc<Live<TunnelSettings>>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            cluster,
            edges: EdgeUpstream::new(registry.clone()),
            registry,
            tunnel,
            shutdown,
            tasks,
            running: Mutex::default(),
            next_id: AtomicU64::new(crate::session::upstream::RELAY_UPSTREAM_IDS),
            this: this.clone(),
        })
    }

    /// Whether `key`'s node is connected to this hub now and offers the stream (a node that
    /// left within the grace period is not: it may be on another hub already).
    fn here(&self, key: &StreamKey) -> bool {
        self.registry.connected(&key.node) && self.edges.check_stream(key).is_ok()
    }

    /// Whether `key` can be had by relay: its node is connected to another hub that lists the
    /// stream, and this hub can open relays.
    fn check_elsewhere(&self, key: &StreamKey) -> Result<(), NodeError> {
        let not_connected = || NodeError::NotConnected { node: key.node.clone() };
        if self.tunnel.get().relay.is_none() {
            return Err(not_connected());
        }
        let view = self
            .cluster
            .current_view()
            .map_err(|e| NodeError::RegistryUnavailable { node: key.node.clone(), reason: e.to_string() })?;
        let node = view.node(&key.node).filter(|r| r.hub != self.cluster.name).ok_or_else(not_connected)?;
        if !node.catalog.iter().any(|c| c.name == key.stream) {
            return Err(NodeError::NoSuchStream { node: key.node.clone(), stream: key.stream.clone() });
        }
        Ok(())
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Running>> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The hub that has `key`'s node now, and its tunnel address.
    fn locate(&self, key: &StreamKey) -> Result<(String, String), RelayError> {
        let view = self.cluster.current_view()?;
        let not_elsewhere = || RelayError::NodeNotElsewhere { node: key.node.clone() };
        let node = view.node(&key.node).filter(|r| r.hub != self.cluster.name).ok_or_else(not_elsewhere)?;
        let hub = view.hub(&node.hub).ok_or_else(not_elsewhere)?;
        Ok((hub.name.clone(), hub.tunnel_address.clone()))
    }

    /// Relays `session`'s stream until it is stopped, the stream ends, or the hub shuts down.
    async fn run(self: Arc<Self>, session: Arc<Session>, generation: u64, cancel: CancellationToken) {
        let here = self.relay(&session, &cancel).await;
        let mut running = self.running();
        if running.get(&session.id).is_some_and(|r| matches!(r, Running::Relay(g, _) if *g == generation)) {
            if here {
                running.insert(session.id, Running::Edge(None));
            } else {
                running.remove(&session.id);
            }
        }
    }

    /// Relays until stopped or ended; true if the node came here and its edge was asked.
    async fn relay(&self, session: &Arc<Session>, cancel: &CancellationToken) -> bool {
        let Ok(config) = BackoffConfig::try_new(RETRY_INITIAL, RETRY_MAX, Duration::from_secs(10)) else {
            return false;
        };
        let mut backoff = Backoff::new(config, session.id ^ u64::from(std::process::id()));
        let mut last_error = String::new();
        loop {
            match self.relay_once(session, cancel).await {
                Ok(Attempt::Ran(End::Cancelled | End::Ended(_))) => return false,
                Ok(Attempt::NodeHere) => match self.edges.start(session) {
                    Ok(()) => {
                        info!(stream = %session.key, "the node is connected to this hub now; its edge was asked");
                        return true;
                    }
                    Err(e) => warn!(stream = %session.key, error = %e, "the node came here but cannot be asked yet"),
                },
                Ok(Attempt::Ran(End::Lost(reason))) => {
                    backoff.disconnected(Instant::now());
                    warn!(stream = %session.key, %reason, "relay lost; dialling again");
                    last_error.clear();
                }
                Err(e) => {
                    let text = e.to_string();
                    if text != last_error {
                        warn!(stream = %session.key, error = %text, "relay not open; retrying");
                        last_error = text;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = cancel.cancelled() => return false,
            }
        }
    }

    /// Opens one relay and ingests from it until it ends.
    async fn relay_once(&self, session: &Arc<Session>, cancel: &CancellationToken) -> Result<Attempt, RelayError> {
        if self.here(&session.key) {
            return Ok(Attempt::NodeHere);
        }
        let settings = self.tunnel.get();
        let tls = settings.relay.as_ref().ok_or(RelayError::NoHubCertificate)?;
        let (hub, address) = self.locate(&session.key)?;
        let dial = dial(&settings, tls, &self.cluster.name, &hub, &address, &session.key);
        let (mut link, version) = tokio::select! {
            r = tokio::time::timeout(settings.handshake_timeout, dial) => match r {
                Ok(r) => r?,
                Err(_) => return Err(RelayError::Timeout { hub, secs: settings.handshake_timeout.as_secs_f64() }),
            },
            () = cancel.cancelled() => return Ok(Attempt::Ran(End::Cancelled)),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let link_cancel = cancel.child_token();
        if !session.set_upstream(id, link_cancel.clone()) {
            link.go_away("the stream session has ended").await;
            return Ok(Attempt::Ran(End::Cancelled));
        }
        // Whatever happens below (even a panic), the session hears that its relay ended.
        let mut guard = UpstreamGuard {
            session: session.clone(),
            id,
            event: Some(SessionEvent::UpstreamLost("the relay task failed".into())),
        };
        session.stats.tunnel_connects.add(1);
        session.log.begin_epoch();
        info!(stream = %session.key, %hub, "relay attached");
        let end =
            match ingest(settings.heartbeat, &mut link, session, &link_cancel, Sender { name: "hub", version }).await {
                End::Lost(_) if link_cancel.is_cancelled() || session.log.is_closed() => End::Cancelled,
                end => end,
            };
        guard.event = match &end {
            End::Cancelled => {
                session.release_upstream(id);
                link.go_away("stream removed").await;
                None
            }
            End::Lost(reason) => {
                session.stats.upstream_lost.add(1);
                Some(SessionEvent::UpstreamLost(reason.clone()))
            }
            End::Ended(reason) => {
                info!(stream = %session.key, %hub, %reason, "relayed stream ended");
                Some(SessionEvent::UpstreamEnded(reason.clone()))
            }
        };
        session.stats.tunnel_rtt_us.store(0, Ordering::Relaxed);
        guard.finish().await;
        Ok(Attempt::Ran(end))
    }
}

impl Upstream for RelayUpstream {
    fn kind(&self, session: &Session) -> UpstreamKind {
        match self.running().get(&session.id) {
            Some(Running::Relay(..)) => UpstreamKind::Relay,
            Some(Running::Edge(_)) => UpstreamKind::Edge,
            None if self.here(&session.key) => UpstreamKind::Edge,
            None => UpstreamKind::Relay,
        }
    }

    /// Whether the stream can be had: from an edge connected here, or by relay from the hub
    /// its node is connected to.
    fn check_stream(&self, key: &StreamKey) -> Result<(), NodeError> {
        let local = self.edges.check_stream(key);
        if self.registry.connected(&key.node) {
            return local;
        }
        // Departed from here within the grace period (its viewers wait for it) or unknown here:
        // where is it now?
        match self.check_elsewhere(key) {
            Ok(()) => Ok(()),
            Err(_) if local.is_ok() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn start(&self, session: &Arc<Session>) -> Result<(), StartError> {
        let Some(this) = self.this.upgrade() else {
            return Err(StartError::Failed("the hub is shutting down".into()));
        };
        let mut running = self.running();
        if self.here(&session.key) {
            self.edges.start(session)?;
            let relay = match running.remove(&session.id) {
                Some(Running::Relay(_, t)) => Some(t),
                Some(Running::Edge(t)) => t,
                None => None,
            };
            running.insert(session.id, Running::Edge(relay));
            return Ok(());
        }
        // Asked again (the lifecycle re-sends its start when the node returns): one task is
        // already dialling.
        if let Some(Running::Relay(_, t)) = running.get(&session.id)
            && !t.is_cancelled()
        {
            return Ok(());
        }
        let cancel = self.shutdown.child_token();
        let generation = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(Running::Relay(_, old) | Running::Edge(Some(old))) =
            running.insert(session.id, Running::Relay(generation, cancel.clone()))
        {
            old.cancel();
        }
        let span = info_span!("relay", stream = %session.key, session = session.id);
        self.tasks.spawn(this.run(session.clone(), generation, cancel).instrument(span));
        Ok(())
    }

    fn stop(&self, session: &Session) {
        match self.running().remove(&session.id) {
            Some(Running::Relay(_, cancel)) => cancel.cancel(),
            Some(Running::Edge(relay)) => {
                self.edges.stop(session);
                if let Some(cancel) = relay {
                    cancel.cancel();
                }
            }
            None => {}
        }
    }
}

/// TCP, TLS with this hub's certificate, the upgrade, and Hello → Welcome for a relay of `key`;
/// the link and the protocol version it speaks.
async fn dial(
    settings: &TunnelSettings,
    tls: &RelayTls,
    me: &str,
    hub: &str,
    address: &str,
    key: &StreamKey,
) -> Result<(RelayLink, u16), RelayError> {
    let failed = |reason: String| RelayError::Handshake { hub: hub.to_owned(), reason };
    let tcp = TcpStream::connect(address).await.map_err(|source| RelayError::Connect {
        hub: hub.to_owned(),
        address: address.to_owned(),
        source,
    })?;
    let _ = tcp.set_nodelay(true);
    let tls = tls.connector.connect(tls.server_name.clone(), tcp).await.map_err(|e| failed(format!("TLS: {e}")))?;
    if !mediamesh_tls::is_hub_certificate(tls.get_ref().1.peer_certificates().unwrap_or_default()) {
        return Err(RelayError::NotAHub { hub: hub.to_owned() });
    }
    let mut req = format!("wss://{address}{TUNNEL_PATH}")
        .into_client_request()
        .map_err(|e| failed(format!("bad address {address:?}: {e}")))?;
    req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(SUBPROTOCOL));
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(req, Tracked::new(tls), Some(ws_config(&settings.limits)))
            .await
            .map_err(|e| failed(format!("WebSocket upgrade: {e}")))?;
    let mut link = Link::new(ws, settings.limits, settings.write_deadline);
    let hello = Hello {
        min_version: OLDEST_VERSION,
        max_version: PROTOCOL_VERSION,
        node: me.to_owned(),
        agent: concat!("mediamesh-hub/", env!("CARGO_PKG_VERSION")).into(),
        channel: Channel::Relay { node: key.node.clone(), stream: key.stream.clone() },
    };
    link.send(&Message::Hello(hello)).await.map_err(|e| failed(e.to_string()))?;
    match link.recv().await {
        Ok(Some(Message::Welcome(w))) => Ok((link, w.version)),
        Ok(Some(Message::Error(e))) => {
            Err(RelayError::Refused { hub: hub.to_owned(), code: e.code, message: e.message })
        }
        Ok(Some(other)) => Err(failed(format!("got {} instead of Welcome", other.name()))),
        Ok(None) => Err(failed("the hub closed the connection".into())),
        Err(e) => Err(failed(e.to_string())),
    }
}
