//! The bench's viewers: cheap in-process WebSocket and RTSP clients (a thousand fit beside the
//! hub on two cores), and `ffmpeg -c copy` readers, the same client for every server.
//!
//! Every viewer reads the test-pattern stamp (frame counter, capture time) of each frame it
//! receives: latency is receipt time minus capture time, and a jump in the counter is a missed
//! frame. The builtin clients parse only what they need (frame boundaries and stamps) and skip
//! payload bytes without copying them.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use mediamesh_media::h264::sei::{TEST_PATTERN_UUID, TestPatternStamp, read_stamp};
use mediamesh_media::h264::{NAL_SEI, unescape_rbsp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stamped::{self, Inbox};

/// Where the viewers are in a run.
#[derive(Debug, Default)]
pub struct Phase {
    /// 0 warming up, 1 measuring, 2 done.
    state: AtomicU8,
    /// Viewers that received their first frame.
    pub started: AtomicUsize,
}

impl Phase {
    pub fn measure(&self) {
        self.state.store(1, Ordering::Relaxed);
    }
    pub fn finish(&self) {
        self.state.store(2, Ordering::Relaxed);
    }
    fn measuring(&self) -> bool {
        self.state.load(Ordering::Relaxed) == 1
    }
    fn done(&self) -> bool {
        self.state.load(Ordering::Relaxed) == 2
    }
}

/// What one viewer saw while measuring.
#[derive(Debug, Default)]
pub struct Tally {
    /// Frames received.
    pub frames: u64,
    /// Video bytes received (H.264 payload, without protocol framing).
    pub bytes: u64,
    /// Frames the counter skipped.
    pub missed: u64,
    /// Capture → receipt by the viewer's task, microseconds, one per stamped frame.
    pub latency_us: Vec<u32>,
    /// Capture → arrival in the viewer's socket (the kernel's receive timestamp), where the
    /// client reads it (builtin WebSocket and RTSP/TCP viewers).
    pub socket_latency_us: Vec<u32>,
    /// Why the viewer stopped early, if it did.
    pub error: Option<String>,
    last_counter: Option<u64>,
    started: bool,
}

impl Tally {
    pub(crate) fn frame(
        &mut self,
        phase: &Phase,
        stamp: Option<TestPatternStamp>,
        now_us: u64,
        arrived_us: Option<u64>,
    ) {
        if !self.started {
            self.started = true;
            phase.started.fetch_add(1, Ordering::Relaxed);
        }
        if !phase.measuring() {
            self.last_counter = stamp.map(|s| s.counter);
            return;
        }
        self.frames += 1;
        if let Some(s) = stamp {
            if let Some(last) = self.last_counter
                && s.counter > last + 1
            {
                self.missed += s.counter - last - 1;
            }
            self.last_counter = Some(s.counter);
            let us = |at: u64| at.saturating_sub(s.capture_us).min(u64::from(u32::MAX)) as u32;
            self.latency_us.push(us(now_us));
            if let Some(at) = arrived_us {
                self.socket_latency_us.push(us(at));
            }
        }
    }

    pub(crate) fn bytes(&mut self, phase: &Phase, n: usize) {
        if phase.measuring() {
            self.bytes += n as u64;
        }
    }
}

/// Which client a viewer is.
#[derive(Debug, Clone)]
pub enum Client {
    /// Our WebSocket format over plain TCP: `ws://host:port/path`.
    Ws { addr: String, path: String },
    /// RTSP, RTP interleaved on the TCP connection.
    RtspTcp { url: String },
    /// RTSP, RTP over UDP.
    RtspUdp { url: String },
    /// `ffmpeg -i URL -c copy -f h264 pipe:1`, its output scanned for stamps.
    Ffmpeg { url: String },
    /// A WHEP session (a str0m peer connection): `http://host:port/…/whep`.
    Whep { url: String },
    /// A viewer of Janus's streaming plugin over its HTTP API (the same str0m receiver).
    Janus { addr: String, mountpoint: u64 },
}

impl Client {
    /// Starts one viewer; it runs until it fails or is stopped.
    pub fn spawn(self, phase: Arc<Phase>) -> Running {
        let (to, tally) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut report = Report { tally: Tally::default(), to: Some(to) };
            let t = &mut report.tally;
            let r = match &self {
                Client::Ws { addr, path } => ws(addr, path, &phase, t).await,
                Client::RtspTcp { url } => rtsp_tcp(url, &phase, t).await,
                Client::RtspUdp { url } => rtsp_udp(url, &phase, t).await,
                Client::Ffmpeg { url } => ffmpeg(url, &phase, t).await,
                Client::Whep { url } => crate::webrtc_viewers::whep(url, &phase, t).await,
                Client::Janus { addr, mountpoint } => crate::webrtc_viewers::janus(addr, *mountpoint, &phase, t).await,
            };
            if let Err(e) = r
                && !phase.done()
            {
                t.error = Some(format!("{e:#}"));
            }
        });
        Running { task, tally }
    }
}

