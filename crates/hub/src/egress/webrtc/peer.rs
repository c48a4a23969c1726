//! One viewer's peer connection: a str0m `Rtc` driven by its own task. The task moves
//! datagrams and timers; str0m does ICE, DTLS, SRTP, RTCP and retransmissions; the stream's
//! frames come from the log already packetized ([`super::packager`]) and go out with this
//! viewer's numbering ([`super::timeline`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mediamesh_media::Codec;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{AbsCaptureTime, ExtensionValues, RtpWrite, SeqNo};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::negotiate::AudioOut;
use super::packager::{RtcFrame, WebRtcFormat, WebRtcPackager};
use super::timeline::{KeyframeAnswer, Timeline};
use super::{Datagram, MAX_SOURCES, WebRtc, tcp};
use crate::session::log::{Attached, Packaged, PerFrame};
use crate::session::{Sessions, Viewer};

/// The shortest sleep between two timer wake-ups of a session.
const MIN_WAKE: std::time::Duration = std::time::Duration::from_millis(1);
/// Most payload bytes a session takes from the log per read.
const BATCH_BYTES: usize = 512 * 1024;

/// Keyframe requests (PLI, FIR) from browsers since start.
pub(super) static KEYFRAME_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Keyframe requests answered by replaying from the log's cached keyframe to that viewer alone.
pub(super) static KEYFRAME_REPLAYS: AtomicU64 = AtomicU64::new(0);

/// Why a viewer's peer connection ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum PeerEnd {
    /// ICE consent: no binding request for 15 s (a closed tab, a lost network).
    #[error("the browser stopped answering (ICE consent)")]
    ConsentLost,
    /// str0m failed.
    #[error("webrtc error: {0}")]
    Rtc(#[from] str0m::RtcError),
    /// The peer connection closed (DTLS close, or disconnected).
    #[error("the peer connection closed")]
    Closed,
    /// The router is gone: the hub is shutting down.
    #[error("hub shutting down")]
    Shutdown,
    /// The stream's session is gone.
    #[error("the stream's session is gone")]
    SessionGone,
    /// The stream ended.
    #[error("stream ended: {0}")]
    StreamEnded(Arc<str>),
    /// `DELETE` on the session's location.
    #[error("ended by DELETE")]
    Deleted,
    /// An operator disconnected the viewer.
    #[error("disconnected by an operator")]
    Kicked,
    /// The viewer kept falling behind (the behind-policy's reason).
    #[error("{0}")]
    Behind(String),
}

/// One viewer's peer connection.
pub(super) struct Peer {
    pub(super) rtc: Rtc,
    pub(super) mid: Mid,
    pub(super) pt: Pt,
    pub(super) destination: SocketAddr,
    pub(super) socket: Arc<UdpSocket>,
    pub(super) timeline: Timeline,
    /// The video codec negotiated (the camera's).
    pub(super) video_codec: Codec,
    /// Where the audio goes, if the stream's passes through and the browser takes it.
    pub(super) audio: Option<AudioOut>,
    pub(super) audio_timeline: Timeline,
    /// The router, this session's id and queue: to route a verified source here.
    pub(super) route: (Arc<WebRtc>, u64, mpsc::Sender<Datagram>),
    /// Sources already routed here (the browser's few candidates).
    pub(super) sources: Vec<SocketAddr>,
    /// The browser's ICE-TCP connections.
    pub(super) tcp: tcp::Links,
}

impl Peer {
    pub(super) async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Datagram>,
        sessions: Arc<Sessions>,
        mut viewer: Viewer,
        stop: CancellationToken,
    ) -> PeerEnd {
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
                                return PeerEnd::ConsentLost;
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
                Err(e) => return PeerEnd::Rtc(e),
            };
            if replay_pending {
                replay_pending = false;
                if let Err(reason) = self.send_new(&session, &attached, &mut viewer, batch_bytes, &mut batch) {
                    return reason;
                }
                continue;
            }
            if !self.rtc.is_alive() {
                return PeerEnd::Closed;
            }
            // str0m asks to be woken "now" while it holds packets it cannot send yet (a peer
            // that went away): a floor keeps that from spinning a core.
            let wake = wake.max(Instant::now() + MIN_WAKE);
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake));
            tokio::select! {
                d = rx.recv() => {
                    let Some(d) = d else { return PeerEnd::Shutdown };
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
                        return PeerEnd::Rtc(e);
                    }
                }
                changed = viewer.cursor.changed(), if connected => {
                    if !changed {
                        return PeerEnd::SessionGone;
                    }
                    if let Err(reason) = self.send_new(&session, &attached, &mut viewer, batch_bytes, &mut batch) {
                        return reason;
                    }
                }
                () = stop.cancelled() => {
                    self.rtc.disconnect();
                    return PeerEnd::Deleted;
                }
                () = viewer.stats.kick.cancelled() => {
                    self.rtc.disconnect();
                    return PeerEnd::Kicked;
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
    ) -> Result<(), PeerEnd> {
        loop {
            batch.clear();
            let status = session.log.read_packaged(attached, &mut viewer.cursor, batch_bytes, batch);
            if let Some(reason) = status.ended {
                return Err(PeerEnd::StreamEnded(reason));
            }
            viewer.account_read(&status, 0).map_err(PeerEnd::Behind)?;
            let mut bytes = 0u64;
            for p in batch.iter() {
                bytes += self.write(p);
            }
            viewer.account_sent(batch.len() as u64, bytes);
            self.rtc.handle_input(Input::Timeout(Instant::now()))?;
            if !status.more {
                return Ok(());
            }
            self.drain()?;
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
