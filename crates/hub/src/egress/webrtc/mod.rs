//! WebRTC viewers over WHEP (RFC 9725): `POST /api/v1/nodes/{node}/streams/{stream}/whep`
//! with an SDP offer answers `201 Created`, the SDP answer and a `Location`; `DELETE` on that
//! location ends the session.
//!
//! Every WebRTC viewer shares one UDP socket ([`WebRtc`]). The hub is ICE-lite: it answers the
//! browser's connectivity checks and never sends its own. A datagram goes to its session by the
//! ICE user fragment in a STUN request (the hub picks each session's own), and after that by
//! the address it came from. Each session is a str0m [`Rtc`] in RTP mode driven by its own
//! task: str0m is sans-IO, the task only moves datagrams and timers. The stream's frames are
//! packetized once for all WebRTC viewers ([`packager`]); a session writes the shared payloads
//! with its own header fields, and str0m encrypts them.

mod negotiate;
pub mod packager;
mod peer;
mod tcp;
pub(crate) mod timeline;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use str0m::change::SdpOffer;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use mediamesh_media::Codec;

use self::negotiate::{AudioOut, Plan, mid_of, payload_type, rtc_codec};
use self::peer::Peer;
use self::timeline::Timeline;
use crate::session::{Sessions, Viewer};

/// Datagrams waiting for one session; more are dropped (the peer retransmits what matters).
const SESSION_QUEUE: usize = 256;
/// Packets each viewer keeps for retransmission (str0m's default is 1,000): a second and a
/// half of a 2 Mbit/s stream, several round trips, since each cached packet costs some 500
/// bytes of header beside its shared payload, per viewer.
pub(super) const RTX_PACKETS: usize = 300;
/// Most host candidates offered (each costs a line in every answer and a pair to check).
const MAX_CANDIDATES: usize = 8;
/// Most source addresses routed to one session (a browser uses one or two).
const MAX_SOURCES: usize = 8;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// The id offered for the capture-time header extension (the browser's own id wins when it
/// offers one).
pub(super) const ABS_CAPTURE_TIME_ID: u8 = 9;

/// Why an offer gets no answer.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    /// The body is not an SDP offer.
    #[error("the offer is not valid SDP: {0}")]
    BadSdp(String),
    /// str0m refused the offer (no ICE credentials, no fingerprint, …).
    #[error("the offer cannot be answered: {0}")]
    Refused(String),
    /// The offer has no video this hub can send.
    #[error("the offer has no video codec this stream can be sent in: the camera sends {0}")]
    NoCodec(&'static str),
    /// Too many WebRTC sessions.
    #[error("this hub already serves {0} WebRTC sessions")]
    Full(usize),
}

impl WhepError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            WhepError::Full(_) => 503,
            WhepError::NoCodec(_) => 406,
            _ => 400,
        }
    }

    /// The JSON error code.
    pub fn code(&self) -> &'static str {
        match self {
            WhepError::BadSdp(_) => "bad_sdp",
            WhepError::Refused(_) => "offer_refused",
            WhepError::NoCodec(_) => "no_common_codec",
            WhepError::Full(_) => "too_many_sessions",
        }
    }
}

/// A session's answer.
#[derive(Debug)]
pub struct Answer {
    /// The session id.
    pub id: u64,
    /// The SDP answer.
    pub sdp: String,
    /// The stream's audio codec when WebRTC cannot carry it (AAC): the answer leaves audio out.
    pub audio_left_out: Option<Codec>,
}

/// The WebRTC settings.
#[derive(Debug, Clone)]
pub struct WebRtcSettings {
    /// Where the UDP socket binds (default `0.0.0.0:8189`).
    pub listen: SocketAddr,
    /// Addresses offered to browsers as host candidates (with the socket's port), before the
    /// host's own.
    pub hosts: Vec<std::net::IpAddr>,
    /// Whether the host's own addresses are offered too: the socket's if it is not a wildcard,
    /// else every interface's (loopback last).
    pub interfaces: bool,
    /// Most sessions at once.
    pub max_sessions: usize,
}

impl Default for WebRtcSettings {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([0, 0, 0, 0], 8189)), hosts: Vec::new(), interfaces: true, max_sessions: 1000 }
    }
}

