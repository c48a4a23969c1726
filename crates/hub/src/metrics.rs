//! `GET /metrics`: the hub's counters in the Prometheus text format (0.0.4), built at scrape time
//! from the same atomics the REST API reads. Nothing on the media path does extra work for it.
//!
//! Label cardinality is bounded:
//!
//! - `node` is a certificate identity from the tunnel CA;
//! - `stream` is a name in that node's catalog (at most 256 per node);
//! - `reason`, `state` and `protocol` are fixed sets;
//! - per-viewer series (label `viewer`, the viewer id) are emitted for at most
//!   `metricsMaxViewerSeries` viewers, the oldest first. The per-stream totals cover every
//!   viewer either way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mediamesh_metrics::Exposition;
use mediamesh_tunnel::wire::DropReason;

use crate::auth::HubAuth;
use crate::listener::{Deadline, Gate, Refused};
use crate::registry::NodeRegistry;
use crate::session::lifecycle::Phase;
use crate::session::{Session, Sessions};

/// Renders every metric.
pub(crate) fn render(
    sessions: &Sessions,
    registry: &NodeRegistry,
    gates: &[Arc<Gate>],
    auth: &HubAuth,
    max_viewer_series: usize,
) -> String {
    let mut m = Exposition::default();
    let now = Instant::now();
    let snapshot = sessions.snapshot();
    let connected = registry.snapshot();

    mediamesh_metrics::process::render(&mut m);
    m.family("mediamesh_build_info", "gauge", "Always 1; the version is a label.");
    m.sample("mediamesh_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);

    connections(&mut m, gates);
    m.family("mediamesh_auth_denials_total", "counter", "Requests refused by authentication, per protocol and reason.");
    for (protocol, reason, n) in auth.denials() {
        m.sample("mediamesh_auth_denials_total", &[("protocol", protocol), ("reason", reason)], n as f64);
    }

    let (watching, refused) = sessions.admission_counts();
    m.family("mediamesh_viewers", "gauge", "Viewers watching now, every protocol (the count the viewer limits check).");
    m.sample("mediamesh_viewers", &[], watching as f64);
    m.family("mediamesh_viewers_refused_total", "counter", "Viewers refused by a viewer limit, per reason.");
    for (reason, n) in refused {
        m.sample("mediamesh_viewers_refused_total", &[("reason", reason)], n as f64);
    }

    m.family("mediamesh_nodes_connected", "gauge", "Edge nodes with a control channel to this hub.");
    m.sample("mediamesh_nodes_connected", &[], connected.len() as f64);
    let node_stats = registry.all_node_stats();
    m.family("mediamesh_node_connects_total", "counter", "Control channels accepted per node (1 + reconnects).");
    for (node, s) in &node_stats {
        m.sample("mediamesh_node_connects_total", &[("node", node)], s.connects.get() as f64);
    }
    m.family(
        "mediamesh_node_identity_conflicts_total",
        "counter",
        "Control connections refused because another edge was connected with the node's identity.",
    );
    for (node, s) in &node_stats {
        m.sample("mediamesh_node_identity_conflicts_total", &[("node", node)], s.identity_conflicts.get() as f64);
    }
    m.family("mediamesh_node_rtt_seconds", "gauge", "Smoothed Ping/Pong round trip of the node's control channel.");
    for (node, s) in &node_stats {
        let rtt = s.rtt_us.load(Ordering::Relaxed);
        if rtt > 0 {
            m.sample("mediamesh_node_rtt_seconds", &[("node", node)], rtt as f64 / 1e6);
        }
    }

    m.family("mediamesh_sessions", "gauge", "Stream sessions by state.");
    for phase in [Phase::Starting, Phase::Live, Phase::Lingering, Phase::Away] {
        let n = snapshot.iter().filter(|s| s.phase() == phase).count();
        m.sample("mediamesh_sessions", &[("state", phase.name())], n as f64);
    }
    m.family("mediamesh_stream_state", "gauge", "1 for the state each stream session is in.");
    for s in &snapshot {
        m.sample("mediamesh_stream_state", &labels(s, &[("state", s.phase().name())]), 1.0);
    }

    stream_counters(&mut m, &snapshot, now);
    edge_reports(&mut m, &snapshot);
    viewer_series(&mut m, &snapshot, max_viewer_series);

    m.family("mediamesh_viewer_disconnects_total", "counter", "Viewers that left, by protocol and why.");
    for ((protocol, end), n) in sessions.counters().viewer_ends() {
        m.sample("mediamesh_viewer_disconnects_total", &[("protocol", protocol), ("reason", end.name())], n as f64);
    }
    m.finish()
}

/// The ports' gates: what they admitted and refused, and what is open.
fn connections(m: &mut Exposition, gates: &[Arc<Gate>]) {
    m.family("mediamesh_connections_open", "gauge", "Open connections per port.");
    for g in gates {
        m.sample("mediamesh_connections_open", &[("port", g.port().name())], g.open() as f64);
    }
    m.family("mediamesh_connections_accepted_total", "counter", "Connections admitted per port.");
    for g in gates {
        let n = g.counters.accepted.load(Ordering::Relaxed);
        m.sample("mediamesh_connections_accepted_total", &[("port", g.port().name())], n as f64);
    }
    m.family(
        "mediamesh_connections_refused_total",
        "counter",
        "Connections closed on accept, per port and the limit they hit.",
    );
    for g in gates {
        for why in Refused::ALL {
            let labels = [("port", g.port().name()), ("reason", why.name())];
            m.sample("mediamesh_connections_refused_total", &labels, g.counters.refused(why) as f64);
        }
    }
    m.family(
        "mediamesh_connection_timeouts_total",
        "counter",
        "Connections closed for missing a deadline, per port and phase (handshake, request).",
    );
    for g in gates {
        for d in Deadline::ALL {
            let labels = [("port", g.port().name()), ("phase", d.name())];
            m.sample("mediamesh_connection_timeouts_total", &labels, g.counters.timed_out(d) as f64);
        }
    }
    m.family("mediamesh_accept_errors_total", "counter", "Failed accepts per port (out of file descriptors, ...).");
    for g in gates {
        let n = g.counters.accept_errors.load(Ordering::Relaxed);
        m.sample("mediamesh_accept_errors_total", &[("port", g.port().name())], n as f64);
    }
}

fn labels<'a>(s: &'a Session, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("node", s.key.node.as_str()), ("stream", s.key.stream.as_str())];
    v.extend_from_slice(extra);
    v
}

