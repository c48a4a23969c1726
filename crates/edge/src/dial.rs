//! Dialling the hub: TCP, TLS (the hub verified against our CA, our certificate presented),
//! the WebSocket upgrade, then Hello → Welcome, all within `handshakeTimeout`.
//!
//! [`connect`] redials until it succeeds. Attempts start on the backoff schedule even while
//! earlier ones still hang (a link that is down drops SYNs silently, and the kernel would retry
//! only after 1, 3, 7 s), so the first attempt after the link returns is never far away. When
//! any connection of this edge succeeds, every waiting [`connect`] tries at once: the link is
//! back.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mediamesh_tunnel::backoff::Backoff;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use mediamesh_tunnel::transport::{Link, LinkError, Tracked, ws_config};
use mediamesh_tunnel::wire::{Channel, ErrorCode, Hello, Limits, Message, OLDEST_VERSION, PROTOCOL_VERSION, Welcome};
use mediamesh_tunnel::{SUBPROTOCOL, TUNNEL_PATH};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A tunnel connection to the hub.
pub type EdgeLink = Link<TlsStream<TcpStream>>;

/// What dialling needs.
#[derive(Clone)]
pub struct DialConfig {
    /// `host:port` of the hub's tunnel port.
    pub server: String,
    /// Name the hub's certificate must carry.
    pub server_name: ServerName<'static>,
    /// TLS client configuration (CA + our certificate).
    pub tls: Arc<rustls::ClientConfig>,
    /// Our node name.
    pub node: String,
    /// Time for the whole handshake.
    pub handshake_timeout: Duration,
    /// Time for any single write.
    pub write_deadline: Duration,
    /// TCP_NOTSENT_LOWAT of tunnel sockets: bytes the kernel may hold unsent before a write
    /// waits, so frames queue where the edge can still drop them. `None` keeps the default.
    pub unsent_lowat: Option<u32>,
    /// The CA file that verifies the hub, for messages.
    pub ca_file: std::path::PathBuf,
    /// More hubs, tried in turn after `server`: `host:port` and the name each certificate must
    /// carry.
    pub fallbacks: Vec<(String, ServerName<'static>)>,
}

impl DialConfig {
    /// This configuration aimed at the `n`th hub of `server` and the fallbacks, in turn.
    pub fn target(&self, n: usize) -> Self {
        match n % (1 + self.fallbacks.len()) {
            0 => self.clone(),
            i => {
                let (server, name) = self.fallbacks[i - 1].clone();
                Self { server, server_name: name, ..self.clone() }
            }
        }
    }

    /// This configuration aimed at `address`: one of its hubs, or another hub of the cluster
    /// (a Redirect's), checked against the name `server` is checked against: hubs behind one
    /// address share a certificate name.
    fn at(&self, address: &str) -> Self {
        let found = self.fallbacks.iter().find(|(a, _)| a == address);
        match found {
            Some((server, name)) => Self { server: server.clone(), server_name: name.clone(), ..self.clone() },
            None => Self { server: address.to_owned(), ..self.clone() },
        }
    }
}

/// Which hub a connection dials.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Aim<'a> {
    /// `first` if given (the hub a Redirect named), then `server` and each fallback in turn;
    /// the address that answers is recorded in `hub` (the control channel).
    Rotate {
        /// Where the address that answers is recorded.
        hub: &'a std::sync::Mutex<Option<String>>,
        /// Tried before the list.
        first: Option<&'a str>,
    },
    /// The hub recorded there, if any, else as [`Aim::Rotate`] without recording (data tunnels:
    /// their session lives on the hub of the control channel).
    Follow(&'a std::sync::Mutex<Option<String>>),
}

impl std::fmt::Debug for DialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialConfig").field("server", &self.server).field("node", &self.node).finish_non_exhaustive()
    }
}

