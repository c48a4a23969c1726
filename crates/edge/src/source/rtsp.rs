//! An RTSP camera, pulled with retina while the stream is wanted.
//!
//! retina handles the RTSP session: authentication (Basic, Digest), TCP-interleaved or UDP
//! transport, keepalives, and TEARDOWN when the session is dropped. The RTP payloads are
//! depacketized by [`mediamesh_media::rtp`], so every codec mediamesh carries (H.264, H.265,
//! AAC, G.711, Opus) passes through untouched, including ones retina cannot demux.
//!
//! A camera that cannot be opened at the start (refused, unreachable, unknown host, wrong
//! credentials) fails the start at once, with the reason, so viewers hear it within a second
//! instead of after the hub's start timeout; the edge then spaces out further starts
//! ([`crate::starts`]). A camera that drops or restarts while streaming is redialled with capped
//! exponential backoff and jitter, logged once per change of reason; timestamps continue across
//! the restart instead of jumping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use mediamesh_media::annexb::START_CODE;
use mediamesh_media::reorder::{Known, Reorder, Times};
use mediamesh_media::rtp::{DepacketizedFrame, Depacketizer, RtpPacketIn};
use mediamesh_media::{Codec, Frame, FrameFlags, StreamHeader, TrackInfo, TrackKind, VIDEO_CLOCK_RATE};
use mediamesh_tunnel::backoff::Backoff;
use retina::client::{
    Credentials, InitialTimestampPolicy, PacketItem, PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport, UdpTransportOptions,
};
use retina::codec::{ParametersRef, VideoParametersCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use super::{FrameSink, unix_micros};
use crate::config::{RtspConfig, RtspTransport};
use crate::redact;
use crate::stats::EdgeStats;

/// Largest frame accepted from a camera.
const MAX_FRAME: usize = 8 * 1024 * 1024;
/// How long DESCRIBE/SETUP/PLAY may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL without credentials, and the credentials (from the URL or the config).
pub(crate) fn parse_url(cfg: &RtspConfig) -> Result<(url::Url, Option<Credentials>), String> {
    let mut url = url::Url::parse(&cfg.url).map_err(|e| format!("{}: {e}", redact::text(&cfg.url)))?;
    if !matches!(url.scheme(), "rtsp" | "rtsps") {
        return Err(format!("{}: expected an rtsp:// URL", redact::text(&cfg.url)));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{}: no host", redact::text(&cfg.url)));
    }
    let decode = |s: &str| redact::percent_decode(s);
    let user = cfg.username.clone().or_else(|| (!url.username().is_empty()).then(|| decode(url.username())));
    let pass = cfg.password.clone().or_else(|| url.password().map(decode));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let creds = user.map(|username| Credentials { username, password: pass.unwrap_or_default() });
    Ok((url, creds))
}

pub(super) fn spawn(
    name: &str,
    cfg: &RtspConfig,
    sink: FrameSink,
    cancel: CancellationToken,
    stats: Arc<EdgeStats>,
) -> tokio::task::JoinHandle<()> {
    let (stream, cfg) = (name.to_owned(), cfg.clone());
    tokio::spawn(async move { supervise(stream, cfg, sink, cancel, stats).await })
}

/// Timeline kept across camera sessions so timestamps keep increasing.
#[derive(Default)]
struct Timeline {
    seq: u64,
    /// The latest timestamp given out, in microseconds.
    last_us: Option<i64>,
}

/// Where the timeline starts (1 s), so a track that begins slightly before another never gets
/// a negative timestamp.
const TIMELINE_START_US: i64 = 1_000_000;
/// How long a camera may send nothing before it counts as lost.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(5);

async fn supervise(
    stream: String,
    cfg: RtspConfig,
    mut sink: FrameSink,
    cancel: CancellationToken,
    stats: Arc<EdgeStats>,
) {
    let backoff_cfg = cfg.reconnect.to_config().unwrap_or_default();
    let mut backoff = Backoff::new(backoff_cfg, u64::from(std::process::id()) ^ unix_micros());
    let mut timeline = Timeline::default();
    let shown = redact::text(&cfg.url).into_owned();
    let mut last_failure = String::new();
    loop {
        let started = Instant::now();
        let end = tokio::select! {
            e = run_once(&stream, &cfg, &mut sink, &stats, &mut timeline) => e,
            () = cancel.cancelled() => End::Cancelled,
        };
        match end {
            End::Cancelled | End::SinkClosed => break,
            End::Refused(reason) => {
                // Wrong credentials or path: retrying cannot help until the configuration
                // changes; the next viewer's AddVideo tries again.
                warn!(%stream, url = %shown, %reason, "the camera refused the stream");
                sink.fail(format!("the camera refused: {reason}"));
                break;
            }
            End::Failed(reason) if timeline.seq == 0 => {
                // Never opened: tell the viewers now; the edge spaces out the next starts.
                warn!(%stream, url = %shown, %reason, "cannot open the camera");
                sink.fail(format!("cannot open the camera: {reason}"));
                break;
            }
            End::Failed(reason) => {
                backoff.connected(started);
                backoff.disconnected(Instant::now());
                let delay = backoff.next_delay();
                let retry_in_ms = delay.as_millis() as u64;
                if reason == last_failure {
                    tracing::debug!(%stream, %reason, retry_in_ms, "camera still lost; redialling");
                } else {
                    warn!(%stream, url = %shown, %reason, retry_in_ms, "camera lost; redialling");
                    last_failure = reason;
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => break,
                }
            }
        }
    }
    info!(%stream, "RTSP source stopped");
}

enum End {
    Cancelled,
    SinkClosed,
    /// The camera answered, and said no (401, 403, 404).
    Refused(String),
    Failed(String),
}

/// The first line of a retina error (the rest is connection context for debugging).
fn first_line(e: &retina::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// The tracks of one camera session: which retina stream feeds which of our tracks.
struct Route {
    stream_index: usize,
    track: TrackInfo,
    depacketizer: Depacketizer,
    warned: bool,
    /// Decode times for the video: RTP carries presentation times only.
    reorder: Reorder,
}

async fn run_once(
    stream: &str,
    cfg: &RtspConfig,
    sink: &mut FrameSink,
    stats: &EdgeStats,
    timeline: &mut Timeline,
) -> End {
    let (url, creds) = match parse_url(cfg) {
        Ok(x) => x,
        Err(e) => return End::Refused(e),
    };
    let connect = async {
        let opts = SessionOptions::default()
            .creds(creds)
            .user_agent(concat!("mediamesh-edge/", env!("CARGO_PKG_VERSION")).into());
        // In a task of its own: the SDP parser retina uses (sdp-types 0.1.8) panics on some
        // malformed answers (found by the camera_sdp fuzz target), and a camera's bytes must end
        // this attempt, not the edge's source task. Dropping the handle (a timeout) aborts it.
        let describe = AbortOnDropHandle::new(tokio::spawn(retina::client::Session::describe(url, opts)));
        let mut session = match describe.await {
            Ok(described) => described.map_err(|e| match e.status_code() {
                Some(401 | 403 | 404) => End::Refused(first_line(&e)),
                _ => End::Failed(first_line(&e)),
            })?,
            Err(e) if e.is_panic() => {
                return Err(End::Failed("the camera's session description (SDP) cannot be parsed".into()));
            }
            Err(_) => return Err(End::Failed("the DESCRIBE request was cancelled".into())),
        };
        let mut routes = pick_streams(session.streams()).map_err(End::Refused)?;
        let transport = match cfg.transport {
            RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
            RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
        };
        for r in &routes {
            session
                .setup(r.stream_index, SetupOptions::default().transport(transport.clone()))
                .await
                .map_err(|e| End::Failed(first_line(&e)))?;
        }
        for r in &mut routes {
            fill_parameters(&mut r.track, session.streams()[r.stream_index].parameters());
        }
        // Permissive: many cameras (and RTSP servers) omit `rtptime` in RTP-Info.
        let play = PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive);
        let playing = session.play(play).await.map_err(|e| End::Failed(first_line(&e)))?;
        Ok::<_, End>((playing, routes))
    };
    let (mut playing, mut routes) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(x)) => x,
        Ok(Err(end)) => return end,
        Err(_) => return End::Failed(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    };
    EdgeStats::inc(&stats.sources_started);
    let codecs: Vec<&str> = routes.iter().map(|r| r.track.codec.name()).collect();
    info!(%stream, codecs = %codecs.join(","), "camera session playing");
    publish_header(&routes, sink);

    // One offset for the whole session (every track), in microseconds: the tracks keep the
    // alignment the camera gave them, and the session continues where the previous one ended.
    let mut base_us: Option<i64> = None;
    let mut frames = Vec::new();
    let result = loop {
        let item = match tokio::time::timeout(MEDIA_TIMEOUT, playing.next()).await {
            Err(_) => break End::Failed(format!("no media from the camera for {} s", MEDIA_TIMEOUT.as_secs())),
            Ok(None) => break End::Failed("the camera ended the session".into()),
            Ok(Some(Err(e))) => break End::Failed(first_line(&e)),
            Ok(Some(Ok(item))) => item,
        };
        let PacketItem::Rtp(pkt) = item else { continue };
        let Some(ri) = routes.iter().position(|r| r.stream_index == pkt.stream_id()) else { continue };
        let rtp = RtpPacketIn {
            sequence: pkt.sequence_number(),
            timestamp: pkt.timestamp().elapsed(),
            marker: pkt.mark(),
            payload: pkt.into_payload_bytes(),
        };
        if let Err(e) = routes[ri].depacketizer.push(rtp, &mut frames) {
            tracing::debug!(%stream, error = %e, "dropped a damaged frame");
        }
        for f in frames.drain(..) {
            let clock = i64::from(routes[ri].track.clock_rate.max(1));
            let elapsed_us = f.timestamp.saturating_mul(1_000_000) / clock;
            let base = *base_us
                .get_or_insert_with(|| timeline.last_us.map_or(TIMELINE_START_US, |last| last + 20_000) - elapsed_us);
            let pts_us = elapsed_us + base;
            timeline.last_us = Some(timeline.last_us.map_or(pts_us, |l| l.max(pts_us)));
            let pts = pts_us.saturating_mul(clock) / 1_000_000;
            let (frame, changed) = deliver(&mut routes[ri], f, pts, timeline);
            if changed {
                // The new parameters reach the queue before the frame that uses them.
                publish_header(&routes, sink);
            }
            if let Some(frame) = frame
                && sink.push(frame).is_err()
            {
                return End::SinkClosed;
            }
        }
    };
    EdgeStats::inc(&stats.sources_stopped);
    result
}

