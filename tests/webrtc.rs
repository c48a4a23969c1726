//! WebRTC viewers over WHEP with real browsers: Chromium (WebDriver) makes the offer and plays
//! the answer's stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mediamesh_hub::config::WebRtcBlock;
use mediamesh_testkit::Fixture;
use mediamesh_testkit::browser::Browser;

#[path = "support/whep.rs"]
mod whep;
use whep::{CLASHING_OFFER, FIVE_SECONDS, play};

/// The UDP address of the answer's host candidate.
fn candidate(sdp: &str) -> std::net::SocketAddr {
    let c = sdp.lines().find_map(|l| l.strip_prefix("a=candidate:")).expect("a candidate");
    let f: Vec<&str> = c.split_whitespace().collect();
    format!("{}:{}", f[4], f[5]).parse().unwrap()
}

/// Opens ICE-TCP connections to `to` that send a packet naming no session and a length beyond
/// any datagram; the hub closes each (a read sees the end).
fn tcp_garbage(to: std::net::SocketAddr) {
    use std::io::{Read, Write};
    for packet in [[&[0x00, 0x10][..], &[7u8; 16]].concat(), [&[0xff, 0xff][..], &[7u8; 64]].concat()] {
        let mut s = std::net::TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&packet).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap(), 0, "closed by the hub: {packet:?}");
    }
}

