//! A recorder across an edge outage: `ffmpeg -c copy` records the hub's RTSP while the edge
//! stops for 3 s and starts again (its source's clock restarting at 0). By default the recorded
//! timeline keeps wall-clock time: the span of the recorded timestamps matches the span of the
//! frames' capture times (stamped in each frame by the test pattern) within one frame interval.
//! With `outageTimestamps: squeezed` the outage is cut out instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use mediamesh_edge::Edge;
use mediamesh_hub::session::log::OutageTimeline;
use mediamesh_media::annexb::{AccessUnitSplitter, VideoCodec};
use mediamesh_testkit::{Fixture, test_pattern, wait_until};
use tokio::io::AsyncWriteExt;

/// Records across a 3 s outage; returns (recorded pts span, capture span, largest pts step), s.
async fn record_across_an_outage(mode: OutageTimeline) -> (f64, f64, f64) {
    mediamesh_testkit::require::ffmpeg();
    let mut fx = Fixture::builder().hub(move |h| h.outage_timestamps = mode).start().await;
    let dir = fx.pki.dir().to_path_buf();
    let mkv = dir.join("recording.mkv");
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-i", &fx.rtsp_url("edge-1", "cam1"), "-c", "copy", "-y"])
        .arg(&mkv)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let sessions = fx.hub.sessions().clone();
    wait_until("the recorder to watch", Duration::from_secs(10), || {
        sessions.snapshot().first().is_some_and(|s| s.frames_out() >= 50)
    })
    .await;

    // The edge goes away for 3 s (an upgrade) and comes back as a new process would.
    let cfg = {
        let mut c = Fixture::edge_config(&fx.pki, &fx.hub, "edge-1");
        c.streams.insert("cam1".into(), test_pattern());
        c
    };
    fx.edge.take().unwrap().stop(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let edge = Edge::start(cfg).unwrap();
    let before = sessions.snapshot()[0].frames_out();
    wait_until("video to flow again", Duration::from_secs(10), || sessions.snapshot()[0].frames_out() >= before + 50)
        .await;

    ffmpeg.stdin.as_mut().unwrap().write_all(b"q").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), ffmpeg.wait()).await.unwrap().unwrap();
    assert!(status.success(), "ffmpeg recorded: {status}");
    edge.stop(Duration::from_secs(5)).await;

    // The recorded timestamps, in decode order.
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(&mkv)
        .output()
        .unwrap();
    let pts: Vec<f64> = String::from_utf8_lossy(&probe.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    // The same frames' capture times, from the stamps in their payloads.
    let h264 = dir.join("recording.h264");
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&mkv)
        .args(["-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", "-y"])
        .arg(&h264)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut splitter = AccessUnitSplitter::new(VideoCodec::H264, 1 << 20);
    let mut aus = Vec::new();
    splitter.push(&std::fs::read(&h264).unwrap(), &mut aus).unwrap();
    splitter.flush(&mut aus).unwrap();
    let captures: Vec<u64> = aus
        .iter()
        .map(|au| mediamesh_media::h264::sei::read_stamp(&au.data).expect("a stamped frame").capture_us)
        .collect();
    assert_eq!(pts.len(), captures.len(), "one timestamp per recorded frame");
    assert!(pts.len() > 100, "{} frames recorded", pts.len());
    // ffmpeg gives the first packet of an H.264 stream that does not announce its reordering
    // the timestamp of the second (so it can place a B-frame that never comes), in any
    // recording: the spans start at the second frame.
    let pts_span = pts[pts.len() - 1] - pts[1];
    let capture_span = (captures[captures.len() - 1] - captures[1]) as f64 / 1e6;
    let largest_step = pts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    (pts_span, capture_span, largest_step)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_across_an_edge_outage_keeps_wall_clock_time() {
    let (pts_span, capture_span, largest_step) = record_across_an_outage(OutageTimeline::WallClock).await;
    eprintln!(
        "wallClock: {pts_span:.3} s of timeline, {capture_span:.3} s of capture, largest gap {largest_step:.3} s"
    );
    assert!(largest_step > 2.5, "the outage is in the recording: largest gap {largest_step:.3} s");
    assert!(
        (pts_span - capture_span).abs() <= 0.040,
        "recorded {pts_span:.3} s of timeline for {capture_span:.3} s of capture time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_squeezed_option_cuts_the_outage_out() {
    let (pts_span, capture_span, largest_step) = record_across_an_outage(OutageTimeline::Squeezed).await;
    eprintln!("squeezed: {pts_span:.3} s of timeline, {capture_span:.3} s of capture, largest gap {largest_step:.3} s");
    assert!(largest_step < 0.5, "no gap in the timeline: {largest_step:.3} s");
    assert!(capture_span - pts_span > 2.5, "recorded {pts_span:.3} s for {capture_span:.3} s");
}