fn stream_counters(m: &mut Exposition, snapshot: &[std::sync::Arc<Session>], now: Instant) {
    type Get = fn(&Session) -> f64;
    let counters: [(&str, &str, &str, Get); 9] = [
        ("mediamesh_stream_viewers", "gauge", "Viewers attached.", |s| s.viewer_count() as f64),
        ("mediamesh_stream_frames_in_total", "counter", "Frames received from the edge.", |s| {
            s.stats.frames_in.get() as f64
        }),
        ("mediamesh_stream_bytes_in_total", "counter", "Payload bytes received from the edge.", |s| {
            s.stats.bytes_in.get() as f64
        }),
        ("mediamesh_stream_frames_out_total", "counter", "Frames delivered, summed over viewers.", |s| {
            s.frames_out() as f64
        }),
        ("mediamesh_stream_bytes_out_total", "counter", "Payload bytes delivered, summed over viewers.", |s| {
            s.bytes_out() as f64
        }),
        ("mediamesh_stream_tunnel_connects_total", "counter", "Data tunnels attached (1 + reconnects).", |s| {
            s.stats.tunnel_connects.get() as f64
        }),
        ("mediamesh_stream_upstream_lost_total", "counter", "Times the data tunnel was lost while wanted.", |s| {
            s.stats.upstream_lost.get() as f64
        }),
        ("mediamesh_stream_keyframe_requests_total", "counter", "Keyframe requests sent to the upstream.", |s| {
            s.stats.keyframe_requests.get() as f64
        }),
        ("mediamesh_stream_log_frames", "gauge", "Frames held in the stream's shared log.", |s| {
            s.log.stats().frames as f64
        }),
    ];
    for (name, kind, help, get) in counters {
        m.family(name, kind, help);
        for s in snapshot {
            m.sample(name, &labels(s, &[]), get(s));
        }
    }
    m.family("mediamesh_stream_log_bytes", "gauge", "Payload bytes held in the stream's shared log.");
    for s in snapshot {
        m.sample("mediamesh_stream_log_bytes", &labels(s, &[]), s.log.stats().bytes as f64);
    }
    m.family("mediamesh_stream_bitrate_bps", "gauge", "Incoming bit rate over the last seconds.");
    for s in snapshot {
        m.sample("mediamesh_stream_bitrate_bps", &labels(s, &[]), s.stats.rate_in.rates(now).1);
    }
    m.family("mediamesh_tunnel_rtt_seconds", "gauge", "Smoothed Ping/Pong round trip of the stream's data tunnel.");
    for s in snapshot {
        let rtt = s.stats.tunnel_rtt_us.load(Ordering::Relaxed);
        if rtt > 0 {
            m.sample("mediamesh_tunnel_rtt_seconds", &labels(s, &[]), rtt as f64 / 1e6);
        }
    }
    m.family(
        "mediamesh_stream_dropped_frames_total",
        "counter",
        "Frames dropped at the hub or missing from the edge, by reason.",
    );
    for s in snapshot {
        let drops = [
            ("sequence_gap", s.stats.edge_dropped.get()),
            ("resume_before_keyframe", s.stats.resume_skipped.get()),
            ("viewer_resync", s.stats.viewer_skipped.get()),
        ];
        for (reason, n) in drops {
            m.sample("mediamesh_stream_dropped_frames_total", &labels(s, &[("reason", reason)]), n as f64);
        }
    }
}

