//! Hubs sharing a real etcd (Debian's `etcd-server`), as separate processes: every hub sees
//! the whole cluster, a killed hub's entries expire with its lease, and a hub that loses etcd
//! keeps serving what it has, refuses what needs the registry with a clear error, and
//! registers again when etcd returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mediamesh_hub::client::{ConnectOptions, ViewerClient, ViewerItem};
use mediamesh_hub::egress::ws::format::ViewerFrame;
use mediamesh_testkit::etcd::Etcd;
use mediamesh_testkit::http::request;
use mediamesh_testkit::process::{MeshProcess, edge_yaml, free_ports, hub_yaml};
use mediamesh_testkit::{TestPki, read_frames};
use serde_json::Value;

#[path = "support/watch.rs"]
mod watch;

use watch::Watch;

const BIN: &str = env!("CARGO_BIN_EXE_mediamesh");
/// Short, so that the expiry test is quick.
const TTL_SECS: u64 = 2;

/// Short, so that draining hubs (SIGTERM) end their last viewers quickly.
const DRAIN_SECS: u64 = 3;

struct HubProc {
    name: String,
    proc: MeshProcess,
    api: SocketAddr,
    tunnel: u16,
}

/// A hub that keeps its edges (balancing off, so that each test decides where edges are).
async fn start_hub(pki: &TestPki, etcd: &Etcd, name: &str) -> HubProc {
    start_hub_with(pki, etcd, name, "rebalanceInterval: 0").await
}

/// A hub with `cluster` keys added to the test's.
async fn start_hub_with(pki: &TestPki, etcd: &Etcd, name: &str, cluster: &str) -> HubProc {
    let [tunnel, stream] = free_ports();
    let extra = format!(
        "  hubName: {name}\n  cluster: {{etcd: [\"{}\"], leaseTtl: {TTL_SECS}, drainDeadline: {DRAIN_SECS}, {cluster}}}\n",
        etcd.url
    );
    let file = pki.dir().join(format!("{name}.yaml"));
    std::fs::write(&file, hub_yaml(pki, "127.0.0.1", tunnel, stream, &extra)).unwrap();
    run_hub(pki, name, tunnel, stream).await
}

