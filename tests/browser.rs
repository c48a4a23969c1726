//! The web page in real Chromium (headless, over WebDriver): it lists the hub's nodes and
//! streams, and its players play them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mediamesh_testkit::Fixture;
use mediamesh_testkit::browser::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_the_streams_and_plays_one_over_mse() {
    let fx = Fixture::builder().start().await;
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
        let q = b.eval_async(
            r#"const v = document.querySelector('[data-stream="edge-1/cam1"] video');
               const before = v.getVideoPlaybackQuality().totalVideoFrames;
               setTimeout(() => done({ frames: v.getVideoPlaybackQuality().totalVideoFrames - before, error: v.error && v.error.message }), 5000);"#,
            Duration::from_secs(10),
        );
        assert!(q["frames"].as_i64().unwrap() >= 50, "{q}");
        assert!(q["error"].is_null(), "{q}");
    })
    .await
    .unwrap();
}
