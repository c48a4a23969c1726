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
