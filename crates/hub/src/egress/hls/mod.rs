//! LL-HLS viewers: `GET /api/v1/nodes/{node}/streams/{stream}/hls/index.m3u8` and the files it
//! names (`docs/protocol.md`, "LL-HLS").
//!
//! - `index.m3u8`: the multivariant playlist: the video rendition, and the audio one as an
//!   `EXT-X-MEDIA` rendition.
//! - `video.m3u8`, `audio.m3u8`: media playlists with parts; `_HLS_msn` / `_HLS_part` hold the
//!   request until the playlist has that part (blocking reload), answer 400 when it is more
//!   than two segments ahead, 503 when it does not come within three target durations.
//! - `{rendition}-init-{n}.mp4`, `-part-{msn}.{i}.mp4`, `-seg-{msn}.mp4`: the fMP4 files. A
//!   request for the next part (the preload hint) waits for it like a blocking reload.
//!
//! HLS clients are requests, not connections: a stream's HLS packaging is one viewer of the
//! session ([`HlsStreams`]), joined at the first request (which starts an idle stream, one
//! upstream as always) and leaving once no request came for `idle` (then the session lingers
//! as after any last viewer).

pub mod packager;
pub mod playlist;
pub mod request;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::packager::{HlsPackager, Rendition};
use self::playlist::{Block, BlockAnswer, PlaylistConfig};
use self::request::{HlsQuery, Resource};
use crate::listener::Remote;
use crate::session::log::Attached;
use crate::session::{Session, Sessions, StreamKey, Viewer};

/// How long a request waits for a stream's first part before 503.
const START_WAIT: Duration = Duration::from_secs(10);

/// A stream's HLS packaging while clients poll it.
struct HlsStream {
    session: Arc<Session>,
    attached: Attached<HlsPackager>,
    last_request: Mutex<Instant>,
    /// Holds the session (and its upstream) while clients poll.
    _viewer: Viewer,
}