/// The first usable video stream and the first usable audio stream of the presentation.
fn pick_streams(streams: &[retina::client::Stream]) -> Result<Vec<Route>, String> {
    let mut routes = Vec::new();
    let mut offered = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        offered.push(format!("{}/{}", s.media(), s.encoding_name()));
        let codec = match (s.media(), s.encoding_name()) {
            ("video", "h264") => Codec::H264,
            ("video", "h265") => Codec::H265,
            ("audio", "mpeg4-generic") => Codec::Aac,
            ("audio", "pcma") => Codec::Pcma,
            ("audio", "pcmu") => Codec::Pcmu,
            ("audio", "opus") => Codec::Opus,
            _ => continue,
        };
        let id: u8 = if codec.kind() == TrackKind::Video { 0 } else { 1 };
        if routes.iter().any(|r: &Route| r.track.id == id) {
            continue;
        }
        let channels = match codec.kind() {
            TrackKind::Video => 0,
            TrackKind::Audio => s.channels().map_or(1, |c| c.get()),
        };
        let clock_rate = if codec.kind() == TrackKind::Video { VIDEO_CLOCK_RATE } else { s.clock_rate_hz() };
        routes.push(Route {
            stream_index: i,
            track: TrackInfo { id, codec, clock_rate, channels, parameter_sets: vec![] },
            depacketizer: Depacketizer::new(codec, MAX_FRAME),
            warned: false,
            reorder: Reorder::new(codec, clock_rate),
        });
    }
    if routes.is_empty() {
        return Err(format!("the camera offers no stream mediamesh can carry (offered: {})", offered.join(", ")));
    }
    routes.sort_by_key(|r| r.track.id);
    Ok(routes)
}

