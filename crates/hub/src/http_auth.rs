//! Authentication on the stream port: which action each route is, where its credentials come
//! from, and the answer to a denial.
//!
//! | route | action |
//! |---|---|
//! | `GET /healthz` | none: probes need no credentials |
//! | `GET /metrics` | `metrics` |
//! | `GET /api/v1/nodes/{node}/streams/{stream}/ws` | `read` on `node/stream` |
//! | `GET /api/v1/nodes/{node}/streams/{stream}/mse` | `read` on `node/stream` |
//! | `GET /api/v1/nodes/{node}/streams/{stream}/hls/…` | `read` on `node/stream` |
//! | other `GET /api/v1/…` | `api` |
//! | other methods on `/api/v1/…` | `admin` |
//!
//! Credentials: `Authorization: Bearer` or `Basic`; on the WebSocket routes (`ws`, `mse`) and
//! HLS also a `token` query parameter, because a browser's WebSocket (and Safari's native HLS
//! player) cannot set headers. A denial answers 401 with a
//! `WWW-Authenticate` for each method the hub can check, 403, or 429 with `Retry-After`, and a
//! JSON body `{"error": reason, "message": text}`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mediamesh_auth::{Action, Credentials, Denial, DenialReason};

use crate::api::Peer;
use crate::auth::{HubAuth, Policy, Protocol};

/// What a request does: the action, the stream it names, and the protocol it is counted under.
type Route<'a> = (Action, Option<(&'a str, &'a str)>, Protocol);

/// What a request to `path` does, or `None` for routes open to all.
fn classify<'a>(method: &Method, path: &'a str) -> Option<Route<'a>> {
    if path == "/metrics" {
        return Some((Action::Metrics, None, Protocol::Http));
    }
    let rest = path.strip_prefix("/api/v1/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["nodes", node, "streams", stream, "ws"] => return Some((Action::Read, Some((node, stream)), Protocol::Ws)),
        ["nodes", node, "streams", stream, "mse"] => return Some((Action::Read, Some((node, stream)), Protocol::Mse)),
        ["nodes", node, "streams", stream, "hls", _] => {
            return Some((Action::Read, Some((node, stream)), Protocol::Hls));
        }
        _ => {}
    }
    let action = if method == Method::GET || method == Method::HEAD { Action::Api } else { Action::Admin };
    Some((action, None, Protocol::Http))
}

/// The middleware: lets the request through, or answers the denial.
pub(crate) async fn guard(State(auth): State<Arc<HubAuth>>, req: Request, next: Next) -> Response {
    let Some((action, stream, protocol)) = classify(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let credentials = match req.headers().get(header::AUTHORIZATION) {
        Some(v) => match Credentials::parse_header(v.as_bytes()) {
            Ok(c) => c,
            Err(e) => {
                auth.count(protocol, DenialReason::Unsupported);
                return answer(&auth.policy(), StatusCode::UNAUTHORIZED, "bad_authorization", &e.to_string(), None);
            }
        },
        None if matches!(protocol, Protocol::Ws | Protocol::Mse | Protocol::Hls) => {
            req.uri().query().and_then(Credentials::from_query).unwrap_or(Credentials::None)
        }
        None => Credentials::None,
    };
    let remote = req.extensions().get::<Peer>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Peer(r)| r.ip());
    let method = req.method().as_str().to_owned();
    let decision = auth
        .check(
            protocol,
            &mediamesh_auth::Request {
                action,
                stream,
                remote,
                credentials: &credentials,
                method: &method,
                protocol: protocol.name(),
            },
        )
        .await;
    match decision {
        Ok(_) => next.run(req).await,
        Err(d) => deny(&auth.policy(), &d),
    }
}

fn deny(policy: &Policy, d: &Denial) -> Response {
    let status = StatusCode::from_u16(d.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let retry = match d {
        Denial::RateLimited { retry_after } => Some(retry_after.as_secs().max(1)),
        _ => None,
    };
    answer(policy, status, d.reason().name(), &d.to_string(), retry)
}

fn answer(policy: &Policy, status: StatusCode, code: &str, message: &str, retry: Option<u64>) -> Response {
    let body = serde_json::json!({ "error": code, "message": message });
    let mut resp = (status, axum::Json(body)).into_response();
    let headers = resp.headers_mut();
    if status == StatusCode::UNAUTHORIZED
        && let Policy::Checked(a) = policy
    {
        for c in a.http_challenges() {
            if let Ok(v) = HeaderValue::from_str(&c) {
                headers.append(header::WWW_AUTHENTICATE, v);
            }
        }
    }
    if let Some(secs) = retry {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_actions() {
        let get = Method::GET;
        assert!(classify(&get, "/healthz").is_none());
        assert_eq!(classify(&get, "/metrics").map(|c| c.0), Some(Action::Metrics));
        let ws = classify(&get, "/api/v1/nodes/edge-1/streams/cam1/ws").unwrap();
        assert_eq!((ws.0, ws.1, ws.2), (Action::Read, Some(("edge-1", "cam1")), Protocol::Ws));
        assert_eq!(classify(&get, "/api/v1/streams").map(|c| c.0), Some(Action::Api));
        assert_eq!(classify(&Method::DELETE, "/api/v1/viewers/7").map(|c| c.0), Some(Action::Admin));
        assert_eq!(classify(&Method::POST, "/api/v1/nodes/edge-1/streams/cam1/ws").map(|c| c.0), Some(Action::Read));
    }
}
