//! The cluster's routes: `GET /api/v1/hubs` (every hub, its state and load, and whether the
//! registry is reachable) and `GET /readyz` (whether this hub takes new work).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiState;
use crate::cluster::RegistryStatus;
use crate::cluster::records::{HubRecord, HubState, Load};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HubsJson {
    /// `standalone` (no cluster block), `available`, `connecting` or `unavailable`.
    registry: &'static str,
    /// Why the registry is unavailable, and since how long.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    hubs: Vec<HubRecord>,
}

/// The registry's state as the API names it, and its error.
pub(super) fn registry_status(st: &ApiState) -> (&'static str, Option<String>) {
    match st.cluster.as_ref().map(|c| c.status()) {
        None => ("standalone", None),
        Some(RegistryStatus::Available) => ("available", None),
        Some(RegistryStatus::Connecting) => ("connecting", None),
        Some(RegistryStatus::Unavailable { since, error }) => {
            ("unavailable", Some(format!("{error} (for {:.0} s)", since.elapsed().as_secs_f64())))
        }
    }
}

pub(super) async fn hubs(State(st): State<ApiState>) -> Json<HubsJson> {
    let (registry, error) = registry_status(&st);
    let hubs = match &st.cluster {
        Some(c) => c.view().hubs(),
        None => vec![HubRecord {
            name: st.live.get().hub_name.clone(),
            stream_url: String::new(),
            tunnel_address: String::new(),
            state: HubState::Allocated,
            load: Load {
                streams: st.sessions.snapshot().len(),
                edges: st.registry.snapshot().len(),
                ..Load::default()
            },
            version: env!("CARGO_PKG_VERSION").into(),
        }],
    };
    Json(HubsJson { registry, error, hubs })
}

/// This hub's lifecycle state.
pub(super) fn state(st: &ApiState) -> HubState {
    st.cluster.as_ref().map_or(HubState::Allocated, |c| c.state())
}

/// 200 while the hub takes new viewers and edges, 503 otherwise (starting or draining).
pub(super) async fn readyz(State(st): State<ApiState>) -> (StatusCode, String) {
    match state(&st) {
        HubState::Allocated => (StatusCode::OK, "ready\n".into()),
        other => (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", other.name())),
    }
}

/// The query of `POST /api/v1/hub/drain`.
#[derive(serde::Deserialize)]
pub(super) struct DrainQuery {
    /// Seconds the drain may take at most; default `cluster.drainDeadline`.
    deadline: Option<f64>,
}

/// `POST /api/v1/hub/drain[?deadline=SECONDS]` (admin): starts draining this hub
/// (`crate::cluster::drain`). 202 with the state and the deadline; a second call changes
/// nothing; 409 for a hub without a cluster.
pub(super) async fn drain(
    State(st): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<DrainQuery>,
) -> Result<(StatusCode, Json<serde_json::Value>), super::ApiError> {
    let deadline = match q.deadline {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 && s <= 24.0 * 3600.0 => Some(std::time::Duration::from_secs_f64(s)),
        Some(s) => {
            let msg = format!("deadline={s} is not a number of seconds from 0 to 86400");
            return Err(super::ApiError::new(StatusCode::BAD_REQUEST, "bad_deadline", msg));
        }
    };
    let deadline = st
        .drain
        .start(deadline)
        .map_err(|e| super::ApiError::new(StatusCode::CONFLICT, "not_clustered", e.to_string()))?;
    tracing::warn!(deadline_s = deadline.as_secs_f64(), "drain asked for through the API");
    let body = serde_json::json!({ "state": state(&st).name(), "deadlineSecs": deadline.as_secs_f64() });
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// This hub's state for `/metrics`: one series per state, 1 for the current one.
pub(super) fn metrics(st: &ApiState) -> String {
    let now = state(st);
    let mut out = String::from(
        "# HELP mediamesh_hub_state 1 for the lifecycle state this hub is in (initialized, allocated, tombstone, awaitingDeletion).\n\
         # TYPE mediamesh_hub_state gauge\n",
    );
    for s in [HubState::Initialized, HubState::Allocated, HubState::Tombstone, HubState::AwaitingDeletion] {
        let v = u8::from(s == now);
        out.push_str(&format!("mediamesh_hub_state{{state=\"{}\"}} {v}\n", s.name()));
    }
    out
}
