//! The hub process is killed (no goodbye to anyone) and started again on the same ports: the
//! edge reconnects on its own and a new viewer gets video within 5 s of the restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use mediamesh_hub::client::{ConnectOptions, ViewerClient, ViewerItem};
use mediamesh_testkit::process::{MeshProcess, edge_yaml, free_ports, hub_yaml};
use mediamesh_testkit::{TestPki, read_frames};

const BIN: &str = env!("CARGO_BIN_EXE_mediamesh");

/// Connects a viewer (retrying while the hub does not know the node yet) and waits for its first
/// frame; returns when that frame arrived.
async fn first_frame(url: &str, deadline: Instant) -> Instant {
    loop {
        assert!(Instant::now() < deadline, "no video before the deadline");
        if let Ok(mut v) = ViewerClient::connect(url, &ConnectOptions::default()).await {
            while let Ok(Ok(item)) = tokio::time::timeout_at(deadline.into(), v.next()).await {
                match item {
                    Some(ViewerItem::Frame(_)) => return Instant::now(),
                    Some(ViewerItem::End(_)) | None => break,
                    Some(_) => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hub_gets_its_edges_back_and_serves_video_within_5_s() {
    mediamesh_testkit::init_tracing();
    let pki = TestPki::new();
    let [tunnel, stream] = free_ports();
    let hub_file = pki.dir().join("hub.yaml");
    std::fs::write(&hub_file, hub_yaml(&pki, "127.0.0.1", tunnel, stream, "")).unwrap();
    let edge_file = pki.dir().join("edge.yaml");
    std::fs::write(&edge_file, edge_yaml(&pki, "edge-1", &format!("127.0.0.1:{tunnel}"), "")).unwrap();
    let hub_args = ["hub", "-c", hub_file.to_str().unwrap()];
    let bin = Path::new(BIN);

    let (hub, _) = MeshProcess::spawn(&[], bin, &hub_args, pki.dir(), "hub-1", Some("hub ready")).await;
    let (edge, _) =
        MeshProcess::spawn(&[], bin, &["edge", "-c", edge_file.to_str().unwrap()], pki.dir(), "edge", None).await;
    let url = format!("ws://127.0.0.1:{stream}/api/v1/nodes/edge-1/streams/cam1/ws");
    first_frame(&url, Instant::now() + Duration::from_secs(15)).await;
    let mut viewer = ViewerClient::connect(&url, &ConnectOptions::default()).await.unwrap();
    read_frames(&mut viewer, 10).await;

    hub.kill().await;
    // The viewer of the dead hub is cut off, as it must be.
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(ViewerItem::Frame(_) | ViewerItem::Header(_) | ViewerItem::Skip(_))) = viewer.next().await {}
    })
    .await;
    assert!(gone.is_ok(), "the old hub's viewer noticed");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let restarted = Instant::now();
    let (hub2, _) = MeshProcess::spawn(&[], bin, &hub_args, pki.dir(), "hub-2", Some("hub ready")).await;
    let got = first_frame(&url, restarted + Duration::from_secs(10)).await;
    let took = got - restarted;
    eprintln!("video {took:?} after the hub restarted");
    assert!(
        took < Duration::from_secs(5),
        "video {took:?} after the restart; edge log:\n{}",
        edge.log_text().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    hub2.stop().await;
    edge.stop().await;
}

/// The web page in Chromium plays through a hub restart without being reloaded: its MSE player
/// reconnects by itself once the hub is back, and so does its stream list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_on_through_a_hub_restart() {
    use std::sync::Arc;

    use mediamesh_testkit::browser::Browser;

    let pki = TestPki::new();
    let [tunnel, stream] = free_ports();
    let hub_file = pki.dir().join("hub.yaml");
    std::fs::write(&hub_file, hub_yaml(&pki, "127.0.0.1", tunnel, stream, "")).unwrap();
    let edge_file = pki.dir().join("edge.yaml");
    std::fs::write(&edge_file, edge_yaml(&pki, "edge-1", &format!("127.0.0.1:{tunnel}"), "")).unwrap();
    let hub_args = ["hub", "-c", hub_file.to_str().unwrap()];
    let bin = Path::new(BIN);
    let (hub, _) = MeshProcess::spawn(&[], bin, &hub_args, pki.dir(), "hub-1", Some("hub ready")).await;
    let (edge, _) =
        MeshProcess::spawn(&[], bin, &["edge", "-c", edge_file.to_str().unwrap()], pki.dir(), "edge", None).await;

    const DECODED: &str = r#"(document.querySelector('[data-stream="edge-1/cam1"] video')?.getVideoPlaybackQuality().totalVideoFrames ?? 0)"#;
    let page = format!("http://127.0.0.1:{stream}/");
    let b = Arc::new(
        tokio::task::spawn_blocking(move || {
            let b = Browser::start();
            b.goto(&page);
            b.eval("window.sameDocument = 'yes'; return true");
            b.wait_for("cam1 plays", Duration::from_secs(20), &format!("return {DECODED} > 25"));
            b
        })
        .await
        .unwrap(),
    );
    hub.kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b2 = b.clone();
    let before =
        tokio::task::spawn_blocking(move || b2.eval(&format!("return {DECODED}")).as_i64().unwrap()).await.unwrap();
    let (hub2, _) = MeshProcess::spawn(&[], bin, &hub_args, pki.dir(), "hub-2", Some("hub ready")).await;
    tokio::task::spawn_blocking(move || {
        b.wait_for(
            "50 new frames after the hub came back",
            Duration::from_secs(20),
            &format!("return {DECODED} - {before} >= 50"),
        );
        assert_eq!(b.eval("return window.sameDocument"), "yes", "no reload");
        let state = b.eval(r#"return document.querySelector('[data-stream="edge-1/cam1"] .state').dataset.state"#);
        assert_eq!(state, "live");
    })
    .await
    .unwrap();
    hub2.stop().await;
    edge.stop().await;
}