/// Sends what a hostile or broken peer might to the WebRTC port: binding requests for unknown
/// sessions, binding requests naming `ufrag` without its password, and random datagrams.
fn flood(to: std::net::SocketAddr, ufrag: &str) -> usize {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let stun = |user: &str, txid: u64| {
        let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&txid.to_be_bytes());
        m.extend_from_slice(&[0; 4]);
        let name = user.as_bytes();
        m.extend_from_slice(&[0x00, 0x06, 0, name.len() as u8]);
        m.extend_from_slice(name);
        m.resize(m.len().div_ceil(4) * 4, 0);
        // A MESSAGE-INTEGRITY that cannot be right.
        m.extend_from_slice(&[0x00, 0x08, 0, 20]);
        m.extend_from_slice(&[0xab; 20]);
        let len = (m.len() - 20) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m
    };
    let mut sent = 0;
    for i in 0..30_000u64 {
        let d = match i % 3 {
            0 => stun(&format!("mm{:016x}:x", next()), next()),
            1 => stun(&format!("{ufrag}:x"), next()),
            _ => (0..(next() % 1400 + 1)).map(|_| next() as u8).collect(),
        };
        if s.send_to(&d, to).is_ok() {
            sent += 1;
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_stream_over_whep() {
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], interfaces: true, max_sessions: 10 });
        })
        .start()
        .await;
    // The page plays over MSE here, so the only WebRTC session is this test's own.
    let page = format!("http://{}/?protocol=mse", fx.hub.stream_addr);
    let whep = format!("http://{}/api/v1/nodes/edge-1/streams/cam1/whep", fx.hub.stream_addr);
    let (location, sdp) = tokio::task::spawn_blocking(move || {
        let b = Browser::start();
        b.goto(&page);
        let answer = play(&b, &whep);
        assert!(answer["location"].as_str().unwrap().contains("/whep/"), "{answer}");
        let width = b.wait_for("video over WebRTC", Duration::from_secs(15), "return window.whepVideo.videoWidth");
        assert_eq!(width, 320);
        let q = b.eval_async(FIVE_SECONDS, Duration::from_secs(10));
        assert!(q["frames"].as_i64().unwrap() >= 100, "{q}");
        assert_eq!(q["state"], "connected", "{q}");
        let sdp = answer["sdp"].as_str().unwrap();
        let location = answer["location"].as_str().unwrap();
        let ufrag = sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).unwrap();
        // The capture time travels in abs-capture-time (NTP milliseconds): the newest packet's
        // is a little before it arrived, on this one machine's clock.
        let s = b.eval("return window.whepPc.getReceivers()[0].getSynchronizationSources()[0]");
        let captured = s["captureTimestamp"].as_f64().expect("abs-capture-time negotiated") - 2_208_988_800_000.0;
        let age = s["timestamp"].as_f64().unwrap() - captured;
        assert!((0.0..2000.0).contains(&age), "capture {captured} ms, received {s}");
        // A flood of forged binding requests and random datagrams on the shared port, and
        // garbage on its ICE-TCP twin: the session plays on as before.
        let sent = flood(candidate(sdp), ufrag);
        tcp_garbage(candidate(sdp));
        let q = b.eval_async(FIVE_SECONDS, Duration::from_secs(10));
        assert!(q["frames"].as_i64().unwrap() >= 100, "after {sent} hostile datagrams: {q}");
        assert!(q["dropped"].as_i64().unwrap() <= 5, "{q}");
        assert_eq!(q["state"], "connected", "{q}");
        (location.to_owned(), sdp.to_owned())
    })
    .await
    .unwrap();
    // A second offer on the session, or a PATCH (trickle ICE, ICE restart): 405, the session
    // untouched.
    for method in ["POST", "PATCH"] {
        let a = mediamesh_testkit::http::request_with_body(
            fx.hub.stream_addr,
            method,
            &location,
            &[("Content-Type", "application/sdp")],
            sdp.as_bytes(),
        )
        .await;
        assert_eq!(a.status, 405, "{method}: {}", a.body);
        assert!(a.body.contains("renegotiation_unsupported"), "{}", a.body);
        assert_eq!(a.header("allow"), vec!["DELETE, OPTIONS".to_owned()]);
    }
    let metrics = mediamesh_testkit::observe::metrics(fx.hub.stream_addr).await;
    assert_eq!(metrics.value("mediamesh_webrtc_sessions"), Some(1.0));
    assert!(metrics.value("mediamesh_webrtc_frames_packetized_total").unwrap() >= 100.0);
    // DELETE on the session's location ends it.
    let a = mediamesh_testkit::http::request(fx.hub.stream_addr, "DELETE", &location, &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while mediamesh_testkit::observe::metrics(fx.hub.stream_addr).await.value("mediamesh_webrtc_sessions") != Some(0.0)
    {
        assert!(std::time::Instant::now() < deadline, "the session outlived its DELETE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_and_unknown_sessions_get_clear_answers() {
    use mediamesh_testkit::http::request_with_body;
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], interfaces: true, max_sessions: 0 });
        })
        .start()
        .await;
    let addr = fx.hub.stream_addr;
    let whep = "/api/v1/nodes/edge-1/streams/cam1/whep";
    let a = request_with_body(addr, "POST", whep, &[("Content-Type", "application/sdp")], b"not sdp").await;
    assert_eq!(a.status, 503, "the limit (0) is checked first: {}", a.body);
    assert!(a.body.contains("too_many_sessions"), "{}", a.body);
    let a = mediamesh_testkit::http::request(addr, "DELETE", &format!("{whep}/abc"), &[]).await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(a.body.contains("session_not_found"), "{}", a.body);
    let a = mediamesh_testkit::http::request(addr, "OPTIONS", whep, &[]).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(a.header("access-control-allow-methods"), vec!["POST, DELETE, OPTIONS".to_owned()]);

    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], interfaces: true, max_sessions: 10 });
        })
        .start()
        .await;
    let addr = fx.hub.stream_addr;
    let a = request_with_body(addr, "POST", whep, &[("Content-Type", "application/sdp")], b"v=0\r\nnonsense").await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("bad_sdp") || a.body.contains("offer_refused"), "{}", a.body);
    let a = request_with_body(addr, "POST", "/api/v1/nodes/edge-1/streams/nope/whep", &[], b"v=0").await;
    assert_eq!(a.status, 404, "{}", a.body);
    // A well-formed offer of VP8 alone: nothing this H.264 camera can be sent in.
    let vp8 = CLASHING_OFFER.split("m=audio").next().unwrap().replace(
        "a=rtpmap:111 H264/90000\r\na=fmtp:111 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=rtpmap:111 VP8/90000",
    );
    let vp8 = vp8.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0");
    let a = request_with_body(addr, "POST", whep, &[("Content-Type", "application/sdp")], vp8.as_bytes()).await;
    assert_eq!(a.status, 406, "{}", a.body);
    assert!(a.body.contains("no_common_codec") && a.body.contains("H.264"), "{}", a.body);
    assert_eq!(mediamesh_testkit::observe::metrics(addr).await.value("mediamesh_webrtc_sessions"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_over_webrtc_by_default_and_falls_back_to_mse() {
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], interfaces: true, max_sessions: 10 });
        })
        .edge(|e| {
            // The demo camera's size: 720p at 25 fps, 2 Mbit/s.
            let p = e.streams.get_mut("cam1").and_then(|s| s.test_pattern_mut()).unwrap();
            (p.width, p.height, p.bitrate_kbps) = (1280, 720, 2000);
        })
        .start()
        .await;
    let page = format!("http://{}/", fx.hub.stream_addr);
    tokio::task::spawn_blocking(move || {
        let b = Browser::start();
        b.goto(&page);
        let card = r#"document.querySelector('[data-stream="edge-1/cam1"]')"#;
        b.wait_for(
            "cam1 plays over WebRTC",
            Duration::from_secs(15),
            &format!(
                "const c = {card}; return c && c.dataset.protocol === 'webrtc' && c.querySelector('video').videoWidth"
            ),
        );
        assert_eq!(
            b.eval("return document.getElementById('protocol').value"),
            "webrtc",
            "the default where the hub serves it"
        );
        assert_eq!(b.eval(&format!("return {card}.querySelector('video').videoWidth")), 1280);
        let q = b.eval_async(
            &format!(
                "const c = {card}; const v = c.querySelector('video'); const q0 = v.getVideoPlaybackQuality();
                 const canvas = document.createElement('canvas'); const first = MediameshStamp.read(v, canvas);
                 setTimeout(() => {{ const q = v.getVideoPlaybackQuality();
                   done({{ frames: q.totalVideoFrames - q0.totalVideoFrames, dropped: q.droppedVideoFrames - q0.droppedVideoFrames,
                          first, last: MediameshStamp.read(v, canvas), protocol: c.dataset.protocol, state: c.dataset.state,
                          fallback: c.dataset.fallback || null }}); }}, 5000);"
            ),
            Duration::from_secs(10),
        );
        assert!(q["frames"].as_i64().unwrap() >= 100, "{q}");
        assert!(q["dropped"].as_i64().unwrap() <= 10, "{q}");
        let (first, last) = (q["first"]["counter"].as_i64().unwrap(), q["last"]["counter"].as_i64().unwrap());
        assert!(last > first, "the burned-in stamp moves on: {q}");
        assert_eq!((q["protocol"].as_str(), q["fallback"].as_str()), (Some("webrtc"), None), "no ICE failure: {q}");
        let shown = b.wait_for("the latency", Duration::from_secs(5), &format!("return {card}.dataset.latencyMs"));
        let ms: u32 = shown.as_str().unwrap().parse().unwrap();
        assert!(ms < 2000, "glass-to-glass over WebRTC: {ms} ms");
    })
    .await
    .unwrap();

    // A hub whose WebRTC address cannot be reached (a documentation address, RFC 5737): the
    // page gives up on WebRTC after a few seconds and plays the stream over MSE.
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock {
                port: 0,
                hosts: vec!["192.0.2.1".parse().unwrap()],
                interfaces: false,
                max_sessions: 10,
            });
        })
        .start()
        .await;
    let page = format!("http://{}/", fx.hub.stream_addr);
    tokio::task::spawn_blocking(move || {
        let b = Browser::start();
        b.goto(&page);
        let card = r#"document.querySelector('[data-stream="edge-1/cam1"]')"#;
        let why = b.wait_for(
            "the fallback to MSE",
            Duration::from_secs(15),
            &format!("const c = {card}; return c && c.dataset.protocol === 'mse' && c.querySelector('video').videoWidth > 0 && c.dataset.fallback"),
        );
        assert!(why.as_str().unwrap().contains("no WebRTC connection"), "{why}");
    })
    .await
    .unwrap();
}

