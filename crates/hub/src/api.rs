//! The REST API and the WebSocket viewer route on the stream port.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/hub` | hub name, version, uptime, state, node and session counts, the cluster registry's state |
//! | `GET /api/v1/hubs` | every hub of the cluster: addresses, state, load ([`cluster`]) |
//! | `GET /api/v1/nodes` | the cluster's nodes, the hub each is connected to, their catalogs and each stream's state here |
//! | `GET /api/v1/streams` | every stream session: state, viewers, rates, counters |
//! | `GET /api/v1/nodes/{node}/streams/{stream}` | one stream (state `idle` if no session) |
//! | `GET /api/v1/nodes/{node}/streams/{stream}/ws` | WebSocket viewer |
//! | `GET /api/v1/nodes/{node}/streams/{stream}/mse` | MSE viewer: fragmented MP4 over a WebSocket |
//! | `GET /api/v1/nodes/{node}/streams/{stream}/hls/index.m3u8` | LL-HLS: the multivariant playlist, then the files it names ([`egress::hls`]) |
//! | `DELETE /api/v1/nodes/{node}/streams/{stream}` | stops a stream: its viewers get `end` ("stopped by an operator") and the edge RemoveVideo (admin) |
//! | `DELETE /api/v1/viewers/{id}` | disconnects one viewer: a WebSocket viewer gets `end` ("disconnected by an operator"), an RTSP viewer's connection closes (admin) |
//! | `POST /api/v1/nodes/{node}/revoke` | revokes a node: its tunnels close, its certificates are refused from now on (admin) |
//! | `POST /api/v1/session` | signs in: an internal user's name and password (Basic) for a session token ([`crate::http_auth::sign_in`]) |
//! | `DELETE /api/v1/session` | signs out: ends the bearer token's session |
//! | `GET /` | the web page ([`crate::web`]) |
//! | `GET /healthz` | `ok`: the process serves (liveness) |
//! | `GET /readyz` | 200 while the hub takes new work, 503 while starting or draining (readiness) |
//! | `GET /metrics` | Prometheus text format ([`crate::metrics`]) |
//!
//! Errors are JSON `{"error": code, "message": text}` with a matching HTTP status.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio_util::task::TaskTracker;

use crate::egress;
use crate::listener::{Gate, Remote};
use crate::registry::{NodeError, NodeRegistry};
use crate::session::{Session, Sessions, StreamKey};

mod cluster;
mod whep;

/// What the handlers share.
#[derive(Debug, Clone)]
pub(crate) struct ApiState {
    pub sessions: Arc<Sessions>,
    pub registry: Arc<NodeRegistry>,
    pub started: Instant,
    /// What a reload changes.
    pub live: Arc<mediamesh_tunnel::settings::Live<ApiSettings>>,
    /// The ports' gates, for `/metrics`.
    pub gates: Arc<[Arc<Gate>]>,
    /// Where viewers' tasks run, so shutdown waits for them.
    pub tasks: TaskTracker,
    /// Who may do what.
    pub auth: Arc<crate::auth::HubAuth>,
    /// Revoked nodes.
    pub revocations: Arc<crate::enroll::Revocations>,
    /// LL-HLS packaging of the streams HLS clients poll.
    pub hls: Arc<crate::egress::hls::HlsStreams>,
    /// WebRTC viewers, when configured.
    pub webrtc: Option<Arc<crate::egress::webrtc::WebRtc>>,
    /// The cluster this hub belongs to, if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Its drain.
    pub drain: Arc<crate::cluster::drain::DrainControl>,
}

/// The API's reloadable settings.
#[derive(Debug, Clone)]
pub(crate) struct ApiSettings {
    pub hub_name: String,
    /// How long a write to a viewer may make no progress.
    pub viewer_write_timeout: std::time::Duration,
    /// Most viewers with their own series in `/metrics`.
    pub metrics_max_viewer_series: usize,
    /// Web origins besides the hub's own whose pages may open WebSocket viewers.
    pub allowed_origins: Vec<String>,
}