/// Why a connection to the hub could not be established.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP connect failed.
    #[error("cannot connect to {server}: {source}")]
    Connect {
        /// The hub address.
        server: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The hub's certificate is not accepted: retrying cannot help until a certificate or the
    /// configuration changes.
    #[error("the hub's certificate at {server} is not accepted: {reason}{fix}")]
    HubCertificate {
        /// The hub address.
        server: String,
        /// What is wrong with it.
        reason: String,
        /// What fixes it, starting with "; " (or empty).
        fix: String,
    },
    /// The hub refused this edge's certificate (a fatal alert during or right after the
    /// handshake; with TLS 1.3 it arrives with the WebSocket upgrade).
    #[error(
        "the hub at {server} refused this edge's certificate ({reason}); is it signed by the hub's tlsTunnelCAFile?"
    )]
    CertificateRefused {
        /// The hub address.
        server: String,
        /// The hub's alert, in words.
        reason: String,
    },
    /// The TLS handshake failed otherwise.
    #[error("TLS with {server} failed: {reason}")]
    Tls {
        /// The hub address.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The WebSocket upgrade failed.
    #[error("{0}")]
    Upgrade(String),
    /// The hub answered the Hello with an Error.
    #[error("the hub refused the connection ({code}): {message}")]
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The hub's explanation.
        message: String,
    },
    /// The hub sent something other than Welcome or Error.
    #[error("unexpected answer to Hello: {0}")]
    Protocol(String),
    /// The link failed during the handshake.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The handshake took longer than `handshakeTimeout`.
    #[error("no Welcome within {:.1} s (handshakeTimeout)", .0.as_secs_f64())]
    Timeout(Duration),
}

impl DialError {
    /// Whether the hub refused this node because another edge is connected with its identity.
    /// Retried on the normal schedule (the other edge may be a replaced machine going away),
    /// but logged as an error: two edges must not share a certificate.
    pub fn is_identity_conflict(&self) -> bool {
        matches!(self, DialError::Refused { code: ErrorCode::DuplicateNode, .. })
    }

    /// Whether retrying cannot help until the configuration changes (refused identity,
    /// incompatible version, a certificate either side does not accept). Such errors are still
    /// retried, but every 30 s and logged as errors.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DialError::Refused { code: ErrorCode::Unauthorized | ErrorCode::UnsupportedVersion, .. }
                | DialError::HubCertificate { .. }
                | DialError::CertificateRefused { .. }
        )
    }
}

/// Connects and says Hello for `channel`; returns the link and the hub's Welcome.
pub async fn dial(cfg: &DialConfig, channel: Channel) -> Result<(EdgeLink, Welcome), DialError> {
    match tokio::time::timeout(cfg.handshake_timeout, handshake(cfg, channel)).await {
        Ok(r) => r,
        Err(_) => Err(DialError::Timeout(cfg.handshake_timeout)),
    }
}

async fn handshake(cfg: &DialConfig, channel: Channel) -> Result<(EdgeLink, Welcome), DialError> {
    let tcp = tcp_connect(cfg).await?;
    establish(cfg, tcp, channel).await
}

/// The TCP connect alone, within [`CONNECT_TIMEOUT`].
async fn tcp_connect(cfg: &DialConfig) -> Result<TcpStream, DialError> {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT.min(cfg.handshake_timeout), TcpStream::connect(&cfg.server));
    match connect.await {
        Ok(r) => r.map_err(|source| DialError::Connect { server: cfg.server.clone(), source }),
        Err(_) => {
            let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to the TCP connect");
            Err(DialError::Connect { server: cfg.server.clone(), source })
        }
    }
}

