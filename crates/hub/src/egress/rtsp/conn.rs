//! One RTSP connection: the reader parses and answers requests; a writer task owns the socket's
//! write half and sends responses and, for TCP-interleaved sessions, the media; UDP sessions get
//! a sender task of their own.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use mediamesh_media::rtp::sdp::payload_type;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::media::{MediaOut, RtpOut, TrackOut};
use super::packager::{RtpFormat, first_rtp_from};
use super::request::{self, Incoming, Method, Request, Response};
use super::request_clock::RequestClock;
use super::send::{WriterCmd, udp_sender, writer_task};
use super::sessions::{MAX_SESSIONS, Playing, RtspSession, RtspSessions};
use super::transport::{self, Dest};
use super::udp::Liveness;
use super::{RtspCtx, RtspSettings};
use crate::egress::mailbox::{Sender, mailbox};
use crate::listener::{Deadline, Gate, Remote};
use crate::random_u64;
use crate::session::{StreamKey, Viewer};

/// Streams one connection may have DESCRIBEd without a SETUP yet.
const MAX_DESCRIBED: usize = 4;

struct Conn {
    ctx: Arc<RtspCtx>,
    /// The settings current when the connection arrived.
    settings: Arc<RtspSettings>,
    peer: Remote,
    /// Commands go boxed: a slot of the mailbox's queue is then 8 bytes, not the command's
    /// 64, for every viewer; commands are rare.
    writer: Sender<Box<WriterCmd>>,
    closed: CancellationToken,
    sessions: RtspSessions,
    /// Viewers joined by DESCRIBE, waiting for SETUP, with when they expire: a viewer holds
    /// the stream's upstream open, so one the client never sets up must not hold it for long.
    described: HashMap<StreamKey, (Viewer, Instant)>,
    liveness: Liveness,
    /// The port's gate, to count a missed request deadline.
    gate: Arc<Gate>,
    /// Streams this connection proved it may read ([`super::auth`]).
    authorized: HashSet<StreamKey>,
}

