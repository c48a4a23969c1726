//! The edge's health endpoint (`/healthz`, `/readyz`, `/metrics` with each stream's counters and
//! the process's) and the hub's `process_*` metrics, read as a probe and Prometheus would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use mediamesh_testkit::{Fixture, http, read_frames};

/// The value of the sample `series` (name and labels, as written) in a metrics page.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reports_its_health_and_each_streams_counters() {
    let fx = Fixture::builder()
        .edge(|e| {
            e.health.enable = true;
            e.health.listen_address = SocketAddr::from(([127, 0, 0, 1], 0));
        })
        .start()
        .await;
    let edge = fx.edge.as_ref().unwrap().health_addr().expect("the endpoint is on");
    assert!(edge.ip().is_loopback());
    assert_eq!(http::get(edge, "/healthz").await, (200, "ok\n".to_owned()));
    let (status, body) = http::get(edge, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    let mut viewer = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut viewer, 30).await;
    let (status, page) = http::get(edge, "/metrics").await;
    assert_eq!(status, 200);
    let cam1 =
        |name: &str| value(&page, &format!("{name}{{stream=\"cam1\"}}")).unwrap_or_else(|| panic!("{name}\n{page}"));
    assert!(cam1("mediamesh_edge_stream_frames_in_total") >= 30.0);
    assert!(cam1("mediamesh_edge_stream_frames_out_total") >= 30.0);
    assert!(cam1("mediamesh_edge_stream_bytes_out_total") > 1000.0);
    assert_eq!(cam1("mediamesh_edge_stream_tunnel_connects_total"), 1.0);
    assert_eq!(cam1("mediamesh_edge_stream_starts_total"), 1.0);
    assert_eq!(value(&page, "mediamesh_edge_stream_state{stream=\"cam1\",state=\"running\"}"), Some(1.0), "{page}");
    assert_eq!(
        value(&page, "mediamesh_edge_stream_dropped_frames_total{stream=\"cam1\",reason=\"queue_full\"}"),
        Some(0.0)
    );
    assert!(page.contains("mediamesh_edge_stream_queue_delay_seconds{stream=\"cam1\"}"), "{page}");
    assert_eq!(value(&page, "mediamesh_edge_connected"), Some(1.0));
    assert!(value(&page, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(value(&page, "process_cpu_seconds_total").unwrap() > 0.0);

    // The hub's page has the process metrics too, and no per-viewer series unless asked.
    let (_, hub_page) = http::get(fx.hub.stream_addr, "/metrics").await;
    assert!(value(&hub_page, "process_open_fds").unwrap() > 3.0, "{hub_page}");
    assert!(!hub_page.contains("viewer=\""), "per-viewer series are off by default");

    // Without a hub, the edge is alive but not ready, and says why.
    drop(viewer);
    let Fixture { hub, edge: running, pki: _pki, .. } = fx;
    hub.stop(Duration::from_secs(5)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = http::get(edge, "/readyz").await;
        if status == 503 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "still ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.starts_with("not ready: not connected to the hub at 127.0.0.1:"), "{body}");
    assert_eq!(http::get(edge, "/healthz").await.0, 200);
    running.unwrap().stop(Duration::from_secs(5)).await;
}