/// TLS, the WebSocket upgrade and Hello → Welcome on a connected socket.
async fn establish(cfg: &DialConfig, tcp: TcpStream, channel: Channel) -> Result<(EdgeLink, Welcome), DialError> {
    let _ = tcp.set_nodelay(true);
    if let Some(lowat) = cfg.unsent_lowat
        && let Err(e) = socket2::SockRef::from(&tcp).set_tcp_notsent_lowat(lowat)
    {
        tracing::debug!(error = %e, "cannot set TCP_NOTSENT_LOWAT");
    }
    let tls = TlsConnector::from(cfg.tls.clone())
        .connect(cfg.server_name.clone(), tcp)
        .await
        .map_err(|e| tls_failure(cfg, &e))?;
    let mut req = format!("wss://{}{TUNNEL_PATH}", cfg.server)
        .into_client_request()
        .map_err(|e| DialError::Upgrade(format!("bad server address {:?}: {e}", cfg.server)))?;
    req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(SUBPROTOCOL));
    let limits = Limits::default();
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(req, Tracked::new(tls), Some(ws_config(&limits)))
        .await
        .map_err(|e| ws_failure(cfg, &e))?;
    let mut link = Link::new(ws, limits, cfg.write_deadline);
    let hello = Hello {
        min_version: OLDEST_VERSION,
        max_version: PROTOCOL_VERSION,
        node: cfg.node.clone(),
        agent: concat!("mediamesh-edge/", env!("CARGO_PKG_VERSION")).into(),
        channel,
    };
    link.send(&Message::Hello(hello)).await.map_err(|e| match e {
        LinkError::Ws(ws) => ws_failure(cfg, &ws),
        other => other.into(),
    })?;
    match link.recv().await {
        Ok(Some(Message::Welcome(w))) => Ok((link, w)),
        Ok(Some(Message::Error(e))) => Err(DialError::Refused { code: e.code, message: e.message }),
        Ok(Some(other)) => Err(DialError::Protocol(format!("got {}", other.name()))),
        Ok(None) => Err(DialError::Protocol("the hub closed the connection".into())),
        Err(LinkError::Ws(ws)) => Err(ws_failure(cfg, &ws)),
        Err(e) => Err(e.into()),
    }
}

/// How long one TCP connect may take (a SYN the network drops is not retried by the kernel
/// for 1 s, then 2, then 4; a fresh attempt is the faster way through a link that came back).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Most attempts in flight at once.
const MAX_IN_FLIGHT: usize = 8;
/// Retry interval after an error that a retry cannot fix until the configuration changes.
const PERMANENT_RETRY: Duration = Duration::from_secs(30);

/// Connects for `channel`, redialling on the `backoff` schedule (and at once when another
/// connection of this edge gets through) until an attempt succeeds, or fails in a way
/// `is_final` says retrying cannot fix. `what` names the connection in logs.
#[allow(clippy::too_many_arguments)] // each is a distinct input of one redial loop
pub(crate) async fn connect(
    dial: &mediamesh_tunnel::settings::Live<DialConfig>,
    aim: Aim<'_>,
    channel: &Channel,
    backoff: &mut Backoff,
    link_up: &watch::Sender<u64>,
    what: &str,
    is_final: impl Fn(&DialError) -> bool,
    last_error: Option<&std::sync::Mutex<Option<String>>>,
) -> Result<(EdgeLink, Welcome), DialError> {
    let remember = |e: Option<String>| {
        if let Some(slot) = last_error {
            *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = e;
        }
    };
    let mut up = link_up.subscribe();
    // Only TCP connects overlap: the first socket that connects goes on alone to TLS and Hello
    // (the others are dropped), so the hub never sees two Hellos for one connection.
    let mut attempts = FuturesUnordered::new();
    let mut next = tokio::time::Instant::now();
    let mut failures = 0u32;
    let mut tried = 0usize;
    let mut last_error = String::new();
    loop {
        let result = tokio::select! {
            () = tokio::time::sleep_until(next), if attempts.len() < MAX_IN_FLIGHT => {
                // Each attempt takes the settings current when it starts (a reload may have
                // brought new certificates or another address).
                let all = dial.get();
                let cfg = match aim {
                    Aim::Follow(hub) => match hub.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
                        Some(address) => all.at(&address),
                        None => all.target(tried),
                    },
                    Aim::Rotate { first: Some(address), .. } if tried == 0 => all.at(address),
                    Aim::Rotate { first: Some(_), .. } => all.target(tried - 1),
                    Aim::Rotate { first: None, .. } => all.target(tried),
                };
                tried += 1;
                attempts.push(async move { tcp_connect(&cfg).await.map(|tcp| (tcp, cfg)) });
                next = tokio::time::Instant::now() + backoff.next_delay();
                continue;
            }
            Some(r) = attempts.next() => match r {
                Ok((tcp, cfg)) => {
                    attempts.clear();
                    let r = match tokio::time::timeout(cfg.handshake_timeout, establish(&cfg, tcp, channel.clone())).await {
                        Ok(r) => r,
                        Err(_) => Err(DialError::Timeout(cfg.handshake_timeout)),
                    };
                    if let (Ok(_), Aim::Rotate { hub, .. }) = (&r, aim) {
                        *hub.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cfg.server.clone());
                    }
                    r
                }
                Err(e) => Err(e),
            },
            r = up.changed() => {
                if r.is_ok() && attempts.len() < MAX_IN_FLIGHT {
                    // Another connection got through: the link is back.
                    next = tokio::time::Instant::now();
                }
                continue;
            }
        };
        match result {
            Ok(x) => {
                if failures > 0 {
                    info!(connection = what, failures, "connected to the hub again");
                }
                link_up.send_modify(|g| *g = g.wrapping_add(1));
                remember(None);
                return Ok(x);
            }
            Err(e) if is_final(&e) => return Err(e),
            Err(e) => {
                failures += 1;
                let msg = e.to_string();
                remember(Some(msg.clone()));
                // A draining hub sends its edges on: the next hub of the list at once.
                if matches!(e, DialError::Refused { code: ErrorCode::Draining, .. }) {
                    next = tokio::time::Instant::now();
                }
                if e.is_permanent() {
                    error!(connection = what, error = %msg, retry_in_s = PERMANENT_RETRY.as_secs(), "cannot connect to the hub");
                    next = next.max(tokio::time::Instant::now() + PERMANENT_RETRY);
                } else if e.is_identity_conflict() && (failures == 1 || msg != last_error) {
                    error!(connection = what, error = %msg, "another edge is connected with this node's identity; retrying");
                } else if failures == 1 || msg != last_error {
                    warn!(connection = what, error = %msg, "cannot connect to the hub; retrying");
                } else {
                    debug!(connection = what, error = %msg, attempt = failures, "cannot connect to the hub");
                }
                last_error = msg;
            }
        }
    }
}

