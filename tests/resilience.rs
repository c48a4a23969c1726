//! Self-healing links, through the testkit's impairment proxy between the edge and the hub:
//! a hard cut, a silent cut, a slow link. Viewers (WebSocket and RTSP) must stay connected,
//! resume at a keyframe soon after the link returns, and never see time run backwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mediamesh_hub::client::{ViewerClient, ViewerItem};
use mediamesh_hub::session::StreamKey;
use mediamesh_hub::session::lifecycle::Phase;
use mediamesh_testkit::rtsp_player::{RtspEvent, RtspPlayer};
use mediamesh_testkit::{Fixture, read_frames, wait_until};

fn key() -> StreamKey {
    StreamKey::new("edge-1", "cam1")
}

/// What a WebSocket viewer saw over a period.
#[derive(Debug, Default)]
struct Seen {
    /// (arrival, keyframe, pts, test-pattern counter)
    frames: Vec<(Instant, bool, i64, u64)>,
    ended: Option<String>,
}

/// Reads frames until `until`.
async fn watch(v: &mut ViewerClient, until: Instant) -> Seen {
    let mut seen = Seen::default();
    while Instant::now() < until {
        match tokio::time::timeout_at(until.into(), v.next()).await {
            Err(_) => break,
            Ok(Ok(Some(ViewerItem::Frame(f)))) => {
                let counter = mediamesh_media::h264::sei::read_stamp(&f.payload).map_or(0, |s| s.counter);
                seen.frames.push((Instant::now(), f.flags.is_keyframe(), f.pts, counter));
            }
            Ok(Ok(Some(ViewerItem::End(r)))) => {
                seen.ended = Some(r);
                break;
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                seen.ended = Some("closed".into());
                break;
            }
            Ok(Err(e)) => {
                seen.ended = Some(e.to_string());
                break;
            }
        }
    }
    seen
}

fn assert_increasing(seen: &Seen) {
    for w in seen.frames.windows(2) {
        assert!(w[1].2 > w[0].2, "pts went from {} to {}", w[0].2, w[1].2);
        assert!(w[1].3 > w[0].3, "counter went from {} to {}", w[0].3, w[1].3);
    }
}

/// Checks RTP from `player` until `until`: sequence numbers continue by one, timestamps never
/// go back; returns the arrival times of keyframe starts.
async fn watch_rtp(player: &mut RtspPlayer, until: Instant) -> Vec<Instant> {
    let mut keyframes = Vec::new();
    let mut last: Option<(u16, u32)> = None;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match player.next(left).await {
            None => break,
            Some(RtspEvent::Rtp(p)) => {
                if let Some((seq, ts)) = last {
                    assert_eq!(p.seq, seq.wrapping_add(1), "RTP sequence numbers continue");
                    assert!((p.timestamp.wrapping_sub(ts) as i32) >= 0, "RTP time went back: {ts} -> {}", p.timestamp);
                }
                last = Some((p.seq, p.timestamp));
                if p.starts_keyframe {
                    keyframes.push(Instant::now());
                }
            }
            Some(e) => panic!("the RTSP viewer was ended: {e:?}"),
        }
    }
    keyframes
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
    assert_increasing(&seen);
    let first_key = seen.frames.iter().find(|f| f.0 > restored_at && f.1).expect("a keyframe after the cut").0;
    let ws_resume = first_key - restored_at;
    assert!(ws_resume < Duration::from_secs(3), "WebSocket keyframe {ws_resume:?} after the link returned");
    let rtp_key = rtp_keys.iter().find(|t| **t > restored_at).expect("an RTP keyframe after the cut");
    assert!(*rtp_key - restored_at < Duration::from_secs(3), "RTSP keyframe {:?} after", *rtp_key - restored_at);
    // Nothing arrived while the link was cut (beyond what was in flight when it broke).
    assert!(seen.frames.iter().filter(|f| f.0 > t0 + Duration::from_millis(500) && f.0 < restored_at).count() == 0);
    let s = fx.hub.sessions().get(&key()).unwrap();
    assert_eq!(s.phase(), Phase::Live);
    assert!(s.stats.upstream_lost.get() >= 1);
    eprintln!("resumed after {ws_resume:?} (WebSocket), {:?} (RTSP)", *rtp_key - restored_at);

    // The reconnect shows in the metrics.
    tokio::time::sleep(Duration::from_millis(1500)).await; // a Pong and an UplinkReport
    let m = metrics(&fx).await;
    let stream = "node=\"edge-1\",stream=\"cam1\"";
    assert_eq!(m.value("mediamesh_node_connects_total{node=\"edge-1\"}"), Some(2.0));
    assert_eq!(m.value(&format!("mediamesh_stream_upstream_lost_total{{{stream}}}")), Some(1.0));
    assert_eq!(m.value(&format!("mediamesh_stream_tunnel_connects_total{{{stream}}}")), Some(2.0));
    assert_eq!(m.value(&format!("mediamesh_edge_tunnel_connects{{{stream}}}")), Some(2.0));
    assert_eq!(m.value(&format!("mediamesh_stream_state{{{stream},state=\"live\"}}")), Some(1.0));
    assert!(m.value(&format!("mediamesh_tunnel_rtt_seconds{{{stream}}}")).is_some_and(|v| v > 0.0));
    assert!(m.value("mediamesh_node_rtt_seconds{node=\"edge-1\"}").is_some_and(|v| v > 0.0));
}

