//! A WHEP client on str0m (RFC 9725): what `mediamesh view` and the bench use to watch a stream
//! over WebRTC. It offers to receive video (H.264, H.265) and audio (Opus, G.711), sends the offer to
//! the hub's `…/whep`, and yields each depacketized frame with its capture time (the hub sends
//! it in `abs-capture-time`) and, once a second, the receive statistics.
//!
//! str0m is sans-IO: this type moves datagrams between its one UDP socket and the `Rtc` and
//! sleeps until the `Rtc` asks to be woken.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec as RtcCodec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Extension;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tracing::debug;

use super::{ClientError, ConnectOptions, Target};

/// The id asked for the capture-time header extension.
const ABS_CAPTURE_TIME_ID: u8 = 9;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// The shortest sleep between two wake-ups (str0m may ask for "now" again and again).
const MIN_WAKE: Duration = Duration::from_millis(1);

/// A video frame.
#[derive(Debug, Clone)]
pub struct WhepFrame {
    /// A keyframe (an IDR for H.264).
    pub keyframe: bool,
    /// Whether the frame follows the previous one without lost packets.
    pub contiguous: bool,
    /// The RTP time (90 kHz for video).
    pub rtp_time: u64,
    /// When the camera captured it, from `abs-capture-time`, if the hub sent it.
    pub capture: Option<SystemTime>,
    /// The frame: Annex-B NAL units for H.264.
    pub data: Arc<[u8]>,
}

/// Receive statistics of the video, once a second.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhepStats {
    /// Packets received.
    pub packets: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Fraction lost in the last interval (0..1), when known.
    pub loss: Option<f32>,
    /// NACKs sent.
    pub nacks: u64,
    /// Keyframe requests sent (PLI).
    pub plis: u64,
}

/// What the client received.
#[derive(Debug, Clone)]
pub enum WhepItem {
    /// A video frame.
    Video(WhepFrame),
    /// An audio frame of this many bytes.
    Audio(usize),
    /// Statistics of the video.
    Stats(WhepStats),
}

/// A receive-only peer connection and its UDP socket: what a WHEP session (or any client that
/// exchanges SDP its own way, as the bench's Janus viewers) runs on.
pub struct Receiver {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    buf: Vec<u8>,
    items: VecDeque<WhepItem>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Receiver {
    /// A peer connection on a UDP socket of the address packets to `remote` (`host:port`) leave
    /// from, receiving H.264, H.265, Opus and G.711.
    async fn new(remote: &str) -> Result<Self, ClientError> {
        let ip = local_ip_towards(remote).await?;
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await.map_err(ClientError::Udp)?;
        let local = socket.local_addr().map_err(ClientError::Udp)?;
        let mut rtc = Rtc::builder()
            .set_extension(ABS_CAPTURE_TIME_ID, Extension::AbsoluteCaptureTime)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .clear_codecs()
            .enable_h264(true)
            .enable_h265(true)
            .enable_opus(true, false)
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .build(Instant::now());
        let candidate =
            Candidate::host(local, "udp").map_err(|e| ClientError::Udp(std::io::Error::other(e.to_string())))?;
        rtc.add_local_candidate(candidate);
        Ok(Self { rtc, socket, local, buf: vec![0; MAX_DATAGRAM], items: VecDeque::new() })
    }

    /// Answers a server's offer: the receiver and the SDP answer. The local address is the one
    /// packets to the offer's first IPv4 candidate leave from (else to `remote`, the server's
    /// `host:port`): ICE agents such as libnice pair a loopback address with no other.
    pub async fn answer(offer: &str, remote: &str) -> Result<(Self, String), ClientError> {
        let candidate = offer.lines().filter_map(|l| l.strip_prefix("a=candidate:")).find_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            let ip: std::net::Ipv4Addr = f.get(4)?.parse().ok()?;
            Some(format!("{ip}:{}", f.get(5)?))
        });
        let mut r = Self::new(candidate.as_deref().unwrap_or(remote)).await?;
        let offer = SdpOffer::from_sdp_string(offer)?;
        let answer = r.rtc.sdp_api().accept_offer(offer)?;
        Ok((r, answer.to_sdp_string()))
    }

    /// The next thing received; `Ok(None)` once the peer connection is over (the server ended
    /// it, or stopped answering).
    pub async fn next(&mut self) -> Result<Option<WhepItem>, ClientError> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Ok(Some(item));
            }
            if !self.rtc.is_alive() {
                return Ok(None);
            }
            match self.rtc.poll_output()? {
                Output::Transmit(t) => {
                    if let Err(e) = self.socket.send_to(&t.contents, t.destination).await {
                        debug!(error = %e, "webrtc receiver: send failed");
                    }
                }
                Output::Event(e) => match e {
                    Event::MediaData(d) if is_video(d.params.spec().codec) => {
                        self.items.push_back(WhepItem::Video(WhepFrame {
                            keyframe: d.is_keyframe(),
                            contiguous: d.contiguous,
                            rtp_time: d.time.numer(),
                            capture: d.ext_vals.abs_capture_time.map(|a| a.capture_time),
                            data: d.data,
                        }))
                    }
                    Event::MediaData(d) => self.items.push_back(WhepItem::Audio(d.data.len())),
                    Event::MediaIngressStats(s)
                        if self.rtc.media(s.mid).is_some_and(|m| m.kind() == MediaKind::Video) =>
                    {
                        self.items.push_back(WhepItem::Stats(WhepStats {
                            packets: s.packets,
                            bytes: s.bytes,
                            loss: s.loss,
                            nacks: s.nacks,
                            plis: s.plis,
                        }))
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        self.rtc.disconnect();
                        return Ok(None);
                    }
                    _ => {}
                },
                Output::Timeout(at) => {
                    let at = at.max(Instant::now() + MIN_WAKE);
                    tokio::select! {
                        r = self.socket.recv_from(&mut self.buf) => {
                            let (n, source) = r.map_err(ClientError::Udp)?;
                            let Ok(r) = Receive::new(Protocol::Udp, source, self.local, &self.buf[..n]) else { continue };
                            if let Err(e) = self.rtc.handle_input(Input::Receive(Instant::now(), r)) {
                                debug!(error = %e, "webrtc receiver: datagram refused");
                            }
                        }
                        () = tokio::time::sleep_until(at.into()) => self.rtc.handle_input(Input::Timeout(Instant::now()))?,
                    }
                }
            }
        }
    }
}