/// A TLS-level I/O error, classified: the hub's certificate not accepted (with what fixes it),
/// the hub refusing ours, or another failure.
fn tls_failure(cfg: &DialConfig, e: &std::io::Error) -> DialError {
    use mediamesh_tls::explain;
    let server = cfg.server.clone();
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => {
            DialError::HubCertificate { server, reason: explain::certificate(c), fix: certificate_fix(cfg, c) }
        }
        Some(rustls::Error::AlertReceived(a)) if explain::alert_refuses_certificate(*a) => {
            DialError::CertificateRefused { server, reason: explain::alert(*a) }
        }
        Some(other) => DialError::Tls { server, reason: explain::error(other) },
        None => DialError::Tls { server, reason: e.to_string() },
    }
}

/// What fixes a hub certificate the edge does not accept.
fn certificate_fix(cfg: &DialConfig, e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    let dialled = cfg.server_name.to_str();
    match e {
        _ if mediamesh_tls::explain::name_mismatch(e).is_some() => format!(
            "; issue the hub a certificate for the name this edge dials, from the folder with its CA: \
             `mediamesh certs --out certs --hub-name {dialled} --force`, then reload the hub \
             (SIGHUP) or restart it (or set serverName to a name the certificate has)"
        ),
        C::UnknownIssuer => format!(
            "; tlsTunnelCAFile ({}) must be the CA that signed the hub's certificate (the hub's ca.pem)",
            cfg.ca_file.display()
        ),
        _ => String::new(),
    }
}

fn ws_failure(cfg: &DialConfig, e: &tokio_tungstenite::tungstenite::Error) -> DialError {
    match e {
        tokio_tungstenite::tungstenite::Error::Io(io)
            if io.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            tls_failure(cfg, io)
        }
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            DialError::Upgrade(format!("the hub refused the WebSocket upgrade with HTTP {}", resp.status()))
        }
        other => DialError::Upgrade(format!("WebSocket handshake failed: {other}")),
    }
}