/// Copies the parameters the SDP gave (sprop-parameter-sets, AAC config) into the track.
fn fill_parameters(track: &mut TrackInfo, params: Option<ParametersRef<'_>>) {
    match params {
        Some(ParametersRef::Video(v)) => match v.codec_params() {
            VideoParametersCodec::H264 { sps, pps } if track.codec == Codec::H264 => {
                track.parameter_sets = vec![sps.clone(), pps.clone()];
            }
            VideoParametersCodec::H265 { vps, sps, pps } if track.codec == Codec::H265 => {
                track.parameter_sets = vec![vps.clone(), sps.clone(), pps.clone()];
            }
            _ => {}
        },
        Some(ParametersRef::Audio(a)) if track.codec == Codec::Aac => {
            track.parameter_sets = vec![Bytes::copy_from_slice(a.extra_data())];
        }
        _ => {}
    }
}

/// Announces the tracks whose parameters are complete.
fn publish_header(routes: &[Route], sink: &mut FrameSink) {
    let tracks: Vec<TrackInfo> = routes.iter().filter(|r| ready(&r.track)).map(|r| r.track.clone()).collect();
    // Nothing can be decoded before the video's parameters are known.
    if routes.iter().any(|r| r.track.codec.kind() == TrackKind::Video && !ready(&r.track)) {
        return;
    }
    let header = StreamHeader { tracks };
    if header.validate().is_ok() {
        sink.set_header(header);
    }
}

