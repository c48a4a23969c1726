//! The hub's RTSP server with real clients: ffprobe and ffmpeg (TCP and UDP), GStreamer's
//! rtspsrc, OpenCV; the camera is GStreamer's RTSP server (H.264 + AAC, Digest auth) pulled by
//! the edge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::Duration;

use mediamesh_edge::StreamConfig;
use mediamesh_edge::config::{FfmpegConfig, RtspConfig, SourceConfig, VideoCodecName};
use mediamesh_testkit::camera::GstCamera;
use mediamesh_testkit::{Fixture, read_frames, require};

/// Runs a client with a deadline; kills it on timeout.
async fn client(program: &str, args: &[&str], timeout: Duration) -> Output {
    let child = tokio::process::Command::new(program).args(args).kill_on_drop(true).output();
    tokio::time::timeout(timeout, child).await.unwrap_or_else(|_| panic!("{program} {args:?} timed out")).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn camera_fixture(cam: &GstCamera) -> Fixture {
    let url = cam.url(Some(("admin", "secret")));
    Fixture::builder()
        .edge(move |e| {
            let rtsp = RtspConfig::new(url);
            e.streams.insert("door".into(), StreamConfig::new(SourceConfig::Rtsp(rtsp)));
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_play_the_hubs_rtsp() {
    require::ffmpeg();
    require::program("gst-launch-1.0", "gstreamer1.0-tools");
    require::gst_elements(&[("rtspsrc", "gstreamer1.0-plugins-good"), ("decodebin", "gstreamer1.0-plugins-base")]);
    require::python_module("cv2", "python3-opencv");
    let cam = GstCamera::start(&["--auth", "digest", "--audio", "aac"]);
    let fx = camera_fixture(&cam).await;
    let url = fx.rtsp_url("edge-1", "door");

    for transport in ["tcp", "udp"] {
        let out = client(
            "ffprobe",
            &[
                "-v",
                "error",
                "-rtsp_transport",
                transport,
                "-show_entries",
                "stream=codec_type,codec_name,width,height,sample_rate,channels",
                "-of",
                "json",
                &url,
            ],
            Duration::from_secs(30),
        )
        .await;
        assert!(out.status.success(), "ffprobe over {transport}: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let streams = v["streams"].as_array().unwrap();
        let video = streams.iter().find(|s| s["codec_type"] == "video").expect("a video stream");
        assert_eq!(
            (video["codec_name"].as_str(), video["width"].as_u64(), video["height"].as_u64()),
            (Some("h264"), Some(320), Some(240)),
            "{transport}"
        );
        let audio = streams.iter().find(|s| s["codec_type"] == "audio").expect("an audio stream");
        assert_eq!(
            (audio["codec_name"].as_str(), audio["sample_rate"].as_str(), audio["channels"].as_u64()),
            (Some("aac"), Some("48000"), Some(2)),
            "{transport}"
        );
    }

    let out = client(
        "ffmpeg",
        &["-v", "error", "-rtsp_transport", "tcp", "-i", &url, "-frames:v", "100", "-f", "null", "-"],
        Duration::from_secs(40),
    )
    .await;
    assert!(out.status.success(), "ffmpeg decode: {}", text(&out.stderr));
    assert!(text(&out.stderr).trim().is_empty(), "no decoding error: {}", text(&out.stderr));

    let loc = format!("location={url}");
    let out = client(
        "gst-launch-1.0",
        &["-q", "rtspsrc", &loc, "!", "decodebin", "!", "fakesink", "num-buffers=100"],
        Duration::from_secs(40),
    )
    .await;
    assert!(out.status.success(), "gst-launch: {}{}", text(&out.stdout), text(&out.stderr));

    let script = format!(
        "import cv2\ncap = cv2.VideoCapture('{url}')\nn = 0\nwhile n < 50:\n    ok, f = cap.read()\n    if not ok: break\n    assert f.shape == (240, 320, 3), f.shape\n    n += 1\nprint(n)\n"
    );
    let out = client(require::PYTHON, &["-c", &script], Duration::from_secs(40)).await;
    assert!(out.status.success(), "opencv: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "50", "OpenCV read 50 frames of 320x240");
    assert_eq!(cam.sessions(), 1, "all of that through one camera session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_rtsp_viewers_and_a_websocket_viewer_share_one_camera_session() {
    require::ffmpeg();
    let cam = GstCamera::start(&["--audio", "pcma"]);
    let fx = camera_fixture(&cam).await;
    let url = fx.rtsp_url("edge-1", "door");
    let mut ws = fx.viewer("edge-1", "door").await.unwrap();
    let mut clients = Vec::new();
    for i in 0..10 {
        let transport = if i % 2 == 0 { "tcp" } else { "udp" };
        let args = [
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-i",
            &url,
            "-frames:v",
            "50",
            "-c",
            "copy",
            "-f",
            "null",
            "-",
        ];
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        clients.push(tokio::spawn(async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            client("ffmpeg", &refs, Duration::from_secs(60)).await
        }));
    }
    read_frames(&mut ws, 30).await;
    for c in clients {
        let out = c.await.unwrap();
        assert!(out.status.success(), "an RTSP viewer failed: {}", text(&out.stderr));
    }
    assert_eq!(cam.sessions(), 1, "the camera saw exactly one RTSP session");
    let s = &fx.hub.sessions().snapshot()[0];
    assert!(s.stats.frames_out.get() >= 10 * 50, "every viewer was served from the one session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ffmpeg_libx265_camera_reaches_an_rtsp_viewer() {
    require::ffmpeg();
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ffmpeg = FfmpegConfig {
        input: args(&["-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"]),
        encode: args(&[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-x265-params",
            "log-level=error",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "25",
            "-bf",
            "0",
        ]),
        binary: "ffmpeg".into(),
        codec: VideoCodecName::H265,
    };
    let fx = Fixture::builder()
        .edge(move |e| {
            e.streams.insert("hevc".into(), StreamConfig::new(SourceConfig::Ffmpeg(ffmpeg)));
        })
        .start()
        .await;
    let url = fx.rtsp_url("edge-1", "hevc");
    let out = client(
        "ffmpeg",
        &["-v", "error", "-rtsp_transport", "tcp", "-i", &url, "-frames:v", "50", "-f", "null", "-"],
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).trim().is_empty(), "no decoding error: {}", text(&out.stderr));
    let probe = client(
        "ffprobe",
        &["-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name", "-of", "csv=p=0", &url],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(text(&probe.stdout).trim(), "hevc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_viewers_survive_a_camera_restart() {
    use tokio::io::AsyncBufReadExt;
    require::ffmpeg();
    let mut cam = GstCamera::start(&["--audio", "none"]);
    let fx = camera_fixture(&cam).await;
    let url = fx.rtsp_url("edge-1", "door");
    // ffmpeg as the viewer, reporting its decoded frame count every 0.2 s.
    let mut viewer = tokio::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            &url,
            "-f",
            "null",
            "-",
            "-progress",
            "pipe:1",
            "-stats_period",
            "0.2",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let frames = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = frames.clone();
    let mut lines = tokio::io::BufReader::new(viewer.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(n) = l.strip_prefix("frame=").and_then(|n| n.trim().parse().ok()) {
                counter.store(n, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let count = || frames.load(std::sync::atomic::Ordering::SeqCst);
    mediamesh_testkit::wait_until("ffmpeg to decode 25 frames", Duration::from_secs(20), || count() >= 25).await;

    cam.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = count();
    cam.restart();
    let back = std::time::Instant::now();
    mediamesh_testkit::wait_until("ffmpeg to decode again", Duration::from_secs(10), || count() > before + 5).await;
    let took = back.elapsed();
    assert!(took < Duration::from_secs(3), "decoding resumed {took:?} after the camera came back");
    assert!(viewer.try_wait().unwrap().is_none(), "the RTSP viewer stayed connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_disconnects_an_rtsp_viewer_and_it_is_counted_as_kicked() {
    use mediamesh_testkit::rtsp_player::{RtspEvent, RtspPlayer};
    let fx = Fixture::builder().start().await;
    let mut player = RtspPlayer::play(&fx.rtsp_url("edge-1", "cam1")).await.unwrap();
    assert!(matches!(player.next(Duration::from_secs(10)).await, Some(RtspEvent::Rtp(_))), "the viewer plays");
    let api = fx.hub.stream_addr;
    let streams = mediamesh_testkit::http::request(api, "GET", "/api/v1/streams", &[]).await;
    let streams: serde_json::Value = serde_json::from_str(&streams.body).unwrap();
    let id = streams["streams"][0]["viewerDetails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["protocol"] == "rtsp")
        .and_then(|v| v["id"].as_u64())
        .expect("the RTSP viewer is listed");
    let a = mediamesh_testkit::http::request(api, "DELETE", &format!("/api/v1/viewers/{id}"), &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match player.next(Duration::from_secs(2)).await {
                Some(RtspEvent::Rtp(_)) => {}
                other => break other,
            }
        }
    })
    .await
    .expect("the connection closes within 2 s");
    assert!(matches!(closed, Some(RtspEvent::Closed | RtspEvent::Bye)), "{closed:?}");
    let kicked = r#"mediamesh_viewer_disconnects_total{protocol="rtsp",reason="kicked"}"#;
    let mut counted = 0.0;
    for _ in 0..20 {
        counted = mediamesh_testkit::observe::metrics(api).await.value(kicked).unwrap_or(0.0);
        if counted > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 1.0, "the disconnect is counted as kicked");
}
