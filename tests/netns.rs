//! The hub and the edge as real processes in separate network namespaces (`scripts/netlab`),
//! the link between them cut with `ip link`, capped with `tc tbf` and made lossy with
//! nftables. Needs root (CI runs as root); elsewhere each test says SKIPPED and passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use mediamesh_testkit::browser::Browser;
use mediamesh_testkit::netlab::NetLab;
use mediamesh_testkit::observe::{connect_viewer, percentile, watch, watch_rtp};
use mediamesh_testkit::process::{MeshProcess, edge_yaml, hub_yaml};
use mediamesh_testkit::rtsp_player::RtspPlayer;
use mediamesh_testkit::{TestPki, read_frames};

#[path = "support/whep.rs"]
mod whep;

const BIN: &str = env!("CARGO_BIN_EXE_mediamesh");
const NETLAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netlab");

struct Lab {
    // Declared first: processes go before their namespaces.
    hub: MeshProcess,
    edge: MeshProcess,
    net: NetLab,
    _pki: TestPki,
    ws_url: String,
    rtsp_url: String,
}

/// A lab with a hub, an edge (`edge-1`, test pattern `cam1`, plus `edge_extra` config lines)
/// and the viewer URLs; `None` (after saying SKIPPED) where namespaces are not available.
async fn start(edge_extra: &str) -> Option<Lab> {
    start_with("", edge_extra).await
}