/// Whether a WebSocket upgrade with these headers may proceed: no `Origin` (not a browser), the
/// hub's own origin (its host as the request names it), or one in `allowed` (`*`: any).
fn origin_allowed(headers: &axum::http::HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

/// The peer address of an HTTP connection, inserted by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub Remote);

pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(cluster::readyz))
        .route("/api/v1/hubs", get(cluster::hubs))
        .route("/metrics", get(metrics))
        .route("/api/v1/hub", get(hub))
        .route("/api/v1/hub/drain", post(cluster::drain))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/streams", get(streams))
        .route("/api/v1/nodes/{node}/streams/{stream}", get(stream).delete(stop_stream))
        .route("/api/v1/nodes/{node}/revoke", post(revoke_node))
        .route("/api/v1/viewers/{id}", axum::routing::delete(kick_viewer))
        .route(
            "/api/v1/session",
            post(crate::http_auth::sign_in).delete(crate::http_auth::sign_out).with_state(state.auth.clone()),
        )
        .route("/api/v1/nodes/{node}/streams/{stream}/ws", get(upgrade::<egress::ws::packager::WsFormat>))
        .route("/api/v1/nodes/{node}/streams/{stream}/mse", get(upgrade::<egress::mse::packager::MseFormat>))
        .route("/api/v1/nodes/{node}/streams/{stream}/hls/{file}", get(hls))
        .route("/api/v1/nodes/{node}/streams/{stream}/whep", post(whep::offer).options(whep::options))
        .route(
            "/api/v1/nodes/{node}/streams/{stream}/whep/{session}",
            axum::routing::delete(whep::end).options(whep::options).patch(whep::renegotiate).post(whep::renegotiate),
        )
        .merge(crate::web::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(state.auth.clone(), crate::http_auth::guard))
        .layer(axum::extract::DefaultBodyLimit::max(crate::http::MAX_BODY))
        .with_state(state)
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        Self { status, code, message }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let code = match e {
            NodeError::NotConnected { .. } => "node_not_found",
            NodeError::NoSuchStream { .. } => "stream_not_found",
            NodeError::Congested { .. } => {
                return Self::new(StatusCode::SERVICE_UNAVAILABLE, "node_congested", e.to_string());
            }
            NodeError::OnOtherHub { .. } => {
                return Self::new(StatusCode::SERVICE_UNAVAILABLE, "node_on_other_hub", e.to_string());
            }
            NodeError::RegistryUnavailable { .. } => {
                return Self::new(StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable", e.to_string());
            }
            NodeError::Draining { .. } => {
                return Self::new(StatusCode::SERVICE_UNAVAILABLE, "hub_draining", e.to_string());
            }
        };
        Self::new(StatusCode::NOT_FOUND, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: &'a str,
        }
        (self.status, Json(Body { error: self.code, message: &self.message })).into_response()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeJson {
    name: String,
    /// The hub its control channel is connected to.
    hub: String,
    /// `connected`, or `away`: its control channel ended less than `gracePeriod` ago, and its
    /// viewers (new ones too) wait for it.
    state: &'static str,
    agent: String,
    remote_addr: String,
    /// Seconds since it connected (`connected`) or left (`away`).
    connected_secs: f64,
    streams: Vec<NodeStreamJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeStreamJson {
    name: String,
    description: String,
    state: &'static str,
    viewers: usize,
}

/// `DELETE /api/v1/nodes/{node}/streams/{stream}`: ends the stream's session now.
async fn stop_stream(
    State(st): State<ApiState>,
    Path((node, stream)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let key = StreamKey::new(node, stream);
    let session = st.sessions.get(&key).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "stream_not_running", format!("{key} has no session to stop"))
    })?;
    let viewers = session.viewer_count();
    session.try_report(crate::session::SessionEvent::UpstreamEnded("stopped by an operator".into()));
    tracing::info!(stream = %key, viewers, "stream stopped through the API");
    Ok(Json(serde_json::json!({ "stream": key.to_string(), "stopped": true, "viewers": viewers })))
}