fn ready(t: &TrackInfo) -> bool {
    match t.codec.kind() {
        TrackKind::Video => t.video_params().is_ok(),
        TrackKind::Audio => t.audio_params().is_ok(),
    }
}

/// Turns a depacketized frame into a [`Frame`] (none while the video's parameters are not
/// known), and says whether the track's parameters changed.
fn deliver(route: &mut Route, f: DepacketizedFrame, pts: i64, timeline: &mut Timeline) -> (Option<Frame>, bool) {
    if route.track.codec.kind() == TrackKind::Audio && !ready(&route.track) {
        // Not in the stream header (its parameters are unusable): never send its frames.
        if !route.warned {
            route.warned = true;
            let reason = route.track.audio_params().err().map(|e| e.to_string()).unwrap_or_default();
            warn!(codec = %route.track.codec, %reason, "the camera's audio track is unusable; carrying video only");
        }
        return (None, false);
    }
    let track = &mut route.track;
    let mut changed = false;
    let mut payload = f.data;
    if track.codec.kind() == TrackKind::Video {
        let inband: Vec<Bytes> = match track.codec {
            Codec::H265 => [f.vps, f.sps, f.pps].into_iter().collect::<Option<Vec<_>>>().unwrap_or_default(),
            _ => [f.sps, f.pps].into_iter().collect::<Option<Vec<_>>>().unwrap_or_default(),
        };
        if !inband.is_empty() && inband != track.parameter_sets {
            let candidate = TrackInfo { parameter_sets: inband, ..track.clone() };
            if candidate.video_params().is_ok() {
                *track = candidate;
                changed = true;
            }
        } else if f.keyframe && !track.parameter_sets.is_empty() && !has_parameter_sets(track.codec, &payload) {
            // Cameras that send parameter sets only in the SDP: give every keyframe its own, so a
            // viewer joining at it can decode.
            payload = prepend(&track.parameter_sets, &payload);
        }
        if !ready(track) {
            return (None, changed);
        }
    }
    let mut flags = FrameFlags::keyframe(f.keyframe);
    if f.discontinuity {
        flags = flags.with_discontinuity();
    }
    let Times { pts, dts } = if track.codec.kind() == TrackKind::Video {
        route.reorder.times(&payload, Known::Pts(pts))
    } else {
        Times { pts, dts: pts }
    };
    let frame = Frame { track: track.id, flags, seq: timeline.seq, pts, dts, capture_us: unix_micros(), payload };
    timeline.seq += 1;
    (Some(frame), changed)
}

fn has_parameter_sets(codec: Codec, au: &[u8]) -> bool {
    mediamesh_media::annexb::nals(au).any(|n| match codec {
        Codec::H265 => mediamesh_media::h265::nal_type(n) == Some(mediamesh_media::h265::NAL_SPS),
        _ => mediamesh_media::h264::nal_type(n) == Some(mediamesh_media::h264::NAL_SPS),
    })
}

fn prepend(sets: &[Bytes], au: &Bytes) -> Bytes {
    let mut b = BytesMut::with_capacity(au.len() + sets.iter().map(|s| s.len() + 4).sum::<usize>());
    for s in sets {
        b.extend_from_slice(&START_CODE);
        b.extend_from_slice(s);
    }
    b.extend_from_slice(au);
    b.freeze()
}