/// A viewer started by [`Client::spawn`].
///
/// It is stopped by aborting its task rather than by a timer it would have to poll: with a
/// thousand viewers, polling a timer beside every read measured 5 % of the viewers' CPU, taken
/// from the hub they share the machine with.
pub struct Running {
    task: tokio::task::JoinHandle<()>,
    tally: tokio::sync::oneshot::Receiver<Tally>,
}

impl Running {
    /// Stops the viewer (if it is still running) and returns what it saw.
    pub async fn stop(self) -> Tally {
        self.task.abort();
        self.tally.await.unwrap_or_default()
    }
}

/// Hands a viewer's tally over when the viewer ends, however it ends (aborted included).
struct Report {
    tally: Tally,
    to: Option<tokio::sync::oneshot::Sender<Tally>>,
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            let _ = to.send(std::mem::take(&mut self.tally));
        }
    }
}

/// Wall-clock microseconds since the Unix epoch (the clock capture stamps use).
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Reads into `buf` after its `filled` bytes; Ok(false) at end of stream or when done.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, phase: &Phase) -> anyhow::Result<bool> {
    if phase.done() {
        return Ok(false);
    }
    if buf.len() == buf.capacity() {
        buf.reserve(buf.capacity().max(4096));
    }
    Ok(r.read_buf(buf).await? > 0)
}

/// Reads an HTTP/RTSP response head (and a body of Content-Length bytes) from `s`; bytes after
/// it stay in `buf`. Interleaved RTP before the reply (GStreamer's server sends media before it
/// answers PLAY) is skipped.
async fn response(s: &mut TcpStream, buf: &mut Vec<u8>, phase: &Phase) -> anyhow::Result<(String, String)> {
    loop {
        if buf.first() == Some(&b'$') {
            if let Some(len) = buf.get(2..4).map(|l| 4 + usize::from(u16::from_be_bytes([l[0], l[1]])))
                && buf.len() >= len
            {
                buf.drain(..len);
                continue;
            }
            if !fill(s, buf, phase).await? {
                bail!("connection closed in interleaved data");
            }
            continue;
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while buf.len() < end + 4 + len {
                if !fill(s, buf, phase).await? {
                    bail!("connection closed in a response body");
                }
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            buf.drain(..end + 4 + len);
            return Ok((head, body));
        }
        if buf.len() > 64 * 1024 || !fill(s, buf, phase).await? {
            bail!("no response head");
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn ws(addr: &str, path: &str, phase: &Phase, t: &mut Tally) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    stamped::enable(&s)?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: bWVkaWFtZXNoLWJlbmNoIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let (head, _) = response(&mut s, &mut buf, phase).await?;
    if !head.starts_with("HTTP/1.1 101") {
        bail!("upgrade refused: {}", head.lines().next().unwrap_or_default());
    }
    let mut inbox = Inbox::new(&buf, 64 * 1024);
    drop(buf);
    // Payload bytes of the current message still to skip, and its stamp once complete.
    let mut skip = 0usize;
    let mut pending: Option<Option<TestPatternStamp>> = None;
    let (mut pos, mut arrived) = (0usize, None);
    loop {
        if skip > 0 {
            let n = skip.min(inbox.end - pos);
            skip -= n;
            pos += n;
            t.bytes(phase, n);
        }
        if skip == 0
            && let Some(stamp) = pending.take()
        {
            t.frame(phase, stamp, now_us(), arrived);
        }
        if skip == 0
            && let Some((hdr, opcode, len)) = ws_head(inbox.unread(pos))
        {
            if opcode == 8 {
                bail!("the hub closed the WebSocket");
            }
            let frame_hdr = mediamesh_hub::egress::ws::format::FRAME_HEADER_LEN;
            if opcode == 2 {
                if inbox.end - pos < hdr + frame_hdr {
                    inbox.compact(&mut pos);
                    if !refill(&mut inbox, &s, &mut arrived).await? {
                        return Ok(());
                    }
                    continue;
                }
                let m = &inbox.unread(pos)[hdr..hdr + frame_hdr];
                let seq = u64::from_be_bytes(m[4..12].try_into()?);
                let capture_us = u64::from_be_bytes(m[28..36].try_into()?);
                pending = Some(Some(TestPatternStamp { counter: seq, capture_us }));
                pos += hdr + frame_hdr;
                skip = len - frame_hdr;
            } else {
                pos += hdr;
                skip = len;
                pending = None;
            }
            continue;
        }
        inbox.compact(&mut pos);
        if !refill(&mut inbox, &s, &mut arrived).await? {
            return Ok(());
        }
    }
}

/// Reads more into `inbox`, noting the kernel's arrival time; false at end of stream.
async fn refill(inbox: &mut Inbox, s: &TcpStream, arrived: &mut Option<u64>) -> std::io::Result<bool> {
    let (n, at) = inbox.fill(s).await?;
    *arrived = at.or(*arrived);
    Ok(n > 0)
}

/// A WebSocket frame head at the start of `b`: (head length, opcode, payload length).
fn ws_head(b: &[u8]) -> Option<(usize, u8, usize)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (hdr, len) = match b1 & 0x7f {
        126 => (4, u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?))),
        127 => (10, u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)),
        n => (2, u64::from(n)),
    };
    Some((hdr, b0 & 0x0f, usize::try_from(len).ok()?))
}

