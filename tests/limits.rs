//! Limits against clients that look legitimate: viewers per stream, per hub and per address,
//! how often viewers may start a node's cold streams, request head size, the WebSocket
//! `Origin`, and a viewer CA that would take edges' certificates. Beside each a viewer that
//! must not lose a frame.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mediamesh_hub::client::{ClientError, ConnectOptions, ViewerClient};
use mediamesh_testkit::{Fixture, assert_consecutive, counters, read_frames, test_pattern};

fn refused(r: Result<ViewerClient, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Refused { status, message }) => (status, message),
        Err(e) => panic!("not refused by status: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

async fn viewer(fx: &Fixture, stream: &str) -> Result<ViewerClient, ClientError> {
    ViewerClient::connect(&fx.ws_url("edge-1", stream), &ConnectOptions::default()).await
}

async fn metric(fx: &Fixture, series: &str) -> f64 {
    mediamesh_testkit::observe::metrics(fx.hub.stream_addr).await.value(series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_per_stream_and_per_address_are_capped_and_counted() {
    mediamesh_testkit::require::ffmpeg();
    let fx = Fixture::builder()
        .hub(|h| {
            h.viewers_per_stream = 3;
            h.viewers_per_ip = 5;
        })
        .edge(|e| {
            for s in ["cam2", "cam3"] {
                e.streams.insert(s.into(), test_pattern());
            }
        })
        .start()
        .await;
    let mut healthy = viewer(&fx, "cam1").await.unwrap();
    read_frames(&mut healthy, 3).await;
    // cam2 takes three viewers; the fourth is refused, over WebSocket and RTSP alike.
    let mut cam2 = Vec::new();
    for _ in 0..3 {
        cam2.push(viewer(&fx, "cam2").await.unwrap());
    }
    let (status, message) = refused(viewer(&fx, "cam2").await);
    assert_eq!(status, 503, "{message}");
    assert!(message.contains("maximum of 3 viewers"), "{message}");
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", &fx.rtsp_url("edge-1", "cam2")])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("453"), "{err}");
    // This address holds five (cam1 + three cam2 + one cam3); the sixth is refused with 429.
    let _cam3 = viewer(&fx, "cam3").await.unwrap();
    let (status, message) = refused(viewer(&fx, "cam3").await);
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("this address"), "{message}");
    // One leaves: room again.
    drop(cam2.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(viewer(&fx, "cam3").await.is_ok());
    assert_eq!(metric(&fx, "mediamesh_viewers_refused_total{reason=\"stream_full\"}").await, 2.0);
    assert_eq!(metric(&fx, "mediamesh_viewers_refused_total{reason=\"address_full\"}").await, 1.0);
    assert_consecutive(&counters(&read_frames(&mut healthy, 25).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cycling_through_cold_cameras_is_held_to_the_start_rate() {
    let fx = Fixture::builder()
        .hub(|h| h.cold_starts_per_minute = 4)
        .edge(|e| {
            for n in 2..=8 {
                e.streams.insert(format!("cam{n}"), test_pattern());
            }
        })
        .start()
        .await;
    let mut healthy = viewer(&fx, "cam1").await.unwrap();
    read_frames(&mut healthy, 3).await;
    // cam1 (the healthy viewer's) was the first start; three more are allowed this minute.
    for n in 2..=4 {
        drop(viewer(&fx, &format!("cam{n}")).await.unwrap());
    }
    let (status, message) = refused(viewer(&fx, "cam5").await);
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("too many streams of node \"edge-1\" started lately"), "{message}");
    // A stream that is running (cam1) still takes viewers.
    let mut second = viewer(&fx, "cam1").await.expect("a running stream is not a cold start");
    read_frames(&mut second, 3).await;
    assert_eq!(metric(&fx, "mediamesh_viewers_refused_total{reason=\"cold_starts\"}").await, 1.0);
    assert_consecutive(&counters(&read_frames(&mut healthy, 25).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_foreign_origins_are_refused() {
    let fx = Fixture::builder().hub(|h| h.allowed_origins = vec!["https://ops.example.com".into()]).start().await;
    let mut healthy = viewer(&fx, "cam1").await.unwrap();
    read_frames(&mut healthy, 3).await;
    let addr = fx.hub.stream_addr;
    // A 20 KiB header: 431, the connection closed.
    let big = "x".repeat(20 * 1024);
    let a = mediamesh_testkit::http::request(addr, "GET", "/api/v1/streams", &[("X-Filler", &big)]).await;
    assert_eq!(a.status, 431, "{}", a.body);
    // WebSocket upgrades: a foreign page's Origin is refused; the hub's own and a listed one pass.
    // The status line of an upgrade request (an accepted one keeps the connection open).
    let upgrade = |origin: String| async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /api/v1/nodes/edge-1/streams/cam1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Origin: {origin}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(3), tokio::io::BufReader::new(s).read_line(&mut line))
            .await
            .expect("a status line")
            .unwrap();
        line.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()).expect("a status")
    };
    assert_eq!(upgrade("https://evil.example".into()).await, 403);
    assert_eq!(upgrade(format!("http://{addr}")).await, 101);
    assert_eq!(upgrade("https://ops.example.com".into()).await, 101);
    assert_consecutive(&counters(&read_frames(&mut healthy, 25).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_ca_that_holds_the_tunnel_ca_is_refused() {
    let pki = mediamesh_testkit::TestPki::new();
    let mut cfg = Fixture::hub_config(&pki);
    cfg.tls_stream_cert_file = Some(pki.main.hub.cert.clone());
    cfg.tls_stream_private_key_file = Some(pki.main.hub.key.clone());
    cfg.tls_stream_ca_file = Some(pki.main.ca_cert.clone());
    let err = mediamesh_hub::Hub::bind(cfg).await.expect_err("edges' CA accepted for viewers").to_string();
    assert!(err.contains("tlsStreamCAFile") && err.contains("every edge's certificate"), "{err}");
}
