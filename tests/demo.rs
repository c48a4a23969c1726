//! `mediamesh demo` as a new user runs it: start it, run the view command and the RTSP URL it
//! prints (both carry a viewer token), decode with ffprobe, see the same requests without the
//! token refused, stop it with SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_serves_the_printed_view_command_and_stops_cleanly() {
    mediamesh_testkit::require::ffmpeg();
    let dir = std::env::temp_dir().join(format!("mm-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_mediamesh"))
        .args(["demo", "--stream-port", "0", "--tunnel-port", "0", "--rtsp-port", "0", "--state-dir"])
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(Some(demo.id()));
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut view_cmd = None;
    let mut rtsp_url = None;
    let mut first_line = None;
    let started = Instant::now();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if first_line.is_none() && !line.trim().is_empty() {
            first_line = Some(line.clone());
        }
        if line.contains(" view ws://") {
            view_cmd = Some(line.trim().to_owned());
        }
        if let Some(url) = line.trim().strip_prefix("ffplay -rtsp_transport tcp ") {
            rtsp_url = Some(url.to_owned());
        }
        if line.starts_with("mediamesh demo ready") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "demo did not get ready");
    }
    let view_cmd = view_cmd.expect("the demo prints a view command");

    // The first thing it says is the page's address, on plain HTTP (no certificate warning on
    // this machine), carrying the token in the fragment; the page is there.
    let first_line = first_line.unwrap();
    let page = first_line.strip_prefix("Open the page in a browser: ").expect(&first_line);
    let (origin, fragment) = page.split_once("/#token=").expect(page);
    assert!(origin.starts_with("http://127.0.0.1:") && fragment.starts_with("ey"), "{page}");
    let addr: std::net::SocketAddr = origin.trim_start_matches("http://").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let index = rt.block_on(mediamesh_testkit::http::request(addr, "GET", "/", &[]));
    assert_eq!(index.status, 200);
    assert!(index.body.contains("<title>mediamesh</title>"), "{}", index.body);

    // Opened in Chromium as printed, the page lists the node and both cameras and plays them,
    // cam1 at 1280x720, with the token it took from the address.
    let browser = mediamesh_testkit::browser::Browser::start();
    browser.goto(page);
    let listed = browser.wait_for(
        "the page to list both cameras",
        Duration::from_secs(15),
        "const s = [...document.querySelectorAll('[data-stream]')].map(e => e.dataset.stream).sort(); return s.length == 2 && s",
    );
    assert_eq!(listed, serde_json::json!(["demo-edge/cam1", "demo-edge/cam2"]));
    let width = browser.wait_for(
        "cam1 to play",
        Duration::from_secs(20),
        "const v = document.querySelector('[data-stream=\"demo-edge/cam1\"] video'); return v.getVideoPlaybackQuality().totalVideoFrames > 0 && v.videoWidth",
    );
    assert_eq!(width, 1280);
    // As a new user sees it: over WebRTC, the page's default, with the latency under the picture.
    let card = "document.querySelector('[data-stream=\"demo-edge/cam1\"]')";
    assert_eq!(browser.eval(&format!("return {card}.dataset.protocol")), "webrtc");
    let shown = browser.wait_for("the latency", Duration::from_secs(10), &format!("return {card}.dataset.latencyMs"));
    let ms: u32 = shown.as_str().unwrap().parse().unwrap();
    assert!(ms < 1000, "glass-to-glass over WebRTC: {ms} ms");
    assert!(browser.eval(&format!("return {card}.dataset.fallback || null")).is_null(), "no fallback to MSE");
    assert_eq!(browser.eval("return location.hash"), "", "the page took the token out of the address");
    let form = browser.eval("return getComputedStyle(document.getElementById('login')).display");
    assert_eq!(form, "none", "signed in with the token, the page shows no sign-in form");
    // For MSE and for LL-HLS in turn: cam1 at 1280 wide, at least 50 new frames decoded in 5 s,
    // its stamp advancing, no media error.
    let (origin, token) = page.split_once("/#").unwrap();
    for protocol in ["mse", "hls"] {
        browser.goto(&format!("{origin}/?protocol={protocol}#{token}"));
        let cam1 = "document.querySelector('[data-stream=\"demo-edge/cam1\"] video')";
        let width = browser.wait_for(
            "cam1 to play",
            Duration::from_secs(20),
            &format!("const v = {cam1}; return v && v.getVideoPlaybackQuality().totalVideoFrames > 0 && v.videoWidth"),
        );
        assert_eq!(width, 1280, "{protocol}");
        let q = browser.eval_async(
            &format!(
                "const v = {cam1}; const c = document.createElement('canvas');
                 const before = v.getVideoPlaybackQuality().totalVideoFrames; const first = MediameshStamp.read(v, c);
                 setTimeout(() => done({{ frames: v.getVideoPlaybackQuality().totalVideoFrames - before, first,
                   last: MediameshStamp.read(v, c), error: v.error && v.error.message }}), 5000);"
            ),
            Duration::from_secs(10),
        );
        assert!(q["frames"].as_i64().unwrap() >= 50, "{protocol}: {q}");
        assert!(q["error"].is_null(), "{protocol}: {q}");
        let (a, b) = (q["first"]["counter"].as_i64(), q["last"]["counter"].as_i64());
        assert!(a.is_some() && b.is_some() && b != a, "{protocol}: the stamp advances: {q}");
    }
    drop(browser);

    // Run exactly what was printed (it writes cam1.h264 into the working directory).
    let args: Vec<&str> = view_cmd.split_whitespace().collect();
    let out = Command::new(args[0]).args(&args[1..]).arg("--quiet").current_dir(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{view_cmd}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("received 100 frames"), "{stdout}");
    assert!(stdout.contains("0 gaps, 0 out of order"), "{stdout}");

    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries", "stream=codec_name,width,height,nb_read_frames"])
        .args(["-of", "csv=p=0"])
        .arg(dir.join("cam1.h264"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "h264,1280,720,100");

    // The same view without its token is refused.
    let token_at = args.iter().position(|a| *a == "--token").expect("the view command carries --token");
    let mut bare = args.clone();
    bare.drain(token_at..token_at + 2);
    let out = Command::new(bare[0]).args(&bare[1..]).arg("--quiet").current_dir(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the view without a token played");
    assert!(stderr.contains("401"), "{stderr}");

    // The printed RTSP URL plays; without its user and token it is refused.
    let rtsp_url = rtsp_url.expect("the demo prints an RTSP URL");
    assert!(rtsp_url.contains("?token=ey"), "the RTSP URL carries the token: {rtsp_url}");
    let probe = |url: &str| {
        Command::new("ffprobe")
            .args(["-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width,height"])
            .args(["-of", "csv=p=0", url])
            .output()
            .unwrap()
    };
    let out = probe(&rtsp_url);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "h264,1280,720",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = probe(rtsp_url.split_once('?').unwrap().0);
    assert!(!out.status.success(), "the RTSP URL without the token played");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");

    mediamesh_testkit::signal(demo.id(), mediamesh_testkit::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = demo.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    guard.0 = None;
    assert!(exit.success(), "demo exits cleanly on SIGTERM: {exit:?}");
    drop(lines);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills the demo if the test fails before it stops it, so no demo outlives the test.
struct Guard(Option<u32>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            mediamesh_testkit::signal(pid, mediamesh_testkit::Signal::SIGKILL);
        }
    }
}
