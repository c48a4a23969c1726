//! A minimal RTSP player for tests: DESCRIBE, SETUP of the video track over TCP interleaved,
//! PLAY, then the RTP packets as they arrive, so tests can check sequence numbers, timestamps
//! and keyframes on the wire.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One RTP packet (the fields tests look at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit (last packet of a frame).
    pub marker: bool,
    /// Whether this packet begins an H.264 IDR picture or carries its SPS.
    pub starts_keyframe: bool,
}

/// What the player read next.
#[derive(Debug)]
pub enum RtspEvent {
    /// An RTP packet of the video track.
    Rtp(RtpPacket),
    /// An RTCP BYE: the stream ended.
    Bye,
    /// The server closed the connection.
    Closed,
}

/// A playing RTSP session over TCP.
#[derive(Debug)]
pub struct RtspPlayer {
    tcp: TcpStream,
    buf: BytesMut,
}

impl RtspPlayer {
    /// Connects to `url` (`rtsp://host:port/node/stream`) and plays its first track.
    pub async fn play(url: &str) -> std::io::Result<Self> {
        let authority = url.strip_prefix("rtsp://").and_then(|r| r.split('/').next()).unwrap_or_default();
        let tcp = TcpStream::connect(authority).await?;
        let mut p = Self { tcp, buf: BytesMut::new() };
        let (status, _, _) =
            p.request(&format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n")).await?;
        if status != 200 {
            return Err(std::io::Error::other(format!("DESCRIBE answered {status}")));
        }
        let (status, headers, _) = p
            .request(&format!(
                "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
            ))
            .await?;
        if status != 200 {
            return Err(std::io::Error::other(format!("SETUP answered {status}")));
        }
        let session = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("session"))
            .map(|(_, v)| v.split(';').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let (status, _, _) = p.request(&format!("PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n")).await?;
        if status != 200 {
            return Err(std::io::Error::other(format!("PLAY answered {status}")));
        }
        Ok(p)
    }

    async fn request(&mut self, head: &str) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
        self.tcp.write_all(format!("{head}\r\n").as_bytes()).await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
                let headers: Vec<(String, String)> =
                    lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().into(), v.trim().into())).collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    self.fill().await?;
                }
                let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                self.buf.advance(end + 4 + len);
                return Ok((status, headers, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let n = self.tcp.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// The next packet of the video track (RTCP sender reports are skipped); `None` if nothing
    /// arrives within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<RtspEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while self.buf.len() >= 4 && self.buf[0] == b'$' {
                let channel = self.buf[1];
                let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if self.buf.len() < 4 + len {
                    break;
                }
                self.buf.advance(4);
                let pkt = self.buf.split_to(len);
                if channel == 1 {
                    // RTCP: a compound packet may hold a BYE (packet type 203).
                    let mut i = 0;
                    while i + 4 <= pkt.len() {
                        if pkt[i + 1] == 203 {
                            return Some(RtspEvent::Bye);
                        }
                        i += 4 * (usize::from(u16::from_be_bytes([pkt[i + 2], pkt[i + 3]])) + 1);
                    }
                    continue;
                }
                if channel == 0 && pkt.len() >= 13 {
                    return Some(RtspEvent::Rtp(parse(&pkt)));
                }
            }
            if !self.buf.is_empty() && self.buf[0] != b'$' {
                // A stray response (none expected while playing): skip to the next frame.
                let skip = self.buf.iter().position(|b| *b == b'$').unwrap_or(self.buf.len());
                self.buf.advance(skip);
                continue;
            }
            match tokio::time::timeout_at(deadline, self.tcp.read_buf(&mut self.buf)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(RtspEvent::Closed),
                Ok(Ok(_)) => {}
            }
        }
    }
}

fn parse(p: &[u8]) -> RtpPacket {
    let seq = u16::from_be_bytes([p[2], p[3]]);
    let timestamp = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    let marker = p[1] & 0x80 != 0;
    let cc = usize::from(p[0] & 0x0f);
    let payload = p.get(12 + 4 * cc..).unwrap_or_default();
    let nal = payload.first().map_or(0, |b| b & 0x1f);
    let starts_keyframe = match nal {
        5 | 7 => true,
        // STAP-A: the first aggregated NAL unit follows a 2-byte size.
        24 => payload.get(3).is_some_and(|b| matches!(b & 0x1f, 5 | 7)),
        // FU-A: start bit and the fragmented type.
        28 => payload.get(1).is_some_and(|b| b & 0x80 != 0 && b & 0x1f == 5),
        _ => false,
    };
    RtpPacket { seq, timestamp, marker, starts_keyframe }
}