/// An RTSP session set up and playing: the connection, what was read past the PLAY reply, and
/// the SETUP reply's head.
struct Playing {
    s: TcpStream,
    buf: Vec<u8>,
    setup: String,
}

/// DESCRIBE, SETUP of the video track with `transport`, PLAY.
async fn rtsp_play(url: &str, transport: &str, phase: &Phase) -> anyhow::Result<Playing> {
    let rest = url.strip_prefix("rtsp://").context("not an rtsp:// URL")?;
    let host = rest.split('/').next().unwrap_or_default();
    let mut s = TcpStream::connect(host).await.with_context(|| format!("connecting to {host}"))?;
    s.set_nodelay(true)?;
    stamped::enable(&s)?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut cseq = 0;
    let mut request = async |s: &mut TcpStream, buf: &mut Vec<u8>, method: &str, u: &str, extra: &str| {
        cseq += 1;
        let req = format!("{method} {u} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: mediamesh-bench\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await?;
        let (head, body) = response(s, buf, phase).await?;
        if !head.starts_with("RTSP/1.0 200") {
            bail!("{method} {u}: {}", head.lines().next().unwrap_or_default());
        }
        anyhow::Ok((head, body))
    };
    let (head, sdp) = request(&mut s, &mut buf, "DESCRIBE", url, "Accept: application/sdp\r\n").await?;
    let base = header(&head, "content-base").unwrap_or(url).trim_end_matches('/').to_owned();
    let control = sdp
        .split("\nm=")
        .skip(1)
        .find(|m| m.starts_with("video"))
        .and_then(|m| m.lines().find_map(|l| l.trim().strip_prefix("a=control:")))
        .context("no video track in the SDP")?;
    let track = if control.starts_with("rtsp://") { control.to_owned() } else { format!("{base}/{control}") };
    let (setup, _) = request(&mut s, &mut buf, "SETUP", &track, &format!("Transport: {transport}\r\n")).await?;
    let session = header(&setup, "session").context("no Session")?.split(';').next().unwrap_or_default().to_owned();
    request(&mut s, &mut buf, "PLAY", url, &format!("Session: {session}\r\n")).await?;
    Ok(Playing { s, buf, setup })
}

/// RTP over UDP: two sockets (RTP on an even port, RTCP on the next), receiver reports every
/// 5 s so the server keeps the session.
async fn rtsp_udp(url: &str, phase: &Phase, t: &mut Tally) -> anyhow::Result<()> {
    let (rtp, rtcp) = udp_pair().await?;
    let (a, b) = (rtp.local_addr()?.port(), rtcp.local_addr()?.port());
    let p = rtsp_play(url, &format!("RTP/AVP;unicast;client_port={a}-{b}"), phase).await?;
    let transport = header(&p.setup, "transport").context("no Transport in the SETUP reply")?;
    let server_rtcp: u16 = transport
        .split(';')
        .find_map(|f| f.trim().strip_prefix("server_port="))
        .and_then(|v| v.split('-').nth(1)?.parse().ok())
        .context("no server_port in the SETUP reply")?;
    let host = p.s.peer_addr()?.ip();
    // An empty receiver report (RFC 3550 §6.4.2) from SSRC = our RTP port.
    let mut rr = vec![0x80, 201, 0, 1];
    rr.extend_from_slice(&u32::from(a).to_be_bytes());
    let mut report = tokio::time::interval(Duration::from_secs(5));
    let (mut stamp, mut nal) = (None, Vec::with_capacity(256));
    let mut buf = vec![0u8; 2048];
    loop {
        if phase.done() {
            return Ok(());
        }
        tokio::select! {
            biased;
            r = rtp.recv(&mut buf) => rtp_packet(&buf[..r?], &mut stamp, &mut nal, phase, t, None),
            _ = report.tick() => {
                rtcp.send_to(&rr, (host, server_rtcp)).await?;
            }
        }
    }
}

/// Two UDP sockets on an even port and the odd one after it.
async fn udp_pair() -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::UdpSocket)> {
    for _ in 0..100 {
        let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = tokio::net::UdpSocket::bind(("127.0.0.1", port + 1)).await {
            return Ok((rtp, rtcp));
        }
    }
    bail!("no free even/odd UDP port pair")
}