/// Runs hub `name` from its configuration file (written by [`start_hub`]).
async fn run_hub(pki: &TestPki, name: &str, tunnel: u16, stream: u16) -> HubProc {
    let file = pki.dir().join(format!("{name}.yaml"));
    let args = ["hub", "-c", file.to_str().unwrap()];
    let log =
        format!("{name}-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis());
    let (proc, _) = MeshProcess::spawn(&[], Path::new(BIN), &args, pki.dir(), &log, Some("hub ready")).await;
    HubProc { name: name.into(), proc, api: SocketAddr::from(([127, 0, 0, 1], stream)), tunnel }
}

async fn start_edge(pki: &TestPki, node: &str, hub: &HubProc, fallbacks: &[&HubProc]) -> MeshProcess {
    let file = pki.dir().join(format!("{node}.yaml"));
    let list: Vec<String> = fallbacks.iter().map(|h| format!("\"127.0.0.1:{}\"", h.tunnel)).collect();
    let extra = format!("  fallbackServers: [{}]\n", list.join(", "));
    std::fs::write(&file, edge_yaml(pki, node, &format!("127.0.0.1:{}", hub.tunnel), &extra)).unwrap();
    let args = ["edge", "-c", file.to_str().unwrap()];
    MeshProcess::spawn(&[], Path::new(BIN), &args, pki.dir(), node, None).await.0
}

async fn get(addr: SocketAddr, path: &str) -> Value {
    let a = request(addr, "GET", path, &[]).await;
    assert_eq!(a.status, 200, "{path}: {}", a.body);
    serde_json::from_str(&a.body).unwrap()
}

fn hub_names(hubs: &Value) -> Vec<String> {
    hubs["hubs"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap().to_owned()).collect()
}

fn node_hub(nodes: &Value, node: &str) -> Option<String> {
    nodes["nodes"].as_array().unwrap().iter().find(|n| n["name"] == node).map(|n| n["hub"].as_str().unwrap().into())
}

/// Polls `check` every 50 ms until it holds; returns how long that took.
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hub_sees_the_cluster_and_a_killed_hub_expires_with_its_lease() {
    mediamesh_testkit::init_tracing();
    let pki = TestPki::new();
    let etcd = Etcd::start(pki.dir()).await;
    let a = start_hub(&pki, &etcd, "hub-a").await;
    let b = start_hub(&pki, &etcd, "hub-b").await;
    let c = start_hub(&pki, &etcd, "hub-c").await;
    let _edge = start_edge(&pki, "edge-1", &a, &[&b]).await;

    for h in [&a, &b, &c] {
        until(&format!("{} sees three hubs", h.name), Duration::from_secs(10), || async {
            hub_names(&get(h.api, "/api/v1/hubs").await) == ["hub-a", "hub-b", "hub-c"]
        })
        .await;
        until(&format!("{} sees edge-1 on hub-a", h.name), Duration::from_secs(10), || async {
            node_hub(&get(h.api, "/api/v1/nodes").await, "edge-1").as_deref() == Some("hub-a")
        })
        .await;
    }
    let hubs = get(b.api, "/api/v1/hubs").await;
    assert_eq!(hubs["registry"], "available");
    let rec = hubs["hubs"].as_array().unwrap().iter().find(|h| h["name"] == "hub-a").unwrap().clone();
    assert_eq!(rec["state"], "allocated");
    assert_eq!(rec["streamUrl"], format!("http://{}", a.api));
    assert_eq!(rec["load"]["edges"], 1);
    let hub = get(a.api, "/api/v1/hub").await;
    assert_eq!((hub["state"].as_str(), hub["registry"].as_str()), (Some("allocated"), Some("available")));
    assert_eq!(request(a.api, "GET", "/readyz", &[]).await.status, 200);

    // kill -9: no goodbye; its lease expires, and its edge redials the next hub of its list.
    let killed = Instant::now();
    a.proc.kill().await;
    let expired = until("hub-a's entries expire", Duration::from_secs(TTL_SECS + 3), || async {
        let hubs = get(b.api, "/api/v1/hubs").await;
        let nodes = get(b.api, "/api/v1/nodes").await;
        hub_names(&hubs) == ["hub-b", "hub-c"] && node_hub(&nodes, "edge-1").as_deref() != Some("hub-a")
    });
    // Meanwhile the edge is on hub-b, and a viewer there gets video.
    let url = format!("ws://{}/api/v1/nodes/edge-1/streams/cam1/ws", b.api);
    let video = async {
        loop {
            if let Ok(mut v) = ViewerClient::connect(&url, &ConnectOptions::default()).await
                && let Ok(Ok(Some(ViewerItem::Frame(_) | ViewerItem::Header(_)))) =
                    tokio::time::timeout(Duration::from_secs(2), v.next()).await
            {
                let at = killed.elapsed();
                read_frames(&mut v, 10).await;
                break at;
            }
            assert!(killed.elapsed() < Duration::from_secs(15), "no video on hub-b after hub-a died");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (took, video) = tokio::join!(expired, video);
    assert!(took <= Duration::from_secs(TTL_SECS + 1), "gone {took:?} after the kill; the TTL is {TTL_SECS} s");
    println!("hub-a's entries were gone {:.2} s after kill -9 (lease TTL {TTL_SECS} s)", took.as_secs_f64());
    println!("edge-1's video was on hub-b {:.2} s after hub-a was killed", video.as_secs_f64());
    until("every hub sees edge-1 on hub-b", Duration::from_secs(5), || async {
        node_hub(&get(c.api, "/api/v1/nodes").await, "edge-1").as_deref() == Some("hub-b")
    })
    .await;

    // A hub that stops cleanly revokes its lease: its entries go at once.
    let t0 = Instant::now();
    c.proc.stop().await;
    until("hub-c's entries go with its revoked lease", Duration::from_secs(TTL_SECS), || async {
        hub_names(&get(b.api, "/api/v1/hubs").await) == ["hub-b"]
    })
    .await;
    println!("hub-c's entries were gone {:.2} s after SIGTERM", t0.elapsed().as_secs_f64());
    b.proc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_etcd_serves_what_it_has_refuses_what_needs_the_registry_and_reconciles() {
    mediamesh_testkit::init_tracing();
    let pki = TestPki::new();
    let mut etcd = Etcd::start(pki.dir()).await;
    let a = start_hub(&pki, &etcd, "hub-a").await;
    let b = start_hub(&pki, &etcd, "hub-b").await;
    let _edge = start_edge(&pki, "edge-1", &a, &[]).await;
    until("hub-b sees edge-1", Duration::from_secs(10), || async {
        node_hub(&get(b.api, "/api/v1/nodes").await, "edge-1").as_deref() == Some("hub-a")
    })
    .await;
    let url = format!("ws://{}/api/v1/nodes/edge-1/streams/cam1/ws", a.api);
    let mut viewer = ViewerClient::connect(&url, &ConnectOptions::default()).await.unwrap();
    read_frames(&mut viewer, 10).await;

    etcd.stop().await;
    let down = Instant::now();
    until("hub-b notices", Duration::from_secs(TTL_SECS + 5), || async {
        get(b.api, "/api/v1/hub").await["registry"] == "unavailable"
    })
    .await;
    // What needs the registry is refused, naming why.
    let answer = request(b.api, "GET", "/api/v1/nodes/edge-1/streams/cam1/hls/index.m3u8", &[]).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains("registry_unavailable") && answer.body.contains("etcd"), "{}", answer.body);
    let hubs = get(b.api, "/api/v1/hubs").await;
    assert_eq!(hubs["registry"], "unavailable");
    assert!(hubs["error"].as_str().is_some_and(|e| !e.is_empty()));
    // What hub-a serves goes on: 10 s of frames without a break.
    let mut frames = 0;
    while down.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(Duration::from_secs(2), viewer.next()).await {
            Ok(Ok(Some(ViewerItem::Frame(_)))) => frames += 1,
            Ok(Ok(Some(ViewerItem::End(e)))) => panic!("the viewer was ended: {e:?}"),
            Ok(Ok(Some(_))) => {}
            other => panic!("the viewer stalled without etcd: {other:?}"),
        }
    }
    assert!(frames >= 200, "{frames} frames in 10 s at 25 fps");

    etcd.restart().await;
    // etcd restores leases with a fresh TTL on restart, so hub-b may list hub-a from its old
    // lease before hub-a has reconnected: each hub's own status is what says it is back.
    let took = until("both hubs register again", Duration::from_secs(15), || async {
        let hubs = get(b.api, "/api/v1/hubs").await;
        hubs["registry"] == "available"
            && get(a.api, "/api/v1/hub").await["registry"] == "available"
            && hub_names(&hubs) == ["hub-a", "hub-b"]
            && node_hub(&get(b.api, "/api/v1/nodes").await, "edge-1").as_deref() == Some("hub-a")
    })
    .await;
    println!("the cluster was whole again {:.2} s after etcd returned", took.as_secs_f64());
    read_frames(&mut viewer, 10).await;
}

/// The stream's JSON at `hub`.
async fn stream_at(hub: &HubProc) -> Value {
    get(hub.api, "/api/v1/nodes/edge-1/streams/cam1").await
}

fn protocols(stream: &Value) -> Vec<String> {
    let mut p: Vec<String> = stream["viewerDetails"]
        .as_array()
        .map(|v| v.iter().map(|d| d["protocol"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    p.sort();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_other_hubs_get_the_stream_through_one_relay_per_hub() {
    mediamesh_testkit::init_tracing();
    let pki = TestPki::new();
    let etcd = Etcd::start(pki.dir()).await;
    let a = start_hub(&pki, &etcd, "hub-a").await;
    let b = start_hub(&pki, &etcd, "hub-b").await;
    let c = start_hub(&pki, &etcd, "hub-c").await;
    let _edge = start_edge(&pki, "edge-1", &a, &[&c]).await;
    for h in [&b, &c] {
        until(&format!("{} sees edge-1 on hub-a", h.name), Duration::from_secs(10), || async {
            node_hub(&get(h.api, "/api/v1/nodes").await, "edge-1").as_deref() == Some("hub-a")
        })
        .await;
    }

    // One viewer where the edge is, two on hub-b, one WebSocket and one LL-HLS client on hub-c.
    let ws = |hub: &HubProc| format!("ws://{}/api/v1/nodes/edge-1/streams/cam1/ws", hub.api);
    let t0 = Instant::now();
    let mut on_b = ViewerClient::connect(&ws(&b), &ConnectOptions::default()).await.unwrap();
    let first = read_frames(&mut on_b, 1).await;
    println!("first relayed frame on hub-b {:.2} s after the viewer connected", t0.elapsed().as_secs_f64());
    assert!(first[0].flags.is_keyframe(), "a relayed stream starts at a keyframe");
    let mut on_a = ViewerClient::connect(&ws(&a), &ConnectOptions::default()).await.unwrap();
    let mut on_b2 = ViewerClient::connect(&ws(&b), &ConnectOptions::default()).await.unwrap();
    let mut on_c = ViewerClient::connect(&ws(&c), &ConnectOptions::default()).await.unwrap();
    let playlist = until("hub-c serves the LL-HLS playlist", Duration::from_secs(15), || async {
        let p = request(c.api, "GET", "/api/v1/nodes/edge-1/streams/cam1/hls/video.m3u8", &[]).await;
        p.status == 200 && p.body.contains("#EXT-X-PART:")
    })
    .await;
    println!("hub-c's LL-HLS playlist had parts after {:.2} s", playlist.as_secs_f64());

    // The same frames, with the edge's capture times, everywhere.
    let (fa, fb, fb2, fc) = tokio::join!(
        read_frames(&mut on_a, 100),
        read_frames(&mut on_b, 100),
        read_frames(&mut on_b2, 100),
        read_frames(&mut on_c, 100)
    );
    let at_a: std::collections::HashMap<u64, &ViewerFrame> = fa.iter().map(|f| (f.capture_us, f)).collect();
    // The relay hop: from hub-a receiving a frame to hub-b or hub-c receiving it (one clock).
    let mut hops = Vec::new();
    for f in fb.iter().chain(&fb2).chain(&fc) {
        if let Some(a) = at_a.get(&f.capture_us) {
            assert_eq!((a.pts, a.payload.len()), (f.pts, f.payload.len()), "the same frame through the relay");
            hops.push(f.hub_us.saturating_sub(a.hub_us));
        }
    }
    assert!(hops.len() >= 50, "only {} relayed frames overlap hub-a's", hops.len());
    hops.sort_unstable();
    let pct = |p: usize| hops[(hops.len() - 1) * p / 100] as f64 / 1e3;
    println!(
        "relay hop over {} frames: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        hops.len(),
        pct(50),
        pct(99),
        pct(100)
    );
    for w in fb.windows(2).chain(fc.windows(2)) {
        assert!(w[1].seq > w[0].seq, "relayed frames stay in order");
    }

    // One relay per hub, one upstream from the edge.
    let sa = stream_at(&a).await;
    assert_eq!(sa["upstream"], "edge");
    assert_eq!(sa["tunnelConnects"], 1, "{sa}");
    assert_eq!(protocols(&sa), ["relay", "relay", "ws"], "{sa}");
    for (hub, viewers) in [(&b, vec!["ws", "ws"]), (&c, vec!["hls", "ws"])] {
        let s = stream_at(hub).await;
        assert_eq!(s["upstream"], "relay", "{}: {s}", hub.name);
        assert_eq!(s["tunnelConnects"], 1, "{}: {s}", hub.name);
        let p = protocols(&s);
        assert!(viewers.iter().all(|v| p.contains(&(*v).to_owned())), "{}: {p:?}", hub.name);
    }
    let sessions_on_a = get(a.api, "/api/v1/streams").await["streams"].as_array().unwrap().len();
    assert_eq!(sessions_on_a, 1);

    // hub-b's viewers leave: its session lingers out and its relay closes; hub-c's goes on.
    drop((on_b, on_b2));
    until("hub-b's relay closes at hub-a", Duration::from_secs(10), || async {
        protocols(&stream_at(&a).await) == ["relay", "ws"]
    })
    .await;
    read_frames(&mut on_c, 10).await;
    assert_eq!(stream_at(&b).await["state"], "idle");

    // hub-a dies; the edge falls back to hub-c, whose session asks it directly: hub-c's viewer
    // goes on in the same connection.
    a.proc.kill().await;
    let resumed = until("hub-c's session gets the edge's new uplink", Duration::from_secs(15), || async {
        stream_at(&c).await["tunnelConnects"] == 2
    })
    .await;
    println!("hub-c's session had the edge's uplink {:.2} s after hub-a was killed", resumed.as_secs_f64());
    // Whatever it buffered meanwhile, the viewer reads on to live frames without an end.
    let frames = read_frames(&mut on_c, 75).await;
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let age = now_us.saturating_sub(frames.last().unwrap().capture_us);
    assert!(age < 1_000_000, "hub-c's viewer is {age} µs behind after hub-a died");
    let sc = stream_at(&c).await;
    assert_eq!(sc["tunnelConnects"], 2, "{sc}");
    for h in [b, c] {
        h.proc.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_the_viewers_of_the_hubs_that_stay_up() {
    mediamesh_testkit::init_tracing();
    let pki = TestPki::new();
    let etcd = Etcd::start(pki.dir()).await;
    let mut hubs = vec![
        start_hub(&pki, &etcd, "hub-a").await,
        start_hub(&pki, &etcd, "hub-b").await,
        start_hub(&pki, &etcd, "hub-c").await,
    ];
    let _edge = start_edge(&pki, "edge-1", &hubs[0], &[&hubs[1], &hubs[2]]).await;
    for h in &hubs {
        until(&format!("{} sees edge-1", h.name), Duration::from_secs(10), || async {
            node_hub(&get(h.api, "/api/v1/nodes").await, "edge-1").is_some()
        })
        .await;
    }
    let mut watches = Vec::new();
    for h in &hubs {
        watches.push(Watch::start(&h.name, h.api).await);
    }
    // `mediamesh view` on hub-a, through its restart: it connects again by itself.
    let view_url = format!("ws://{}/api/v1/nodes/edge-1/streams/cam1/ws", hubs[0].api);
    let view = tokio::process::Command::new(BIN)
        .args(["view", "--json", "--frames", "250", "--timeout", "15", &view_url])
        .kill_on_drop(true)
        .output();
    let view = tokio::spawn(view);
    until("mediamesh view watches on hub-a", Duration::from_secs(10), || async {
        protocols(&stream_at(&hubs[0]).await).iter().filter(|p| *p == "ws").count() == 2
    })
    .await;
    for round in 0..hubs.len() {
        let name = hubs[round].name.clone();
        for w in &watches {
            w.reset();
        }
        // SIGTERM: the hub drains.
        let t0 = Instant::now();
        hubs[round].proc.terminate();
        until(&format!("{name} is a tombstone"), Duration::from_secs(5), || async {
            request(hubs[round].api, "GET", "/readyz", &[]).await.status == 503
        })
        .await;
        // Its viewer is ended cleanly at the deadline, and finds another hub.
        let ended = until(&format!("{name}'s viewer is ended"), Duration::from_secs(DRAIN_SECS + 5), || async {
            watches[round].report().2.is_some()
        })
        .await;
        let reason = watches[round].report().2.unwrap();
        assert!(!reason.starts_with("error") && !reason.starts_with("closed"), "{name}'s viewer: {reason}");
        let other = &hubs[(round + 1) % hubs.len()];
        let mut moved = ViewerClient::connect(
            &format!("ws://{}/api/v1/nodes/edge-1/streams/cam1/ws", other.api),
            &ConnectOptions::default(),
        )
        .await
        .unwrap();
        read_frames(&mut moved, 10).await;
        assert!(hubs[round].proc.exited(Duration::from_secs(10)).await, "{name} did not exit after draining");
        let gone = t0.elapsed();
        // The viewers of the hubs that stay up were never cut, and waited under 1 s at most.
        for (i, w) in watches.iter().enumerate().filter(|(i, _)| *i != round) {
            let (gap, frames, end) = w.report();
            println!(
                "restart of {name}: viewer on {} saw its longest gap {:.0} ms ({frames} frames)",
                w.hub,
                gap.as_secs_f64() * 1e3
            );
            assert_eq!(end, None, "the viewer on {} was disconnected during the restart of {name}", hubs[i].name);
            assert!(
                gap < Duration::from_secs(1),
                "the viewer on {} waited {gap:?} during the restart of {name}",
                w.hub
            );
        }
        println!(
            "restart of {name}: its viewer ended after {:.2} s ({reason}); the hub exited after {:.2} s",
            ended.as_secs_f64(),
            gone.as_secs_f64()
        );
        // Back, on the same ports, and seen by the others.
        let (tunnel, stream) = (hubs[round].tunnel, hubs[round].api.port());
        hubs[round] = run_hub(&pki, &name, tunnel, stream).await;
        for h in &hubs {
            until(&format!("{} sees {name} again", h.name), Duration::from_secs(10), || async {
                hub_names(&get(h.api, "/api/v1/hubs").await).contains(&name)
            })
            .await;
        }
        until(&format!("{name} sees edge-1"), Duration::from_secs(10), || async {
            node_hub(&get(hubs[round].api, "/api/v1/nodes").await, "edge-1").is_some()
        })
        .await;
        watches[round] = Watch::start(&hubs[round].name, hubs[round].api).await;
    }
    let view = tokio::time::timeout(Duration::from_secs(30), view)
        .await
        .expect("mediamesh view within 30 s")
        .unwrap()
        .unwrap();
    let summary = String::from_utf8_lossy(&view.stdout);
    assert!(view.status.success(), "{summary}{}", String::from_utf8_lossy(&view.stderr));
    let summary: Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!((summary["frames"].as_u64(), summary["reconnects"].as_u64()), (Some(250), Some(1)), "{summary}");
    for h in hubs {
        h.proc.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_demo_plays_every_camera_on_every_hub() {
    mediamesh_testkit::require::program("etcd", "etcd-server");
    let out = tokio::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster-demo"))
        .arg("--check")
        .env("MEDIAMESH_BIN", BIN)
        .env("CLUSTER_DEMO_PORT", "auto")
        .kill_on_drop(true)
        .output();
    let out =
        tokio::time::timeout(Duration::from_secs(120), out).await.expect("the demo's check within 120 s").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("ok: ").count(), 6, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_api_starts_one_drain_and_a_hub_alone_refuses_it() {
    mediamesh_testkit::init_tracing();
    // A hub without a cluster has nowhere to send anyone.
    let fx = mediamesh_testkit::Fixture::builder().start().await;
    let a = request(fx.hub.stream_addr, "POST", "/api/v1/hub/drain", &[]).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.body.contains("not_clustered"), "{}", a.body);
    drop(fx);

    let pki = TestPki::new();
    let etcd = Etcd::start(pki.dir()).await;
    let mut a = start_hub(&pki, &etcd, "hub-a").await;
    let b = start_hub(&pki, &etcd, "hub-b").await;
    for bad in ["-1", "0", "abc", "1e9"] {
        let r = request(a.api, "POST", &format!("/api/v1/hub/drain?deadline={bad}"), &[]).await;
        assert_eq!(r.status, 400, "deadline={bad}: {}", r.body);
    }
    assert_eq!(get(a.api, "/api/v1/hub").await["state"], "allocated");
    // A viewer holds the drain until the deadline.
    let _edge = start_edge(&pki, "edge-1", &a, &[&b]).await;
    until("hub-b sees edge-1 on hub-a", Duration::from_secs(10), || async {
        node_hub(&get(b.api, "/api/v1/nodes").await, "edge-1").as_deref() == Some("hub-a")
    })
    .await;
    let url = format!("ws://{}/api/v1/nodes/edge-1/streams/cam1/ws", a.api);
    let mut viewer = ViewerClient::connect(&url, &ConnectOptions::default()).await.unwrap();
    read_frames(&mut viewer, 5).await;
    let started = Instant::now();
    for _ in 0..2 {
        let r = request(a.api, "POST", "/api/v1/hub/drain?deadline=2", &[]).await;
        assert_eq!(r.status, 202, "{}", r.body);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!((body["state"].as_str(), body["deadlineSecs"].as_f64()), (Some("tombstone"), Some(2.0)));
    }
    assert_eq!(request(a.api, "GET", "/readyz", &[]).await.status, 503);
    let metrics = request(a.api, "GET", "/metrics", &[]).await.body;
    assert!(metrics.contains("mediamesh_hub_state{state=\"tombstone\"} 1"), "{metrics}");
    until("hub-b lists hub-a as a tombstone", Duration::from_secs(5), || async {
        let hubs = get(b.api, "/api/v1/hubs").await;
        hubs["hubs"].as_array().unwrap().iter().any(|h| h["name"] == "hub-a" && h["state"] == "tombstone")
    })
    .await;
    // New viewers are sent to a serving hub.
    let r = request(a.api, "GET", "/api/v1/nodes/edge-1/streams/cam1", &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("hub_draining") && r.body.contains(&b.api.to_string()), "{}", r.body);
    // The viewer watches on (its edge moved to hub-b, the stream comes back by relay) until
    // the deadline ends it; then the hub exits by itself.
    let mut frames = 0;
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(5), viewer.next()).await {
            Ok(Ok(Some(ViewerItem::Frame(_)))) => frames += 1,
            Ok(Ok(Some(ViewerItem::End(reason)))) => break reason,
            Ok(Ok(Some(_))) => {}
            other => panic!("the draining hub's viewer stalled: {other:?}"),
        }
    };
    let ended = started.elapsed();
    assert!(
        ended >= Duration::from_millis(1900) && frames >= 25,
        "ended after {ended:?} with {frames} frames: {reason}"
    );
    assert!(a.proc.exited(Duration::from_secs(10)).await, "hub-a did not exit after draining");
    b.proc.stop().await;
}

/// Where each of the three test edges is, as hub `h` sees the cluster.
async fn placement(h: &HubProc) -> Vec<(String, String)> {
    let nodes = get(h.api, "/api/v1/nodes").await;
    ["edge-1", "edge-2", "edge-3"].iter().filter_map(|n| Some((n.to_string(), node_hub(&nodes, n)?))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_over_its_share_sends_idle_edges_to_a_hub_with_room() {
    mediamesh_testkit::init_tracing();
    let pki = TestPki::new();
    let etcd = Etcd::start(pki.dir()).await;
    let balancing = format!("rebalanceInterval: {TTL_SECS}");
    let a = start_hub_with(&pki, &etcd, "hub-a", &balancing).await;
    // Three edges that know only hub-a's address.
    let mut edges = Vec::new();
    for node in ["edge-1", "edge-2", "edge-3"] {
        edges.push(start_edge(&pki, node, &a, &[]).await);
    }
    let all_on_a = |p: &[(String, String)]| p.len() == 3 && p.iter().all(|(_, h)| h == "hub-a");
    until("three edges on hub-a", Duration::from_secs(10), || async { all_on_a(&placement(&a).await) }).await;
    // edge-1 streams to a viewer on hub-a: moving it would cost a switch, so it stays.
    let url = format!("ws://{}/api/v1/nodes/edge-1/streams/cam1/ws", a.api);
    let mut viewer = ViewerClient::connect(&url, &ConnectOptions::default()).await.unwrap();
    read_frames(&mut viewer, 5).await;

    // hub-b joins: hub-a holds 3 of 3 edges, its share is 2, so it sends one to hub-b, which
    // the edge has never heard of but for the Redirect.
    let b = start_hub_with(&pki, &etcd, "hub-b", &balancing).await;
    let joined = Instant::now();
    let one_moved = |p: &[(String, String)]| p.iter().filter(|(_, h)| h == "hub-b").count() == 1;
    until("one edge moved to hub-b", Duration::from_secs(6 * TTL_SECS), || async { one_moved(&placement(&b).await) })
        .await;
    let took = joined.elapsed();
    let before = placement(&b).await;
    assert!(before.contains(&("edge-1".into(), "hub-a".into())), "the streaming edge stayed: {before:?}");
    eprintln!("an edge moved to the new hub {:.1} s after it joined", took.as_secs_f64());
    // Balanced now: nothing moves back or on over the next rounds.
    tokio::time::sleep(Duration::from_secs(3 * TTL_SECS)).await;
    assert_eq!(placement(&a).await, before);
    assert_eq!(placement(&b).await, before);
    // The viewer on hub-a saw its stream all along.
    let frames = read_frames(&mut viewer, 10).await;
    assert_eq!(frames.len(), 10);
    let moved = &before.iter().find(|(_, h)| h == "hub-b").unwrap().0;
    let log =
        std::fs::read_to_string(&edges[["edge-1", "edge-2", "edge-3"].iter().position(|n| n == moved).unwrap()].log)
            .unwrap();
    assert!(log.contains("the hub sent this edge to another hub of the cluster"), "{log}");
}
