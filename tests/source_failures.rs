//! Sources that fail: viewers are told why, promptly, and the edge frees what it started.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mediamesh_edge::StreamConfig;
use mediamesh_edge::config::FfmpegConfig;
use mediamesh_edge::stats::EdgeStats;
use mediamesh_hub::client::ViewerItem;
use mediamesh_testkit::{Fixture, wait_until};
use mediamesh_tunnel::settings::Seconds;

fn ffmpeg_stream(binary: &str, input: &[&str]) -> StreamConfig {
    StreamConfig {
        description: None,
        test_pattern: None,
        ffmpeg: Some(FfmpegConfig {
            input: input.iter().map(|s| s.to_string()).collect(),
            encode: vec!["-c:v".into(), "copy".into()],
            binary: binary.into(),
            codec: Default::default(),
        }),
        rtsp: None,
        file: None,
    }
}

/// Connects a viewer and returns the reason of the `end` event and how long it took.
async fn end_reason(fx: &Fixture, stream: &str) -> (String, Duration) {
    let t0 = Instant::now();
    let mut v = fx.viewer("edge-1", stream).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), v.next()).await.unwrap().unwrap() {
            Some(ViewerItem::End(reason)) => return (reason, t0.elapsed()),
            Some(ViewerItem::Frame(_)) => panic!("a failing source produced a frame"),
            Some(_) => {}
            None => panic!("closed without an end event"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ffmpeg_binary_is_reported_at_once() {
    let fx = Fixture::builder()
        .edge(|e| {
            e.streams.insert("cam9".into(), ffmpeg_stream("/nonexistent/ffmpeg", &["-i", "x"]));
        })
        .start()
        .await;
    let (reason, took) = end_reason(&fx, "cam9").await;
    assert!(reason.contains("cannot run /nonexistent/ffmpeg"), "{reason}");
    assert!(took < Duration::from_secs(5), "reported at once, not after the start timeout: {took:?}");
    let stats = fx.edge_stats().clone();
    wait_until("the uplink to end", Duration::from_secs(5), || EdgeStats::get(&stats.uplinks_active) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_never_produces_hits_the_start_timeout() {
    mediamesh_testkit::require::ffmpeg();
    let fx = Fixture::builder()
        .hub(|h| h.start_timeout = Seconds::new(2))
        .edge(|e| {
            // ffmpeg runs but its input does not exist: it exits, is restarted with backoff,
            // and never produces a frame.
            e.streams.insert("dead".into(), ffmpeg_stream("ffmpeg", &["-i", "/nonexistent/input.mp4"]));
        })
        .start()
        .await;
    let (reason, took) = end_reason(&fx, "dead").await;
    assert!(reason.contains("did not start the stream within 2.0 s"), "{reason}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(6), "{took:?}");
    // The edge is told to stop, and stops restarting ffmpeg.
    let stats = fx.edge_stats().clone();
    wait_until("RemoveVideo", Duration::from_secs(5), || EdgeStats::get(&stats.remove_video) == 1).await;
    wait_until("the uplink to end", Duration::from_secs(5), || EdgeStats::get(&stats.uplinks_active) == 0).await;
    let started = EdgeStats::get(&stats.sources_started);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(EdgeStats::get(&stats.sources_started), started, "no restarts after RemoveVideo");
}
