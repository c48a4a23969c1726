//! RTSP cameras at the edge: a real GStreamer RTSP server plays the IP camera (H.264/H.265 with
//! AAC, G.711 or Opus, Basic or Digest auth); the edge pulls it with retina over TCP or UDP;
//! a WebSocket viewer at the hub checks what arrives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mediamesh_edge::StreamConfig;
use mediamesh_edge::config::{RtspConfig, RtspTransport, SourceConfig};
use mediamesh_hub::client::{ViewerClient, ViewerItem};
use mediamesh_hub::egress::ws::format::TrackJson;
use mediamesh_testkit::camera::GstCamera;
use mediamesh_testkit::{Fixture, wait_until};

fn rtsp_stream(url: String, transport: RtspTransport) -> StreamConfig {
    StreamConfig { description: None, source: SourceConfig::Rtsp(RtspConfig { transport, ..RtspConfig::new(url) }) }
}

#[derive(Debug, Default)]
struct Seen {
    tracks: Vec<TrackJson>,
    video: usize,
    audio: usize,
    first_video_key: Option<bool>,
    video_pts_backwards: usize,
    last_video_pts: Option<i64>,
}

/// Reads until `video` video frames arrived.
async fn watch(v: &mut ViewerClient, video: usize, seen: &mut Seen) {
    while seen.video < video {
        match tokio::time::timeout(Duration::from_secs(15), v.next()).await.expect("frames keep coming").unwrap() {
            Some(ViewerItem::Header(t)) => seen.tracks = t,
            Some(ViewerItem::Frame(f)) => {
                let is_video = seen.tracks.iter().any(|t| t.id == f.track && t.kind == "video");
                if is_video {
                    seen.first_video_key.get_or_insert(f.flags.is_keyframe());
                    if seen.last_video_pts.is_some_and(|p| f.pts <= p) {
                        seen.video_pts_backwards += 1;
                    }
                    seen.last_video_pts = Some(f.pts);
                    seen.video += 1;
                } else {
                    seen.audio += 1;
                }
            }
            Some(ViewerItem::Skip(_)) => {}
            Some(ViewerItem::End(r)) => panic!("stream ended: {r}"),
            None => panic!("viewer closed"),
        }
    }
}

async fn pull(cam_args: &[&str], creds: Option<(&str, &str)>, transport: RtspTransport) -> (Seen, GstCamera, Fixture) {
    let cam = GstCamera::start(cam_args);
    let url = cam.url(creds);
    let fx = Fixture::builder()
        .edge(move |e| {
            e.streams.insert("door".into(), rtsp_stream(url, transport));
        })
        .start()
        .await;
    let mut v = fx.viewer("edge-1", "door").await.unwrap();
    let mut seen = Seen::default();
    watch(&mut v, 40, &mut seen).await;
    (seen, cam, fx)
}

