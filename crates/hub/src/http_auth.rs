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
//! | `POST`/`DELETE /api/v1/session` | none: signing in checks the user itself ([`sign_in`]) |
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
    if rest == "session" {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["nodes", node, "streams", stream, "ws"] => return Some((Action::Read, Some((node, stream)), Protocol::Ws)),
        ["nodes", node, "streams", stream, "mse"] => return Some((Action::Read, Some((node, stream)), Protocol::Mse)),
        ["nodes", node, "streams", stream, "hls", _] => {
            return Some((Action::Read, Some((node, stream)), Protocol::Hls));
        }
        // A browser's CORS preflight carries no credentials (RFC 9725 §4.1).
        ["nodes", _, "streams", _, "whep", ..] if method == Method::OPTIONS => return None,
        ["nodes", node, "streams", stream, "whep"] | ["nodes", node, "streams", stream, "whep", _] => {
            return Some((Action::Read, Some((node, stream)), Protocol::Webrtc));
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
    let script = req.headers().contains_key(X_REQUESTED_WITH);
    let credentials = match req.headers().get(header::AUTHORIZATION) {
        Some(v) => match Credentials::parse_header(v.as_bytes()) {
            Ok(c) => c,
            Err(e) => {
                auth.count(protocol, DenialReason::Unsupported);
                let resp = answer(&auth.policy(), StatusCode::UNAUTHORIZED, "bad_authorization", &e.to_string(), None);
                return for_scripts(resp, script);
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
        Err(d) => for_scripts(deny(&auth.policy(), &d), script),
    }
}

/// Marks a request from a page's script (the web page sends it on every API and HLS request).
const X_REQUESTED_WITH: &str = "x-requested-with";

/// A denial for a page's script carries no `Basic` challenge: a browser answers one with its
/// own password dialog, which would cover the page's sign-in form (Spring Security's rule).
fn for_scripts(mut resp: Response, script: bool) -> Response {
    if script {
        let kept: Vec<HeaderValue> = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter(|v| !v.as_bytes().get(..6).is_some_and(|s| s.eq_ignore_ascii_case(b"basic ")))
            .cloned()
            .collect();
        resp.headers_mut().remove(header::WWW_AUTHENTICATE);
        for v in kept {
            resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

/// `POST /api/v1/session`: an internal user's name and password (HTTP Basic) for a session
/// token, `201 {"token", "user", "expiresInSecs"}`, which the client then sends as a bearer
/// token (and as `?token=` where it cannot set headers). The web page signs in this way, so it
/// keeps a token that can be ended rather than the password.
pub(crate) async fn sign_in(State(auth): State<Arc<HubAuth>>, req: Request) -> Response {
    let credentials = match req.headers().get(header::AUTHORIZATION).map(|v| Credentials::parse_header(v.as_bytes())) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            auth.count(Protocol::Http, DenialReason::Unsupported);
            return answer(&auth.policy(), StatusCode::UNAUTHORIZED, "bad_authorization", &e.to_string(), None);
        }
        None => Credentials::None,
    };
    let remote = req.extensions().get::<Peer>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Peer(r)| r.ip());
    let mut resp = match auth.sign_in(remote, &credentials).await {
        None => answer(
            &auth.policy(),
            StatusCode::NOT_FOUND,
            "no_sign_in",
            "this hub has no auth block: everything is open and there is nothing to sign in to",
            None,
        ),
        Some(Err(d)) => deny(&auth.policy(), &d),
        Some(Ok((user, token, ttl))) => {
            let body = serde_json::json!({ "token": token.expose(), "user": user, "expiresInSecs": ttl.as_secs() });
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
    };
    // No challenge: this route is for scripts with a sign-in form, and a `Basic` challenge
    // would make a browser open its own password dialog over the page's.
    resp.headers_mut().remove(header::WWW_AUTHENTICATE);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `DELETE /api/v1/session`: ends the session whose token is the request's bearer token.
/// `204` whether or not it was live, so the answer tells nothing about other tokens.
pub(crate) async fn sign_out(State(auth): State<Arc<HubAuth>>, req: Request) -> Response {
    if let Some(Ok(Credentials::Bearer(token))) =
        req.headers().get(header::AUTHORIZATION).map(|v| Credentials::parse_header(v.as_bytes()))
        && auth.sign_out(token.expose())
    {
        tracing::info!("signed out: session ended");
    }
    StatusCode::NO_CONTENT.into_response()
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
        assert!(classify(&Method::POST, "/api/v1/session").is_none(), "signing in checks the user itself");
        assert_eq!(classify(&Method::DELETE, "/api/v1/viewers/7").map(|c| c.0), Some(Action::Admin));
        assert_eq!(classify(&Method::POST, "/api/v1/nodes/edge-1/streams/cam1/ws").map(|c| c.0), Some(Action::Read));
    }
}
