//! LL-HLS with real clients: ffmpeg reads the multivariant playlist and copies six seconds into
//! an MP4 that ffprobe checks; blocking reloads wait for the part they name; what is malformed,
//! too far ahead or gone gets a clear answer, and a thousand held requests disturb nobody.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use mediamesh_edge::stats::EdgeStats;
use mediamesh_testkit::http::request;
use mediamesh_testkit::{Fixture, read_frames, require};
use serde_json::Value;

const BASE: &str = "/api/v1/nodes/edge-1/streams/cam1/hls";

/// The value of `tag` (`#EXT-X-…:`) on its first line in `playlist`.
fn tag<'a>(playlist: &'a str, tag: &str) -> Option<&'a str> {
    playlist.lines().find_map(|l| l.strip_prefix(tag))
}

/// `(msn, part)` of the newest part listed.
fn last_part(playlist: &str) -> (u64, u32) {
    let uri = playlist.lines().rev().find(|l| l.starts_with("#EXT-X-PART:")).expect("a part");
    let name = uri.split("URI=\"").nth(1).unwrap().split('"').next().unwrap();
    let (msn, part) = name.trim_start_matches("video-part-").trim_end_matches(".mp4").split_once('.').unwrap();
    (msn.parse().unwrap(), part.parse().unwrap())
}

