//! Bad RTSP input to the hub: each is answered with the right status (and, when the byte
//! stream cannot be trusted, the connection is closed), and nothing else is disturbed: a
//! viewer of the same stream keeps receiving every frame.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use mediamesh_hub::client::ViewerClient;
use mediamesh_testkit::{Fixture, assert_consecutive, counters, read_frames};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A hand-driven RTSP client.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self { s: TcpStream::connect(addr).await.unwrap(), buf: Vec::new() }
    }

    async fn send(&mut self, data: &[u8]) {
        // The server may close while a large request is still being written.
        let _ = self.s.write_all(data).await;
    }

    async fn request(&mut self, method: &str, uri: &str, cseq: u32, extra: &str) -> Resp {
        self.send(format!("{method} {uri} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n").as_bytes()).await;
        self.response().await.expect("a response")
    }

    /// The next response; `None` if the connection closed first.
    async fn response(&mut self) -> Option<Resp> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
                let headers: Vec<(String, String)> =
                    lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().into(), v.trim().into())).collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                while self.buf.len() < end + 4 + len {
                    self.read_more().await?;
                }
                let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                self.buf.drain(..end + 4 + len);
                return Some(Resp { status, headers, body });
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Option<()> {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => None,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
            Err(_) => panic!("no answer within 10 s"),
        }
    }

    /// Whether the server closes the connection within `t` (reading and discarding).
    async fn closes_within(&mut self, t: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
}

async fn setup() -> (Fixture, ViewerClient, SocketAddr, String) {
    let fx =
        Fixture::builder().hub(|h| h.rtsp.request_timeout = mediamesh_tunnel::settings::Seconds::new(1)).start().await;
    let mut v = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut v, 3).await;
    let addr = fx.hub.rtsp_addr.unwrap();
    let url = fx.rtsp_url("edge-1", "cam1");
    (fx, v, addr, url)
}

