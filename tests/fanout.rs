//! Stream reuse, the linger timer and slow viewers, with a real hub and edge over mutual TLS
//! on loopback, the built-in H.264 test pattern, and WebSocket viewers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mediamesh_edge::stats::EdgeStats;
use mediamesh_hub::client::{ConnectOptions, ViewerClient, ViewerItem};
use mediamesh_testkit::{Fixture, assert_consecutive, counters, read_frames, wait_until};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_viewers_share_one_upstream() {
    let fx = Fixture::builder().start().await;
    let (a, b, c) = tokio::join!(fx.viewer("edge-1", "cam1"), fx.viewer("edge-1", "cam1"), fx.viewer("edge-1", "cam1"));
    let mut viewers = [a.unwrap(), b.unwrap(), c.unwrap()];
    for v in &mut viewers {
        let frames = read_frames(v, 40).await;
        assert!(frames[0].flags.is_keyframe(), "every viewer starts at a keyframe");
        assert_consecutive(&counters(&frames));
    }
    let stats = fx.edge_stats();
    assert_eq!(EdgeStats::get(&stats.add_video), 1, "exactly one AddVideo for three viewers");
    assert_eq!(EdgeStats::get(&stats.uplinks_active), 1, "one upstream");
    assert_eq!(EdgeStats::get(&stats.sources_started), 1, "one source");
    let sessions = fx.hub.sessions().snapshot();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].viewer_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_reuses_the_upstream_then_removes_it() {
    let fx = Fixture::builder().start().await;
    let mut v = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut v, 10).await;
    let session_id = fx.hub.sessions().snapshot()[0].id;
    v.close().await;

    // Back within the linger period (1 s): the same upstream, no second AddVideo.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut v = fx.viewer("edge-1", "cam1").await.unwrap();
    let again = read_frames(&mut v, 10).await;
    assert!(again[0].flags.is_keyframe());
    let stats = fx.edge_stats().clone();
    assert_eq!(EdgeStats::get(&stats.add_video), 1, "reused within linger");
    assert_eq!(fx.hub.sessions().snapshot()[0].id, session_id, "the same session");
    let left = Instant::now();
    v.close().await;

    // Past the linger period: RemoveVideo, the source stopped, the session gone.
    wait_until("RemoveVideo", Duration::from_secs(5), || EdgeStats::get(&stats.remove_video) == 1).await;
    let waited = left.elapsed();
    assert!(waited >= Duration::from_millis(900), "RemoveVideo only after the linger period, got {waited:?}");
    wait_until("the source to stop", Duration::from_secs(5), || {
        EdgeStats::get(&stats.sources_stopped) == 1 && EdgeStats::get(&stats.uplinks_active) == 0
    })
    .await;
    let hub_sessions = fx.hub.sessions().clone();
    wait_until("the session to close", Duration::from_secs(5), move || hub_sessions.snapshot().is_empty()).await;

    // A new viewer after that starts a new upstream.
    let mut v = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut v, 5).await;
    assert_eq!(EdgeStats::get(&stats.add_video), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_costs_others_nothing() {
    const CAP: usize = 256 * 1024;
    let fx = Fixture::builder()
        .hub(|h| {
            h.max_frame_bytes = CAP as u32;
            h.frame_log.max_bytes = CAP;
            h.viewer_max_lag_bytes = CAP;
            h.viewer_send_buffer_bytes = 64 * 1024;
        })
        .edge(|e| {
            // A heavier stream (3 Mbit/s) so the stuck viewer falls far behind quickly.
            let tp = e.streams.get_mut("cam1").unwrap().test_pattern_mut().unwrap();
            (tp.width, tp.height, tp.bitrate_kbps) = (640, 360, 3000);
        })
        .start()
        .await;
    let mut healthy = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut healthy, 5).await;
    // The stuck viewer: a tiny receive buffer, and it never reads.
    let opts = ConnectOptions { recv_buffer: Some(4096), ..Default::default() };
    let stuck = ViewerClient::connect(&fx.ws_url("edge-1", "cam1"), &opts).await.unwrap();

    let window = Duration::from_secs(6);
    let t0 = Instant::now();
    let mut frames = Vec::new();
    while t0.elapsed() < window {
        frames.extend(read_frames(&mut healthy, 5).await);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let c = counters(&frames);
    assert_consecutive(&c);
    let fps = c.len() as f64 / elapsed;
    assert!(fps > 20.0, "the healthy viewer kept the source rate (25 fps), got {fps:.1}");
    let now = mediamesh_testkit::unix_micros();
    let last_age_ms = now.saturating_sub(frames.last().unwrap().capture_us) as f64 / 1000.0;
    assert!(last_age_ms < 1000.0, "the healthy viewer is live: last frame {last_age_ms:.0} ms old");

    let session = &fx.hub.sessions().snapshot()[0];
    let pushed = session.stats.bytes_in.get() as usize;
    assert!(pushed > 4 * CAP, "the test must push far more than the caps ({pushed} bytes)");
    let log = session.log.stats();
    assert!(log.bytes <= 2 * CAP, "the frame log stays bounded: {} bytes", log.bytes);
    let mut viewers = session.viewers();
    assert_eq!(viewers.len(), 2);
    viewers.sort_by_key(|v| v.frames.get());
    let (stuck_stats, healthy_stats) = (&viewers[0], &viewers[1]);
    eprintln!(
        "pushed {pushed} bytes; stuck viewer {} frames {} bytes, healthy {} frames {} bytes",
        stuck_stats.frames.get(),
        stuck_stats.bytes.get(),
        healthy_stats.frames.get(),
        healthy_stats.bytes.get()
    );
    assert!(stuck_stats.frames.get() < healthy_stats.frames.get() / 2, "one viewer is stuck");
    let pinned = stuck_stats.pending_bytes.load(Relaxed) as usize;
    assert!(pinned <= CAP, "the stuck viewer pins at most one batch: {pinned} bytes");

    // Once it reads again it is resynchronised at a keyframe instead of replaying the backlog.
    let mut stuck = stuck;
    let mut skipped = 0;
    let first = loop {
        match tokio::time::timeout(Duration::from_secs(10), stuck.next()).await.unwrap().unwrap().unwrap() {
            ViewerItem::Skip(n) => skipped += n,
            ViewerItem::Frame(f) if skipped > 0 => break f,
            _ => {}
        }
    };
    assert!(skipped > 0, "the backlog was skipped");
    assert!(first.flags.is_keyframe(), "delivery resumes at a keyframe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_is_disconnected_and_the_stream_lingers_out() {
    let fx = Fixture::builder()
        .hub(|h| {
            h.viewer_write_timeout = mediamesh_tunnel::settings::Seconds::new(1);
            h.viewer_send_buffer_bytes = 64 * 1024;
        })
        .edge(|e| {
            let tp = e.streams.get_mut("cam1").unwrap().test_pattern_mut().unwrap();
            (tp.width, tp.height, tp.bitrate_kbps) = (640, 360, 3000);
        })
        .start()
        .await;
    // The only viewer, and it never reads.
    let opts = ConnectOptions { recv_buffer: Some(4096), ..Default::default() };
    let stuck = ViewerClient::connect(&fx.ws_url("edge-1", "cam1"), &opts).await.unwrap();
    let sessions = fx.hub.sessions().clone();
    wait_until("the session to start", Duration::from_secs(10), || !sessions.snapshot().is_empty()).await;
    let session = sessions.snapshot()[0].clone();
    let t0 = Instant::now();
    wait_until("the stalled viewer to be dropped", Duration::from_secs(15), || session.viewer_count() == 0).await;
    assert!(t0.elapsed() >= Duration::from_millis(900), "dropped only after the write timeout");
    // With no viewer left the stream lingers out: RemoveVideo, source stopped.
    let stats = fx.edge_stats().clone();
    wait_until("RemoveVideo", Duration::from_secs(10), || EdgeStats::get(&stats.remove_video) == 1).await;
    wait_until("the session to close", Duration::from_secs(5), || sessions.snapshot().is_empty()).await;
    drop(stuck);
}

/// Capture-to-viewer ages (ms) of the frames a viewer reads over `window`.
async fn ages(v: &mut ViewerClient, window: Duration) -> Vec<f64> {
    let t0 = Instant::now();
    let mut ages = Vec::new();
    while t0.elapsed() < window {
        // One at a time, so each age is taken when its frame arrives.
        let f = read_frames(v, 1).await.remove(0);
        ages.push(mediamesh_testkit::unix_micros().saturating_sub(f.capture_us) as f64 / 1000.0);
    }
    ages.sort_by(f64::total_cmp);
    ages
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_viewer_changes_no_one_elses_frame_ages_and_is_dropped_with_a_reason() {
    let fx = Fixture::builder()
        .hub(|h| {
            h.viewer_write_timeout = mediamesh_tunnel::settings::Seconds::new(2);
            h.viewer_send_buffer_bytes = 64 * 1024;
        })
        .edge(|e| {
            let tp = e.streams.get_mut("cam1").unwrap().test_pattern_mut().unwrap();
            (tp.width, tp.height, tp.bitrate_kbps) = (640, 360, 3000);
        })
        .start()
        .await;
    let mut healthy = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut healthy, 5).await;
    let before = ages(&mut healthy, Duration::from_secs(4)).await;

    let opts = ConnectOptions { recv_buffer: Some(4096), ..Default::default() };
    let stuck = ViewerClient::connect(&fx.ws_url("edge-1", "cam1"), &opts).await.unwrap();
    let t0 = Instant::now();
    let during = ages(&mut healthy, Duration::from_secs(5)).await;
    let (b50, b95, d50, d95) = (pct(&before, 0.5), pct(&before, 0.95), pct(&during, 0.5), pct(&during, 0.95));
    eprintln!(
        "healthy viewer's frame age: before p50 {b50:.1} p95 {b95:.1} ms; with a stuck viewer p50 {d50:.1} p95 {d95:.1} ms"
    );
    assert!(d95 <= (2.0 * b95).max(b95 + 30.0), "ages unchanged: p95 {b95:.1} -> {d95:.1} ms");

    let session = fx.hub.sessions().snapshot()[0].clone();
    wait_until("the stuck viewer to be dropped", Duration::from_secs(15), || session.viewer_count() == 1).await;
    let dropped_after = t0.elapsed();
    assert!(dropped_after >= Duration::from_secs(2), "only after viewerWriteTimeout: {dropped_after:?}");
    let (status, metrics) = mediamesh_testkit::http::get(fx.hub.stream_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("mediamesh_viewer_disconnects_total{protocol=\"ws\",reason=\"stalled\"} 1"), "{metrics}");
    let lines = mediamesh_testkit::logged(&["websocket viewer left", "stalled: the viewer stopped reading"]);
    assert_eq!(lines.len(), 1, "the reason is in the log");
    eprintln!("{}", lines[0]);
    read_frames(&mut healthy, 10).await;
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_too_slow_for_the_stream_is_let_go_with_a_reason() {
    const CAP: usize = 256 * 1024;
    let fx = Fixture::builder()
        .hub(|h| {
            h.max_frame_bytes = CAP as u32;
            h.viewer_max_lag_bytes = CAP;
            h.viewer_send_buffer_bytes = 32 * 1024;
            h.viewer_max_resyncs = 3;
        })
        .edge(|e| {
            let tp = e.streams.get_mut("cam1").unwrap().test_pattern_mut().unwrap();
            (tp.width, tp.height, tp.bitrate_kbps) = (640, 360, 3000);
        })
        .start()
        .await;
    let mut healthy = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut healthy, 5).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut frames = Vec::new();
            while !stop.load(Relaxed) {
                frames.extend(read_frames(&mut healthy, 1).await);
            }
            frames
        }
    });
    // Reads one message every 100 ms: far slower than a 3 Mbit/s stream.
    let opts = ConnectOptions { recv_buffer: Some(8192), ..Default::default() };
    let mut slow = ViewerClient::connect(&fx.ws_url("edge-1", "cam1"), &opts).await.unwrap();
    let t0 = Instant::now();
    let mut skips = 0;
    let reason = loop {
        assert!(t0.elapsed() < Duration::from_secs(60), "the slow viewer was never let go");
        tokio::time::sleep(Duration::from_millis(100)).await;
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await.unwrap() {
            Ok(Some(ViewerItem::Skip(_))) => skips += 1,
            Ok(Some(ViewerItem::End(r))) => break r,
            Ok(Some(_)) => {}
            other => panic!("closed without a reason: {other:?}"),
        }
    };
    eprintln!("let go after {:?} and {skips} skip events: {reason}", t0.elapsed());
    assert!(reason.contains("too slow for the stream"), "{reason}");
    assert!(skips >= 2, "it was resynchronised first");
    let (_, metrics) = mediamesh_testkit::http::get(fx.hub.stream_addr, "/metrics").await;
    assert!(metrics.contains("mediamesh_viewer_disconnects_total{protocol=\"ws\",reason=\"behind\"} 1"), "{metrics}");
    // The healthy viewer never noticed.
    stop.store(true, Relaxed);
    let frames = reader.await.unwrap();
    assert!(frames.len() > 50);
    assert_consecutive(&counters(&frames));
}

