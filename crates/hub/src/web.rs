//! The web page at `/` on the stream port: the hub's nodes and streams with a player each
//! (`crates/hub/web/`, embedded in the binary: nothing to install or fetch at run time).
//!
//! The page and its assets are public (they hold no data); everything they show comes from the
//! REST API and the viewer routes, with the viewer's token. The token reaches the page in the
//! address's fragment (`/#token=…`), which browsers never send to a server.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The embedded files: name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../web/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../web/app.js")),
    ("players.js", "text/javascript; charset=utf-8", include_bytes!("../web/players.js")),
    ("stamp.js", "text/javascript; charset=utf-8", include_bytes!("../web/stamp.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../web/style.css")),
    // hls.js (web/vendor/README.md: version, origin, licence).
    ("vendor/hls.min.js", "text/javascript; charset=utf-8", include_bytes!("../web/vendor/hls.min.js")),
    ("vendor/hls.js.LICENSE", "text/plain; charset=utf-8", include_bytes!("../web/vendor/hls.js.LICENSE")),
];

/// The page may load only its own scripts and styles, and talk only to this hub (WebSocket
/// included); media come from `blob:` URLs (MSE).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self' blob:; connect-src 'self' ws: wss:; worker-src 'self' blob:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Each file's entity tag: a hash of its bytes, so a new build's files are fetched again.
static ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| FILES.iter().map(|(_, _, bytes)| format!("\"{:016x}\"", fnv1a(bytes))).collect());

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { file("index.html", &headers) }))
        .route(
            "/assets/{name}",
            get(|Path(name): Path<String>, headers: HeaderMap| async move { file(&name, &headers) }),
        )
        .route(
            "/assets/vendor/{name}",
            get(
                |Path(name): Path<String>, headers: HeaderMap| async move { file(&format!("vendor/{name}"), &headers) },
            ),
        )
}

fn file(name: &str, request: &HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let (_, content_type, bytes) = FILES[i];
    let etag = &ETAGS[i];
    let fresh = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == etag);
    let mut r = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { bytes.into_response() };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on every load (cheap: a 304), so an upgraded hub serves its own page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if name == "index.html" {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_type_and_revalidates() {
        for (name, content_type, bytes) in FILES {
            let r = file(name, &HeaderMap::new());
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], *content_type);
            assert!(!bytes.is_empty());
            let etag = r.headers()[header::ETAG].clone();
            let mut again = HeaderMap::new();
            again.insert(header::IF_NONE_MATCH, etag);
            assert_eq!(file(name, &again).status(), StatusCode::NOT_MODIFIED, "{name}");
        }
        assert_eq!(file("../Cargo.toml", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
        assert!(file("index.html", &HeaderMap::new()).headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }
}