/// Ten WHEP clients in one page: each plays `index` of them (for `eval_async`).
const TEN_PLAYERS: &str = r#"
const [url] = arguments;
window.players = [];
for (let i = 0; i < 10; i++) {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  const v = document.createElement('video');
  v.muted = true; v.autoplay = true; v.playsInline = true; v.width = 64; document.body.appendChild(v);
  pc.ontrack = (e) => { v.srcObject = e.streams[0] || new MediaStream([e.track]); v.play().catch(() => {}); };
  await pc.setLocalDescription(await pc.createOffer());
  const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
  if (r.status !== 201) return { status: r.status, body: await r.text() };
  await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  window.players.push({ pc, v });
}
return { status: 201 };
"#;

/// The sum of a counter over all its label sets.
fn total(m: &mediamesh_testkit::observe::Metrics, name: &str) -> f64 {
    m.0.iter().filter(|(s, _)| s == name || s.starts_with(&format!("{name}{{"))).map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_whep_sessions_and_an_rtsp_viewer_share_one_upstream_and_one_packetizer() {
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], interfaces: true, max_sessions: 20 });
        })
        .start()
        .await;
    let mut rtsp = mediamesh_testkit::rtsp_player::RtspPlayer::play(&fx.rtsp_url("edge-1", "cam1")).await.unwrap();
    let page = format!("http://{}/?protocol=mse", fx.hub.stream_addr);
    let whep = format!("http://{}/api/v1/nodes/edge-1/streams/cam1/whep", fx.hub.stream_addr);
    let b = std::sync::Arc::new(tokio::task::spawn_blocking(Browser::start).await.unwrap());
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || {
        b2.goto(&page);
        let r = b2.eval_async(
            &format!("const f = async (arguments) => {{ {TEN_PLAYERS} }}; f(['{whep}']).then(done, e => done({{ error: String(e) }}));"),
            Duration::from_secs(20),
        );
        assert_eq!(r["status"], 201, "{r}");
        b2.wait_for(
            "ten players",
            Duration::from_secs(20),
            "return window.players.every(p => p.v.videoWidth === 320)",
        );
    })
    .await
    .unwrap();
    let before = mediamesh_testkit::observe::metrics(fx.hub.stream_addr).await;
    assert_eq!(before.value("mediamesh_webrtc_sessions"), Some(10.0));
    let b2 = b.clone();
    let (q, rtp) = tokio::join!(
        tokio::task::spawn_blocking(move || {
            b2.eval_async(
                "const f0 = window.players.map(p => p.v.getVideoPlaybackQuality().totalVideoFrames);
                 setTimeout(() => done({ frames: window.players.map((p, i) => p.v.getVideoPlaybackQuality().totalVideoFrames - f0[i]),
                   states: window.players.map(p => p.pc.iceConnectionState) }), 4000);",
                Duration::from_secs(10),
            )
        }),
        async {
            let mut packets = 0;
            let until = tokio::time::Instant::now() + Duration::from_secs(4);
            while let Ok(Some(e)) = tokio::time::timeout_at(until, rtsp.next(Duration::from_secs(5))).await {
                if matches!(e, mediamesh_testkit::rtsp_player::RtspEvent::Rtp(_)) {
                    packets += 1;
                }
            }
            packets
        }
    );
    let q = q.unwrap();
    let after = mediamesh_testkit::observe::metrics(fx.hub.stream_addr).await;
    for (i, f) in q["frames"].as_array().unwrap().iter().enumerate() {
        assert!(f.as_i64().unwrap() >= 60, "player {i}: {q}");
        assert_eq!(q["states"][i], "connected", "{q}");
    }
    assert!(rtp >= 60, "the RTSP viewer plays too: {rtp} packets");
    assert_eq!(mediamesh_edge::stats::EdgeStats::get(&fx.edge_stats().add_video), 1, "one upstream for all eleven");
    // The WebRTC packetizer ran once per frame the edge sent, not once per viewer.
    let frames = total(&after, "mediamesh_stream_frames_in_total") - total(&before, "mediamesh_stream_frames_in_total");
    let packetized = after.value("mediamesh_webrtc_frames_packetized_total").unwrap()
        - before.value("mediamesh_webrtc_frames_packetized_total").unwrap();
    assert!(frames >= 90.0, "{frames} frames in");
    assert!((packetized - frames).abs() <= 2.0, "{packetized} packetized for {frames} frames in");
}