/// The viewer's reader hands pongs and the close reply to its writer through the connection's
/// mailbox; both must reach a real WebSocket client while media flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_viewer_gets_its_pong_and_a_close_reply_while_media_flows() {
    use futures_util::SinkExt;

    let fx = Fixture::builder().start().await;
    let tcp = tokio::net::TcpStream::connect(fx.hub.stream_addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(fx.ws_url("edge-1", "cam1"), tcp).await.unwrap();
    for _ in 0..5 {
        first_message(&mut ws, Duration::from_secs(10), "media", |m| matches!(m, Message::Binary(_)).then_some(()))
            .await;
    }
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    let pong = first_message(&mut ws, Duration::from_secs(5), "the pong", pong).await;
    assert_eq!(&pong[..], b"are you there");

    ws.send(Message::Close(None)).await.unwrap();
    let reply = first_message(&mut ws, Duration::from_secs(5), "a close reply", |m| match m {
        Message::Close(frame) => Some(frame),
        _ => None,
    })
    .await;
    assert_eq!(reply.map(|f| u16::from(f.code)), Some(1000), "a normal closure");
    let sessions = fx.hub.sessions().clone();
    wait_until("the viewer to leave", Duration::from_secs(5), move || {
        sessions.snapshot().iter().all(|s| s.viewer_count() == 0)
    })
    .await;
}

