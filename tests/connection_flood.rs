//! A thousand connections that never finish a request, on each port: half idle, half sending a
//! byte a second (slowloris). They come from one address (127.0.0.2) whose per-address limit
//! is 500, so half are refused at once; the admitted ones are closed at their deadline (2 s
//! here), however the bytes trickle. A healthy viewer from another address (127.0.0.1) watches
//! throughout and must not lose a frame.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mediamesh_hub::HubConfig;
use mediamesh_testkit::{Fixture, assert_consecutive, counters, read_frames};
use mediamesh_tunnel::settings::Seconds;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const CONNECTIONS: usize = 1000;
const PER_IP: u32 = 500;
const DEADLINE: Duration = Duration::from_secs(2);
/// Scheduling on a loaded two-core machine; far below a trickler's lifetime without deadlines.
const SLACK: Duration = Duration::from_millis(1500);

/// What a port's flood came to.
#[derive(Debug)]
struct Outcome {
    /// Closed before a deadline could apply (refused at the gate).
    refused: usize,
    /// Seconds from connecting to being closed, for the others, sorted.
    closed_after: Vec<f64>,
    /// Still open at the end (should be none).
    open: usize,
}

async fn flood(target: SocketAddr, trickle: &'static [u8]) -> Outcome {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let trickles = i % 2 == 1;
        tasks.push(tokio::spawn(async move {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
            let mut s = socket.connect(target).await.unwrap();
            let connected = Instant::now();
            let mut buf = [0u8; 1024];
            let mut next = 0;
            let give_up = connected + DEADLINE + SLACK + Duration::from_secs(3);
            loop {
                let wait = if trickles { Duration::from_secs(1) } else { give_up - Instant::now() };
                match tokio::time::timeout(wait, s.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => return Some(connected.elapsed()),
                    Ok(Ok(_)) => {} // an error answer (RTSP 408, HTTP 408): wait for the close
                    Err(_) if Instant::now() >= give_up => return None,
                    Err(_) => {
                        if s.write_all(&trickle[next % trickle.len()..][..1]).await.is_err() {
                            return Some(connected.elapsed());
                        }
                        next += 1;
                    }
                }
            }
        }));
        // Connect at about 2,000 a second: the listen backlog is not what is under test.
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut out = Outcome { refused: 0, closed_after: Vec::new(), open: 0 };
    for t in tasks {
        match t.await.unwrap() {
            None => out.open += 1,
            Some(d) if d < Duration::from_millis(300) => out.refused += 1,
            Some(d) => out.closed_after.push(d.as_secs_f64()),
        }
    }
    out.closed_after.sort_by(f64::total_cmp);
    eprintln!("flood of {target} took {:.1} s", start.elapsed().as_secs_f64());
    out
}

fn configure(h: &mut HubConfig) {
    h.handshake_timeout = Seconds::new(DEADLINE.as_secs());
    h.request_timeout = Seconds::new(DEADLINE.as_secs());
    h.rtsp.request_timeout = Seconds::new(DEADLINE.as_secs());
    h.stream_max_connections_per_ip = PER_IP;
    h.rtsp.max_connections_per_ip = PER_IP;
    h.tunnel_max_connections_per_ip = PER_IP;
}

async fn run(port: &str, target: impl Fn(&Fixture) -> SocketAddr, trickle: &'static [u8]) {
    let fx = Fixture::builder().hub(configure).start().await;
    let mut v = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut v, 3).await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let watching = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                tokio::select! {
                    f = read_frames(&mut v, 1) => seen.extend(counters(&f)),
                    () = stop.notified() => return seen,
                }
            }
        })
    };
    let target = target(&fx);
    let out = flood(target, trickle).await;
    stop.notify_one();
    let seen = watching.await.unwrap();

    let metrics = mediamesh_testkit::observe::metrics(fx.hub.stream_addr).await;
    let counted = |series: String| metrics.value(&series).unwrap_or_else(|| panic!("{series} in /metrics"));
    let refused = counted(format!(r#"mediamesh_connections_refused_total{{port="{port}",reason="address_limit"}}"#));
    let timeouts = counted(format!(r#"mediamesh_connection_timeouts_total{{port="{port}",phase="handshake"}}"#))
        + counted(format!(r#"mediamesh_connection_timeouts_total{{port="{port}",phase="request"}}"#));
    let median = out.closed_after.get(out.closed_after.len() / 2).copied().unwrap_or(0.0);
    let slowest = out.closed_after.last().copied().unwrap_or(0.0);
    eprintln!(
        "{port}: {CONNECTIONS} connections tried, {} refused at once ({refused} counted), {} closed at the \
         deadline ({timeouts} counted) after {median:.2} s median, {slowest:.2} s slowest; {} left open; the \
         healthy viewer saw {} frames",
        out.refused,
        out.closed_after.len(),
        out.open,
        seen.len()
    );
    assert_eq!(out.open, 0, "every connection is closed");
    assert_eq!(out.refused, CONNECTIONS - PER_IP as usize, "the per-address limit refuses the excess at once");
    assert_eq!(refused as usize, out.refused, "each refusal is counted");
    assert_eq!(timeouts as usize, out.closed_after.len(), "each missed deadline is counted");
    assert!(slowest <= (DEADLINE + SLACK).as_secs_f64(), "closed within the deadline: {slowest:.2} s");
    assert!(median >= DEADLINE.as_secs_f64() - 0.1, "not before the deadline either: {median:.2} s");
    assert!(seen.len() >= 25, "the viewer kept watching: {} frames", seen.len());
    assert_consecutive(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_port() {
    run("stream", |fx| fx.hub.stream_addr, b"GET /api/v1/hub HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_port() {
    run("rtsp", |fx| fx.hub.rtsp_addr.unwrap(), b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Slow: ").await;
}

/// A TLS record header that promises a 512-byte ClientHello, then its bytes one at a time: the
/// handshake cannot progress until the record is whole.
const SLOW_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_port() {
    run("tunnel", |fx| fx.hub.tunnel_addr, SLOW_CLIENT_HELLO).await;
}