/// A datagram (or a packet of an ICE-TCP connection) for a session.
struct Datagram {
    source: SocketAddr,
    at: Instant,
    bytes: Vec<u8>,
    /// The connection's writer, when it came over TCP.
    tcp: Option<mpsc::Sender<Vec<u8>>>,
}

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, (u64, mpsc::Sender<Datagram>)>,
    by_addr: HashMap<SocketAddr, (u64, mpsc::Sender<Datagram>)>,
    stops: HashMap<u64, CancellationToken>,
}

/// The WebRTC side of the hub: the shared UDP socket and its sessions.
pub struct WebRtc {
    socket: Arc<UdpSocket>,
    /// ICE-TCP's listener on the same port number, until [`WebRtc::run`] takes it; whether
    /// there is one.
    tcp: Mutex<Option<tokio::net::TcpListener>>,
    has_tcp: bool,
    /// ICE-TCP's gate: its connections and what it refused, in `/metrics` with the other ports.
    pub(crate) tcp_gate: Arc<crate::listener::Gate>,
    candidates: Vec<SocketAddr>,
    settings: WebRtcSettings,
    routes: Mutex<Routes>,
    next_id: std::sync::atomic::AtomicU64,
    cert: str0m::config::DtlsCert,
}

impl std::fmt::Debug for WebRtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtc").field("candidates", &self.candidates).finish_non_exhaustive()
    }
}

