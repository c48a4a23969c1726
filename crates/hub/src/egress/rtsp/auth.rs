//! Authentication of RTSP requests: DESCRIBE and SETUP join a stream, so each needs `read` on
//! it; PLAY and the rest act on a session this connection set up, which already passed.
//!
//! Credentials come in `Authorization` (Basic, Digest, or Basic with a JWT as the password for
//! clients that cannot send a bearer token), or as a `?token=` in the request URL for clients
//! that cannot carry a token's length in the password (ffmpeg). A connection that proved itself for a stream
//! keeps that for the stream: clients that authenticated DESCRIBE do not always repeat it.
//! A denial answers 401 with a challenge for each method the hub can check (Digest first when
//! a user can use it), 403, or 429.

use mediamesh_auth::{Action, Credentials, Denial, DenialReason};

use super::request::{Request, Response};
use crate::auth::{HubAuth, Policy, Protocol};
use crate::listener::Remote;
use crate::session::StreamKey;

/// `None` if `req` may go on to `key`; otherwise the answer.
pub(super) async fn check(auth: &HubAuth, req: &Request, key: &StreamKey, peer: Remote) -> Option<Response> {
    let credentials = match req.header("Authorization") {
        Some(v) => match Credentials::parse_header(v.as_bytes()) {
            Ok(c) => c,
            Err(e) => {
                auth.count(Protocol::Rtsp, DenialReason::Unsupported);
                return Some(challenge(&auth.policy(), false).body("text/plain", format!("{e}\n")));
            }
        },
        // A `?token=` in the URL, for clients whose password field is too short for a token
        // (ffmpeg keeps 127 bytes of user and password).
        None => req
            .uri
            .split_once('?')
            .and_then(|(_, q)| Credentials::from_query(q.split('#').next().unwrap_or_default()))
            .unwrap_or(Credentials::None),
    };
    let method = req.method.to_string();
    let request = mediamesh_auth::Request {
        action: Action::Read,
        stream: Some((&key.node, &key.stream)),
        remote: peer.ip(),
        credentials: &credentials,
        method: &method,
        protocol: Protocol::Rtsp.name(),
    };
    match auth.check(Protocol::Rtsp, &request).await {
        Ok(_) => None,
        Err(d) => Some(answer(&auth.policy(), &d)),
    }
}

fn answer(policy: &Policy, d: &Denial) -> Response {
    match d.status() {
        403 => Response::new(403, "Forbidden"),
        429 => Response::new(429, "Too Many Requests"),
        _ => challenge(policy, matches!(d, Denial::StaleNonce)),
    }
}

fn challenge(policy: &Policy, stale: bool) -> Response {
    let mut r = Response::new(401, "Unauthorized");
    if let Policy::Checked(a) = policy {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for c in a.rtsp_challenges(now, stale) {
            r = r.header("WWW-Authenticate", c);
        }
    }
    r
}