/// A client may send a frame right behind its upgrade request, before the 101 arrives; the hub
/// has then read it with the request, and must still answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_sent_with_the_upgrade_request_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    let fx = Fixture::builder().start().await;
    let mut tcp = tokio::net::TcpStream::connect(fx.hub.stream_addr).await.unwrap();
    let mut out = format!(
        "GET /api/v1/nodes/edge-1/streams/cam1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        fx.hub.stream_addr
    )
    .into_bytes();
    // A masked ping (RFC 6455 §5.2): FIN + opcode 9, mask bit + length 5, the key, the payload.
    let key = [1u8, 2, 3, 4];
    out.extend_from_slice(&[0x89, 0x80 | 5]);
    out.extend_from_slice(&key);
    out.extend(b"early".iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    tcp.write_all(&out).await.unwrap();

    let mut head = Vec::new();
    let end = loop {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the hub closed before answering the upgrade");
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let mut ws =
        tokio_tungstenite::WebSocketStream::from_partially_read(tcp, head[end..].to_vec(), Role::Client, None).await;
    let pong = first_message(&mut ws, Duration::from_secs(5), "the pong", pong).await;
    assert_eq!(&pong[..], b"early");
}

/// The first message `pick` accepts within `within`; the others (media, mostly) are passed over.
/// One deadline for the whole wait: media keeps arriving, so a timeout per message never fires.
async fn first_message<S, T>(ws: &mut S, within: Duration, what: &str, pick: impl Fn(Message) -> Option<T>) -> T
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        match next.unwrap_or_else(|_| panic!("{what} within {within:?}")) {
            Some(Ok(m)) => {
                if let Some(t) = pick(m) {
                    return t;
                }
            }
            other => panic!("the connection ended before {what}: {other:?}"),
        }
    }
}

/// A pong's payload.
fn pong(m: Message) -> Option<tokio_tungstenite::tungstenite::Bytes> {
    match m {
        Message::Pong(p) => Some(p),
        _ => None,
    }
}
