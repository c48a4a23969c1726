//! WebRTC viewers over WHEP with real browsers: Chromium (WebDriver) makes the offer and plays
//! the answer's stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mediamesh_hub::config::WebRtcBlock;
use mediamesh_testkit::Fixture;
use mediamesh_testkit::browser::Browser;

/// A WHEP client of a few lines: a receive-only video transceiver, the offer POSTed, the answer
/// applied; the video element plays what arrives.
const WHEP_PLAY: &str = r#"
const [url] = arguments;
const pc = new RTCPeerConnection();
pc.addTransceiver('video', { direction: 'recvonly' });
const v = document.createElement('video');
v.muted = true; v.autoplay = true; v.playsInline = true; document.body.appendChild(v);
window.whepVideo = v; window.whepPc = pc;
pc.ontrack = (e) => { v.srcObject = e.streams[0] || new MediaStream([e.track]); v.play().catch(() => {}); };
const offer = await pc.createOffer();
await pc.setLocalDescription(offer);
const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer.sdp });
if (r.status !== 201) return { status: r.status, body: await r.text() };
await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
return { status: r.status, location: r.headers.get('Location') };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_stream_over_whep() {
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], max_sessions: 10 });
        })
        .start()
        .await;
    // The page plays over MSE here, so the only WebRTC session is this test's own.
    let page = format!("http://{}/?protocol=mse", fx.hub.stream_addr);
    let whep = format!("http://{}/api/v1/nodes/edge-1/streams/cam1/whep", fx.hub.stream_addr);
    let location = tokio::task::spawn_blocking(move || {
        let b = Browser::start();
        b.goto(&page);
        let answer = b.eval_async(
            &format!("const f = async (arguments) => {{ {WHEP_PLAY} }}; f(['{whep}']).then(done, e => done({{ error: String(e) }}));"),
            Duration::from_secs(10),
        );
        assert_eq!(answer["status"], 201, "{answer}");
        assert!(answer["location"].as_str().unwrap().contains("/whep/"), "{answer}");
        let width = b.wait_for("video over WebRTC", Duration::from_secs(15), "return window.whepVideo.videoWidth");
        assert_eq!(width, 320);
        let q = b.eval_async(
            "const v = window.whepVideo; const q0 = v.getVideoPlaybackQuality().totalVideoFrames;
             setTimeout(() => done({ frames: v.getVideoPlaybackQuality().totalVideoFrames - q0, state: window.whepPc.iceConnectionState }), 5000);",
            Duration::from_secs(10),
        );
        assert!(q["frames"].as_i64().unwrap() >= 100, "{q}");
        assert_eq!(q["state"], "connected", "{q}");
        answer["location"].as_str().unwrap().to_owned()
    })
    .await
    .unwrap();
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
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], max_sessions: 0 });
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
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], max_sessions: 10 });
        })
        .start()
        .await;
    let addr = fx.hub.stream_addr;
    let a = request_with_body(addr, "POST", whep, &[("Content-Type", "application/sdp")], b"v=0\r\nnonsense").await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("bad_sdp") || a.body.contains("offer_refused"), "{}", a.body);
    let a = request_with_body(addr, "POST", "/api/v1/nodes/edge-1/streams/nope/whep", &[], b"v=0").await;
    assert_eq!(a.status, 404, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_over_webrtc_by_default_and_falls_back_to_mse() {
    let fx = Fixture::builder()
        .hub(|h| {
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec![], max_sessions: 10 });
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
            h.webrtc = Some(WebRtcBlock { port: 0, hosts: vec!["192.0.2.1".parse().unwrap()], max_sessions: 10 });
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