impl WebRtc {
    /// Binds the socket.
    pub async fn bind(settings: WebRtcSettings) -> std::io::Result<Arc<Self>> {
        let (socket, tcp) = bind_pair(settings.listen).await?;
        let local = socket.local_addr()?;
        let mut hosts = settings.hosts.clone();
        if settings.interfaces {
            if local.ip().is_unspecified() { hosts.extend(interface_addresses()) } else { hosts.push(local.ip()) }
        }
        if hosts.is_empty() {
            hosts.push(std::net::IpAddr::from([127, 0, 0, 1]));
        }
        let mut seen = std::collections::HashSet::new();
        hosts.retain(|ip| seen.insert(*ip));
        hosts.truncate(MAX_CANDIDATES);
        let candidates = hosts.into_iter().map(|ip| SocketAddr::new(ip, local.port())).collect();
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| std::io::Error::other("cannot make the DTLS certificate"))?;
        Ok(Arc::new(Self {
            socket: Arc::new(socket),
            has_tcp: tcp.is_some(),
            tcp_gate: tcp::gate(settings.max_sessions),
            tcp: Mutex::new(tcp),
            candidates,
            settings,
            routes: Mutex::default(),
            next_id: std::sync::atomic::AtomicU64::new(1),
            cert,
        }))
    }

    /// The socket's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sessions now.
    pub fn sessions(&self) -> usize {
        self.lock().stops.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves the UDP socket and ICE-TCP's listener until `shutdown`; ICE-TCP's connections
    /// are tasks of `tasks`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, tasks: TaskTracker) {
        let listener = self.tcp.lock().unwrap_or_else(PoisonError::into_inner).take();
        let tcp = async {
            if let Some(l) = listener {
                tcp::serve(self.clone(), l, shutdown.clone(), tasks).await;
            }
        };
        tokio::join!(self.clone().serve_udp(shutdown.clone()), tcp);
    }

    /// Reads the socket and hands each datagram to its session, until `shutdown`.
    async fn serve_udp(self: Arc<Self>, shutdown: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, source) = tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error = %e, "webrtc socket read failed");
                        continue;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            let bytes = &buf[..n];
            let target = {
                let routes = self.lock();
                routes
                    .by_addr
                    .get(&source)
                    .cloned()
                    .or_else(|| stun_local_ufrag(bytes).and_then(|u| routes.by_ufrag.get(u).cloned()))
            };
            let Some((id, tx)) = target else { continue };
            if tx.try_send(Datagram { source, at: Instant::now(), bytes: bytes.to_vec(), tcp: None }).is_err() {
                debug!(session = id, "webrtc session queue full; datagram dropped");
            }
        }
    }

    /// Routes datagrams from `source` to session `id` from now on: its peer connection verified
    /// a binding request from there (a forged one, without the session's password, teaches
    /// the router nothing).
    fn learn(&self, source: SocketAddr, id: u64, tx: &mpsc::Sender<Datagram>) {
        self.lock().by_addr.entry(source).or_insert_with(|| (id, tx.clone()));
    }

    /// Answers `offer` for `viewer`, and starts the session in `tasks`. Returns the session id
    /// and the answer.
    pub(crate) fn answer(
        self: &Arc<Self>,
        offer: &str,
        sessions: Arc<Sessions>,
        viewer: Viewer,
        tasks: &TaskTracker,
    ) -> Result<Answer, WhepError> {
        let header = viewer.session.log.header();
        let plan = Plan::new(header.as_deref());
        if self.sessions() >= self.settings.max_sessions {
            return Err(WhepError::Full(self.settings.max_sessions));
        }
        SdpOffer::from_sdp_string(offer).map_err(|e| WhepError::BadSdp(e.to_string()))?;
        let ufrag = format!("mm{:016x}", crate::random_u64());
        let pass = format!("{:016x}{:016x}", crate::random_u64(), crate::random_u64());
        // The camera's own profile alone first; for H.264 where the browser does not offer
        // it, Constrained Baseline, Main or High, whichever it offers (browsers decode any of
        // them). str0m matches profiles, not levels, and one of ours per profile of the
        // browser's: two would claim its payload type twice.
        let mut negotiated = Err(WhepError::NoCodec(plan.video_name()));
        for video in plan.video_offers() {
            negotiated = self.negotiate(offer, &ufrag, &pass, &plan, &video);
            if negotiated.is_ok() {
                break;
            }
        }
        let (rtc, sdp, mid, pt) = negotiated?;
        let audio = plan.audio.and_then(|(track, codec)| {
            let mid = mid_of(&sdp, "audio")?;
            let pt = payload_type(&rtc, mid, |c| c == rtc_codec(codec))?;
            Some(AudioOut { track, mid, pt })
        });
        let audio_clock =
            plan.audio.and_then(|(t, _)| header.as_ref()?.header.track(t)).map_or(48_000, |t| t.clock_rate);
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let stop = CancellationToken::new();
        {
            let mut routes = self.lock();
            routes.by_ufrag.insert(ufrag.clone(), (id, tx.clone()));
            routes.stops.insert(id, stop.clone());
        }
        let me = self.clone();
        let destination = self.candidates.first().copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        tasks.spawn(async move {
            // The routes go with the task, however it ends.
            let _routes = RouteGuard { router: me.clone(), id, ufrag };
            let mut s = Peer {
                rtc,
                mid,
                pt,
                destination,
                socket: me.socket.clone(),
                // H.264 and H.265 over RTP keep a 90 kHz clock (RFC 6184 §5.1, RFC 7798 §4.1).
                timeline: Timeline::new(90_000),
                video_codec: plan.video.unwrap_or(Codec::H264),
                audio,
                audio_timeline: Timeline::new(audio_clock),
                route: (me.clone(), id, tx),
                sources: Vec::new(),
                tcp: tcp::Links::default(),
            };
            let reason = s.run(rx, sessions, viewer, stop).await;
            info!(session = id, %reason, "webrtc session ended");
        });
        Ok(Answer { id, sdp, audio_left_out: plan.left_out })
    }

    /// Ends session `id`; whether it existed.
    pub fn end(&self, id: u64) -> bool {
        self.lock().stops.get(&id).map(CancellationToken::cancel).is_some()
    }
}

/// The addresses of the host's interfaces that are up, loopback last (none if they cannot be
/// listed).
fn interface_addresses() -> Vec<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut ips: Vec<std::net::IpAddr> = addrs
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|a| a.address)
        .filter_map(|s| {
            s.as_sockaddr_in()
                .map(|v4| std::net::IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
        })
        // Link-local IPv6 needs a scope a candidate cannot carry.
        .filter(|ip| !ip.is_unspecified() && !matches!(ip, std::net::IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect();
    ips.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6()));
    ips
}