/// A parsed `/metrics` page.
struct Metrics(Vec<(String, f64)>);

impl Metrics {
    fn value(&self, series: &str) -> Option<f64> {
        self.0.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
    }
}

/// Fetches `/metrics` and checks every line is valid exposition format.
async fn metrics(fx: &Fixture) -> Metrics {
    let (status, body) = mediamesh_testkit::http::get(fx.hub.stream_addr, "/metrics").await;
    assert_eq!(status, 200);
    let mut samples = Vec::new();
    for line in body.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        samples.push((series.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"))));
    }
    Metrics(samples)
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
    assert!(seen.frames.iter().any(|f| f.1), "a keyframe after the link returned");
    assert_increasing(&seen);
}

/// Capture-to-viewer ages (ms) and keyframe arrival times of the frames seen.
fn ages_and_keys(frames: &[(Instant, bool, i64, u64, u64)]) -> (Vec<u64>, Vec<Instant>) {
    let ages = frames.iter().map(|f| f.4).collect();
    let keys = frames.iter().filter(|f| f.1).map(|f| f.0).collect();
    (ages, keys)
}

/// Reads frames until `until`: (arrival, keyframe, pts, counter, age in ms).
async fn watch_ages(v: &mut ViewerClient, until: Instant) -> Vec<(Instant, bool, i64, u64, u64)> {
    let mut out = Vec::new();
    while let Ok(r) = tokio::time::timeout_at(until.into(), v.next()).await {
        match r {
            Ok(Some(ViewerItem::Frame(f))) => {
                let age = mediamesh_testkit::unix_micros().saturating_sub(f.capture_us) / 1000;
                let counter = mediamesh_media::h264::sei::read_stamp(&f.payload).map_or(0, |s| s.counter);
                out.push((Instant::now(), f.flags.is_keyframe(), f.pts, counter, age));
            }
            Ok(Some(ViewerItem::End(r))) => panic!("the viewer was ended: {r}"),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the viewer was closed"),
        }
    }
    out
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_slower_than_the_stream_delivers_fresh_frames_with_bounded_memory() {
    let fx = Fixture::builder().through_proxy().start().await;
    let proxy = fx.proxy.as_ref().unwrap();
    proxy.update(|c| c.buffer_bytes = 16 * 1024);
    let mut ws = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut ws, 5).await;
    let before = watch_ages(&mut ws, Instant::now() + Duration::from_secs(3)).await;
    let fps_before = before.len() as f64 / 3.0;

    // The test pattern runs at 300 kbit/s; the link gets two thirds of that for 30 s.
    proxy.set_up_bandwidth(Some(200_000));
    let capped = watch_ages(&mut ws, Instant::now() + Duration::from_secs(30)).await;
    let report = fx.hub.sessions().get(&key()).unwrap().stats.uplink().expect("an uplink report");
    proxy.set_up_bandwidth(None);
    // Recovery takes `congestion.clearAfter` (2 s) per level.
    let recovering = watch_ages(&mut ws, Instant::now() + Duration::from_secs(6)).await;
    let after = watch_ages(&mut ws, Instant::now() + Duration::from_secs(3)).await;
    let fps_after = after.len() as f64 / 3.0;

    let (mut ages, keys) = ages_and_keys(&capped[capped.len() / 10..]);
    let p95 = percentile(&mut ages, 0.95);
    let (p50, max) = (percentile(&mut ages, 0.5), percentile(&mut ages, 1.0));
    let max_key_gap = keys.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let stats = fx.edge_stats();
    use mediamesh_tunnel::wire::DropReason;
    let drops: Vec<(&str, u64)> = DropReason::ALL.iter().map(|r| (r.name(), stats.drops(*r))).collect();
    eprintln!(
        "before {fps_before:.1} fps; capped: {} frames, {} keyframes, age p50 {p50} p95 {p95} max {max} ms, longest keyframe gap {max_key_gap:?}; after {fps_after:.1} fps",
        capped.len(),
        keys.len()
    );
    eprintln!("edge drops: {drops:?}; last report: {report:?}");
    assert!(p95 < 1000, "frames that arrive are fresh: p95 age {p95} ms");
    assert!(keys.len() >= 10, "keyframes keep arriving: {} in 30 s", keys.len());
    assert!(max_key_gap < Duration::from_secs(5), "longest gap between keyframes {max_key_gap:?}");
    assert!(report.queue_bytes <= 8 * 1024 * 1024 && report.queue_frames <= 128, "bounded: {report:?}");
    assert!(drops.iter().any(|(r, n)| r.starts_with("congestion") && *n > 0), "drops are counted by reason");
    let m = metrics(&fx).await;
    let gop = m.value("mediamesh_edge_dropped_frames_total{node=\"edge-1\",stream=\"cam1\",reason=\"congestion_gop\"}");
    assert!(gop.is_some_and(|v| v > 0.0), "and exported by the hub: {gop:?}");
    assert!(fps_after >= 0.9 * fps_before, "full frame rate returns: {fps_after:.1} vs {fps_before:.1}");
    let mut all = before;
    all.extend(capped);
    all.extend(recovering);
    all.extend(after);
    for w in all.windows(2) {
        assert!(w[1].2 > w[0].2 && w[1].3 > w[0].3, "in order, timestamps increasing");
    }
}