/// The streams HLS clients poll, and the requests held waiting.
pub(crate) struct HlsStreams {
    cfg: PlaylistConfig,
    /// No request for this long: the HLS viewer leaves.
    idle: Duration,
    streams: Mutex<HashMap<StreamKey, Arc<HlsStream>>>,
    /// Requests waiting (blocking reloads, preload hints), and the most allowed.
    held: AtomicUsize,
    max_held: usize,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for HlsStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsStreams").field("held", &self.held.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// An answer other than the file: status, error code, message.
#[derive(Debug)]
pub(crate) struct HlsError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl HlsError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

/// Decrements the held count when a waiting request ends, however it ends.
struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HlsStreams {
    pub(crate) fn new(
        cfg: PlaylistConfig,
        max_held: usize,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        // A client polls at least every target duration; give it two, and never less than 3 s.
        let idle = (cfg.segment_min * 4).max(Duration::from_secs(3));
        Arc::new(Self {
            cfg,
            idle,
            streams: Mutex::new(HashMap::new()),
            held: AtomicUsize::new(0),
            max_held,
            tasks,
            shutdown,
        })
    }

    /// Its series in `/metrics`: requests held, and streams being packaged.
    pub(crate) fn metrics(&self) -> String {
        format!(
            "# HELP mediamesh_hls_waiting_requests LL-HLS requests held waiting for a part or playlist.\n\
             # TYPE mediamesh_hls_waiting_requests gauge\nmediamesh_hls_waiting_requests {}\n\
             # HELP mediamesh_hls_streams Streams packaged for LL-HLS clients now.\n\
             # TYPE mediamesh_hls_streams gauge\nmediamesh_hls_streams {}\n",
            self.held.load(Ordering::Relaxed),
            lock(&self.streams).len()
        )
    }

    /// The stream's packaging, joining the session (and starting the stream) on the first
    /// request.
    fn stream(
        self: &Arc<Self>,
        sessions: &Arc<Sessions>,
        key: &StreamKey,
        remote: Remote,
    ) -> Result<Arc<HlsStream>, HlsError> {
        let mut map = lock(&self.streams);
        if let Some(s) = map.get(key)
            && !s.session.log.is_closed()
        {
            *lock(&s.last_request) = Instant::now();
            return Ok(s.clone());
        }
        let viewer = sessions.join(key, crate::auth::Protocol::Hls.name(), remote).map_err(|r| {
            HlsError::new(
                StatusCode::from_u16(r.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                r.name(),
                r.to_string(),
            )
        })?;
        let session = viewer.session.clone();
        let cfg = self.cfg;
        let attached = session.log.attach(|| HlsPackager::new(cfg));
        let s = Arc::new(HlsStream { session, attached, last_request: Mutex::new(Instant::now()), _viewer: viewer });
        map.insert(key.clone(), s.clone());
        drop(map);
        // Leaves when clients stop polling or the stream ends.
        let (this, key, mine) = (self.clone(), key.clone(), Arc::downgrade(&s));
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(this.idle / 4) => {}
                    () = this.shutdown.cancelled() => {}
                }
                let Some(s) = mine.upgrade() else { return };
                let idle = lock(&s.last_request).elapsed() >= this.idle;
                if idle || s.session.log.is_closed() || this.shutdown.is_cancelled() {
                    let mut map = lock(&this.streams);
                    if map.get(&key).is_some_and(|cur| Arc::ptr_eq(cur, &s)) {
                        map.remove(&key);
                    }
                    drop(map);
                    tracing::debug!(stream = %key, idle, "HLS clients stopped polling; the HLS viewer leaves");
                    return;
                }
            }
        });
        Ok(s)
    }

    /// Answers one HLS request.
    pub(crate) async fn serve(
        self: &Arc<Self>,
        sessions: &Arc<Sessions>,
        key: StreamKey,
        file: &str,
        query: Option<&str>,
        remote: Remote,
    ) -> Result<Response, HlsError> {
        let resource =
            Resource::parse(file).map_err(|e| HlsError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))?;
        let q = HlsQuery::parse(query.unwrap_or(""))
            .map_err(|e| HlsError::new(StatusCode::BAD_REQUEST, "bad_hls_parameter", e.to_string()))?;
        if q.block.is_some() && !matches!(resource, Resource::Media(_)) {
            return Err(HlsError::new(StatusCode::BAD_REQUEST, "bad_hls_parameter", "_HLS_msn is for media playlists"));
        }
        let s = self.stream(sessions, &key, remote)?;
        let suffix = q.token.as_deref().map(|t| format!("?token={t}")).unwrap_or_default();
        match resource {
            Resource::Multivariant => {
                self.wait(&s, START_WAIT, |p| p.error().is_some() || first_part(p)).await?;
                let text = with(&s, |p| multivariant(p, &suffix))??;
                Ok(playlist_response(text))
            }
            Resource::Media(r) => {
                let block = q.block;
                let deadline = match block {
                    // RFC 8216bis §6.2.5.2: three target durations, then 503.
                    Some(_) => with(&s, |p| target(p, r))? * 3,
                    None => START_WAIT,
                };
                self.wait(&s, deadline, move |p| match p.playlist(r) {
                    None => p.error().is_some(),
                    Some(pl) => match block {
                        // A first playlist has a complete segment: clients that do not know
                        // parts (ffmpeg, older players) need one to start.
                        None => pl.progress().segment.is_some(),
                        Some(b) => pl.progress().answer(b) != BlockAnswer::Wait,
                    },
                })
                .await?;
                let text = with(&s, |p| -> Result<Bytes, HlsError> {
                    let pl = p.playlist(r).ok_or_else(|| no_rendition(p, r))?;
                    if let Some(b) = block
                        && pl.progress().answer(b) == BlockAnswer::TooFar
                    {
                        return Err(HlsError::new(
                            StatusCode::BAD_REQUEST,
                            "hls_msn_too_far",
                            format!("_HLS_msn={} is more than two segments past the playlist's last", b.msn),
                        ));
                    }
                    Ok(pl.render_shared(if r == Rendition::Video { "video-" } else { "audio-" }, &suffix))
                })??;
                Ok(playlist_response(text))
            }
            Resource::Init(r, n) => {
                self.wait(&s, START_WAIT, |p| p.error().is_some() || p.playlist(r).is_some()).await?;
                let data = with(&s, |p| p.playlist(r).and_then(|pl| pl.init(n)).cloned())?;
                data.map(|d| media_response(r, d)).ok_or_else(|| gone(file))
            }
            Resource::Part(r, msn, i) => {
                // The hinted next part (or one just ahead of it) is waited for; older ones
                // either exist or are gone.
                let wanted = Block { msn, part: Some(i) };
                let ahead = with(&s, |p| {
                    p.playlist(r)
                        .map(|pl| pl.part(msn, i).is_none() && pl.progress().answer(wanted) == BlockAnswer::Wait)
                })?;
                if ahead == Some(true) {
                    let deadline = with(&s, |p| target(p, r))? * 3;
                    self.wait(&s, deadline, move |p| {
                        p.playlist(r).is_none_or(|pl| pl.progress().answer(wanted) != BlockAnswer::Wait)
                    })
                    .await?;
                }
                let data = with(&s, |p| p.playlist(r).and_then(|pl| pl.part(msn, i)).cloned())?;
                data.map(|d| media_response(r, d)).ok_or_else(|| gone(file))
            }
            Resource::Segment(r, msn) => {
                let data = with(&s, |p| {
                    let seg = p.playlist(r)?.segment(msn).filter(|s| s.complete)?;
                    let mut out = Vec::with_capacity(seg.parts.iter().map(|p| p.data.len()).sum());
                    for part in &seg.parts {
                        out.extend_from_slice(&part.data);
                    }
                    Some(Bytes::from(out))
                })?;
                data.map(|d| media_response(r, d)).ok_or_else(|| gone(file))
            }
        }
    }

    /// Waits until `ready` holds for the stream's packager, at most `timeout` (then 503), as
    /// one of the held requests (beyond the cap: 503 at once).
    async fn wait(
        &self,
        s: &HlsStream,
        timeout: Duration,
        ready: impl Fn(&HlsPackager) -> bool,
    ) -> Result<(), HlsError> {
        let (done, mut rx) = with(s, |p| (ready(p), p.watch()))?;
        if done {
            return Ok(());
        }
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.max_held {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Err(HlsError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_waiting",
                "too many HLS requests are waiting; retry",
            ));
        }
        let _held = Held(&self.held);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(stream_gone(s)),
                Err(_) => {
                    return Err(HlsError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not_yet",
                        format!("nothing new within {:.1} s", timeout.as_secs_f64()),
                    ));
                }
            }
            if with(s, &ready)? {
                return Ok(());
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `f` on the stream's packager; an error once the stream ended.
fn with<R>(s: &HlsStream, f: impl FnOnce(&HlsPackager) -> R) -> Result<R, HlsError> {
    s.session.log.with_packager(&s.attached, f).ok_or_else(|| stream_gone(s))
}

fn stream_gone(s: &HlsStream) -> HlsError {
    let reason = s.session.log.end_reason().map_or_else(|| "the stream ended".to_owned(), |r| r.to_string());
    HlsError::new(StatusCode::SERVICE_UNAVAILABLE, "stream_ended", reason)
}

fn gone(file: &str) -> HlsError {
    HlsError::new(StatusCode::NOT_FOUND, "not_found", format!("{file} is not (or no longer) in the playlist"))
}

fn no_rendition(p: &HlsPackager, r: Rendition) -> HlsError {
    match p.error() {
        Some(e) => HlsError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_playable", e.to_owned()),
        None => HlsError::new(StatusCode::NOT_FOUND, "not_found", format!("this stream has no {} rendition", r.name())),
    }
}

/// A rendition's target duration (one second before it has one).
fn target(p: &HlsPackager, r: Rendition) -> Duration {
    Duration::from_secs(p.playlist(r).map_or(1, |pl| pl.target_duration()))
}

fn first_part(p: &HlsPackager) -> bool {
    [Rendition::Video, Rendition::Audio].iter().any(|r| p.playlist(*r).is_some_and(|pl| pl.progress().part.is_some()))
}

/// The multivariant playlist.
fn multivariant(p: &HlsPackager, suffix: &str) -> Result<String, HlsError> {
    if let Some(e) = p.error() {
        return Err(HlsError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_playable", e.to_owned()));
    }
    let (video, audio) = (p.playlist(Rendition::Video), p.playlist(Rendition::Audio));
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let mut codecs: Vec<&str> = Vec::new();
    let mut bandwidth = 0;
    if let Some(a) = audio {
        let channels = p.header().and_then(|h| h.header.track(a.track())).map_or(2, |t| t.channels);
        out.push_str(&format!(
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"{channels}\",URI=\"audio.m3u8{suffix}\"\n"
        ));
        codecs.push(a.codecs());
        bandwidth += a.bandwidth().max(128_000);
    }
    match video {
        Some(v) => {
            codecs.insert(0, v.codecs());
            bandwidth += v.bandwidth().max(1_000_000);
            let resolution = p
                .header()
                .and_then(|h| h.video.as_ref())
                .map(|v| format!(",RESOLUTION={}x{}", v.width, v.height))
                .unwrap_or_default();
            let group = if audio.is_some() { ",AUDIO=\"audio\"" } else { "" };
            out.push_str(&format!(
                "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{}\"{resolution}{group}\nvideo.m3u8{suffix}\n",
                codecs.join(",")
            ));
        }
        None => out.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{}\"\naudio.m3u8{suffix}\n",
            codecs.join(",")
        )),
    }
    Ok(out)
}

fn playlist_response(text: impl Into<Bytes>) -> Response {
    let text: Bytes = text.into();
    let mut r = text.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl"));
    // A playlist changes with every part; a blocking one must reach the client fresh.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn media_response(r: Rendition, data: Bytes) -> Response {
    let mut resp = data.into_response();
    let h = resp.headers_mut();
    let kind = if r == Rendition::Video { "video/mp4" } else { "audio/mp4" };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // A part, segment or init segment never changes once it exists (its name says which).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600, immutable"));
    resp
}
