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

pub mod packager;
mod tcp;
pub(crate) mod timeline;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{AbsCaptureTime, Extension, ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use mediamesh_media::{Codec, TrackId};

use self::packager::{RtcFrame, WebRtcFormat, WebRtcPackager};
use self::timeline::{KeyframeAnswer, Timeline};
use crate::session::log::{Attached, HeaderEntry, Packaged, PerFrame};
use crate::session::{Sessions, Viewer};

/// Datagrams waiting for one session; more are dropped (the peer retransmits what matters).
const SESSION_QUEUE: usize = 256;
/// Packets each viewer keeps for retransmission (str0m's default is 1,000): a second and a
/// half of a 2 Mbit/s stream, several round trips, since each cached packet costs some 500
/// bytes of header beside its shared payload, per viewer.
const RTX_PACKETS: usize = 300;
/// Most host candidates offered (each costs a line in every answer and a pair to check).
const MAX_CANDIDATES: usize = 8;
/// Most source addresses routed to one session (a browser uses one or two).
const MAX_SOURCES: usize = 8;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// The shortest sleep between two timer wake-ups of a session.
const MIN_WAKE: std::time::Duration = std::time::Duration::from_millis(1);
/// Most payload bytes a session takes from the log per read.
const BATCH_BYTES: usize = 512 * 1024;
/// The id offered for the capture-time header extension (the browser's own id wins when it
/// offers one).
const ABS_CAPTURE_TIME_ID: u8 = 9;

/// Keyframe requests (PLI, FIR) from browsers since start.
static KEYFRAME_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Keyframe requests answered by replaying from the log's cached keyframe to that viewer alone.
static KEYFRAME_REPLAYS: AtomicU64 = AtomicU64::new(0);

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

/// What of a stream a WebRTC viewer can get, from its header (unknown before the edge sent it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// The camera's video codec (H.264 when not known yet).
    video: Option<Codec>,
    /// The camera's H.264 `profile-level-id`.
    profile: Option<u32>,
    /// The camera's H.265 profile, tier and level.
    h265: Option<(u8, u8, u8)>,
    /// The audio track that passes through, and its codec.
    audio: Option<(TrackId, Codec)>,
    /// An audio codec WebRTC cannot carry.
    left_out: Option<Codec>,
}

impl Plan {
    fn new(header: Option<&HeaderEntry>) -> Self {
        let Some(h) = header else { return Self::default() };
        let video = h.header.video().map(|v| v.codec);
        let codec_string = h.video.as_ref().map(|v| v.codec_string.as_str());
        let profile = codec_string
            .filter(|_| video == Some(Codec::H264))
            .and_then(|s| s.strip_prefix("avc1."))
            .and_then(|hex| u32::from_str_radix(hex, 16).ok());
        let h265 = codec_string.filter(|_| video == Some(Codec::H265)).and_then(h265_profile_tier_level);
        let audio = h.header.tracks.iter().find(|t| t.codec.kind() == mediamesh_media::TrackKind::Audio);
        let (audio, left_out) = match audio.map(|t| (t.id, t.codec)) {
            Some((id, c @ (Codec::Opus | Codec::Pcmu | Codec::Pcma))) => (Some((id, c)), None),
            Some((_, c)) => (None, Some(c)),
            None => (None, None),
        };
        Self { video, profile, h265, audio, left_out }
    }

    #[cfg(test)]
    fn for_video(video: Codec) -> Self {
        Self { video: Some(video), ..Self::default() }
    }

    /// The video codec, as an error names it.
    fn video_name(&self) -> &'static str {
        if self.video == Some(Codec::H265) { "H.265" } else { "H.264 (packetization-mode=1)" }
    }

    /// What to offer for the video, in turn: the camera's profile alone, then (H.264 only) the
    /// profiles browsers decode anyway.
    fn video_offers(&self) -> Vec<VideoOffer> {
        // Constrained Baseline, Main and High.
        const PROFILES: [u32; 4] = [0x42e01f, 0x42001f, 0x4d001f, 0x64001f];
        match self.video {
            Some(Codec::H265) => vec![VideoOffer::H265(self.h265.unwrap_or((1, 0, 93)))],
            _ => self
                .profile
                .map(|p| VideoOffer::H264(vec![p]))
                .into_iter()
                .chain([VideoOffer::H264(PROFILES.to_vec())])
                .collect(),
        }
    }
}