async fn rtsp_tcp(url: &str, phase: &Phase, t: &mut Tally) -> anyhow::Result<()> {
    let Playing { s, buf, .. } = rtsp_play(url, "RTP/AVP/TCP;unicast;interleaved=0-1", phase).await?;
    // Room for the largest interleaved packet (4 + 65,535 bytes) and more.
    let mut inbox = Inbox::new(&buf, 128 * 1024);
    drop(buf);
    let (mut pos, mut arrived) = (0usize, None);
    let mut stamp: Option<TestPatternStamp> = None;
    let mut nal = Vec::with_capacity(256);
    loop {
        while inbox.end - pos >= 4 {
            let b = inbox.unread(pos);
            if b[0] != b'$' {
                // An RTSP message in the stream (a server request or a reply): skip its head.
                match b.windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(end) => {
                        pos += end + 4;
                        continue;
                    }
                    None => break,
                }
            }
            let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            if b.len() < 4 + len {
                break;
            }
            if b[1] == 0 {
                rtp_packet(&b[4..4 + len], &mut stamp, &mut nal, phase, t, arrived);
            }
            pos += 4 + len;
        }
        inbox.compact(&mut pos);
        if !refill(&mut inbox, &s, &mut arrived).await? {
            return Ok(());
        }
    }
}

/// Takes one H.264 RTP packet: stamps from SEI (alone or in a STAP-A), a frame at the marker.
fn rtp_packet(
    p: &[u8],
    stamp: &mut Option<TestPatternStamp>,
    nal: &mut Vec<u8>,
    phase: &Phase,
    t: &mut Tally,
    arrived: Option<u64>,
) {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return;
    }
    let mut off = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let Some(ext) = p.get(off + 2..off + 4) else { return };
        off += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let Some(payload) = p.get(off..) else { return };
    t.bytes(phase, payload.len());
    let mut take_sei = |n: &[u8]| {
        if n.first().map(|b| b & 0x1f) == Some(NAL_SEI) {
            nal.clear();
            nal.extend_from_slice(&[0, 0, 0, 1]);
            nal.extend_from_slice(n);
            if let Some(s) = read_stamp(nal) {
                *stamp = Some(s);
            }
        }
    };
    match payload.first().map(|b| b & 0x1f) {
        Some(24) => {
            let mut rest = &payload[1..];
            while rest.len() >= 2 {
                let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(unit) = rest.get(2..2 + n) else { break };
                take_sei(unit);
                rest = &rest[2 + n..];
            }
        }
        Some(_) => take_sei(payload),
        None => {}
    }
    if p[1] & 0x80 != 0 {
        t.frame(phase, stamp.take(), now_us(), arrived);
    }
}