/// `DELETE /api/v1/viewers/{id}`: disconnects one viewer (the ids are in `GET /api/v1/streams`).
async fn kick_viewer(State(st): State<ApiState>, Path(id): Path<u64>) -> Result<Json<serde_json::Value>, ApiError> {
    let found = st.sessions.snapshot().into_iter().find_map(|s| {
        let v = s.viewers().into_iter().find(|v| v.id == id)?;
        Some((s.key.clone(), v))
    });
    let (key, viewer) = found.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "viewer_not_found", format!("no viewer {id} is watching"))
    })?;
    viewer.kick.cancel();
    tracing::info!(stream = %key, viewer = id, remote = %viewer.remote, "viewer disconnected through the API");
    Ok(Json(
        serde_json::json!({ "viewer": id, "stream": key.to_string(), "protocol": viewer.protocol, "disconnected": true }),
    ))
}

/// `POST /api/v1/nodes/{node}/revoke`: closes the node's tunnels and refuses its certificates.
async fn revoke_node(
    State(st): State<ApiState>,
    Path(node): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if mediamesh_tunnel::wire::validate_name(&node).is_err() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_name", format!("{node:?} is not a node name")));
    }
    st.revocations.revoke(&node).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "state", format!("cannot record the revocation: {e}"))
    })?;
    tracing::warn!(%node, "node revoked through the API: closing its tunnels and refusing its certificates");
    crate::enroll::cut(&node, &st.registry, &st.sessions);
    Ok(Json(serde_json::json!({ "node": node, "revoked": true })))
}

async fn hub(State(st): State<ApiState>) -> Json<serde_json::Value> {
    let (registry, error) = cluster::registry_status(&st);
    Json(serde_json::json!({
        "name": st.live.get().hub_name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSecs": st.started.elapsed().as_secs_f64(),
        "nodes": st.registry.snapshot().len(),
        "sessions": st.sessions.snapshot().len(),
        "webrtc": st.webrtc.is_some(),
        "state": cluster::state(&st).name(),
        "registry": registry,
        "registryError": error,
    }))
}

#[derive(Serialize)]
struct NodesJson {
    nodes: Vec<NodeJson>,
}

#[derive(Serialize)]
struct StreamsJson {
    streams: Vec<StreamJson>,
}