/// Removes a session's routes when dropped.
struct RouteGuard {
    router: Arc<WebRtc>,
    id: u64,
    ufrag: String,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        let mut routes = self.router.lock();
        routes.by_ufrag.remove(&self.ufrag);
        routes.by_addr.retain(|_, (sid, _)| *sid != self.id);
        routes.stops.remove(&self.id);
    }
}

/// Its series in `/metrics`: sessions now, frames packetized for WebRTC since start (once per
/// frame whatever the number of viewers), and keyframe requests with how many were answered.
pub(crate) fn metrics(rtc: Option<&WebRtc>) -> String {
    format!(
        "# HELP mediamesh_webrtc_sessions WebRTC (WHEP) sessions now.\n\
         # TYPE mediamesh_webrtc_sessions gauge\nmediamesh_webrtc_sessions {}\n\
         # HELP mediamesh_webrtc_frames_packetized_total Frames packetized into RTP for WebRTC viewers.\n\
         # TYPE mediamesh_webrtc_frames_packetized_total counter\nmediamesh_webrtc_frames_packetized_total {}\n\
         # HELP mediamesh_webrtc_keyframe_requests_total Keyframe requests (PLI, FIR) from WebRTC viewers.\n\
         # TYPE mediamesh_webrtc_keyframe_requests_total counter\nmediamesh_webrtc_keyframe_requests_total {}\n\
         # HELP mediamesh_webrtc_keyframe_replays_total Keyframe requests answered from the cached keyframe, for that viewer alone.\n\
         # TYPE mediamesh_webrtc_keyframe_replays_total counter\nmediamesh_webrtc_keyframe_replays_total {}\n",
        rtc.map_or(0, WebRtc::sessions),
        packager::FRAMES_PACKETIZED.load(Ordering::Relaxed),
        peer::KEYFRAME_REQUESTS.load(Ordering::Relaxed),
        peer::KEYFRAME_REPLAYS.load(Ordering::Relaxed),
    )
}

/// Attempts at an ephemeral UDP port whose TCP twin is free too.
const PAIR_ATTEMPTS: usize = 16;

/// The UDP socket, and the ICE-TCP listener on the same port number. A configured port that
/// some other program holds for TCP costs only the fallback; with port 0 the system picks the
/// UDP port, and another is tried until its TCP twin is free too (other programs take TCP
/// ports from the same range).
async fn bind_pair(listen: SocketAddr) -> std::io::Result<(UdpSocket, Option<tokio::net::TcpListener>)> {
    let mut attempts = if listen.port() == 0 { PAIR_ATTEMPTS } else { 1 };
    loop {
        let socket = UdpSocket::bind(listen).await?;
        let port = socket.local_addr()?.port();
        attempts -= 1;
        match tokio::net::TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(l) => return Ok((socket, Some(l))),
            Err(_) if attempts > 0 => continue,
            Err(e) => {
                warn!(port, error = %e, "webrtc: no ICE-TCP fallback (the TCP port is taken)");
                return Ok((socket, None));
            }
        }
    }
}

/// The local user fragment a STUN binding request names (`USERNAME` is `local:remote`).
fn stun_local_ufrag(b: &[u8]) -> Option<&str> {
    // A STUN message: type (first two bits zero), length, the magic cookie, a transaction id.
    if b.len() < 20 || b[0] >> 6 != 0 || b[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let mut at = 20;
    while at + 4 <= b.len() {
        let kind = u16::from_be_bytes([b[at], b[at + 1]]);
        let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
        let value = b.get(at + 4..at + 4 + len)?;
        if kind == 0x0006 {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_ufrag_is_read_from_a_binding_request() {
        let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[7; 12]);
        let name = b"mmabc:remote";
        m.extend_from_slice(&[0x00, 0x06, 0, name.len() as u8]);
        m.extend_from_slice(name);
        m.extend_from_slice(&[0; 4]); // padding to 4
        assert_eq!(stun_local_ufrag(&m), Some("mmabc"));
        assert_eq!(stun_local_ufrag(&m[..24]), None);
        assert_eq!(stun_local_ufrag(b"\x80\x60rtp"), None);
    }
}
