//! WebRTC codecs with real cameras (GStreamer's RTSP server): Opus and G.711 audio passing
//! through to Chromium, AAC left out with the page's note, an offer that makes str0m panic,
//! and an H.265 camera to a client that offers H.265 and to one that does not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mediamesh_hub::config::WebRtcBlock;
use mediamesh_testkit::Fixture;
use mediamesh_testkit::browser::Browser;

#[path = "support/whep.rs"]
mod whep;
use whep::CLASHING_OFFER;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_and_g711_pass_through_and_aac_is_left_out_with_a_reason() {
    use mediamesh_edge::StreamConfig;
    use mediamesh_edge::config::RtspConfig;
    use mediamesh_edge::config::SourceConfig;
    use mediamesh_testkit::camera::GstCamera;

    let cameras: Vec<(&str, GstCamera)> =
        ["opus", "pcmu", "aac"].into_iter().map(|a| (a, GstCamera::start(&["--audio", a]))).collect();
    let urls: Vec<(String, String)> = cameras.iter().map(|(a, c)| (format!("door-{a}"), c.url(None))).collect();
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], interfaces: true, max_sessions: 10 });
        })
        .edge(move |e| {
            for (name, url) in &urls {
                let rtsp = RtspConfig::new(url.clone());
                e.streams.insert(name.clone(), StreamConfig::new(SourceConfig::Rtsp(rtsp)));
            }
        })
        .start()
        .await;
    let base = format!("http://{}", fx.hub.stream_addr);
    tokio::task::spawn_blocking(move || {
        let b = Browser::start();
        b.goto(&format!("{base}/api/v1/hub"));
        for (audio, mime) in [("opus", "audio/opus"), ("pcmu", "audio/PCMU"), ("aac", "")] {
            let answer = whep::play_with(&b, &format!("{base}/api/v1/nodes/edge-1/streams/door-{audio}/whep"), true);
            let sdp = answer["sdp"].as_str().unwrap();
            b.wait_for(&format!("{audio}: video"), Duration::from_secs(15), "return window.whepVideo.videoWidth");
            std::thread::sleep(Duration::from_secs(2));
            let stats = b.eval_async(
                "window.whepPc.getStats().then(r => { const s = {}; const codecs = {};
                   r.forEach(x => { if (x.type === 'codec') codecs[x.id] = x.mimeType; });
                   r.forEach(x => { if (x.type === 'inbound-rtp') s[x.kind] = { packets: x.packetsReceived, codec: codecs[x.codecId] || null,
                     samples: x.totalSamplesReceived || 0, frames: x.framesDecoded || 0 }; });
                   done(s); });",
                Duration::from_secs(5),
            );
            eprintln!("{audio}: {stats}");
            assert!(stats["video"]["frames"].as_u64().unwrap() > 10, "{audio}: {stats}");
            if mime.is_empty() {
                // AAC: the answer turns audio down (port 0) and says why in a header.
                assert_eq!(answer["omitted"], "aac", "{answer}");
                assert!(sdp.contains("m=audio 0 "), "{sdp}");
                assert!(stats["audio"]["packets"].as_u64().unwrap_or(0) == 0, "{stats}");
            } else {
                assert!(answer["omitted"].is_null(), "{answer}");
                assert_eq!(stats["audio"]["codec"], mime, "{stats}");
                // More than a second of sound decoded in the two seconds (in the browser's
                // output rate, at least 8 kHz).
                assert!(stats["audio"]["packets"].as_u64().unwrap() > 10, "{audio}: {stats}");
                assert!(stats["audio"]["samples"].as_u64().unwrap() > 8000, "{audio} decodes: {stats}");
            }
            b.eval("window.whepPc.close(); window.whepVideo.remove(); return true");
        }
        // The page plays the AAC camera over WebRTC without sound, and says why under it.
        b.goto(&format!("{base}/"));
        let note = b.wait_for(
            "the page's note on AAC",
            Duration::from_secs(15),
            r#"const c = document.querySelector('[data-stream="edge-1/door-aac"]'); return c && c.dataset.protocol === 'webrtc' && c.querySelector('video').videoWidth > 0 && c.dataset.note"#,
        );
        assert!(note.as_str().unwrap().contains("AAC"), "{note}");
    })
    .await
    .unwrap();
    // One payload type for Opus and H.264 at once: str0m asserts against it (a panic), which
    // must cost the offer its answer and nothing else.
    let a = mediamesh_testkit::http::request_with_body(
        fx.hub.stream_addr,
        "POST",
        "/api/v1/nodes/edge-1/streams/door-opus/whep",
        &[("Content-Type", "application/sdp")],
        CLASHING_OFFER.as_bytes(),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    let r = mediamesh_testkit::http::request(fx.hub.stream_addr, "GET", "/api/v1/hub", &[]).await;
    assert_eq!(r.status, 200, "the hub answers on");
    drop(cameras);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h265_camera_goes_to_clients_that_offer_h265_and_is_refused_clearly_to_others() {
    use mediamesh_edge::StreamConfig;
    use mediamesh_edge::config::RtspConfig;
    use mediamesh_edge::config::SourceConfig;
    use mediamesh_testkit::camera::GstCamera;

    let cam = GstCamera::start(&["--video", "h265", "--audio", "none"]);
    let url = cam.url(None);
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], interfaces: true, max_sessions: 10 });
        })
        .edge(move |e| {
            let rtsp = RtspConfig::new(url);
            e.streams.insert("hevc".into(), StreamConfig::new(SourceConfig::Rtsp(rtsp)));
        })
        .start()
        .await;
    let whep = format!("http://{}/api/v1/nodes/edge-1/streams/hevc/whep", fx.hub.stream_addr);
    // str0m's client offers H.265: mediamesh view gets the camera's frames.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mediamesh"))
        .args(["view", &whep, "--frames", "50", "--json", "--timeout", "15"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    eprintln!("H.265 over WHEP: {s}");
    assert_eq!(s["frames"], 50, "{s}");
    assert!(s["codec"].as_str().unwrap().starts_with("hvc1."), "{s}");
    assert!(s["width"].as_u64().unwrap() > 0, "{s}");
    // This Chromium offers no H.265: a 406 that says what the camera sends.
    tokio::task::spawn_blocking(move || {
        let b = Browser::start();
        b.goto(&whep.replace("/api/v1/nodes/edge-1/streams/hevc/whep", "/api/v1/hub"));
        let r = b.eval_async(
            &format!(
                "const f = async (arguments) => {{ {} }}; f(['{whep}']).then(done, e => done({{ error: String(e) }}));",
                whep::WHEP_PLAY
            ),
            Duration::from_secs(20),
        );
        assert_eq!(r["status"], 406, "{r}");
        assert!(r["body"].as_str().unwrap().contains("H.265"), "{r}");
    })
    .await
    .unwrap();
    drop(cam);
}
