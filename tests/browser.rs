//! The web page in real Chromium (headless, over WebDriver): it lists the hub's nodes and
//! streams, and its players play them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

#[path = "support/auth.rs"]
mod support;

use mediamesh_testkit::Fixture;
use mediamesh_testkit::browser::{Browser, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_the_streams_and_plays_one_over_mse() {
    let fx = Fixture::builder().start().await;
    // Without an auth block there is nothing to sign in to, and the page never shows its form.
    let a = mediamesh_testkit::http::request(fx.hub.stream_addr, "POST", "/api/v1/session", &[]).await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(a.body.contains("no_sign_in"), "{}", a.body);
    let url = format!("http://{}/", fx.hub.stream_addr);
    let browser = tokio::task::spawn_blocking(move || {
        let b = Browser::start();
        b.goto(&url);
        b
    })
    .await
    .unwrap();
    let b = std::sync::Arc::new(browser);
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || {
        let b = b2;
        b.wait_for("the page lists cam1", Duration::from_secs(10), r#"return document.querySelector('[data-stream="edge-1/cam1"]') !== null"#);
        let supported = b.eval(r#"return MediaSource.isTypeSupported('video/mp4; codecs="avc1.42c01f"')"#);
        assert_eq!(supported, true, "this Chromium plays H.264 through MSE");
        let width = b.wait_for("cam1 plays", Duration::from_secs(15), r#"const v = document.querySelector('[data-stream="edge-1/cam1"] video'); return v.videoWidth"#);
        assert_eq!(width, 320);
        assert_eq!(b.eval("return document.getElementById('login').hidden"), true);
        let q = b.eval_async(
            r#"const v = document.querySelector('[data-stream="edge-1/cam1"] video');
               const before = v.getVideoPlaybackQuality().totalVideoFrames;
               setTimeout(() => done({ frames: v.getVideoPlaybackQuality().totalVideoFrames - before, error: v.error && v.error.message }), 5000);"#,
            Duration::from_secs(10),
        );
        assert!(q["frames"].as_i64().unwrap() >= 50, "{q}");
        assert!(q["error"].is_null(), "{q}");
        // The capture stamp burned into the picture reads from a canvas, frame after frame, with
        // counters that only go up, and gives the page its latency.
        let stamps = b.eval_async(
            r#"const v = document.querySelector('[data-stream="edge-1/cam1"] video');
               const canvas = document.createElement('canvas');
               const seen = [];
               const onFrame = (now, meta) => {
                 const l = MediameshStamp.latency(v, canvas, meta);
                 seen.push(l && { counter: l.counter, ms: l.ms });
                 if (seen.length < 25) v.requestVideoFrameCallback(onFrame); else done(seen);
               };
               v.requestVideoFrameCallback(onFrame);"#,
            Duration::from_secs(10),
        );
        let stamps = stamps.as_array().unwrap();
        assert!(stamps.iter().all(|s| !s.is_null()), "every frame has a readable stamp: {stamps:?}");
        let counters: Vec<i64> = stamps.iter().map(|s| s["counter"].as_i64().unwrap()).collect();
        assert!(counters.windows(2).all(|w| w[1] > w[0]), "{counters:?}");
        let latency = stamps[stamps.len() / 2]["ms"].as_f64().unwrap();
        assert!((0.0..2000.0).contains(&latency), "glass-to-glass {latency} ms");
        let shown = b.wait_for("the page shows the latency", Duration::from_secs(5), r#"return document.querySelector('[data-stream="edge-1/cam1"]').dataset.latencyMs"#);
        assert!(shown.as_str().unwrap().parse::<u32>().is_ok(), "{shown}");
    })
    .await
    .unwrap();
}

/// Frames the page's player of `edge-1/cam1` has decoded so far (a JavaScript expression).
const DECODED: &str =
    r#"(document.querySelector('[data-stream="edge-1/cam1"] video')?.getVideoPlaybackQuality().totalVideoFrames ?? 0)"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mse_player_resumes_in_the_same_page_after_a_cut() {
    let fx = Fixture::builder().through_proxy().start().await;
    let url = format!("http://{}/", fx.hub.stream_addr);
    let b = std::sync::Arc::new(
        tokio::task::spawn_blocking(move || {
            let b = Browser::start();
            b.goto(&url);
            b.eval("window.sameDocument = 'yes'; return true");
            b.wait_for("cam1 plays", Duration::from_secs(15), &format!("return {DECODED} > 25"));
            b
        })
        .await
        .unwrap(),
    );
    let proxy = fx.proxy.as_ref().unwrap();
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b2 = b.clone();
    let during =
        tokio::task::spawn_blocking(move || b2.eval(&format!("return {DECODED}")).as_i64().unwrap()).await.unwrap();
    proxy.restore();
    tokio::task::spawn_blocking(move || {
        b.wait_for(
            "50 new frames after the link returned",
            Duration::from_secs(10),
            &format!("return {DECODED} - {during} >= 50"),
        );
        assert_eq!(b.eval("return window.sameDocument"), "yes", "no reload");
        let error = b.eval(r#"return document.querySelector('[data-stream="edge-1/cam1"] video').error"#);
        assert!(error.is_null(), "{error}");
    })
    .await
    .unwrap();
}

/// A browser on `path` of the fixture's hub (blocking WebDriver calls run off the runtime).
async fn open(fx: &Fixture, path: &str) -> std::sync::Arc<Browser> {
    open_in(Kind::Chromium, fx, path).await
}

/// A browser of `kind` on `path` of the fixture's hub.
async fn open_in(kind: Kind, fx: &Fixture, path: &str) -> std::sync::Arc<Browser> {
    let url = format!("http://{}{path}", fx.hub.stream_addr);
    std::sync::Arc::new(
        tokio::task::spawn_blocking(move || {
            let b = Browser::launch(kind);
            b.goto(&url);
            b
        })
        .await
        .unwrap(),
    )
}

/// Runs blocking browser checks.
async fn run<R: Send + 'static>(b: &std::sync::Arc<Browser>, f: impl FnOnce(&Browser) -> R + Send + 'static) -> R {
    let b = b.clone();
    tokio::task::spawn_blocking(move || f(&b)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_a_stream_over_ll_hls() {
    let fx = Fixture::builder().start().await;
    let b = open(&fx, "/?protocol=hls").await;
    run(&b, |b| {
        let width = b.wait_for("cam1 plays over LL-HLS", Duration::from_secs(20), &format!("return {DECODED} > 0 && document.querySelector('[data-stream=\"edge-1/cam1\"] video').videoWidth"));
        assert_eq!(width, 320);
        assert_eq!(b.eval(r#"return document.querySelector('[data-stream="edge-1/cam1"]').dataset.protocol"#), "hls");
        let q = b.eval_async(
            &format!(
                "const before = {DECODED}; const v = document.querySelector('[data-stream=\"edge-1/cam1\"] video');
                 const c = document.createElement('canvas'); const first = MediameshStamp.read(v, c);
                 setTimeout(() => done({{ frames: {DECODED} - before, first, last: MediameshStamp.read(v, c), error: v.error && v.error.message }}), 5000);"
            ),
            Duration::from_secs(10),
        );
        assert!(q["frames"].as_i64().unwrap() >= 50, "{q}");
        assert!(q["error"].is_null(), "{q}");
        let (first, last) = (q["first"]["captureMs"].as_f64().unwrap(), q["last"]["captureMs"].as_f64().unwrap());
        assert!(last - first > 3000.0, "the stamp moves on: {q}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_browser_players_and_an_rtsp_viewer_share_one_upstream() {
    use mediamesh_edge::stats::EdgeStats;
    use mediamesh_testkit::rtsp_player::{RtspEvent, RtspPlayer};

    let fx = Fixture::builder().start().await;
    let b = open(&fx, "/").await;
    let mut rtsp = RtspPlayer::play(&fx.rtsp_url("edge-1", "cam1")).await.unwrap();
    run(&b, |b| {
        b.wait_for("the page's own player", Duration::from_secs(15), &format!("return {DECODED} > 0"));
        // Four more players of cam1 beside the page's own (MSE): two over MSE, two over LL-HLS.
        b.eval(
            r#"window.extra = [];
               for (const kind of ['mse', 'hls', 'mse', 'hls']) {
                 const v = document.createElement('video');
                 v.muted = true; v.dataset.kind = kind; document.body.appendChild(v);
                 const p = new PLAYERS[kind](v, { node: 'edge-1', name: 'cam1' }, auth, () => {});
                 p.start(); window.extra.push(v);
               }
               return true"#,
        );
        b.wait_for(
            "all five players decode",
            Duration::from_secs(20),
            "return window.extra.every(v => v.getVideoPlaybackQuality().totalVideoFrames > 10)",
        );
    })
    .await;
    for _ in 0..10 {
        let event = rtsp.next(Duration::from_secs(5)).await;
        assert!(matches!(event, Some(RtspEvent::Rtp(_))), "the RTSP viewer plays: {event:?}");
    }
    assert_eq!(EdgeStats::get(&fx.edge_stats().add_video), 1, "exactly one AddVideo at the edge");
    let protocols: Vec<&str> = fx.hub.sessions().snapshot()[0].viewers().iter().map(|v| v.protocol).collect();
    assert_eq!(protocols.iter().filter(|p| **p == "mse").count(), 3, "{protocols:?}");
    assert!(protocols.contains(&"hls") && protocols.contains(&"rtsp"), "{protocols:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_in_with_a_user_and_password_and_keeps_only_a_session_token() {
    let s = support::Setup::start(100, false).await;
    let b = open(&s.fx, "/").await;
    run(&b, |b| {
        b.wait_for("the sign-in form", Duration::from_secs(10), "return !document.getElementById('login').hidden");
        let sign_in = |password: &str| {
            b.eval(&format!(
                "document.getElementById('user').value = 'alice';
                 document.getElementById('password').value = {};
                 document.getElementById('login').requestSubmit(); return true",
                serde_json::Value::from(password)
            ));
        };
        sign_in("guess");
        let why = b.wait_for(
            "the refusal",
            Duration::from_secs(10),
            "const t = document.getElementById('login-reason').textContent; return t.includes('refused') && t",
        );
        assert!(why.as_str().unwrap().contains("wrong user or password"), "{why}");
        sign_in(support::ALICE_PASSWORD);
        let width = b.wait_for(
            "cam1 plays after signing in",
            Duration::from_secs(20),
            &format!(
                "return {DECODED} > 10 && document.querySelector('[data-stream=\"edge-1/cam1\"] video').videoWidth"
            ),
        );
        assert_eq!(width, 320);
        assert_eq!(b.eval("return document.getElementById('login').hidden"), true);
        // The tab keeps a session token, never the password.
        let kept = b.eval("return JSON.stringify(Object.assign({}, sessionStorage))");
        let kept = kept.as_str().unwrap();
        assert!(kept.contains("mms_") && !kept.contains(support::ALICE_PASSWORD), "{kept}");
        assert!(b.eval("return document.getElementById('password').value").as_str().unwrap().is_empty());
        let token = b.eval("return sessionStorage.getItem('mediamesh.token')").as_str().unwrap().to_owned();
        // Signing out ends the session at the hub, not only in the tab.
        b.eval("document.getElementById('signout').click(); return true");
        b.wait_for(
            "the sign-in form again",
            Duration::from_secs(10),
            "return !document.getElementById('login').hidden",
        );
        let status = b.eval_async(
            &format!(
                "fetch('api/v1/nodes', {{ headers: {{ Authorization: 'Bearer {token}', 'X-Requested-With': 'XMLHttpRequest' }} }}).then(r => done(r.status))"
            ),
            Duration::from_secs(5),
        );
        assert_eq!(status, 401, "the signed-out session still works");
    })
    .await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_in_firefox_over_mse_and_ll_hls() {
    let fx = Fixture::builder().start().await;
    let b = open_in(Kind::Firefox, &fx, "/?protocol=mse").await;
    run(&b, |b| {
        b.wait_for("the page lists cam1", Duration::from_secs(15), r#"return document.querySelector('[data-stream="edge-1/cam1"]') !== null"#);
        for protocol in ["mse", "hls"] {
            if protocol == "hls" {
                b.eval("const s = document.getElementById('protocol'); s.value = 'hls'; s.dispatchEvent(new Event('change')); return true");
            }
            let width = b.wait_for(
                &format!("cam1 plays over {protocol} in Firefox"),
                Duration::from_secs(20),
                &format!("const c = document.querySelector('[data-stream=\"edge-1/cam1\"]'); return c.dataset.protocol === '{protocol}' && {DECODED} > 5 && c.querySelector('video').videoWidth"),
            );
            assert_eq!(width, 320, "{protocol}");
            let q = b.eval_async(
                &format!(
                    "const before = {DECODED}; const v = document.querySelector('[data-stream=\"edge-1/cam1\"] video');
                     const c = document.createElement('canvas'); const first = MediameshStamp.read(v, c);
                     setTimeout(() => done({{ frames: {DECODED} - before, first, last: MediameshStamp.read(v, c), error: v.error && v.error.message }}), 5000);"
                ),
                Duration::from_secs(10),
            );
            assert!(q["frames"].as_i64().unwrap() >= 50, "{protocol}: {q}");
            assert!(q["error"].is_null(), "{protocol}: {q}");
            let (first, last) = (q["first"]["captureMs"].as_f64().unwrap(), q["last"]["captureMs"].as_f64().unwrap());
            assert!(last - first > 3000.0, "{protocol}: the stamp moves on: {q}");
            let shown = b.wait_for(
                "the page shows the latency",
                Duration::from_secs(5),
                r#"return document.querySelector('[data-stream="edge-1/cam1"]').dataset.latencyMs"#,
            );
            assert!(shown.as_str().unwrap().parse::<u32>().is_ok(), "{protocol}: {shown}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_with_b_frames_plays_over_mse_and_ll_hls() {
    mediamesh_testkit::require::ffmpeg();
    let fx = Fixture::builder()
        .edge(|e| {
            e.streams.clear();
            e.streams.insert("bframes".into(), mediamesh_testkit::b_frame_camera());
        })
        .start()
        .await;
    let b = open(&fx, "/?protocol=mse").await;
    run(&b, |b| {
        const VIDEO: &str = r#"document.querySelector('[data-stream="edge-1/bframes"] video')"#;
        for protocol in ["mse", "hls"] {
            if protocol == "hls" {
                b.eval("const s = document.getElementById('protocol'); s.value = 'hls'; s.dispatchEvent(new Event('change')); return true");
            }
            b.wait_for(
                &format!("the B-frame camera plays over {protocol}"),
                Duration::from_secs(20),
                &format!("const v = {VIDEO}; return v && v.parentElement.dataset.protocol === '{protocol}' && v.getVideoPlaybackQuality().totalVideoFrames > 5"),
            );
            let q = b.eval_async(
                &format!(
                    "const v = {VIDEO}; const q0 = v.getVideoPlaybackQuality();
                     setTimeout(() => {{ const q = v.getVideoPlaybackQuality();
                       done({{ frames: q.totalVideoFrames - q0.totalVideoFrames, dropped: q.droppedVideoFrames - q0.droppedVideoFrames,
                              width: v.videoWidth, error: v.error && v.error.message }}); }}, 5000);"
                ),
                Duration::from_secs(10),
            );
            assert!(q["frames"].as_i64().unwrap() >= 100, "{protocol}: {q}");
            assert!(q["dropped"].as_i64().unwrap() <= 5, "{protocol}: {q}");
            assert_eq!((q["width"].as_i64(), q["error"].is_null()), (Some(320), true), "{protocol}: {q}");
        }
    })
    .await;
}
