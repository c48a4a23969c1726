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