/// ffmpeg's `-i URL -t 6 -c copy out.mp4`, then ffprobe's streams and packets of `out.mp4`.
async fn copy_six_seconds(url: String) -> Value {
    let out =
        std::env::temp_dir().join(format!("mm-hls-{}-{}.mp4", std::process::id(), mediamesh_testkit::unix_micros()));
    let o = tokio::task::spawn_blocking({
        let out = out.clone();
        move || {
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y", "-i", &url, "-t", "6", "-c", "copy"])
                .arg(&out)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(o.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&o.stderr));
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_packets", "-of", "json"])
        .arg(&out)
        .output()
        .unwrap();
    std::fs::remove_file(&out).unwrap();
    serde_json::from_slice(&probe.stdout).unwrap()
}

/// The decode times (seconds) of stream `index`'s packets.
fn decode_times(p: &Value, index: u64) -> Vec<f64> {
    p["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["stream_index"] == index)
        .map(|p| p["dts_time"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_copies_six_seconds_from_the_playlist() {
    require::ffmpeg();
    let fx = Fixture::builder().start().await;
    let p = copy_six_seconds(format!("http://{}{BASE}/index.m3u8", fx.hub.stream_addr)).await;
    let v = &p["streams"][0];
    assert_eq!(
        (v["codec_name"].as_str(), v["width"].as_u64(), v["height"].as_u64()),
        (Some("h264"), Some(320), Some(240))
    );
    assert_eq!(p["streams"].as_array().unwrap().len(), 1, "the test pattern has no audio");
    let dts = decode_times(&p, 0);
    assert!(dts.len() >= 140, "six seconds at 25 fps: {} packets", dts.len());
    assert!(dts.windows(2).all(|w| w[1] > w[0]), "timestamps increase");
    assert_eq!(EdgeStats::get(&fx.edge_stats().add_video), 1);
}

/// A camera with AAC: the audio rendition comes along, on the same timeline as the video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_gets_the_audio_rendition_of_a_camera_with_aac() {
    use mediamesh_edge::StreamConfig;
    use mediamesh_edge::config::RtspConfig;
    use mediamesh_edge::config::SourceConfig;
    use mediamesh_testkit::camera::GstCamera;

    require::ffmpeg();
    let cam = GstCamera::start(&["--audio", "aac"]);
    let url = cam.url(None);
    let fx = Fixture::builder()
        .edge(move |e| {
            e.streams.insert(
                "door".into(),
                StreamConfig { description: None, source: SourceConfig::Rtsp(RtspConfig::new(url)) },
            );
        })
        .start()
        .await;
    let index = request(fx.hub.stream_addr, "GET", "/api/v1/nodes/edge-1/streams/door/hls/index.m3u8", &[]).await;
    assert!(index.body.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\""), "{}", index.body);
    assert!(index.body.contains(",mp4a.40.2\"") && index.body.contains("AUDIO=\"audio\""), "{}", index.body);
    let p = copy_six_seconds(format!("http://{}/api/v1/nodes/edge-1/streams/door/hls/index.m3u8", fx.hub.stream_addr))
        .await;
    let streams = p["streams"].as_array().unwrap();
    let codec = |s: &Value| s["codec_name"].as_str().unwrap().to_owned();
    let video = streams.iter().position(|s| codec(s) == "h264").expect("a video stream");
    let audio = streams.iter().position(|s| codec(s) == "aac").expect("an audio stream");
    assert_eq!((streams[audio]["sample_rate"].as_str(), streams[audio]["channels"].as_u64()), (Some("48000"), Some(2)));
    for index in [video, audio] {
        let dts = decode_times(&p, index as u64);
        assert!(dts.len() > 50, "stream {index}: {} packets", dts.len());
        assert!(dts.windows(2).all(|w| w[1] > w[0]), "stream {index}: timestamps increase");
    }
    let (v0, a0) = (decode_times(&p, video as u64)[0], decode_times(&p, audio as u64)[0]);
    assert!((v0 - a0).abs() < 0.5, "audio and video start together: {v0} / {a0}");
    drop(cam);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_follow_the_low_latency_rules_and_blocking_reloads_wait() {
    let fx = Fixture::builder().start().await;
    let addr = fx.hub.stream_addr;
    let index = request(addr, "GET", &format!("{BASE}/index.m3u8"), &[]).await;
    assert_eq!(index.status, 200, "{}", index.body);
    assert_eq!(index.header("content-type"), ["application/vnd.apple.mpegurl"]);
    assert_eq!(index.header("cache-control"), ["no-store"]);
    assert!(index.body.contains("#EXT-X-STREAM-INF:BANDWIDTH="), "{}", index.body);
    assert!(index.body.contains("CODECS=\"avc1.") && index.body.contains("RESOLUTION=320x240"), "{}", index.body);
    assert!(index.body.contains("\nvideo.m3u8\n"), "{}", index.body);

    let media = request(addr, "GET", &format!("{BASE}/video.m3u8"), &[]).await;
    assert_eq!(media.status, 200, "{}", media.body);
    let m = &media.body;
    assert_eq!(tag(m, "#EXT-X-PART-INF:"), Some("PART-TARGET=0.200"));
    assert_eq!(tag(m, "#EXT-X-SERVER-CONTROL:"), Some("CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600"));
    assert!(tag(m, "#EXT-X-PRELOAD-HINT:").is_some(), "{m}");
    assert!(tag(m, "#EXT-X-MAP:").is_some(), "{m}");

    // A blocking reload for the next part is held until it exists, then lists it.
    let (msn, part) = last_part(m);
    let t0 = Instant::now();
    let next = request(addr, "GET", &format!("{BASE}/video.m3u8?_HLS_msn={msn}&_HLS_part={}", part + 1), &[]).await;
    let waited = t0.elapsed();
    assert_eq!(next.status, 200, "{}", next.body);
    assert!(last_part(&next.body) > (msn, part), "{}", next.body);
    assert!(waited < Duration::from_secs(1), "held {waited:?}");
    // The preload hint names a part that is fetched as soon as it exists.
    let hint = tag(&next.body, "#EXT-X-PRELOAD-HINT:").unwrap();
    let hinted = hint.split("URI=\"").nth(1).unwrap().trim_end_matches('"');
    let part = request(addr, "GET", &format!("{BASE}/{hinted}"), &[]).await;
    assert_eq!(part.status, 200, "{hinted}: {}", part.body);
    assert_eq!(part.header("content-type"), ["video/mp4"]);
    assert_eq!(part.header("cache-control"), ["max-age=3600, immutable"]);
    // Parts and segments are fMP4 fragments; the init segment starts with ftyp.
    let init_uri = tag(m, "#EXT-X-MAP:").unwrap().trim_start_matches("URI=\"").trim_end_matches('"');
    let init = request(addr, "GET", &format!("{BASE}/{init_uri}"), &[]).await;
    assert_eq!(init.status, 200);
    assert_eq!(&init.body.as_bytes()[4..8], b"ftyp");

    // Wait for a complete segment and check its listing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = request(addr, "GET", &format!("{BASE}/video.m3u8"), &[]).await.body;
    let extinf: Vec<f64> = later
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse().unwrap())
        .collect();
    assert!(!extinf.is_empty(), "{later}");
    let target: f64 = tag(&later, "#EXT-X-TARGETDURATION:").unwrap().parse().unwrap();
    assert!(extinf.iter().all(|d| *d <= target + 0.5), "{extinf:?} against {target}");
    for d in later.lines().filter_map(|l| l.strip_prefix("#EXT-X-PART:DURATION=")) {
        let d: f64 = d.split(',').next().unwrap().parse().unwrap();
        assert!(d <= 0.2 + 1e-6, "a part of {d} s is over PART-TARGET");
    }
    let seg = later.lines().find(|l| l.starts_with("video-seg-")).unwrap();
    let s = request(addr, "GET", &format!("{BASE}/{seg}"), &[]).await;
    assert_eq!(s.status, 200);
    assert!(s.body.contains("moof") && s.body.contains("mdat"), "a segment is fMP4 fragments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_answers_and_a_thousand_held_ones_disturb_nobody() {
    // One client address holds a thousand connections here; segments of 4 s keep the requests
    // for a part two segments ahead waiting long enough to count them.
    let fx = Fixture::builder()
        .hub(|h| {
            h.stream_max_connections_per_ip = 2000;
            h.hls.segment_min = mediamesh_tunnel::settings::Seconds::new(4);
        })
        .start()
        .await;
    let addr = fx.hub.stream_addr;
    let media = request(addr, "GET", &format!("{BASE}/video.m3u8"), &[]).await;
    assert_eq!(media.status, 200);
    let (msn, _) = last_part(&media.body);
    for (query, status, code) in [
        (format!("_HLS_msn={}", msn + 1000), 400, "hls_msn_too_far"),
        ("_HLS_msn=-1".to_owned(), 400, "bad_hls_parameter"),
        ("_HLS_msn=abc".to_owned(), 400, "bad_hls_parameter"),
        ("_HLS_part=2".to_owned(), 400, "bad_hls_parameter"),
        ("_HLS_msn=1&_HLS_msn=2".to_owned(), 400, "bad_hls_parameter"),
    ] {
        let a = request(addr, "GET", &format!("{BASE}/video.m3u8?{query}"), &[]).await;
        assert_eq!(a.status, status, "{query}: {}", a.body);
        assert!(a.body.contains(code), "{query}: {}", a.body);
    }
    for (file, code) in
        [("video-part-999999.0.mp4", "not_found"), ("video-seg-0.mp4.bak", "not_found"), ("x.m3u8", "not_found")]
    {
        let a = request(addr, "GET", &format!("{BASE}/{file}"), &[]).await;
        assert_eq!(a.status, 404, "{file}: {}", a.body);
        assert!(a.body.contains(code), "{file}: {}", a.body);
    }
    let a = request(addr, "GET", "/api/v1/nodes/edge-1/streams/nope/hls/index.m3u8", &[]).await;
    assert_eq!(a.status, 404);

    // A thousand requests blocked on a part two segments ahead: held, counted, and the stream's
    // other viewers and clients do not notice.
    let mut viewer = fx.viewer("edge-1", "cam1").await.unwrap();
    let path = format!("{BASE}/video.m3u8?_HLS_msn={}&_HLS_part=0", msn + 2);
    let held: Vec<_> = (0..1000)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { request(addr, "GET", &path, &[]).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let waiting = mediamesh_testkit::observe::metrics(addr).await.value("mediamesh_hls_waiting_requests");
        if waiting.is_some_and(|w| w >= 900.0) {
            break;
        }
        assert!(Instant::now() < deadline, "requests not held: {waiting:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mediamesh_testkit::assert_consecutive(&mediamesh_testkit::counters(&read_frames(&mut viewer, 25).await));
    let t0 = Instant::now();
    let quick = request(addr, "GET", &format!("{BASE}/video.m3u8"), &[]).await;
    assert_eq!(quick.status, 200);
    assert!(t0.elapsed() < Duration::from_millis(500), "a plain reload took {:?}", t0.elapsed());
    for h in held {
        let a = h.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
    }
}

/// With TLS on the stream port the hub speaks HTTP/2 to clients that offer it (curl here), and
/// HTTP/1.1 to the rest; the WebSocket viewer, which offers only HTTP/1.1, still plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_is_served_over_http2_with_tls() {
    require::program("curl", "curl");
    let ca = std::sync::Arc::new(std::sync::Mutex::new(None));
    let ca2 = ca.clone();
    let fx = Fixture::builder()
        .hub(move |h| {
            h.tls_stream_cert_file = Some(h.tls_tunnel_cert_file.clone());
            h.tls_stream_private_key_file = Some(h.tls_tunnel_private_key_file.clone());
            *ca2.lock().unwrap() = Some(h.tls_tunnel_ca_file.clone());
        })
        .start()
        .await;
    let ca = ca.lock().unwrap().clone().unwrap();
    let url = format!("https://localhost:{}{BASE}/video.m3u8", fx.hub.stream_addr.port());
    let curl = |version: &'static str| {
        let (url, ca) = (url.clone(), ca.clone());
        tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args([
                    "-s",
                    "--resolve",
                    &format!("localhost:{}:127.0.0.1", url.split(':').nth(2).unwrap().split('/').next().unwrap()),
                ])
                .args([version, "--cacert"])
                .arg(&ca)
                .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}", &url])
                .output()
                .unwrap()
        })
    };
    let h2 = curl("--http2").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&h2.stdout), "2 200", "{}", String::from_utf8_lossy(&h2.stderr));
    let h1 = curl("--http1.1").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&h1.stdout), "1.1 200", "{}", String::from_utf8_lossy(&h1.stderr));
    let roots = Some(mediamesh_tls::load_roots(&ca).unwrap());
    let opts = mediamesh_hub::client::ConnectOptions { roots, ..Default::default() };
    let wss = format!("wss://localhost:{}/api/v1/nodes/edge-1/streams/cam1/ws", fx.hub.stream_addr.port());
    let mut v = mediamesh_hub::client::ViewerClient::connect(&wss, &opts).await.expect("a wss viewer");
    mediamesh_testkit::assert_consecutive(&mediamesh_testkit::counters(&read_frames(&mut v, 10).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_keep_distinct_decode_and_presentation_times() {
    require::ffmpeg();
    let fx = Fixture::builder()
        .edge(|e| {
            e.streams.insert("bframes".into(), mediamesh_testkit::b_frame_camera());
        })
        .start()
        .await;
    let url = format!("http://{}/api/v1/nodes/edge-1/streams/bframes/hls/index.m3u8", fx.hub.stream_addr);
    let p = copy_six_seconds(url).await;
    assert_eq!(p["streams"][0]["has_b_frames"].as_u64().map(|b| b > 0), Some(true), "{}", p["streams"][0]);
    let times: Vec<(f64, f64)> = p["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["pts_time"].as_str().unwrap().parse().unwrap(), p["dts_time"].as_str().unwrap().parse().unwrap()))
        .collect();
    assert!(times.len() >= 140, "{} packets", times.len());
    assert!(times.windows(2).all(|w| w[1].1 > w[0].1), "decode times increase");
    assert!(times.iter().all(|(pts, dts)| pts >= dts), "no picture shown before it is decoded");
    let reordered = times.iter().filter(|(pts, dts)| pts > dts).count();
    assert!(reordered > times.len() / 2, "{reordered} of {} with pts after dts", times.len());
    // In presentation order the pictures are one frame apart: every B-frame found its place.
    let mut pts: Vec<f64> = times.iter().map(|t| t.0).collect();
    pts.sort_by(f64::total_cmp);
    // (Decode times are arrival stamps, so they carry the pipe's jitter; a misplaced B-frame
    // would be a whole frame off. The copy's end cuts in decode order, which can leave out the
    // B-frames shown before its last reference picture.)
    let gaps: Vec<f64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    let gaps = &gaps[..gaps.len() - 3];
    assert!(gaps.iter().all(|g| (0.025..0.055).contains(g)), "presentation gaps {gaps:?}");
}
