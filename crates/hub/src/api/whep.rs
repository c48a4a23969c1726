//! WHEP's routes (RFC 9725): the offer, a session's end, and what a session refuses; each
//! answer carries CORS headers so a page on another origin can play.

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState, Peer};
use crate::listener::Remote;
use crate::session::StreamKey;

/// CORS for WHEP (RFC 9725 §4.1): a page on another origin may make offers and end sessions.
fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, axum::http::HeaderValue::from_static("*"));
    h.insert(
        axum::http::header::ACCESS_CONTROL_ALLOW_METHODS,
        axum::http::HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    h.insert(
        axum::http::header::ACCESS_CONTROL_ALLOW_HEADERS,
        axum::http::HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        axum::http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        axum::http::HeaderValue::from_static("Location, X-Mediamesh-Audio-Omitted"),
    );
    r
}

pub(super) async fn options() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

/// `POST …/whep`: an SDP offer in, `201` with the answer and the session's `Location`.
pub(super) async fn offer(
    State(st): State<ApiState>,
    Path((node, stream)): Path<(String, String)>,
    peer: Option<Extension<Peer>>,
    body: String,
) -> Response {
    let result = async {
        let Some(rtc) = st.webrtc.clone() else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "webrtc_off", "this hub has no webrtc block".into()));
        };
        let key = StreamKey::new(node.clone(), stream.clone());
        st.sessions.check_stream(&key)?;
        let remote = peer.map_or(Remote::UNKNOWN, |Extension(Peer(a))| a);
        let mut viewer = st.sessions.join(&key, crate::auth::Protocol::Webrtc.name(), remote).map_err(|r| {
            let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            ApiError::new(status, r.name(), r.to_string())
        })?;
        // The answer names the camera's codecs, so a stream that is just starting is given
        // until its header arrives (as long as a first viewer waits for its keyframe).
        let deadline = tokio::time::Instant::now() + st.sessions.config().lifecycle.start_timeout;
        while viewer.session.log.header().is_none() {
            if let Some(reason) = viewer.session.log.end_reason() {
                return Err(ApiError::new(StatusCode::BAD_GATEWAY, "stream_ended", reason.to_string()));
            }
            let wake = (tokio::time::Instant::now() + std::time::Duration::from_millis(50)).min(deadline);
            match tokio::time::timeout_at(wake, viewer.cursor.changed()).await {
                Ok(false) => break, // the log is gone: the answer says what it can
                Err(_) if wake == deadline => break,
                _ => {}
            }
        }
        let answer = rtc.answer(&body, st.sessions.clone(), viewer, &st.tasks).map_err(|e| {
            ApiError::new(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST), e.code(), e.to_string())
        })?;
        let mut r = Response::builder()
            .status(StatusCode::CREATED)
            .header(axum::http::header::CONTENT_TYPE, "application/sdp")
            .header(
                axum::http::header::LOCATION,
                format!("/api/v1/nodes/{node}/streams/{stream}/whep/{:x}", answer.id),
            );
        if let Some(codec) = answer.audio_left_out {
            r = r.header("X-Mediamesh-Audio-Omitted", codec.name());
        }
        r.body(axum::body::Body::from(answer.sdp))
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
    }
    .await;
    cors(result.unwrap_or_else(IntoResponse::into_response))
}

/// `PATCH` (trickle ICE, ICE restart) or a second offer on a session: not supported, so the
/// answer is `405` as RFC 9725 §4.3 allows; the client makes a new session instead.
pub(super) async fn renegotiate() -> Response {
    let mut r = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "renegotiation_unsupported",
        "a session takes one offer (no trickle ICE or ICE restart): end it and POST a new offer".into(),
    )
    .into_response();
    r.headers_mut().insert(axum::http::header::ALLOW, axum::http::HeaderValue::from_static("DELETE, OPTIONS"));
    cors(r)
}

/// `DELETE …/whep/{session}`: ends the session.
pub(super) async fn end(
    State(st): State<ApiState>,
    Path((_node, _stream, session)): Path<(String, String, String)>,
) -> Response {
    let ended = st.webrtc.as_ref().zip(u64::from_str_radix(&session, 16).ok()).is_some_and(|(w, id)| w.end(id));
    let r = if ended {
        StatusCode::OK.into_response()
    } else {
        ApiError::new(StatusCode::NOT_FOUND, "session_not_found", format!("no WebRTC session {session:?}"))
            .into_response()
    };
    cors(r)
}
