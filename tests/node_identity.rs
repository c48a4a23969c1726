//! One node identity, one edge; and a node's control channel is not its streams:
//!
//! - two edges started with one certificate (a cloned disk): the first keeps its connection and
//!   its streams, the second is refused with a reason and retries only a few times a second;
//! - only the control connection is reset and the edge reconnects at once: the viewers keep
//!   receiving, past the grace period;
//! - while a node is away within its grace period (restarting), a new viewer of one of its
//!   streams waits for it, instead of being told it is not connected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mediamesh_edge::Edge;
use mediamesh_edge::stats::EdgeStats;
use mediamesh_hub::client::ViewerItem;
use mediamesh_testkit::{Fixture, assert_consecutive, counters, logged, read_frames, test_pattern, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_edge_with_the_same_identity_is_refused_and_the_first_is_undisturbed() {
    let fx = Fixture::builder().start().await;
    let mut viewer = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut viewer, 5).await;
    let first_remote = fx.hub.registry().snapshot()[0].1.remote;

    // The same configuration, certificate and node name: a cloned disk.
    let mut cfg = Fixture::edge_config(&fx.pki, &fx.hub, "edge-1");
    cfg.streams.insert("cam1".into(), test_pattern());
    let clone = Edge::start(cfg).unwrap();
    let stats = fx.hub.registry().node_stats("edge-1");
    wait_until("the clone to be refused", Duration::from_secs(5), || stats.identity_conflicts.get() >= 1).await;

    // Five seconds of it: the first edge keeps its one connection and its viewer every frame.
    let t0 = Instant::now();
    let before = stats.identity_conflicts.get();
    let frames = read_frames(&mut viewer, 125).await;
    let seconds = t0.elapsed().as_secs_f64();
    let attempts = stats.identity_conflicts.get() - before;
    assert_consecutive(&counters(&frames));
    // The normal backoff (full jitter up to 1 s) averages two a second.
    assert!((attempts as f64) / seconds <= 4.0, "{attempts} refused attempts in {seconds:.1} s");
    assert_eq!(EdgeStats::get(&fx.edge_stats().control_connects), 1, "the first edge was never knocked off");
    assert_eq!(EdgeStats::get(&clone.stats().control_connects), 0, "the clone never got in");
    assert_eq!(fx.hub.registry().snapshot()[0].1.remote, first_remote);

    // What each side says: the clone an error naming the cause, the hub a warning with both
    // addresses, and the count in /metrics.
    assert!(
        !logged(&["ERROR", "another edge is connected with this node's identity"]).is_empty(),
        "the clone logs an error"
    );
    let warned = logged(&["WARN", "refused a second edge with this node's identity"]);
    assert!(warned.iter().any(|l| l.contains(&format!("connected={first_remote}"))), "{warned:?}");
    assert_eq!(warned.len(), 1, "warned once, counted always: {warned:?}");
    let addr = fx.hub.stream_addr;
    let (_, metrics) = mediamesh_testkit::http::get(addr, "/metrics").await;
    let line =
        metrics.lines().find(|l| l.starts_with("mediamesh_node_identity_conflicts_total{node=\"edge-1\"}")).unwrap();
    assert!(line.split_whitespace().last().unwrap().parse::<f64>().unwrap() >= 1.0, "{line}");

    // When the first edge goes, the clone takes over on its next attempt.
    let mut fx = fx;
    fx.edge.take().unwrap().stop(Duration::from_secs(5)).await;
    let clone_stats = clone.stats().clone();
    wait_until("the clone to connect", Duration::from_secs(5), || EdgeStats::get(&clone_stats.control_connects) == 1)
        .await;
    clone.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_only_the_control_connection_ends_no_stream() {
    // A 2 s grace period, so "past the grace period" is quick to reach.
    let fx = Fixture::builder()
        .hub(|h| h.grace_period = mediamesh_tunnel::settings::Seconds::new(2))
        .through_proxy()
        .start()
        .await;
    let mut viewer = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut viewer, 5).await;
    let proxy = fx.proxy.as_ref().unwrap();
    let control = fx.hub.registry().snapshot()[0].1.remote.addr();
    assert!(proxy.reset_upstream(control), "the control connection goes through the proxy");
    let stats = fx.edge_stats().clone();
    wait_until("the edge to reconnect", Duration::from_secs(5), || EdgeStats::get(&stats.control_connects) == 2).await;
    // Well past the grace period: every frame still arrives, no end.
    let frames = read_frames(&mut viewer, 100).await;
    assert_consecutive(&counters(&frames));
    assert_eq!(EdgeStats::get(&stats.data_connects), 1, "the data tunnel was never touched");
    let s = &fx.hub.sessions().snapshot()[0];
    assert_eq!(s.phase().name(), "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_viewer_of_a_restarting_node_waits_for_it() {
    let mut fx =
        Fixture::builder().hub(|h| h.grace_period = mediamesh_tunnel::settings::Seconds::new(10)).start().await;
    let cfg = {
        let mut c = Fixture::edge_config(&fx.pki, &fx.hub, "edge-1");
        c.streams.insert("cam1".into(), test_pattern());
        c
    };
    // The edge goes away for an upgrade; nobody was watching.
    fx.edge.take().unwrap().stop(Duration::from_secs(5)).await;
    wait_until("the node to leave", Duration::from_secs(5), || fx.hub.registry().snapshot().is_empty()).await;
    // A viewer arrives meanwhile: it is held, not refused.
    let t0 = Instant::now();
    let mut viewer = fx.viewer("edge-1", "cam1").await.expect("a viewer of an away node is accepted");
    let (_, nodes) = mediamesh_testkit::http::get(fx.hub.stream_addr, "/api/v1/nodes").await;
    assert!(nodes.contains("\"state\":\"away\""), "{nodes}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let edge = Edge::start(cfg).unwrap();
    let first = loop {
        match tokio::time::timeout(Duration::from_secs(10), viewer.next()).await.unwrap().unwrap() {
            Some(ViewerItem::Frame(f)) => break f,
            Some(ViewerItem::End(r)) => panic!("the viewer was ended: {r}"),
            Some(_) => {}
            None => panic!("closed"),
        }
    };
    assert!(first.flags.is_keyframe());
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // A node never seen is still refused at once.
    assert!(fx.viewer("edge-9", "cam1").await.is_err());
    edge.stop(Duration::from_secs(5)).await;
}