fn edge_reports(m: &mut Exposition, snapshot: &[std::sync::Arc<Session>]) {
    let reports: Vec<_> = snapshot.iter().filter_map(|s| s.stats.uplink().map(|r| (s, r))).collect();
    m.family(
        "mediamesh_edge_dropped_frames_total",
        "counter",
        "Frames the edge dropped instead of sending, by reason.",
    );
    for (s, r) in &reports {
        for reason in DropReason::ALL {
            let n = r.drops.iter().find(|(x, _)| *x == reason).map_or(0, |(_, n)| *n);
            m.sample("mediamesh_edge_dropped_frames_total", &labels(s, &[("reason", reason.name())]), n as f64);
        }
    }
    type Get = fn(&mediamesh_tunnel::wire::UplinkReport) -> f64;
    let gauges: [(&str, &str, Get); 6] = [
        ("mediamesh_edge_queue_frames", "Frames waiting at the edge for the tunnel.", |r| f64::from(r.queue_frames)),
        ("mediamesh_edge_queue_bytes", "Payload bytes waiting at the edge.", |r| r.queue_bytes as f64),
        ("mediamesh_edge_queue_delay_seconds", "How long the oldest waiting frame has waited at the edge.", |r| {
            f64::from(r.queue_delay_ms) / 1e3
        }),
        ("mediamesh_edge_path_delay_seconds", "Queueing on the path, as the edge measures it from Feedback.", |r| {
            f64::from(r.path_delay_ms) / 1e3
        }),
        (
            "mediamesh_edge_congestion_level",
            "Edge shedding level: 0 clear, 1 dropping non-reference frames, 2 keyframes only.",
            |r| f64::from(r.level.to_u8()),
        ),
        ("mediamesh_edge_tunnel_connects", "Data tunnels the edge made for the session.", |r| f64::from(r.connects)),
    ];
    for (name, help, get) in gauges {
        m.family(name, "gauge", help);
        for (s, r) in &reports {
            m.sample(name, &labels(s, &[]), get(r));
        }
    }
}

fn viewer_series(m: &mut Exposition, snapshot: &[std::sync::Arc<Session>], max: usize) {
    let mut viewers: Vec<_> =
        snapshot.iter().flat_map(|s| s.viewers().into_iter().map(move |v| (s.clone(), v))).collect();
    viewers.sort_by_key(|(_, v)| v.id);
    viewers.truncate(max);
    let ids: Vec<String> = viewers.iter().map(|(_, v)| v.id.to_string()).collect();
    type Get = fn(&Session, &crate::session::stats::ViewerStats) -> f64;
    let per_viewer: [(&str, &str, &str, Get); 5] = [
        ("mediamesh_viewer_frames_total", "counter", "Frames written to the viewer.", |_, v| v.frames.get() as f64),
        ("mediamesh_viewer_bytes_total", "counter", "Payload bytes written to the viewer.", |_, v| {
            v.bytes.get() as f64
        }),
        ("mediamesh_viewer_skipped_frames_total", "counter", "Frames the viewer skipped to resynchronise.", |_, v| {
            v.skipped.get() as f64
        }),
        ("mediamesh_viewer_lag_bytes", "gauge", "Bytes the viewer trails the newest frame by.", |s, v| {
            s.log.lag_bytes(v.position.load(Ordering::Relaxed)) as f64
        }),
        ("mediamesh_viewer_pending_bytes", "gauge", "Bytes taken from the log and not yet written.", |_, v| {
            v.pending_bytes.load(Ordering::Relaxed) as f64
        }),
    ];
    for (name, kind, help, get) in per_viewer {
        m.family(name, kind, help);
        for ((s, v), id) in viewers.iter().zip(&ids) {
            m.sample(name, &labels(s, &[("viewer", id), ("protocol", v.protocol)]), get(s, v));
        }
    }
}