/// Profile, tier and level from an RFC 6381 HEVC codec string (`hvc1.1.6.L93.B0`).
fn h265_profile_tier_level(s: &str) -> Option<(u8, u8, u8)> {
    let mut parts = s.strip_prefix("hvc1.").or_else(|| s.strip_prefix("hev1."))?.split('.');
    let profile = parts.next()?.trim_start_matches(|c: char| c.is_ascii_alphabetic()).parse().ok()?;
    let tier_level = parts.nth(1)?;
    let tier = match tier_level.chars().next()? {
        'L' => 0,
        'H' => 1,
        _ => return None,
    };
    Some((profile, tier, tier_level.get(1..)?.parse().ok()?))
}

/// One way of offering the video.
#[derive(Debug, Clone, PartialEq, Eq)]
enum VideoOffer {
    /// H.264 with these `profile-level-id`s (packetization-mode 1).
    H264(Vec<u32>),
    /// H.265 with this profile, tier and level.
    H265((u8, u8, u8)),
}

/// Where a viewer's audio goes.
#[derive(Debug, Clone, Copy)]
struct AudioOut {
    track: TrackId,
    mid: Mid,
    pt: Pt,
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
        let socket = UdpSocket::bind(settings.listen).await?;
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
        // ICE-TCP on the same port number: a port some other program holds for TCP costs only
        // the fallback.
        let tcp = match tokio::net::TcpListener::bind(SocketAddr::new(settings.listen.ip(), local.port())).await {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(port = local.port(), error = %e, "webrtc: no ICE-TCP fallback (the TCP port is taken)");
                None
            }
        };
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| std::io::Error::other("cannot make the DTLS certificate"))?;
        Ok(Arc::new(Self {
            socket: Arc::new(socket),
            has_tcp: tcp.is_some(),
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

    /// Serves the UDP socket and ICE-TCP's listener until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let listener = self.tcp.lock().unwrap_or_else(PoisonError::into_inner).take();
        let tcp = async {
            if let Some(l) = listener {
                tcp::serve(self.clone(), l, shutdown.clone()).await;
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

    /// Answers `offer` with H.264 in `profiles` (`profile-level-id`s) and the plan's audio:
    /// the peer connection, the answer, the video's mid and payload type.
    fn negotiate(
        &self,
        offer: &str,
        ufrag: &str,
        pass: &str,
        plan: &Plan,
        video: &VideoOffer,
    ) -> Result<(Rtc, String, Mid, Pt), WhepError> {
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(self.cert.clone())
            .set_local_ice_credentials(str0m::IceCreds { ufrag: ufrag.to_owned(), pass: pass.to_owned() })
            .set_extension(ABS_CAPTURE_TIME_ID, Extension::AbsoluteCaptureTime)
            .set_send_buffer_video(RTX_PACKETS)
            .clear_codecs();
        config = match plan.audio {
            Some((_, Codec::Opus)) => config.enable_opus(true, false),
            Some((_, Codec::Pcmu)) => config.enable_pcmu(true, false),
            Some((_, Codec::Pcma)) => config.enable_pcma(true, false),
            _ => config,
        };
        let codec = match video {
            VideoOffer::H264(profiles) => {
                for (i, id) in profiles.iter().enumerate() {
                    // Dynamic payload types 96.., each with its retransmission type after it.
                    let pt = 96 + 2 * i as u8;
                    config.codec_config().add_h264(pt.into(), Some((pt + 1).into()), true, *id);
                }
                RtcCodec::H264
            }
            VideoOffer::H265((profile, tier, level)) => {
                config.codec_config().add_h265(96.into(), Some(97.into()), *profile, *tier, *level);
                RtcCodec::H265
            }
        };
        let mut rtc = config.build(Instant::now());
        for c in &self.candidates {
            if let Ok(c) = Candidate::host(*c, "udp") {
                rtc.add_local_candidate(c);
            }
            // Passive: the browser connects to it (its priority is below UDP's).
            if self.has_tcp
                && let Ok(c) = Candidate::builder().tcp().host(*c).tcptype(TcpType::Passive).build()
            {
                rtc.add_local_candidate(c);
            }
        }
        // str0m asserts things about offers it parsed (a payload type claimed twice panics), so
        // a hostile offer must not take the handler down with it.
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| WhepError::BadSdp(e.to_string()))?;
        let accepted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer)))
            .map_err(|_| WhepError::Refused("str0m could not negotiate this offer".into()))?;
        let sdp = accepted.map_err(|e| WhepError::Refused(e.to_string()))?.to_sdp_string();
        // The video m-line (str0m announces it only once running) and the payload type the
        // browser prefers among ours.
        let mid = mid_of(&sdp, "video").ok_or(WhepError::NoCodec(plan.video_name()))?;
        let pt = payload_type(&rtc, mid, |c| c == codec).ok_or(WhepError::NoCodec(plan.video_name()))?;
        Ok((rtc, sdp, mid, pt))
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
        KEYFRAME_REQUESTS.load(Ordering::Relaxed),
        KEYFRAME_REPLAYS.load(Ordering::Relaxed),
    )
}