async fn nodes(State(st): State<ApiState>) -> Json<NodesJson> {
    let now = Instant::now();
    let hub_name = st.live.get().hub_name.clone();
    let streams = |name: &str, catalog: &[mediamesh_tunnel::wire::CatalogEntry]| -> Vec<NodeStreamJson> {
        catalog
            .iter()
            .map(|c| {
                let s = st.sessions.get(&StreamKey::new(name, &c.name));
                NodeStreamJson {
                    name: c.name.clone(),
                    description: c.description.clone(),
                    state: s.as_ref().map_or("idle", |s| s.phase().name()),
                    viewers: s.as_ref().map_or(0, |s| s.viewer_count()),
                }
            })
            .collect()
    };
    let mut nodes: Vec<NodeJson> = st
        .registry
        .snapshot()
        .into_iter()
        .map(|(name, e)| NodeJson {
            streams: streams(&name, &e.catalog),
            name,
            hub: hub_name.clone(),
            state: "connected",
            agent: e.agent,
            remote_addr: e.remote.to_string(),
            connected_secs: now.saturating_duration_since(e.connected_at).as_secs_f64(),
        })
        .collect();
    // A node that left is away here, unless the registry shows it connected to another hub.
    let view = st.cluster.as_ref().map(|c| c.view());
    let elsewhere = |name: &str| view.as_ref().and_then(|v| v.node(name)).is_some_and(|r| r.hub != hub_name);
    let departed = st.registry.departed_nodes().into_iter().filter(|(name, _)| !elsewhere(name));
    nodes.extend(departed.map(|(name, d)| NodeJson {
        streams: streams(&name, &d.catalog),
        name,
        hub: hub_name.clone(),
        state: "away",
        agent: String::new(),
        remote_addr: String::new(),
        connected_secs: now.saturating_duration_since(d.since).as_secs_f64(),
    }));
    // Nodes connected to other hubs of the cluster.
    if let Some(view) = &view {
        for (name, record) in view.nodes() {
            if record.hub == hub_name || nodes.iter().any(|n| n.name == name) {
                continue;
            }
            let catalog: Vec<_> = record
                .catalog
                .into_iter()
                .map(|e| mediamesh_tunnel::wire::CatalogEntry { name: e.name, description: e.description })
                .collect();
            nodes.push(NodeJson {
                streams: streams(&name, &catalog),
                name,
                hub: record.hub,
                state: "connected",
                agent: String::new(),
                remote_addr: String::new(),
                connected_secs: 0.0,
            });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Json(NodesJson { nodes })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StreamJson {
    node: String,
    stream: String,
    session_id: Option<u64>,
    /// Where its frames come from: `edge` (connected here) or `relay` (from another hub).
    upstream: &'static str,
    state: &'static str,
    viewers: usize,
    codec: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    fps: f64,
    bitrate_bps: f64,
    frames_in: u64,
    bytes_in: u64,
    frames_out: u64,
    bytes_out: u64,
    drops: DropsJson,
    tunnel_connects: u64,
    upstream_lost: u64,
    keyframe_requests: u64,
    tunnel_rtt_ms: Option<f64>,
    /// The edge's latest report on its uplink.
    edge: Option<EdgeJson>,
    log_frames: usize,
    log_bytes: usize,
    age_secs: f64,
    viewer_details: Vec<ViewerJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EdgeJson {
    queue_frames: u32,
    queue_bytes: u64,
    queue_delay_ms: u32,
    path_delay_ms: u32,
    rtt_ms: f64,
    congestion: &'static str,
    connects: u32,
    drops: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DropsJson {
    /// Frames the edge dropped before sending (sequence gaps).
    edge: u64,
    /// Frames viewers skipped to resynchronise at a keyframe.
    viewer_resync: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ViewerJson {
    id: u64,
    protocol: &'static str,
    remote_addr: String,
    connected_secs: f64,
    frames: u64,
    bytes: u64,
    skipped: u64,
    resyncs: u64,
    lag_bytes: u64,
    pending_bytes: u64,
}

fn stream_json(s: &Session, now: Instant) -> StreamJson {
    let (fps, bps) = s.stats.rate_in.rates(now);
    let header = s.log.header();
    let video = header.as_ref().and_then(|h| h.video.clone());
    let log = s.log.stats();
    let viewer_details = s
        .viewers()
        .iter()
        .map(|v| ViewerJson {
            id: v.id,
            protocol: v.protocol,
            remote_addr: v.remote.clone(),
            connected_secs: now.saturating_duration_since(v.joined).as_secs_f64(),
            frames: v.frames.get(),
            bytes: v.bytes.get(),
            skipped: v.skipped.get(),
            resyncs: v.resyncs.get(),
            lag_bytes: s.log.lag_bytes(v.position.load(Ordering::Relaxed)),
            pending_bytes: v.pending_bytes.load(Ordering::Relaxed),
        })
        .collect::<Vec<_>>();
    StreamJson {
        node: s.key.node.clone(),
        stream: s.key.stream.clone(),
        session_id: Some(s.id),
        upstream: s.source().kind(s).name(),
        state: s.phase().name(),
        viewers: viewer_details.len(),
        codec: video.as_ref().map(|v| v.codec_string.clone()),
        width: video.as_ref().map(|v| v.width),
        height: video.as_ref().map(|v| v.height),
        fps,
        bitrate_bps: bps,
        frames_in: s.stats.frames_in.get(),
        bytes_in: s.stats.bytes_in.get(),
        frames_out: s.frames_out(),
        bytes_out: s.bytes_out(),
        drops: DropsJson { edge: s.stats.edge_dropped.get(), viewer_resync: s.stats.viewer_skipped.get() },
        tunnel_connects: s.stats.tunnel_connects.get(),
        upstream_lost: s.stats.upstream_lost.get(),
        keyframe_requests: s.stats.keyframe_requests.get(),
        tunnel_rtt_ms: Some(s.stats.tunnel_rtt_us.load(Ordering::Relaxed)).filter(|v| *v > 0).map(|v| v as f64 / 1e3),
        edge: s.stats.uplink().map(|r| EdgeJson {
            queue_frames: r.queue_frames,
            queue_bytes: r.queue_bytes,
            queue_delay_ms: r.queue_delay_ms,
            path_delay_ms: r.path_delay_ms,
            rtt_ms: f64::from(r.rtt_us) / 1e3,
            congestion: r.level.name(),
            connects: r.connects,
            drops: r.drops.iter().map(|(k, v)| (k.name(), *v)).collect(),
        }),
        log_frames: log.frames,
        log_bytes: log.bytes,
        age_secs: now.saturating_duration_since(s.created).as_secs_f64(),
        viewer_details,
    }
}

async fn metrics(State(st): State<ApiState>) -> Response {
    let mut body = crate::metrics::render(
        &st.sessions,
        &st.registry,
        &st.gates,
        &st.auth,
        st.live.get().metrics_max_viewer_series,
    );
    body.push_str(&st.hls.metrics());
    body.push_str(&crate::egress::webrtc::metrics(st.webrtc.as_deref()));
    body.push_str(&cluster::metrics(&st));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn streams(State(st): State<ApiState>) -> Json<StreamsJson> {
    let now = Instant::now();
    Json(StreamsJson { streams: st.sessions.snapshot().iter().map(|s| stream_json(s, now)).collect() })
}

async fn stream(
    State(st): State<ApiState>,
    Path((node, stream)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = StreamKey::new(node, stream);
    st.sessions.check_stream(&key)?;
    Ok(match st.sessions.get(&key) {
        Some(s) => Json(stream_json(&s, Instant::now())).into_response(),
        None => Json(serde_json::json!({ "node": key.node, "stream": key.stream, "state": "idle", "viewers": 0 }))
            .into_response(),
    })
}

/// An LL-HLS request: a playlist, a part, a segment or an init segment.
async fn hls(
    State(st): State<ApiState>,
    Path((node, stream, file)): Path<(String, String, String)>,
    peer: Option<Extension<Peer>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let key = StreamKey::new(node, stream);
    st.sessions.check_stream(&key)?;
    let remote = peer.map_or(Remote::UNKNOWN, |Extension(Peer(a))| a);
    st.hls
        .serve(&st.sessions, key, &file, query.as_deref(), remote)
        .await
        .map_err(|e| ApiError::new(e.status, e.code, e.message))
}

/// The WebSocket upgrade of a viewer of format `F`, done by hand so the egress writer owns the
/// raw connection (see `egress::ws`).
async fn upgrade<F: egress::ws::Flavor>(
    State(st): State<ApiState>,
    Path((node, stream)): Path<(String, String)>,
    peer: Option<Extension<Peer>>,
    mut req: axum::extract::Request,
) -> Result<Response, ApiError> {
    st.sessions.check_stream(&StreamKey::new(node.clone(), stream.clone()))?;
    // A page elsewhere must not open viewers with the visitor's credentials (cross-site
    // WebSocket hijacking).
    if !origin_allowed(req.headers(), &st.live.get().allowed_origins) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin may not open viewers; add it to allowedOrigins".into(),
        ));
    }
    let accept = egress::ws::wire::accept_key(req.headers())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "websocket_required", e.to_string()))?;
    let on_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "upgrade_unavailable",
            "this connection cannot be upgraded".into(),
        )
    })?;
    let remote = peer.map_or(Remote::UNKNOWN, |Extension(Peer(a))| a);
    let key = StreamKey::new(node, stream);
    // Admitted before the upgrade, so a refusal is an HTTP answer the client can read.
    let viewer = st.sessions.join(&key, F::PROTOCOL.name(), remote).map_err(|r| {
        let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        ApiError::new(status, r.name(), r.to_string())
    })?;
    let sessions = st.sessions.clone();
    let stall = st.live.get().viewer_write_timeout;
    st.tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                egress::ws::serve::<_, F>(hyper_util::rt::TokioIo::new(upgraded), sessions, viewer, stall).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade did not complete"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(axum::http::header::UPGRADE, "websocket")
        .header(axum::http::header::CONNECTION, "upgrade")
        .header("sec-websocket-accept", accept)
        .body(axum::body::Body::empty())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}
