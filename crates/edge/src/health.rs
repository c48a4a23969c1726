//! The edge's health endpoint (optional; loopback by default): `GET /healthz` (the process
//! answers), `GET /readyz` (connected to a hub) and `GET /metrics` (each stream's source state,
//! frames and bytes in and out, drops by reason, uplink queue delay, tunnel round trip and
//! reconnects; the process's CPU and memory), for kubelet probes, systemd watchdogs and
//! Prometheus. Plain HTTP: it is meant for the machine itself or its pod.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use mediamesh_metrics::Exposition;
use mediamesh_tunnel::wire::DropReason;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::stats::{EdgeStats, SourceState};

/// What the endpoint reads.
#[derive(Clone)]
pub(crate) struct Health {
    pub stats: Arc<EdgeStats>,
    /// The hub's address, for `/readyz`.
    pub server: String,
}

/// Serves until `shutdown`.
pub(crate) async fn serve(listener: TcpListener, health: Health, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    let local = listener.local_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
    tracing::info!(address = %local, "health endpoint listening");
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::warn!(error = %e, "health endpoint stopped");
    }
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.stats.connected.load(Relaxed) {
        return (StatusCode::OK, format!("ready: connected to the hub at {}\n", h.server));
    }
    let why = h.stats.last_dial_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let why = why.map_or_else(String::new, |e| format!(": {e}"));
    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: not connected to the hub at {}{why}\n", h.server))
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render(&h.stats))
}

/// The edge's metrics page.
pub(crate) fn render(stats: &EdgeStats) -> String {
    let mut m = Exposition::default();
    mediamesh_metrics::process::render(&mut m);
    m.family("mediamesh_build_info", "gauge", "Always 1; the version is a label.");
    m.sample("mediamesh_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    let connected = if stats.connected.load(Relaxed) { 1.0 } else { 0.0 };
    m.single("mediamesh_edge_connected", "gauge", "1 while the control channel to the hub is up.", connected);
    let connects = EdgeStats::get(&stats.control_connects) as f64;
    m.single(
        "mediamesh_edge_control_connects_total",
        "counter",
        "Control channels established (1 + reconnects).",
        connects,
    );

    let streams = stats.streams();
    m.family("mediamesh_edge_stream_state", "gauge", "1 for the state each stream's source is in.");
    for (name, s) in &streams {
        for state in SourceState::ALL {
            let v = if s.state() == state { 1.0 } else { 0.0 };
            m.sample("mediamesh_edge_stream_state", &[("stream", name), ("state", state.name())], v);
        }
    }
    type Get = fn(&crate::stats::StreamStats) -> f64;
    let counters: [(&str, &str, &str, Get); 10] = [
        ("mediamesh_edge_stream_frames_in_total", "counter", "Frames the source produced.", |s| {
            s.frames_in.load(Relaxed) as f64
        }),
        ("mediamesh_edge_stream_bytes_in_total", "counter", "Payload bytes the source produced.", |s| {
            s.bytes_in.load(Relaxed) as f64
        }),
        ("mediamesh_edge_stream_frames_out_total", "counter", "Frames sent to the hub.", |s| {
            s.frames_out.load(Relaxed) as f64
        }),
        ("mediamesh_edge_stream_bytes_out_total", "counter", "Payload bytes sent to the hub.", |s| {
            s.bytes_out.load(Relaxed) as f64
        }),
        (
            "mediamesh_edge_stream_queue_delay_seconds",
            "gauge",
            "Age of the oldest frame waiting in the uplink's queue.",
            |s| s.queue_delay_us.load(Relaxed) as f64 / 1e6,
        ),
        (
            "mediamesh_edge_stream_tunnel_rtt_seconds",
            "gauge",
            "Smoothed round trip of the data tunnel (0: none).",
            |s| s.rtt_us.load(Relaxed) as f64 / 1e6,
        ),
        ("mediamesh_edge_stream_tunnel_connects_total", "counter", "Data tunnels opened.", |s| {
            s.tunnel_connects.load(Relaxed) as f64
        }),
        (
            "mediamesh_edge_stream_tunnel_lost_total",
            "counter",
            "Data tunnels lost while wanted (each redialled).",
            |s| s.tunnel_lost.load(Relaxed) as f64,
        ),
        ("mediamesh_edge_stream_starts_total", "counter", "Starts of the source.", |s| s.starts.load(Relaxed) as f64),
        ("mediamesh_edge_stream_start_failures_total", "counter", "Starts of the source that failed.", |s| {
            s.start_failures.load(Relaxed) as f64
        }),
    ];
    for (name, kind, help, get) in counters {
        m.family(name, kind, help);
        for (stream, s) in &streams {
            m.sample(name, &[("stream", stream)], get(s));
        }
    }
    m.family("mediamesh_edge_stream_dropped_frames_total", "counter", "Frames dropped at the edge, by reason.");
    for (stream, s) in &streams {
        for reason in DropReason::ALL {
            m.sample(
                "mediamesh_edge_stream_dropped_frames_total",
                &[("stream", stream), ("reason", reason.name())],
                s.drops(reason) as f64,
            );
        }
    }
    m.finish()
}