async fn still_flowing(v: &mut ViewerClient) {
    assert_consecutive(&counters(&read_frames(v, 10).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_their_status_and_close_only_their_connection() {
    let (_fx, mut v, addr, _) = setup().await;

    let mut c = Raw::connect(addr).await;
    c.send(format!("DESCRIBE rtsp://h/{} RTSP/1.0\r\nCSeq: 1\r\n\r\n", "a".repeat(100_000)).as_bytes()).await;
    assert_eq!(c.response().await.unwrap().status, 414, "a 100 KB request line");
    assert!(c.closes_within(Duration::from_secs(5)).await);

    let mut c = Raw::connect(addr).await;
    let mut many = String::from("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n");
    for i in 0..1000 {
        many.push_str(&format!("X-Header-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    c.send(many.as_bytes()).await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 400, "1,000 headers");
    // Whichever limit trips first: the header count (64) or the head size (8 KiB).
    assert!(r.body.contains("headers") || r.body.contains("request head"), "{}", r.body);
    assert!(c.closes_within(Duration::from_secs(5)).await);

    let mut c = Raw::connect(addr).await;
    c.send(b"OPTIONS * RTSP/1.0\r\nCSeq: twelve\r\n\r\n").await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 400, "a bad CSeq");
    assert!(r.body.contains("CSeq"), "{}", r.body);

    let mut c = Raw::connect(addr).await;
    assert_eq!(c.request("OPTIONS", "*", 1, "").await.status, 200);
    c.send(b"$\x01\xff\xff").await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 400, "an interleaved frame beyond the cap");
    assert!(c.closes_within(Duration::from_secs(5)).await);

    still_flowing(&mut v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_place_requests_get_their_status_and_the_connection_stays_usable() {
    let (_fx, mut v, addr, url) = setup().await;
    let tcp = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n";

    let mut c = Raw::connect(addr).await;
    assert_eq!(c.request("DESCRIBE", &url, 1, "").await.status, 200);
    assert_eq!(
        c.request("SETUP", &format!("{url}/trackID=7"), 2, tcp).await.status,
        404,
        "SETUP for a track that does not exist"
    );
    assert_eq!(c.request("PLAY", &url, 3, "").await.status, 455, "PLAY without SETUP");
    assert_eq!(c.request("OPTIONS", "*", 4, "").await.status, 200, "the connection is still usable");

    let bad_paths = [
        "rtsp://127.0.0.1/nope/cam1".to_owned(),
        url.replace("/cam1", "/nope"),
        "rtsp://127.0.0.1/only-one-segment".to_owned(),
    ];
    for (i, p) in bad_paths.iter().enumerate() {
        let r = c.request("DESCRIBE", p, 10 + i as u32, "").await;
        assert_eq!(r.status, 404, "unknown path {p}");
    }
    still_flowing(&mut v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_belongs_to_its_connection() {
    let (_fx, mut v, addr, url) = setup().await;
    let tcp = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n";
    let mut a = Raw::connect(addr).await;
    assert_eq!(a.request("DESCRIBE", &url, 1, "").await.status, 200);
    let r = a.request("SETUP", &format!("{url}/trackID=0"), 2, tcp).await;
    assert_eq!(r.status, 200);
    let session = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
    assert!(r.header("Transport").unwrap().contains("interleaved=0-1"));

    let mut b = Raw::connect(addr).await;
    let hdr = format!("Session: {session}\r\n");
    assert_eq!(b.request("PLAY", &url, 1, &hdr).await.status, 454, "another connection's session id");
    assert_eq!(b.request("TEARDOWN", &url, 2, &hdr).await.status, 454);
    assert_eq!(b.request("GET_PARAMETER", &url, 3, &hdr).await.status, 454);

    // The owner's session is untouched.
    let r = a.request("PLAY", &url, 3, &hdr).await;
    assert_eq!(r.status, 200);
    assert!(r.header("RTP-Info").is_some());
    still_flowing(&mut v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_request_timeout() {
    let (_fx, mut v, addr, _) = setup().await;
    let mut c = Raw::connect(addr).await;
    let t0 = std::time::Instant::now();
    assert!(c.closes_within(Duration::from_secs(5)).await, "closed");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "after ~1 s (the configured timeout): {took:?}"
    );
    still_flowing(&mut v).await;
}

fn viewers_of(fx: &Fixture) -> usize {
    fx.hub.sessions().get(&mediamesh_hub::session::StreamKey::new("edge-1", "cam1")).map_or(0, |s| s.viewer_count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_four_sessions_and_unclaimed_describes_expire() {
    let (fx, mut v, addr, url) = setup().await;
    let tcp = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n";
    let track = format!("{url}/trackID=0");

    let mut c = Raw::connect(addr).await;
    let mut ids = Vec::new();
    for cseq in 1..=4 {
        let r = c.request("SETUP", &track, cseq, tcp).await;
        assert_eq!(r.status, 200, "session {cseq}");
        ids.push(r.header("Session").unwrap().split(';').next().unwrap().to_owned());
    }
    let r = c.request("SETUP", &track, 5, tcp).await;
    assert_eq!(r.status, 453, "a fifth session: {}", r.body);
    let hdr = format!("Session: {}\r\n", ids[0]);
    assert_eq!(c.request("TEARDOWN", &url, 6, &hdr).await.status, 200);
    assert_eq!(c.request("SETUP", &track, 7, tcp).await.status, 200, "room again after a TEARDOWN");
    drop(c);

    // A playing (UDP) connection has no request timeout, so a DESCRIBE it never follows with
    // SETUP must let go of the stream on its own.
    let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtcp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp = format!(
        "Transport: RTP/AVP;unicast;client_port={}-{}\r\n",
        rtp.local_addr().unwrap().port(),
        rtcp.local_addr().unwrap().port()
    );
    let mut p = Raw::connect(addr).await;
    let r = p.request("SETUP", &track, 1, &udp).await;
    assert_eq!(r.status, 200);
    let hdr = format!("Session: {}\r\n", r.header("Session").unwrap().split(';').next().unwrap());
    assert_eq!(p.request("PLAY", &url, 2, &hdr).await.status, 200);
    let mut buf = [0u8; 2048];
    tokio::time::timeout(Duration::from_secs(5), rtp.recv(&mut buf)).await.expect("RTP over UDP").unwrap();
    mediamesh_testkit::wait_until("only the WS and UDP viewers", Duration::from_secs(5), || viewers_of(&fx) == 2).await;

    assert_eq!(p.request("DESCRIBE", &url, 3, "").await.status, 200);
    assert_eq!(viewers_of(&fx), 3, "the DESCRIBE joined the stream");
    // requestTimeout is 1 s in this fixture.
    mediamesh_testkit::wait_until("the described viewer expires", Duration::from_secs(5), || viewers_of(&fx) == 2)
        .await;
    assert_eq!(p.request("OPTIONS", "*", 4, "").await.status, 200, "the connection itself stays");
    tokio::time::timeout(Duration::from_secs(5), rtp.recv(&mut buf)).await.expect("RTP still flows").unwrap();
    still_flowing(&mut v).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_max_connections_per_ip() {
    let fx = Fixture::builder().hub(|h| h.rtsp.max_connections_per_ip = 3).start().await;
    let mut v = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut v, 3).await;
    let addr = fx.hub.rtsp_addr.unwrap();

    let mut held = Vec::new();
    for cseq in 1..=3 {
        let mut c = Raw::connect(addr).await;
        assert_eq!(c.request("OPTIONS", "*", cseq, "").await.status, 200);
        held.push(c);
    }
    let mut over = Raw::connect(addr).await;
    over.send(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n").await;
    assert!(over.response().await.is_none(), "the fourth connection is closed unanswered");
    let m = mediamesh_testkit::observe::metrics(fx.hub.stream_addr).await;
    let refused = m.value(r#"mediamesh_connections_refused_total{port="rtsp",reason="address_limit"}"#);
    assert_eq!(refused, Some(1.0), "the refusal is counted by port and reason");
    assert_eq!(m.value(r#"mediamesh_connections_open{port="rtsp"}"#), Some(3.0), "{m:?}");

    held.pop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Raw::connect(addr).await;
        c.send(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n").await;
        if c.response().await.is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a slot frees when a connection closes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_flowing(&mut v).await;
}