/// The Python interpreter with aiortc: `scripts/test` makes a virtualenv for it under `target/`.
const AIORTC_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venv/bin/python");

/// Runs the aiortc WHEP client on `cam1` until it has decoded 100 frames; what it printed.
async fn aiortc(fx: &Fixture, extra: &[&str]) -> serde_json::Value {
    assert!(
        std::process::Command::new(AIORTC_PYTHON)
            .args(["-c", "import aiortc"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "aiortc missing: scripts/test installs it ({AIORTC_PYTHON} -m pip install aiortc)"
    );
    let whep = format!("http://{}/api/v1/nodes/edge-1/streams/cam1/whep", fx.hub.stream_addr);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/aiortc_whep.py");
    let mut args = vec![script, &whep, "100"];
    args.extend_from_slice(extra);
    let out = tokio::process::Command::new(AIORTC_PYTHON).args(&args).kill_on_drop(true).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_receives_and_decodes_frames_over_whep() {
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], interfaces: true, max_sessions: 10 });
        })
        .start()
        .await;
    let got = aiortc(&fx, &[]).await;
    eprintln!("aiortc: {got}");
    assert_eq!(got["status"], 201, "{got}");
    assert!(got["frames"].as_u64().unwrap() >= 100, "{got}");
    assert_eq!(got["sizes"], serde_json::json!([[320, 240]]), "every frame the camera's size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_vanishes_without_delete_is_ended_by_ice_consent() {
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], interfaces: true, max_sessions: 10 });
        })
        .start()
        .await;
    // The client takes its frames and exits without a DELETE, a BYE or a DTLS close.
    let got = aiortc(&fx, &["--vanish"]).await;
    assert!(got["frames"].as_u64().unwrap() >= 100, "{got}");
    let gone = std::time::Instant::now();
    let sessions =
        || async { mediamesh_testkit::observe::metrics(fx.hub.stream_addr).await.value("mediamesh_webrtc_sessions") };
    assert_eq!(sessions().await, Some(1.0), "still there right after");
    while sessions().await != Some(0.0) {
        assert!(gone.elapsed() < Duration::from_secs(30), "the session outlived its client by 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("a vanished WebRTC viewer was ended {:?} after its last packet", gone.elapsed());
    // Its place is given back: the stream has no viewer left.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fx.hub.sessions().snapshot().iter().any(|s| !s.viewers().is_empty()) {
        assert!(std::time::Instant::now() < deadline, "the viewer outlived its session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mediamesh_view_watches_over_whep() {
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], interfaces: true, max_sessions: 10 });
        })
        .start()
        .await;
    let whep = format!("http://{}/api/v1/nodes/edge-1/streams/cam1/whep", fx.hub.stream_addr);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mediamesh"))
        .args(["view", &whep, "--frames", "100", "--json", "--timeout", "10"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    eprintln!("mediamesh view over WHEP: {s}");
    assert_eq!(s["frames"], 100, "{s}");
    assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(320), Some(240)), "{s}");
    assert_eq!(s["firstIsKeyframe"], true, "{s}");
    assert_eq!((s["counterFrames"].as_u64(), s["counterGaps"].as_u64()), (Some(100), Some(0)), "{s}");
    let p50 = s["latencyMsP50"].as_f64().expect("capture times arrive in abs-capture-time");
    assert!((0.0..1000.0).contains(&p50), "{s}");
    assert_eq!(s["brokenFrames"], 0, "{s}");
    // It ends its session with a DELETE.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while mediamesh_testkit::observe::metrics(fx.hub.stream_addr).await.value("mediamesh_webrtc_sessions") != Some(0.0)
    {
        assert!(std::time::Instant::now() < deadline, "the session outlived the viewer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