/// [`start`] with `hub_extra` YAML lines in the hub's block too (`VIEW_IP` stands for the hub's
/// address on the viewer link).
async fn start_with(hub_extra: &str, edge_extra: &str) -> Option<Lab> {
    if let Some(why) = NetLab::unavailable() {
        eprintln!("SKIPPED: {why}; the netns tests need root");
        return None;
    }
    mediamesh_testkit::init_tracing();
    let net = NetLab::up(Path::new(NETLAB));
    let pki = TestPki::new();
    let hub_file = pki.dir().join("hub.yaml");
    let hub_extra = hub_extra.replace("VIEW_IP", &net.hub_view_ip());
    std::fs::write(&hub_file, hub_yaml(&pki, "0.0.0.0", 10006, 10005, &hub_extra)).unwrap();
    let edge_file = pki.dir().join("edge.yaml");
    let server = format!("{}:10006", net.hub_ip());
    std::fs::write(&edge_file, edge_yaml(&pki, "edge-1", &server, edge_extra)).unwrap();
    let hub_prefix = net.exec_prefix("hub");
    let hub_prefix: Vec<&str> = hub_prefix.iter().map(String::as_str).collect();
    let bin = Path::new(BIN);
    let (hub, ready) = MeshProcess::spawn(
        &hub_prefix,
        bin,
        &["hub", "-c", hub_file.to_str().unwrap()],
        pki.dir(),
        "hub",
        Some("hub ready"),
    )
    .await;
    let rtsp_port: u16 = ready
        .split("rtsp://")
        .nth(1)
        .and_then(|r| r.split(['/', ',']).next())
        .and_then(|hp| hp.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no RTSP port in {ready:?}"));
    let edge_prefix = net.exec_prefix("edge");
    let edge_prefix: Vec<&str> = edge_prefix.iter().map(String::as_str).collect();
    let (edge, _) =
        MeshProcess::spawn(&edge_prefix, bin, &["edge", "-c", edge_file.to_str().unwrap()], pki.dir(), "edge", None)
            .await;
    let ip = net.hub_view_ip();
    Some(Lab {
        ws_url: format!("ws://{ip}:10005/api/v1/nodes/edge-1/streams/cam1/ws"),
        rtsp_url: format!("rtsp://{ip}:{rtsp_port}/edge-1/cam1"),
        hub,
        edge,
        net,
        _pki: pki,
    })
}

impl Lab {
    fn logs(&self) -> String {
        let tail =
            |t: String| t.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("--- hub log ---\n{}\n--- edge log ---\n{}", tail(self.hub.log_text()), tail(self.edge.log_text()))
    }
}

/// Cuts the link for `cut`, watching a WebSocket and an RTSP viewer throughout; returns how
/// long after the link returned each one got a keyframe.
async fn cut_and_resume(lab: &Lab, cut: Duration) -> (Duration, Duration) {
    let mut ws = connect_viewer(&lab.ws_url, Instant::now() + Duration::from_secs(15)).await;
    read_frames(&mut ws, 5).await;
    let mut rtsp = RtspPlayer::play(&lab.rtsp_url).await.unwrap();
    let t0 = Instant::now();
    lab.net.cut();
    let restored_at = t0 + cut;
    let until = restored_at + Duration::from_secs(4);
    let (seen, rtp_keys, ()) = tokio::join!(watch(&mut ws, until), watch_rtp(&mut rtsp, until), async {
        tokio::time::sleep_until(restored_at.into()).await;
        lab.net.restore();
    });
    assert_eq!(seen.ended, None, "the WebSocket viewer stayed\n{}", lab.logs());
    seen.assert_increasing();
    let ws_key = seen.first_keyframe_after(restored_at).unwrap_or_else(|| panic!("no keyframe\n{}", lab.logs()));
    let rtp_key = *rtp_keys.iter().find(|t| **t > restored_at).expect("an RTP keyframe after the cut");
    (ws_key - restored_at, rtp_key - restored_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_link_cut_keeps_viewers_and_resumes_within_3_s() {
    let Some(lab) = start("").await else { return };
    let (ws, rtsp) = cut_and_resume(&lab, Duration::from_secs(5)).await;
    eprintln!("after a 5 s link cut: keyframe {ws:?} (WebSocket), {rtsp:?} (RTSP) after the link returned");
    assert!(ws < Duration::from_secs(3) && rtsp < Duration::from_secs(3), "{ws:?} / {rtsp:?}\n{}", lab.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_keeps_flowing_through_5_percent_loss() {
    let Some(lab) = start("").await else { return };
    let mut ws = connect_viewer(&lab.ws_url, Instant::now() + Duration::from_secs(15)).await;
    read_frames(&mut ws, 5).await;
    lab.net.loss(5);
    let t0 = Instant::now();
    let seen = watch(&mut ws, t0 + Duration::from_secs(20)).await;
    lab.net.loss(0);
    assert_eq!(seen.ended, None, "{}", lab.logs());
    seen.assert_increasing();
    let fps = seen.fps(t0, t0 + Duration::from_secs(20));
    let longest = seen.frames.windows(2).map(|w| w[1].at - w[0].at).max().unwrap_or_default();
    let mut ages: Vec<u64> = seen.frames.iter().map(|f| f.age_ms).collect();
    let p95 = percentile(&mut ages, 0.95);
    eprintln!(
        "5 % loss both ways: {fps:.1} fps, {} keyframes in 20 s, longest gap {longest:?}, age p95 {p95} ms",
        seen.keyframe_times().len()
    );
    assert!(fps > 15.0, "video keeps flowing: {fps:.1} fps\n{}", lab.logs());
    assert!(longest < Duration::from_secs(3), "no stall: longest gap {longest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tbf_capped_uplink_gets_fresh_frames_and_the_edge_memory_stays_flat() {
    let Some(lab) = start("").await else { return };
    let mut ws = connect_viewer(&lab.ws_url, Instant::now() + Duration::from_secs(15)).await;
    read_frames(&mut ws, 5).await;
    let t0 = Instant::now();
    let (capped_from, capped_to, lifted) =
        (t0 + Duration::from_secs(3), t0 + Duration::from_secs(33), t0 + Duration::from_secs(39));
    let end = lifted + Duration::from_secs(3);
    let (seen, rss) = tokio::join!(watch(&mut ws, end), async {
        let mut rss = Vec::new();
        tokio::time::sleep_until(capped_from.into()).await;
        lab.net.rate("200kbit");
        while Instant::now() < capped_to {
            rss.extend(lab.edge.rss_kib());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        lab.net.rate("off");
        rss
    });
    assert_eq!(seen.ended, None, "{}", lab.logs());
    seen.assert_increasing();
    let settled = capped_from + Duration::from_secs(3);
    let mut ages: Vec<u64> =
        seen.frames.iter().filter(|f| f.at > settled && f.at <= capped_to).map(|f| f.age_ms).collect();
    let (p50, p95, max) = (percentile(&mut ages, 0.5), percentile(&mut ages, 0.95), percentile(&mut ages, 1.0));
    let keys = seen.frames.iter().filter(|f| f.keyframe && f.at > settled && f.at <= capped_to).count();
    let (fps_before, fps_after) = (seen.fps(t0, capped_from), seen.fps(lifted, end));
    let (rss_min, rss_max) = (rss.iter().min().copied().unwrap_or(0), rss.iter().max().copied().unwrap_or(0));
    eprintln!(
        "tbf 200 kbit/s for 30 s: {} frames, age p50 {p50} p95 {p95} max {max} ms, {keys} keyframes; fps {fps_before:.1} before, \
         {fps_after:.1} after; edge RSS {rss_min}..{rss_max} KiB",
        ages.len()
    );
    assert!(p95 < 1000, "fresh frames: p95 {p95} ms\n{}", lab.logs());
    assert!(keys >= 10, "keyframes keep arriving: {keys}");
    assert!(rss_max.saturating_sub(rss_min) < 16 * 1024, "edge memory flat: {rss_min}..{rss_max} KiB");
    assert!(fps_after >= 0.9 * fps_before, "full frame rate returns: {fps_after:.1} vs {fps_before:.1}");
}

/// The measurement behind docs/resilience.md: `CUTS` (default 20) cuts of 5 s, each followed
/// by 5 s of normal operation; time from link restored to the first keyframe at a WebSocket
/// and an RTSP viewer. Run with `scripts/cut-recovery`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about 4 minutes); scripts/cut-recovery runs it"]
async fn cut_recovery_distribution() {
    let Some(lab) = start("").await else { return };
    let cuts: usize = std::env::var("CUTS").ok().and_then(|c| c.parse().ok()).unwrap_or(20);
    let (mut ws, mut rtsp) = (Vec::new(), Vec::new());
    for i in 0..cuts {
        let (w, r) = cut_and_resume(&lab, Duration::from_secs(5)).await;
        eprintln!("cut {}: {:.0} ms (WebSocket), {:.0} ms (RTSP)", i + 1, w.as_secs_f64() * 1e3, r.as_secs_f64() * 1e3);
        ws.push(w.as_millis() as u64);
        rtsp.push(r.as_millis() as u64);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (name, v) in [("WebSocket", &mut ws), ("RTSP", &mut rtsp)] {
        let (p50, p95, max) = (percentile(v, 0.5), percentile(v, 0.95), percentile(v, 1.0));
        println!(
            "RESULT {name}: {cuts} cuts of 5 s, link restored -> first keyframe: median {p50} ms, p95 {p95} ms, max {max} ms"
        );
    }
}

/// The hub's WebRTC block in the lab: its viewer-link address as the one candidate.
const WEBRTC: &str = "  webrtc: {port: 10007, hosts: [VIEW_IP]}\n";

/// A browser in the test's namespace playing `cam1` from the lab's hub over WHEP.
async fn whep_viewer(lab: &Lab) -> std::sync::Arc<Browser> {
    let ip = lab.net.hub_view_ip();
    let b = std::sync::Arc::new(tokio::task::spawn_blocking(Browser::start).await.unwrap());
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || {
        // A page of the hub's own origin without players: its REST document.
        b2.goto(&format!("http://{ip}:10005/api/v1/hub"));
        whep::play(&b2, &format!("http://{ip}:10005/api/v1/nodes/edge-1/streams/cam1/whep"));
        b2.wait_for("video over WebRTC", Duration::from_secs(15), "return window.whepVideo.videoWidth");
        // Each frame put on screen: when, and the capture time burned into it.
        b2.eval_async(
            "const s = document.createElement('script'); s.src = '/assets/stamp.js'; s.onload = () => done(true); document.head.appendChild(s);",
            Duration::from_secs(5),
        );
        b2.eval(
            "window.iceStates = []; window.whepPc.oniceconnectionstatechange = () => iceStates.push(whepPc.iceConnectionState);
             window.shown = []; const v = window.whepVideo; const c = document.createElement('canvas');
             const onFrame = () => { const s = MediameshStamp.read(v, c); shown.push([Date.now(), s && s.captureMs]); v.requestVideoFrameCallback(onFrame); };
             v.requestVideoFrameCallback(onFrame); return true",
        );
    })
    .await
    .unwrap();
    b
}

/// The inbound video's counters from `getStats` (for `eval_async`).
const INBOUND: &str = "window.whepPc.getStats().then(r => { let s = null;
    r.forEach(x => { if (x.type === 'inbound-rtp' && x.kind === 'video') s = x; });
    done({ decoded: s.framesDecoded, nacks: s.nackCount, plis: s.pliCount, lost: s.packetsLost, received: s.packetsReceived }); });";

/// Frames the hub received from the edge so far.
async fn frames_in(lab: &Lab) -> f64 {
    let addr = format!("{}:10005", lab.net.hub_view_ip()).parse().unwrap();
    let m = mediamesh_testkit::observe::metrics(addr).await;
    m.0.iter().filter(|(s, _)| s.starts_with("mediamesh_stream_frames_in_total")).map(|(_, v)| v).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_recovers_5_percent_loss_on_the_viewer_path_with_nacks() {
    let Some(lab) = start_with(WEBRTC, "").await else { return };
    let b = whep_viewer(&lab).await;
    let stats = |b: &std::sync::Arc<Browser>| {
        let b = b.clone();
        tokio::task::spawn_blocking(move || b.eval_async(INBOUND, Duration::from_secs(5)))
    };
    let (s0, in0) = (stats(&b).await.unwrap(), frames_in(&lab).await);
    lab.net.viewer_loss(5);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (s1, in1) = (stats(&b).await.unwrap(), frames_in(&lab).await);
    lab.net.viewer_loss(0);
    let decoded = s1["decoded"].as_f64().unwrap() - s0["decoded"].as_f64().unwrap();
    let source = in1 - in0;
    let nacks = s1["nacks"].as_f64().unwrap() - s0["nacks"].as_f64().unwrap();
    eprintln!(
        "5 % UDP loss to and from the viewer for 20 s: {decoded} frames decoded of {source} sent, {nacks} NACKs, {s1}"
    );
    assert!(nacks > 0.0, "the loss was real and NACKed: {s1}\n{}", lab.logs());
    assert!(decoded > 0.9 * source, "decoded {decoded} of {source}: {s1}\n{}", lab.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtc_viewer_sees_video_within_1_s_of_a_3_s_edge_cut_ending() {
    let Some(lab) = start_with(WEBRTC, "").await else { return };
    let b = whep_viewer(&lab).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.net.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restored = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as f64;
    lab.net.restore();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seen = tokio::task::spawn_blocking(move || {
        b.eval("return { shown, iceStates, state: whepPc.connectionState, frames: whepVideo.getVideoPlaybackQuality().totalVideoFrames }")
    })
    .await
    .unwrap();
    // Frames captured after the link returned, by when they were on screen.
    let after: Vec<f64> = seen["shown"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f[1].as_f64().is_some_and(|captured| captured > restored))
        .map(|f| f[0].as_f64().unwrap())
        .collect();
    let first =
        after.first().map(|t| t - restored).unwrap_or_else(|| panic!("no new frame after the cut\n{}", lab.logs()));
    eprintln!(
        "3 s edge cut: first new frame on screen {first:.0} ms after the link returned, {} in the next 5 s",
        after.len()
    );
    assert_eq!(seen["state"], "connected", "the same peer connection: {seen}");
    assert!(seen["iceStates"].as_array().unwrap().is_empty(), "ICE never changed state: {seen}");
    assert!(first < 1000.0, "video again {first:.0} ms after the link returned\n{}", lab.logs());
    assert!(after.len() >= 75, "and it plays on: {} frames", after.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_falls_back_to_ice_tcp_when_udp_is_blocked() {
    let Some(lab) = start_with(WEBRTC, "").await else { return };
    // Every UDP datagram between the viewer and the hub is dropped.
    lab.net.viewer_loss(100);
    let b = whep_viewer(&lab).await;
    let seen = tokio::task::spawn_blocking(move || {
        let q = b.eval_async(whep::FIVE_SECONDS, Duration::from_secs(10));
        let pair = b.eval_async(
            "whepPc.getStats().then(r => { let pair = null; const c = {};
               r.forEach(x => { if (x.type === 'local-candidate' || x.type === 'remote-candidate') c[x.id] = x; });
               r.forEach(x => { if (x.type === 'candidate-pair' && x.nominated && x.state === 'succeeded') pair = x; });
               done(pair && { local: c[pair.localCandidateId].protocol, remote: c[pair.remoteCandidateId].protocol,
                              remoteType: c[pair.remoteCandidateId].tcpType || null }); });",
            Duration::from_secs(5),
        );
        (q, pair)
    })
    .await
    .unwrap();
    lab.net.viewer_loss(0);
    let (q, pair) = seen;
    eprintln!("UDP blocked: {q}, over {pair}");
    assert_eq!(pair["remote"], "tcp", "the pair is ICE-TCP: {pair}\n{}", lab.logs());
    assert!(q["frames"].as_i64().unwrap() >= 100, "{q}");
}