/// Whether str0m's codec is a video codec.
fn is_video(c: RtcCodec) -> bool {
    matches!(c, RtcCodec::H264 | RtcCodec::H265 | RtcCodec::Vp8 | RtcCodec::Vp9 | RtcCodec::Av1)
}

/// A WHEP session.
pub struct WhepClient {
    receiver: Receiver,
    target: Target,
    opts: ConnectOptions,
    location: Option<String>,
}

impl std::fmt::Debug for WhepClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhepClient").field("location", &self.location).finish_non_exhaustive()
    }
}

impl WhepClient {
    /// Offers to receive the stream at `url` (`http(s)://…/whep`) and applies the answer. ICE
    /// and DTLS then run as [`WhepClient::next`] is called.
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self, ClientError> {
        let target = Target::parse(url)?;
        let mut receiver = Receiver::new(&target.addr).await?;
        let mut api = receiver.rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending): (_, SdpPendingOffer) =
            api.apply().ok_or_else(|| ClientError::Url { url: url.into(), reason: "nothing to offer".into() })?;
        let (status, location, body) =
            request(&target, opts, "POST", target.path(), Some(offer.to_sdp_string())).await?;
        if status != 201 {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or(body);
            return Err(ClientError::Refused { status, message });
        }
        receiver.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&body)?)?;
        Ok(Self { receiver, target, opts: opts.clone(), location })
    }

    /// The next thing received; `Ok(None)` once the peer connection is over (the hub ended it,
    /// or stopped answering).
    pub async fn next(&mut self) -> Result<Option<WhepItem>, ClientError> {
        self.receiver.next().await
    }

    /// Ends the session: `DELETE` on its location, then the peer connection.
    pub async fn close(mut self) {
        if let Some(location) = self.location.take()
            && let Err(e) = request(&self.target, &self.opts, "DELETE", &location, None).await
        {
            debug!(error = %e, "whep client: DELETE failed");
        }
        self.receiver.rtc.disconnect();
    }
}

/// The local address a packet to `addr` (`host:port`) leaves from: the address to offer.
async fn local_ip_towards(addr: &str) -> Result<std::net::IpAddr, ClientError> {
    let err = |source| ClientError::Connect { addr: addr.to_owned(), source };
    let remote = tokio::net::lookup_host(addr)
        .await
        .map_err(err)?
        .next()
        .ok_or_else(|| err(std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))?;
    let any: SocketAddr =
        if remote.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let probe = UdpSocket::bind(any).await.map_err(ClientError::Udp)?;
    probe.connect(remote).await.map_err(ClientError::Udp)?;
    Ok(probe.local_addr().map_err(ClientError::Udp)?.ip())
}

/// One HTTP/1.1 request on a new connection: status, `Location`, body.
async fn request(
    target: &Target,
    opts: &ConnectOptions,
    method: &str,
    path: &str,
    sdp: Option<String>,
) -> Result<(u16, Option<String>, String), ClientError> {
    let io = target.dial(opts).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    let bad = |reason: String| ClientError::Url { url: path.to_owned(), reason };
    let mut req = http::Request::builder().method(method).uri(path).header(http::header::HOST, &target.addr);
    if sdp.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/sdp");
    }
    if let Some(token) = &opts.token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(sdp.unwrap_or_default())))
        .map_err(|e| bad(e.to_string()))?;
    let exchange = async {
        let resp = send.send_request(req).await?;
        let status = resp.status().as_u16();
        let location = resp.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, ClientError>((status, location, String::from_utf8_lossy(&body).into_owned()))
    };
    // The connection is driven beside the exchange, in this task; it ends with the request.
    let (mut exchange, mut conn) = (std::pin::pin!(exchange), std::pin::pin!(conn));
    tokio::select! {
        r = &mut exchange => r,
        c = &mut conn => {
            c?;
            exchange.await
        }
    }
}
