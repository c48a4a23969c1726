//! The ffmpeg source end to end: a real ffmpeg (lavfi testsrc → libx264) as the camera, the
//! real `mediamesh view` binary as the viewer, ffprobe as the external decoder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use mediamesh_edge::StreamConfig;
use mediamesh_edge::config::{FfmpegConfig, SourceConfig, VideoCodecName};
use mediamesh_edge::stats::EdgeStats;
use mediamesh_testkit::{Fixture, wait_until};

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmd).contains(marker).then_some(pid)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_camera_reaches_a_viewer_as_decodable_h264() {
    ffmpeg_camera_end_to_end(VideoCodecName::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_libx265_camera_reaches_a_viewer_as_decodable_h265() {
    ffmpeg_camera_end_to_end(VideoCodecName::H265).await;
}

async fn ffmpeg_camera_end_to_end(codec: VideoCodecName) {
    mediamesh_testkit::require::ffmpeg();
    let marker = format!("mmtest-{}-{}", std::process::id(), mediamesh_testkit::unix_micros());
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (encoder, codec_name) = match codec {
        VideoCodecName::H264 => (args(&["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]), "h264"),
        VideoCodecName::H265 => (
            args(&[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-x265-params",
                "log-level=error",
            ]),
            "hevc",
        ),
    };
    let ffmpeg = FfmpegConfig {
        input: args(&["-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"]),
        encode: {
            let mut e = encoder;
            e.extend(args(&["-pix_fmt", "yuv420p", "-g", "25", "-bf", "0", "-metadata"]));
            e.push(format!("comment={marker}"));
            e
        },
        binary: "ffmpeg".into(),
        codec,
    };
    let fx = Fixture::builder()
        .edge(move |e| {
            e.streams.insert("lavfi".into(), StreamConfig::new(SourceConfig::Ffmpeg(ffmpeg)));
        })
        .start()
        .await;

    let dir = fx.pki.dir().to_path_buf();
    let out = dir.join(format!("lavfi.{codec_name}"));
    let view = tokio::process::Command::new(env!("CARGO_BIN_EXE_mediamesh"))
        .args(["view", &fx.ws_url("edge-1", "lavfi"), "--frames", "60", "--quiet", "--json", "--out"])
        .arg(&out)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&view.stdout);
    assert!(view.status.success(), "mediamesh view failed: {stdout}\n{}", String::from_utf8_lossy(&view.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["frames"], 60);
    assert_eq!(summary["firstIsKeyframe"], true);
    assert_eq!(summary["ptsBackwards"], 0);

    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "json"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(probe.status.success(), "ffprobe: {}", String::from_utf8_lossy(&probe.stderr));
    let p: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let s = &p["streams"][0];
    assert_eq!(s["codec_name"], codec_name);
    assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(320), Some(240)));
    assert_eq!(s["nb_read_frames"], "60", "ffprobe decodes every frame the viewer saved");
    assert!(!processes_with(&marker).is_empty(), "ffmpeg runs while the stream lingers");

    // After the linger period the ffmpeg process is killed and reaped.
    let stats = fx.edge_stats().clone();
    wait_until("RemoveVideo", Duration::from_secs(10), || EdgeStats::get(&stats.remove_video) == 1).await;
    wait_until("ffmpeg to be stopped", Duration::from_secs(10), || {
        EdgeStats::get(&stats.sources_stopped) == EdgeStats::get(&stats.sources_started)
    })
    .await;
    assert!(processes_with(&marker).is_empty(), "no ffmpeg left running (reap() waited for it)");
}