pub(crate) async fn run(ctx: Arc<RtspCtx>, gate: Arc<Gate>, tcp: TcpStream, peer: Remote) {
    let (mut rd, wr) = tcp.into_split();
    let (tx, rx) = mailbox(16);
    let closed = ctx.shutdown.child_token();
    let settings = ctx.live.get();
    let mut writer = tokio::spawn(writer_task(wr, rx, closed.clone(), settings.stall));
    let liveness = Liveness::default();
    let sessions = RtspSessions::default();
    let described = HashMap::new();
    let authorized = HashSet::new();
    let mut conn = Conn { ctx, settings, peer, writer: tx, closed, sessions, described, liveness, gate, authorized };
    let reason = conn.read_loop(&mut rd).await;
    let sessions = conn.sessions.len();
    conn.close_all();
    drop(conn);
    // The writer flushes what is queued and ends; one stuck on a dead peer is stopped.
    let writer_reason = match tokio::time::timeout(Duration::from_secs(2), &mut writer).await {
        Ok(r) => r.ok(),
        Err(_) => {
            writer.abort();
            Some("stopped: still writing 2 s after the connection closed".to_owned())
        }
    };
    // Lingering close: the client may still be sending (the rest of an oversized request);
    // reading it for a moment lets the last response reach the client instead of being
    // destroyed by the TCP reset that closing with unread data causes.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        // On the heap: an array here would sit in the connection's future, 8 KB per viewer.
        let mut sink = vec![0u8; 8192];
        let mut total = 0usize;
        while total < (1 << 20) {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    match writer_reason {
        Some(writer) => info!(%peer, %reason, %writer, sessions, "rtsp connection closed"),
        None => info!(%peer, %reason, sessions, "rtsp connection closed"),
    }
}

impl Conn {
    async fn read_loop(&mut self, rd: &mut tokio::net::tcp::OwnedReadHalf) -> String {
        // Requests are a few hundred bytes; the buffer grows for a bigger one (up to the caps in
        // `request`). Every viewer holds this buffer for as long as it watches.
        let mut buf = BytesMut::with_capacity(512);
        let mut clock = RequestClock::new(self.settings.request_timeout, Instant::now());
        loop {
            loop {
                match request::parse(&mut buf) {
                    Ok(Some(Incoming::Request(req))) => {
                        clock.request(Instant::now());
                        self.touch();
                        // Boxed: handling a request (DESCRIBE waits for the stream to start) needs
                        // several KB of state that the connection, which spends its life waiting
                        // for the next read, should not carry while it waits.
                        if let Err(reason) = Box::pin(self.handle(req)).await {
                            return reason;
                        }
                    }
                    Ok(Some(Incoming::Interleaved { channel, data })) => {
                        // RTCP receiver reports: proof of life.
                        tracing::trace!(channel, len = data.len(), "interleaved data from the client");
                        self.touch();
                    }
                    Ok(None) => break,
                    Err(refusal) => {
                        info!(peer = %self.peer, %refusal, "rtsp request refused");
                        let _ = self.send(WriterCmd::Response(Response::from(&refusal).encode(refusal.cseq))).await;
                        return format!("refused: {refusal}");
                    }
                }
            }
            clock.buffered(!buf.is_empty(), Instant::now());
            // A connection that is not streaming must keep talking ([`RequestClock`]).
            let playing = self.sessions.iter().any(|(_, s)| !matches!(s.playing, Playing::No));
            let deadline = clock.deadline(playing);
            let expiry = self.described.values().map(|(_, at)| *at).min();
            let n = tokio::select! {
                r = rd.read_buf(&mut buf) => r,
                () = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.gate.counters.missed(Deadline::Request);
                    return format!("no complete request within {:.0} s", clock.timeout().as_secs_f64());
                }
                () = async {
                    match expiry {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.expire_described();
                    continue;
                }
                () = self.closed.cancelled() => return "closed by the server".into(),
            };
            match n {
                Ok(0) => return "closed by the client".into(),
                Ok(_) => {}
                Err(e) => return format!("read failed: {e}"),
            }
        }
    }

    /// Drops DESCRIBEd viewers the client did not set up in time.
    fn expire_described(&mut self) {
        let now = Instant::now();
        self.described.retain(|key, (_, at)| {
            let keep = *at > now;
            if !keep {
                debug!(peer = %self.peer, stream = %key, "described stream never set up; leaving it");
            }
            keep
        });
    }

    fn touch(&self) {
        if let Some(udp) = &self.ctx.udp {
            self.liveness.store(udp.now_ms(), Ordering::Relaxed);
        }
    }

    async fn respond(&self, req: &Request, resp: Response) -> Result<(), String> {
        if resp.status() >= 400 {
            let uri = mediamesh_tunnel::redact::text(&req.uri);
            debug!(peer = %self.peer, method = %req.method, %uri, status = resp.status(), "rtsp error response");
        }
        self.send(WriterCmd::Response(resp.encode(Some(req.cseq)))).await
    }

    async fn send(&self, cmd: WriterCmd) -> Result<(), String> {
        self.writer.send(Box::new(cmd)).await.map_err(|_| "writer gone".to_owned())
    }

    async fn handle(&mut self, req: Request) -> Result<(), String> {
        if matches!(req.method, Method::Describe | Method::Setup)
            && let Some(denied) = self.authorize(&req).await
        {
            return self.respond(&req, denied).await;
        }
        let resp = match req.method {
            Method::Options => Response::ok().header("Public", PUBLIC),
            Method::Describe => self.describe(&req).await,
            Method::Setup => self.setup(&req).await,
            Method::Play => return self.play(&req).await,
            Method::Teardown => return self.teardown(&req).await,
            Method::GetParameter | Method::SetParameter => match self.session_of(&req) {
                Ok(_) if !req.body.is_empty() => Response::ok(), // parameters are not supported; keepalive

                Err(r) => r,
                Ok(_) => Response::ok(),
            },
            Method::Pause | Method::Other(_) => Response::new(501, "Not Implemented").header("Public", PUBLIC),
        };
        self.respond(&req, resp).await
    }

    /// `None` if the request may read the stream its URI names (a URI naming none is answered
    /// by the method's handler).
    async fn authorize(&mut self, req: &Request) -> Option<Response> {
        let (key, _) = parse_uri(&req.uri)?;
        if self.authorized.contains(&key) && req.header("Authorization").is_none() {
            return None;
        }
        let denied = super::auth::check(&self.ctx.auth, req, &key, self.peer).await;
        if denied.is_none() && self.authorized.len() < 2 * MAX_SESSIONS {
            self.authorized.insert(key);
        }
        denied
    }

    /// The session a request names; 454 if it names one this connection did not create.
    fn session_of(&self, req: &Request) -> Result<Option<String>, Response> {
        match req.header("Session").map(|v| v.split(';').next().unwrap_or_default().trim().to_owned()) {
            None => Ok(None),
            Some(id) if self.sessions.contains_key(&id) => Ok(Some(id)),
            Some(_) => Err(Response::new(454, "Session Not Found")),
        }
    }

    /// Joins the stream (once per connection and stream) and waits for its codec parameters.
    async fn viewer_for(&mut self, key: &StreamKey) -> Result<Viewer, Response> {
        self.ctx.sessions.check_stream(key).map_err(|e| not_found(&e.to_string()))?;
        let described = self.described.remove(key);
        if self.described.is_empty() {
            // Its entries are 150 bytes each; a playing viewer should not keep the room.
            self.described = HashMap::new();
        }
        let mut viewer = match described {
            Some((v, _)) => v,
            None => self.ctx.sessions.join(key, "rtsp", self.peer).map_err(|r| match r.status() {
                503 => not_enough(&r.to_string()),
                _ => unavailable(&r.to_string()),
            })?,
        };
        // An operator's disconnect of this viewer closes its connection.
        let (kick, closed) = (viewer.stats.kick.clone(), self.closed.clone());
        self.ctx.tasks.spawn(async move {
            tokio::select! {
                () = kick.cancelled() => closed.cancel(),
                () = closed.cancelled() => {}
            }
        });
        let deadline = tokio::time::Instant::now() + self.settings.start_timeout;
        loop {
            if viewer.session.log.header().is_some() {
                return Ok(viewer);
            }
            if let Some(reason) = viewer.session.log.end_reason() {
                return Err(unavailable(&format!("the stream ended before it started: {reason}")));
            }
            tokio::select! {
                r = tokio::time::timeout_at(deadline, viewer.cursor.changed()) => if r.is_err() {
                    return Err(unavailable(&format!(
                        "the edge did not start the stream within {:.0} s",
                        self.settings.start_timeout.as_secs_f64()
                    )));
                },
                () = self.closed.cancelled() => return Err(unavailable("the connection is closing")),
            }
        }
    }

    async fn describe(&mut self, req: &Request) -> Response {
        let Some((key, _)) = parse_uri(&req.uri) else { return not_found("no such stream path") };
        self.expire_described();
        if self.described.len() >= MAX_DESCRIBED && !self.described.contains_key(&key) {
            return not_enough("too many streams described and not set up on this connection");
        }
        let viewer = match self.viewer_for(&key).await {
            Ok(v) => v,
            Err(r) => return r,
        };
        let Some(header) = viewer.session.log.header() else { return unavailable("no codec parameters") };
        let sdp = super::sdp::session_description(&key, &header.header, viewer.session.id);
        self.park(None, &key, viewer);
        Response::ok().header("Content-Base", content_base(&req.uri)).body("application/sdp", sdp)
    }

    async fn setup(&mut self, req: &Request) -> Response {
        let Some((key, track)) = parse_uri(&req.uri) else { return not_found("no such stream path") };
        let existing = match self.session_of(req) {
            Err(r) => return r,
            Ok(id) => id,
        };
        if let Some(id) = &existing {
            // `session_of` found it.
            let Some(s) = self.sessions.get(id) else { return Response::new(454, "Session Not Found") };
            if s.key != key {
                return Response::new(459, "Aggregate Operation Not Allowed");
            }
            if !matches!(s.playing, Playing::No) {
                return Response::new(455, "Method Not Valid in This State");
            }
        } else if self.sessions.len() >= MAX_SESSIONS {
            return not_enough(&format!("at most {MAX_SESSIONS} sessions per connection"));
        }
        let viewer = match existing.as_ref().and_then(|id| self.sessions.get_mut(id)).and_then(|s| s.viewer.take()) {
            Some(v) => v,
            None => match self.viewer_for(&key).await {
                Ok(v) => v,
                Err(r) => return r,
            },
        };
        let Some(header) = viewer.session.log.header() else { return unavailable("no codec parameters") };
        let track_id = match track {
            Some(t) => t,
            None if header.header.tracks.len() == 1 => header.header.tracks[0].id,
            None => {
                self.park(existing.as_deref(), &key, viewer);
                return Response::new(459, "Aggregate Operation Not Allowed")
                    .body("text/plain", "SETUP needs a track URL (…/trackID=N)\n");
            }
        };
        let Some(info) = header.header.track(track_id) else {
            self.park(existing.as_deref(), &key, viewer);
            return not_found(&format!("this stream has no track {track_id}"));
        };
        let dest = match req.header("Transport").map(|t| transport::choose(t, self.peer.ip(), track_id)) {
            Some(Ok(d)) => d,
            Some(Err(reason)) => {
                self.park(existing.as_deref(), &key, viewer);
                return Response::new(461, "Unsupported Transport").body("text/plain", format!("{reason}\n"));
            }
            None => {
                self.park(existing.as_deref(), &key, viewer);
                return Response::new(461, "Unsupported Transport").body("text/plain", "missing Transport header\n");
            }
        };
        if matches!(dest, Dest::Udp { .. }) && self.ctx.udp.is_none() {
            self.park(existing.as_deref(), &key, viewer);
            return Response::new(461, "Unsupported Transport").body("text/plain", "UDP is disabled on this hub\n");
        }
        let id = existing.unwrap_or_else(|| format!("{:016X}", random_u64()));
        let session = self.sessions.get_or_insert_with(&id, || RtspSession {
            key: key.clone(),
            viewer: None,
            tracks: Vec::new(),
            rtp: None,
            playing: Playing::No,
        });
        let rtp = session
            .rtp
            .get_or_insert_with(|| {
                let (attached, shared) = RtpFormat::attach(&viewer.session.log);
                RtpOut { attached, shared }
            })
            .shared
            .identity;
        let out = TrackOut::new(track_id, payload_type(info), dest, rtp);
        let answer = transport::answer(&dest, rtp.ssrc, self.ctx.udp.as_ref().map_or((0, 0), |u| u.ports));
        session.tracks.retain(|t| t.id != track_id);
        // Room for exactly this track (a vector's first growth makes room for 4, 416 bytes
        // a viewer would hold for as long as it watches).
        session.tracks.reserve_exact(1);
        session.tracks.push(out);
        session.viewer = Some(viewer);
        Response::ok()
            .header("Transport", answer)
            .header("Session", format!("{id};timeout={}", self.settings.session_timeout.as_secs()))
    }

    /// Puts a viewer back where a failed SETUP found it.
    fn park(&mut self, session: Option<&str>, key: &StreamKey, viewer: Viewer) {
        match session.and_then(|id| self.sessions.get_mut(id)) {
            Some(s) => s.viewer = Some(viewer),
            None => {
                let expires = Instant::now() + self.settings.request_timeout;
                self.described.insert(key.clone(), (viewer, expires));
            }
        }
    }

    async fn play(&mut self, req: &Request) -> Result<(), String> {
        let id = match self.session_of(req) {
            Err(r) => return self.respond(req, r).await,
            // PLAY before any SETUP (RFC 2326: PLAY is not valid in the Init state).
            Ok(None) => return self.respond(req, Response::new(455, "Method Not Valid in This State")).await,
            Ok(Some(id)) => id,
        };
        let base = content_base(&req.uri);
        let tcp_busy = self.sessions.iter().any(|(sid, s)| *sid != id && matches!(s.playing, Playing::Tcp));
        let udp = self.ctx.udp.clone();
        let liveness = self.liveness.clone();
        let closed = self.closed.clone();
        let stall = self.settings.stall;
        let timeout = self.settings.session_timeout;
        let Some(s) = self.sessions.get_mut(&id) else { return Ok(()) };
        let session_hdr = format!("{id};timeout={}", timeout.as_secs());
        if !matches!(s.playing, Playing::No) {
            return self.respond(req, Response::ok().header("Session", session_hdr)).await;
        }
        if s.tracks.is_empty() || s.viewer.is_none() {
            return self.respond(req, Response::new(455, "Method Not Valid in This State")).await;
        }
        let all_tcp = s.tracks.iter().all(|t| matches!(t.dest, Dest::Tcp { .. }));
        let all_udp = s.tracks.iter().all(|t| matches!(t.dest, Dest::Udp { .. }));
        if !all_tcp && !all_udp {
            return self
                .respond(
                    req,
                    Response::new(461, "Unsupported Transport").body("text/plain", "mixed TCP and UDP tracks\n"),
                )
                .await;
        }
        if all_tcp && tcp_busy {
            return self
                .respond(
                    req,
                    Response::new(455, "Method Not Valid in This State")
                        .body("text/plain", "one interleaved session per connection\n"),
                )
                .await;
        }
        let (Some(mut viewer), Some(rtp)) = (s.viewer.take(), s.rtp.take()) else { return Ok(()) };
        // Start from the newest keyframe, not wherever DESCRIBE left the cursor.
        viewer.cursor = viewer.session.log.subscribe();
        let from = viewer.cursor.position();
        let rtp_info: Vec<String> = s
            .tracks
            .iter()
            .map(|t| {
                let first = viewer.session.log.with_packager(&rtp.attached, |p| first_rtp_from(p, from, t.id));
                let (seq, pts) = first.unwrap_or((rtp.shared.identity.first_seq, None));
                let mut info = format!("url={base}trackID={};seq={seq}", t.id);
                if let Some(pts) = pts {
                    info.push_str(&format!(";rtptime={}", (pts as u32).wrapping_add(t.ts_offset)));
                }
                info
            })
            .collect();
        let response = Response::ok()
            .header("Session", session_hdr)
            .header("Range", "npt=0.000-")
            .header("RTP-Info", rtp_info.join(","))
            .encode(Some(req.cseq));
        let media = MediaOut { viewer, tracks: std::mem::take(&mut s.tracks), rtp };
        info!(peer = %self.peer, stream = %s.key, session = %id, tcp = all_tcp, "rtsp viewer playing");
        if all_tcp {
            s.playing = Playing::Tcp;
            return self.send(WriterCmd::Play { session: id, media: Box::new(media), response }).await;
        }
        let Some(udp) = udp else { return Ok(()) };
        let cancel = closed.child_token();
        let rtcp: Vec<SocketAddr> = media
            .tracks
            .iter()
            .filter_map(|t| match t.dest {
                Dest::Udp { rtcp, .. } => Some(rtcp),
                Dest::Tcp { .. } => None,
            })
            .collect();
        for a in &rtcp {
            udp.watch(*a, liveness.clone());
        }
        s.playing = Playing::Udp { cancel: cancel.clone(), rtcp };
        self.touch();
        self.send(WriterCmd::Response(response)).await?;
        self.ctx.tasks.spawn(udp_sender(media, udp, cancel, closed, liveness, timeout, stall));
        Ok(())
    }

    async fn teardown(&mut self, req: &Request) -> Result<(), String> {
        let id = match self.session_of(req) {
            Err(r) => return self.respond(req, r).await,
            Ok(None) => return self.respond(req, Response::new(454, "Session Not Found")).await,
            Ok(Some(id)) => id,
        };
        let response = Response::ok().encode(Some(req.cseq));
        if let Some(s) = self.sessions.remove(&id) {
            info!(peer = %self.peer, stream = %s.key, session = %id, "rtsp teardown");
            match s.playing {
                Playing::Tcp => {
                    return self.send(WriterCmd::Stop { session: id, response }).await;
                }
                Playing::Udp { cancel, rtcp } => self.stop_udp(&cancel, &rtcp),
                Playing::No => {}
            }
        }
        self.send(WriterCmd::Response(response)).await
    }

    fn stop_udp(&self, cancel: &CancellationToken, rtcp: &[SocketAddr]) {
        cancel.cancel();
        if let Some(udp) = &self.ctx.udp {
            for a in rtcp {
                udp.unwatch(*a, &self.liveness);
            }
        }
    }

    fn close_all(&mut self) {
        for (_, s) in self.sessions.take_all() {
            if let Playing::Udp { cancel, rtcp } = &s.playing {
                self.stop_udp(cancel, rtcp);
            }
        }
        self.described.clear();
        self.closed.cancel();
    }
}

const PUBLIC: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

fn not_found(why: &str) -> Response {
    Response::new(404, "Not Found").body("text/plain", format!("{why}\n"))
}

fn not_enough(why: &str) -> Response {
    Response::new(453, "Not Enough Bandwidth").body("text/plain", format!("{why}\n"))
}

fn unavailable(why: &str) -> Response {
    Response::new(503, "Service Unavailable").body("text/plain", format!("{why}\n"))
}

/// `rtsp://host[:port]/node/stream[/trackID=N][?query]` (or the path alone) → the stream and
/// the track.
pub(crate) fn parse_uri(uri: &str) -> Option<(StreamKey, Option<u8>)> {
    let path = match uri.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => uri,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (node, stream, track) = match segments.as_slice() {
        [node, stream] => (*node, *stream, None),
        [node, stream, last] => {
            let n = last.strip_prefix("trackID=").or_else(|| last.strip_prefix("track"))?.parse::<u8>().ok()?;
            (*node, *stream, Some(n))
        }
        _ => return None,
    };
    let valid = |n: &str| mediamesh_tunnel::wire::validate_name(n).is_ok();
    (valid(node) && valid(stream)).then(|| (StreamKey::new(node, stream), track))
}

/// The stream's base URL (with a trailing slash) for relative track controls.
fn content_base(uri: &str) -> String {
    let mut base = uri.split(['?', '#']).next().unwrap_or_default().to_owned();
    if let Some(i) = base.rfind("/trackID=") {
        base.truncate(i);
    }
    if !base.ends_with('/') {
        base.push('/');
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let (k, t) = parse_uri("rtsp://hub:8554/edge-1/cam1").unwrap();
        assert_eq!((k.to_string(), t), ("edge-1/cam1".into(), None));
        assert_eq!(parse_uri("rtsp://hub/edge-1/cam1/trackID=1?x=y").unwrap().1, Some(1));
        assert_eq!(parse_uri("/edge-1/cam1/").unwrap().0.stream, "cam1");
        assert!(parse_uri("rtsp://hub/only-one").is_none());
        assert!(parse_uri("rtsp://hub/a/b/c/d").is_none());
        assert!(parse_uri("rtsp://hub/../etc/x").is_none());
        assert_eq!(content_base("rtsp://h/a/b"), "rtsp://h/a/b/");
        assert_eq!(content_base("rtsp://h/a/b/trackID=0"), "rtsp://h/a/b/");
    }
}