async fn ffmpeg(url: &str, phase: &Phase, t: &mut Tally) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-fflags", "nobuffer"]);
    if url.starts_with("rtsp://") {
        cmd.args(["-rtsp_transport", "tcp"]);
    }
    cmd.args(["-i", url, "-map", "0:v", "-c", "copy", "-f", "h264", "-flush_packets", "1", "pipe:1"]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting ffmpeg (apt-get install ffmpeg)")?;
    let mut out = child.stdout.take().context("ffmpeg has no stdout")?;
    let mut buf = Vec::with_capacity(256 * 1024);
    let r = loop {
        let before = buf.len();
        match fill(&mut out, &mut buf, phase).await {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
        t.bytes(phase, buf.len() - before);
        let now = now_us();
        let (stamps, keep_from) = scan_stamps(&buf);
        for s in stamps {
            t.frame(phase, Some(s), now, None);
        }
        buf.drain(..keep_from);
        if phase.done() {
            break Ok(());
        }
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    r
}

/// Finds the test-pattern stamps in a piece of an Annex-B byte stream by their UUID; returns
/// them and where the bytes still needed begin (a stamp cut off at the end is found again once
/// more bytes arrive).
fn scan_stamps(buf: &[u8]) -> (Vec<TestPatternStamp>, usize) {
    const BODY: usize = 16;
    let uuid = &TEST_PATTERN_UUID;
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&c| c == uuid[0]) {
        let at = i + off;
        let Some(candidate) = buf.get(at..at + uuid.len()) else { return (out, at) };
        if candidate != uuid {
            i = at + 1;
            continue;
        }
        // The body may carry emulation-prevention bytes (at most 8 in 16 bytes), and the
        // UUID's final zero byte counts towards the first one: unescape from the UUID on.
        let end = buf.len().min(at + uuid.len() + BODY + 8);
        let raw = unescape_rbsp(&buf[at..end]);
        if raw.len() < uuid.len() + BODY {
            return (out, at);
        }
        let body = &raw[uuid.len()..];
        let word = |r: std::ops::Range<usize>| u64::from_be_bytes(body[r].try_into().unwrap_or_default());
        out.push(TestPatternStamp { counter: word(0..8), capture_us: word(8..16) });
        i = at + uuid.len() + BODY;
    }
    (out, buf.len())
}

#[cfg(test)]
mod tests {
    use mediamesh_media::h264::sei::write_stamp;

    use super::*;

    #[test]
    fn stamps_are_found_across_read_boundaries() {
        let stamps: Vec<TestPatternStamp> =
            (0..50).map(|n| TestPatternStamp { counter: n * 65_536, capture_us: n << 40 }).collect();
        let mut stream = Vec::new();
        for s in &stamps {
            write_stamp(*s, &mut stream);
            stream.extend_from_slice(b"\x00\x00\x00\x01\x65mmmmediamesh:tp\x00\x00\x03\x01");
        }
        for chunk in [1, 7, 33, 1000] {
            let (mut buf, mut found) = (Vec::new(), Vec::new());
            for piece in stream.chunks(chunk) {
                buf.extend_from_slice(piece);
                let (s, keep) = scan_stamps(&buf);
                found.extend(s);
                buf.drain(..keep);
            }
            assert_eq!(found, stamps, "reads of {chunk} bytes");
        }
    }

    #[test]
    fn ws_heads_of_every_length_form() {
        assert_eq!(ws_head(&[0x82, 5]), Some((2, 2, 5)));
        assert_eq!(ws_head(&[0x82, 126, 1, 0]), Some((4, 2, 256)));
        assert_eq!(ws_head(&[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]), Some((10, 1, 65_536)));
        assert_eq!(ws_head(&[0x82, 126, 1]), None);
    }
}
