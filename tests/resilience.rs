//! Self-healing links, through the testkit's impairment proxy between the edge and the hub:
//! a hard cut, a silent cut, a slow link. Viewers (WebSocket and RTSP) must stay connected,
//! resume at a keyframe soon after the link returns, and never see time run backwards.
//! (`tests/netns.rs` does the same over real network namespaces.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mediamesh_hub::session::StreamKey;
use mediamesh_hub::session::lifecycle::Phase;
use mediamesh_testkit::observe::{metrics, percentile, watch, watch_rtp};
use mediamesh_testkit::rtsp_player::RtspPlayer;
use mediamesh_testkit::{Fixture, read_frames, wait_until};
use mediamesh_tunnel::wire::DropReason;

fn key() -> StreamKey {
    StreamKey::new("edge-1", "cam1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_cut_keeps_viewers_and_resumes_at_a_keyframe() {
    let fx = Fixture::builder().through_proxy().start().await;
    let proxy = fx.proxy.as_ref().unwrap();
    let mut ws = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut ws, 5).await;
    let mut rtsp = RtspPlayer::play(&fx.rtsp_url("edge-1", "cam1")).await.unwrap();

    let t0 = Instant::now();
    proxy.cut();
    let restored_at = t0 + Duration::from_secs(5);
    let until = restored_at + Duration::from_secs(4);
    let (seen, rtp_keys, ()) = tokio::join!(watch(&mut ws, until), watch_rtp(&mut rtsp, until), async {
        tokio::time::sleep_until(restored_at.into()).await;
        proxy.restore();
    });
    assert_eq!(seen.ended, None, "the WebSocket viewer stayed");
    seen.assert_increasing();
    let ws_resume = seen.first_keyframe_after(restored_at).expect("a keyframe after the cut") - restored_at;
    assert!(ws_resume < Duration::from_secs(3), "WebSocket keyframe {ws_resume:?} after the link returned");
    let rtp_key = rtp_keys.iter().find(|t| **t > restored_at).expect("an RTP keyframe after the cut");
    assert!(*rtp_key - restored_at < Duration::from_secs(3), "RTSP keyframe {:?} after", *rtp_key - restored_at);
    // Nothing arrived while the link was cut (beyond what was in flight when it broke).
    assert!(!seen.frames.iter().any(|f| f.at > t0 + Duration::from_millis(500) && f.at < restored_at));
    let s = fx.hub.sessions().get(&key()).unwrap();
    assert_eq!(s.phase(), Phase::Live);
    assert!(s.stats.upstream_lost.get() >= 1);
    eprintln!("resumed after {ws_resume:?} (WebSocket), {:?} (RTSP)", *rtp_key - restored_at);

    // The reconnect shows in the metrics.
    tokio::time::sleep(Duration::from_millis(1500)).await; // a Pong and an UplinkReport
    let m = metrics(fx.hub.stream_addr).await;
    let stream = "node=\"edge-1\",stream=\"cam1\"";
    assert_eq!(m.value("mediamesh_node_connects_total{node=\"edge-1\"}"), Some(2.0));
    assert_eq!(m.value(&format!("mediamesh_stream_upstream_lost_total{{{stream}}}")), Some(1.0));
    assert_eq!(m.value(&format!("mediamesh_stream_tunnel_connects_total{{{stream}}}")), Some(2.0));
    assert_eq!(m.value(&format!("mediamesh_edge_tunnel_connects{{{stream}}}")), Some(2.0));
    assert_eq!(m.value(&format!("mediamesh_stream_state{{{stream},state=\"live\"}}")), Some(1.0));
    assert!(m.value(&format!("mediamesh_tunnel_rtt_seconds{{{stream}}}")).is_some_and(|v| v > 0.0));
    assert!(m.value("mediamesh_node_rtt_seconds{node=\"edge-1\"}").is_some_and(|v| v > 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_cut_is_detected_by_the_heartbeat_within_its_bound() {
    let fx = Fixture::builder().through_proxy().start().await;
    let proxy = fx.proxy.as_ref().unwrap();
    let mut ws = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut ws, 5).await;
    let session = fx.hub.sessions().get(&key()).unwrap();
    let stats = fx.edge_stats().clone();
    let lost_before = mediamesh_edge::stats::EdgeStats::get(&stats.data_lost);

    let t0 = Instant::now();
    proxy.stall();
    // Default heartbeat: Ping every 1 s, dead after 3 s of silence; both sides must notice.
    wait_until("the hub to notice", Duration::from_secs(6), || session.phase() == Phase::Away).await;
    let hub_noticed = t0.elapsed();
    wait_until("the edge to notice", Duration::from_secs(6), || {
        mediamesh_edge::stats::EdgeStats::get(&stats.data_lost) > lost_before
    })
    .await;
    let edge_noticed = t0.elapsed();
    eprintln!("silent cut noticed after {hub_noticed:?} (hub), {edge_noticed:?} (edge)");
    assert!(hub_noticed <= Duration::from_millis(3500), "hub: {hub_noticed:?}");
    assert!(edge_noticed <= Duration::from_millis(3500), "edge: {edge_noticed:?}");

    proxy.restore();
    let seen = watch(&mut ws, Instant::now() + Duration::from_secs(4)).await;
    assert_eq!(seen.ended, None);
    assert!(seen.frames.iter().any(|f| f.keyframe), "a keyframe after the link returned");
    seen.assert_increasing();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_slower_than_the_stream_delivers_fresh_frames_with_bounded_memory() {
    let fx = Fixture::builder().through_proxy().start().await;
    let proxy = fx.proxy.as_ref().unwrap();
    proxy.update(|c| c.buffer_bytes = 16 * 1024);
    let mut ws = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut ws, 5).await;

    // The test pattern runs at 300 kbit/s; the link gets two thirds of that for 30 s, then
    // recovery takes `congestion.clearAfter` (2 s) per level.
    let t0 = Instant::now();
    let (capped_from, capped_to, lifted) =
        (t0 + Duration::from_secs(3), t0 + Duration::from_secs(33), t0 + Duration::from_secs(39));
    let end = lifted + Duration::from_secs(3);
    let (seen, report) = tokio::join!(watch(&mut ws, end), async {
        tokio::time::sleep_until(capped_from.into()).await;
        proxy.set_up_bandwidth(Some(200_000));
        tokio::time::sleep_until(capped_to.into()).await;
        let report = fx.hub.sessions().get(&key()).unwrap().stats.uplink().expect("an uplink report");
        proxy.set_up_bandwidth(None);
        report
    });
    assert_eq!(seen.ended, None);
    seen.assert_increasing();
    let (fps_before, fps_after) = (seen.fps(t0, capped_from), seen.fps(lifted, end));
    // The first seconds of the cap drain what was already on its way.
    let settled = capped_from + Duration::from_secs(3);
    let capped: Vec<_> = seen.frames.iter().filter(|f| f.at > settled && f.at <= capped_to).collect();
    let mut ages: Vec<u64> = capped.iter().map(|f| f.age_ms).collect();
    let (p50, p95, max) = (percentile(&mut ages, 0.5), percentile(&mut ages, 0.95), percentile(&mut ages, 1.0));
    let keys: Vec<Instant> = capped.iter().filter(|f| f.keyframe).map(|f| f.at).collect();
    let max_key_gap = keys.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let stats = fx.edge_stats();
    let drops: Vec<(&str, u64)> = DropReason::ALL.iter().map(|r| (r.name(), stats.drops(*r))).collect();
    eprintln!(
        "before {fps_before:.1} fps; capped: {} frames, {} keyframes, age p50 {p50} p95 {p95} max {max} ms, \
         longest keyframe gap {max_key_gap:?}; after {fps_after:.1} fps",
        capped.len(),
        keys.len()
    );
    eprintln!("edge drops: {drops:?}; last report: {report:?}");
    assert!(p95 < 1000, "frames that arrive are fresh: p95 age {p95} ms");
    assert!(keys.len() >= 10, "keyframes keep arriving: {} in 27 s", keys.len());
    assert!(max_key_gap < Duration::from_secs(5), "longest gap between keyframes {max_key_gap:?}");
    assert!(report.queue_bytes <= 8 * 1024 * 1024 && report.queue_frames <= 128, "bounded: {report:?}");
    assert!(drops.iter().any(|(r, n)| r.starts_with("congestion") && *n > 0), "drops are counted by reason");
    let m = metrics(fx.hub.stream_addr).await;
    let gop = m.value("mediamesh_edge_dropped_frames_total{node=\"edge-1\",stream=\"cam1\",reason=\"congestion_gop\"}");
    assert!(gop.is_some_and(|v| v > 0.0), "and exported by the hub: {gop:?}");
    assert!(fps_after >= 0.9 * fps_before, "full frame rate returns: {fps_after:.1} vs {fps_before:.1}");
}

/// A test pattern with a keyframe only every 10 s (250 frames at 25 fps).
fn long_gop() -> mediamesh_edge::StreamConfig {
    use mediamesh_edge::config::{SourceConfig, TestPatternConfig};
    let cfg = TestPatternConfig { width: 320, height: 240, fps: 25, bitrate_kbps: 300, gop: 250, label: None };
    mediamesh_edge::StreamConfig::new(SourceConfig::TestPattern(cfg))
}

/// A keyframe request from another hub crosses the relay, this hub and the edge's data tunnel
/// to the source, which makes a keyframe long before its group of pictures would end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyframe_request_over_a_relay_reaches_the_edges_source() {
    use mediamesh_edge::dial::{DialConfig, dial};
    use mediamesh_tunnel::wire::{Channel, Feedback, Message, PROTOCOL_VERSION};

    let fx = Fixture::builder().edge(|c| drop(c.streams.insert("long".into(), long_gop()))).start().await;
    // Another hub, as its certificate proves, asks for a relay of the stream.
    let hub = mediamesh_tls::TlsFiles { ca: fx.pki.main.ca_cert.clone(), ..fx.pki.main.hub.clone() };
    let cfg = DialConfig {
        server: fx.hub.tunnel_addr.to_string(),
        server_name: "localhost".try_into().unwrap(),
        tls: mediamesh_tls::tunnel_client_config(&hub).unwrap(),
        node: "hub-b".into(),
        handshake_timeout: Duration::from_secs(10),
        write_deadline: Duration::from_secs(10),
        unsent_lowat: None,
        ca_file: hub.ca.clone(),
        fallbacks: vec![],
    };
    let (mut link, welcome) =
        dial(&cfg, Channel::Relay { node: "edge-1".into(), stream: "long".into() }).await.unwrap();
    assert_eq!(welcome.version, PROTOCOL_VERSION);

    // Frames: the first is a keyframe (and the start may bring a fresh one soon after); the
    // next would come 10 s later.
    let mut frames = 0u32;
    let mut asked_at: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(8);
    let answered = loop {
        let msg = tokio::time::timeout_at(deadline.into(), link.recv()).await;
        let msg = msg.expect("a keyframe in time").unwrap().expect("the relay stays open");
        match msg {
            Message::Ping { id } => link.send(&Message::Pong { id }).await.unwrap(),
            Message::Frame(f) if f.track == 0 => {
                // Acknowledged as a hub does, or the relay's send window closes.
                let fb = Feedback { last_seq: f.seq, frames: u64::from(frames) + 1, bytes: 0 };
                link.send(&Message::Feedback(fb)).await.unwrap();
                if frames == 0 {
                    assert!(f.is_keyframe(), "a relay starts at a keyframe");
                } else if f.is_keyframe()
                    && let Some(t) = asked_at
                {
                    break t.elapsed();
                }
                frames += 1;
                // Past the start's own keyframe: now ask.
                if frames == 40 {
                    link.send(&Message::KeyframeRequest).await.unwrap();
                    asked_at = Some(Instant::now());
                }
            }
            _ => {}
        }
    };
    assert!(answered < Duration::from_millis(1500), "keyframe {answered:?} after the request");
    let session = fx.hub.sessions().get(&StreamKey::new("edge-1", "long")).unwrap();
    assert_eq!(session.stats.keyframe_requests.get(), 1, "one request went to the edge");
}