fn track<'a>(seen: &'a Seen, kind: &str) -> &'a TrackJson {
    seen.tracks.iter().find(|t| t.kind == kind).unwrap_or_else(|| panic!("no {kind} track in {:?}", seen.tracks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_aac_camera_with_digest_auth_over_tcp() {
    let (seen, cam, fx) =
        pull(&["--auth", "digest", "--audio", "aac"], Some(("admin", "secret")), RtspTransport::Tcp).await;
    let v = track(&seen, "video");
    assert_eq!((v.codec.as_str(), v.width, v.height), ("h264", Some(320), Some(240)));
    let a = track(&seen, "audio");
    assert_eq!((a.codec.as_str(), a.sample_rate, a.channels), ("aac", Some(48_000), Some(2)));
    assert_eq!(a.codec_string.as_deref(), Some("mp4a.40.2"));
    assert_eq!(seen.first_video_key, Some(true));
    assert_eq!(seen.video_pts_backwards, 0);
    assert!(seen.audio > 20, "audio flows too: {} frames", seen.audio);
    assert_eq!(cam.sessions(), 1, "one RTSP session from the edge");
    drop(fx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_pcmu_camera_with_basic_auth_over_udp() {
    let (seen, cam, _fx) =
        pull(&["--auth", "basic", "--audio", "pcmu"], Some(("admin", "secret")), RtspTransport::Udp).await;
    assert_eq!(track(&seen, "audio").codec, "pcmu");
    assert_eq!(track(&seen, "audio").sample_rate, Some(8000));
    // The camera's 8 kHz audio comes in 1024-sample (128 ms) buffers: ~8 frames a second.
    assert!(seen.audio >= 8, "audio flows too: {} frames", seen.audio);
    assert_eq!(cam.sessions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_pcma_camera() {
    let (seen, _cam, _fx) = pull(&["--video", "h265", "--audio", "pcma"], None, RtspTransport::Tcp).await;
    let v = track(&seen, "video");
    assert_eq!((v.codec.as_str(), v.width, v.height), ("h265", Some(320), Some(240)));
    assert!(v.codec_string.as_deref().unwrap_or_default().starts_with("hvc1."));
    assert_eq!(track(&seen, "audio").codec, "pcma");
    assert_eq!(seen.first_video_key, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_audio_passes_through() {
    let (seen, _cam, _fx) = pull(&["--audio", "opus"], None, RtspTransport::Tcp).await;
    let a = track(&seen, "audio");
    assert_eq!((a.codec.as_str(), a.sample_rate, a.channels), ("opus", Some(48_000), Some(2)));
    assert!(seen.audio > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_camera_session_is_torn_down_when_no_longer_wanted() {
    let (_seen, cam, fx) = pull(&["--audio", "none"], None, RtspTransport::Tcp).await;
    assert_eq!(cam.sessions(), 1);
    // The viewer is gone (dropped with `pull`'s scope); after the linger period the edge
    // gets RemoveVideo and tears the camera session down.
    let stats = fx.edge_stats().clone();
    wait_until("RemoveVideo", Duration::from_secs(10), || {
        mediamesh_edge::stats::EdgeStats::get(&stats.remove_video) == 1
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while cam.sessions() != 0 {
        assert!(Instant::now() < deadline, "the camera still has {} sessions", cam.sessions());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_restart_does_not_lose_the_viewer() {
    let mut cam = GstCamera::start(&["--audio", "none"]);
    let url = cam.url(None);
    let fx = Fixture::builder()
        .edge(move |e| {
            e.streams.insert("door".into(), rtsp_stream(url, RtspTransport::Tcp));
        })
        .start()
        .await;
    let mut v = fx.viewer("edge-1", "door").await.unwrap();
    let mut seen = Seen::default();
    watch(&mut v, 25, &mut seen).await;

    cam.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cam.restart();
    let back = Instant::now();
    let before = seen.video;
    watch(&mut v, before + 10, &mut seen).await;
    let took = back.elapsed();
    assert!(took < Duration::from_secs(3) + Duration::from_millis(400), "video returned {took:?} after the camera");
    assert_eq!(seen.video_pts_backwards, 0, "timestamps keep increasing across the restart");
    // Redialled every 0.2-1 s for 2 s, and logged once per reason (the session's end, then the
    // refused connections), not at every attempt.
    let warned = mediamesh_testkit::logged(&["WARN", "camera lost; redialling"]);
    assert!((1..=2).contains(&warned.len()), "{warned:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_camera_credentials_are_reported_to_the_viewer() {
    let cam = GstCamera::start(&["--auth", "digest", "--audio", "none"]);
    let url = cam.url(Some(("admin", "wrong")));
    let fx = Fixture::builder()
        .edge(move |e| {
            e.streams.insert("door".into(), rtsp_stream(url, RtspTransport::Tcp));
        })
        .start()
        .await;
    let t0 = Instant::now();
    let mut v = fx.viewer("edge-1", "door").await.unwrap();
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(20), v.next()).await.unwrap().unwrap() {
            Some(ViewerItem::End(r)) => break r,
            Some(ViewerItem::Frame(_)) => panic!("frames with wrong credentials"),
            Some(_) => {}
            None => panic!("closed without a reason"),
        }
    };
    assert!(reason.contains("401"), "{reason}");
    assert!(!reason.contains("wrong"), "the password never appears: {reason}");
    assert!(t0.elapsed() < Duration::from_secs(5), "reported at once, not after the start timeout: {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_change_reaches_the_viewers() {
    let mut cam = GstCamera::start(&["--audio", "none", "--size", "320x240"]);
    let url = cam.url(None);
    let fx = Fixture::builder()
        .edge(move |e| {
            e.streams.insert("door".into(), rtsp_stream(url, RtspTransport::Tcp));
        })
        .start()
        .await;
    let mut v = fx.viewer("edge-1", "door").await.unwrap();
    let mut seen = Seen::default();
    watch(&mut v, 10, &mut seen).await;
    assert_eq!(track(&seen, "video").width, Some(320));

    // The camera comes back with another resolution (new SPS/PPS).
    cam.restart_with(["--audio", "none", "--size", "480x272"].map(String::from).to_vec());
    let before = seen.video;
    let deadline = Instant::now() + Duration::from_secs(15);
    while track(&seen, "video").width != Some(480) {
        assert!(Instant::now() < deadline, "no header with the new resolution");
        watch(&mut v, seen.video + 1, &mut seen).await;
    }
    assert_eq!(track(&seen, "video").height, Some(272));
    watch(&mut v, seen.video + 10, &mut seen).await;
    assert!(seen.video > before + 10, "frames keep coming at the new size");
    assert_eq!(seen.video_pts_backwards, 0);
    let header = fx.hub.sessions().snapshot()[0].log.header().unwrap();
    assert_eq!(header.video.as_ref().map(|p| (p.width, p.height)), Some((480, 272)), "the hub's view changed too");
}