/// The `a=mid` of the first m-line of `kind` (`video`, `audio`) of an SDP.
fn mid_of(sdp: &str, kind: &str) -> Option<Mid> {
    let mut in_kind = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_kind = m.strip_prefix(kind).is_some_and(|rest| rest.starts_with(' '));
        } else if in_kind && let Some(mid) = line.strip_prefix("a=mid:") {
            return Some(Mid::from(mid.trim()));
        }
    }
    None
}

/// The first payload type on `mid`, in the browser's order of preference, whose codec `wants`.
fn payload_type(rtc: &Rtc, mid: Mid, wants: impl Fn(RtcCodec) -> bool) -> Option<Pt> {
    let media = rtc.media(mid)?;
    if media.disabled() {
        return None;
    }
    let params = rtc.codec_config().params();
    media.remote_pts().iter().copied().find(|pt| params.iter().any(|p| p.pt() == *pt && wants(p.spec().codec)))
}

/// str0m's name for an audio codec that passes through.
fn rtc_codec(c: Codec) -> RtcCodec {
    match c {
        Codec::Pcmu => RtcCodec::PCMU,
        Codec::Pcma => RtcCodec::PCMA,
        _ => RtcCodec::Opus,
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

/// One viewer's peer connection.
struct Peer {
    rtc: Rtc,
    mid: Mid,
    pt: Pt,
    destination: SocketAddr,
    socket: Arc<UdpSocket>,
    timeline: Timeline,
    /// The video codec negotiated (the camera's).
    video_codec: Codec,
    /// Where the audio goes, if the stream's passes through and the browser takes it.
    audio: Option<AudioOut>,
    audio_timeline: Timeline,
    /// The router, this session's id and queue: to route a verified source here.
    route: (Arc<WebRtc>, u64, mpsc::Sender<Datagram>),
    /// Sources already routed here (the browser's few candidates).
    sources: Vec<SocketAddr>,
    /// The browser's ICE-TCP connections.
    tcp: tcp::Links,
}

impl Peer {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Datagram>,
        sessions: Arc<Sessions>,
        mut viewer: Viewer,
        stop: CancellationToken,
    ) -> String {
        let session = viewer.session.clone();
        let attached: Attached<WebRtcPackager> = session.log.attach(|| PerFrame::new(WebRtcFormat));
        let batch_bytes = BATCH_BYTES.min(sessions.config().log.viewer_max_lag_bytes);
        let mut batch: Vec<Arc<Packaged<RtcFrame>>> = Vec::new();
        let mut connected = false;
        // A replay was asked for: read at once rather than at the next frame.
        let mut replay_pending = false;
        loop {
            let wake = match self.drain() {
                Ok((wake, events)) => {
                    for e in events {
                        match e {
                            Event::Connected => {
                                connected = true;
                                viewer.cursor = session.log.subscribe();
                            }
                            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                                return "the browser stopped answering (ICE consent)".into();
                            }
                            Event::KeyframeRequest(_) => {
                                KEYFRAME_REQUESTS.fetch_add(1, Ordering::Relaxed);
                                let answer = self.timeline.keyframe_request(Instant::now(), viewer.cursor.position());
                                debug!(?answer, "webrtc keyframe request");
                                if answer == KeyframeAnswer::Replay {
                                    KEYFRAME_REPLAYS.fetch_add(1, Ordering::Relaxed);
                                    viewer.cursor = session.log.subscribe();
                                    replay_pending = true;
                                }
                            }
                            _ => {}
                        }
                    }
                    wake
                }
                Err(e) => return format!("webrtc error: {e}"),
            };
            if replay_pending {
                replay_pending = false;
                if let Err(reason) = self.send_new(&session, &attached, &mut viewer, batch_bytes, &mut batch) {
                    return reason;
                }
                continue;
            }
            if !self.rtc.is_alive() {
                return "the peer connection closed".into();
            }
            // str0m asks to be woken "now" while it holds packets it cannot send yet (a peer
            // that went away): a floor keeps that from spinning a core.
            let wake = wake.max(Instant::now() + MIN_WAKE);
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake));
            tokio::select! {
                d = rx.recv() => {
                    let Some(d) = d else { return "hub shutting down".into() };
                    let proto = if d.tcp.is_some() { Protocol::Tcp } else { Protocol::Udp };
                    let Ok(r) = Receive::new(proto, d.source, self.destination, &d.bytes) else { continue };
                    let input = Input::Receive(d.at, r);
                    if !self.rtc.accepts(&input) {
                        continue;
                    }
                    if let Some(out) = &d.tcp {
                        self.tcp.learn(d.source, out, MAX_SOURCES);
                    } else if !self.sources.contains(&d.source) && self.sources.len() < MAX_SOURCES {
                        self.sources.push(d.source);
                        let (router, id, tx) = &self.route;
                        router.learn(d.source, *id, tx);
                    }
                    if let Err(e) = self.rtc.handle_input(input) {
                        debug!(error = %e, "webrtc input refused");
                    }
                }
                () = sleep => {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                        return format!("webrtc error: {e}");
                    }
                }
                changed = viewer.cursor.changed(), if connected => {
                    if !changed {
                        return "session gone".into();
                    }
                    if let Err(reason) = self.send_new(&session, &attached, &mut viewer, batch_bytes, &mut batch) {
                        return reason;
                    }
                }
                () = stop.cancelled() => {
                    self.rtc.disconnect();
                    return "ended by DELETE".into();
                }
                () = viewer.stats.kick.cancelled() => {
                    self.rtc.disconnect();
                    return "disconnected by an operator".into();
                }
            }
        }
    }

    /// Sends what the log holds past the viewer's cursor, batch by batch (each batch goes out
    /// before the next is read, so str0m's queue never holds more than one). The log applies
    /// the viewers' overflow policy: a viewer too far behind resumes at a newer keyframe.
    fn send_new(
        &mut self,
        session: &crate::session::Session,
        attached: &Attached<WebRtcPackager>,
        viewer: &mut Viewer,
        batch_bytes: usize,
        batch: &mut Vec<Arc<Packaged<RtcFrame>>>,
    ) -> Result<(), String> {
        loop {
            batch.clear();
            let status = session.log.read_packaged(attached, &mut viewer.cursor, batch_bytes, batch);
            if let Some(reason) = status.ended {
                return Err(format!("stream ended: {reason}"));
            }
            viewer.account_read(&status, 0)?;
            let mut bytes = 0u64;
            for p in batch.iter() {
                bytes += self.write(p);
            }
            viewer.account_sent(batch.len() as u64, bytes);
            self.rtc.handle_input(Input::Timeout(Instant::now())).map_err(|e| format!("webrtc error: {e}"))?;
            if !status.more {
                return Ok(());
            }
            self.drain().map_err(|e| format!("webrtc error: {e}"))?;
        }
    }

    /// Polls str0m until it asks to be woken: transmits go out, events are returned.
    fn drain(&mut self) -> Result<(Instant, Vec<Event>), str0m::RtcError> {
        let mut events = Vec::new();
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok((t, events)),
                Output::Transmit(t) if t.proto == Protocol::Tcp => {
                    if !self.tcp.send(t.destination, &t.contents) {
                        debug!(destination = %t.destination, "webrtc tcp send dropped");
                    }
                }
                Output::Transmit(t) => {
                    if let Err(e) = self.socket.try_send_to(&t.contents, t.destination) {
                        debug!(error = %e, "webrtc send dropped");
                    }
                }
                Output::Event(e) => events.push(e),
            }
        }
    }

    /// Writes one frame's shared payloads with this viewer's header fields; its byte count.
    fn write(&mut self, p: &Packaged<RtcFrame>) -> u64 {
        let Some(track) = p.entry.header.header.track(p.entry.frame.track) else { return 0 };
        if p.out.packets.is_empty() {
            return 0;
        }
        let f = &p.entry.frame;
        let now = Instant::now();
        let (mid, pt, time, video) = match self.audio {
            _ if track.codec == self.video_codec => {
                let Some(time) = self.timeline.frame(now, p.entry.index, f.is_keyframe(), f.pts, f.dts) else {
                    return 0;
                };
                (self.mid, self.pt, time, true)
            }
            // Audio begins with the video and is not replayed with it.
            Some(a) if a.track == f.track => {
                if !self.timeline.started() || self.timeline.is_replay(p.entry.index) {
                    return 0;
                }
                let Some(time) = self.audio_timeline.frame(now, p.entry.index, true, f.pts, f.dts) else { return 0 };
                (a.mid, a.pt, time, false)
            }
            _ => return 0,
        };
        // The capture time, as the edge stamped it: in the header extension for the receiver's
        // latency, and as the wall clock of the RTP time for the sender reports.
        let capture = std::time::UNIX_EPOCH + std::time::Duration::from_micros(f.capture_us);
        let age = std::time::SystemTime::now().duration_since(capture).unwrap_or_default();
        let wallclock = now.checked_sub(age).unwrap_or(now);
        let ext = ExtensionValues {
            abs_capture_time: Some(AbsCaptureTime { capture_time: capture, clock_offset: None }),
            ..ExtensionValues::default()
        };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            warn!(%mid, "webrtc: no send stream");
            return 0;
        };
        let mut bytes = 0;
        for packet in &p.out.packets {
            bytes += packet.payload.len() as u64;
            let seq = SeqNo::from(if video { self.timeline.next_seq() } else { self.audio_timeline.next_seq() });
            tx.write_rtp(
                RtpWrite::new(pt, seq, time, wallclock, packet.payload.clone())
                    .marker(packet.marker && video)
                    .nackable(video)
                    .ext_vals(ext.clone()),
            );
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hevc_codec_strings_give_profile_tier_and_level() {
        assert_eq!(h265_profile_tier_level("hvc1.1.6.L93.B0"), Some((1, 0, 93)));
        assert_eq!(h265_profile_tier_level("hvc1.2.4.H120.90"), Some((2, 1, 120)));
        assert_eq!(h265_profile_tier_level("hev1.A1.6.L60"), Some((1, 0, 60)));
        assert_eq!(h265_profile_tier_level("avc1.42e01f"), None);
        assert_eq!(h265_profile_tier_level("hvc1.1.6.X93"), None);
        assert_eq!(h265_profile_tier_level("hvc1.1"), None);
    }

    #[test]
    fn an_h265_camera_is_offered_in_its_own_profile_and_h264_falls_back() {
        let p = Plan { h265: Some((2, 0, 120)), ..Plan::for_video(Codec::H265) };
        assert_eq!(p.video_offers(), vec![VideoOffer::H265((2, 0, 120))]);
        let p = Plan { profile: Some(0x640028), ..Plan::for_video(Codec::H264) };
        let offers = p.video_offers();
        assert_eq!(offers[0], VideoOffer::H264(vec![0x640028]), "the camera's profile first");
        assert!(matches!(&offers[1], VideoOffer::H264(all) if all.len() == 4));
        assert_eq!(Plan::default().video_offers().len(), 1, "before the header: the common profiles");
    }

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
