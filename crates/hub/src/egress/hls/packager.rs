//! The LL-HLS packager of a stream: a media playlist per rendition (the video track, and the
//! first audio track as an audio rendition), fed every frame of the log once, in order.

use std::sync::Arc;

use mediamesh_media::TrackKind;
use mediamesh_media::fmp4::packable;
use tokio::sync::watch;

use super::playlist::{Cut, PlaylistConfig, Progress, TrackPlaylist};
use crate::session::log::{HeaderEntry, LogEntry, Packager};

/// A rendition: which track it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rendition {
    /// The video track.
    Video,
    /// The audio track.
    Audio,
}

impl Rendition {
    /// Its name in URIs (`video.m3u8`, `video-part-3.1.mp4`).
    pub fn name(self) -> &'static str {
        match self {
            Rendition::Video => "video",
            Rendition::Audio => "audio",
        }
    }
}

/// The LL-HLS packaging of one stream.
pub struct HlsPackager {
    cfg: PlaylistConfig,
    header: Option<Arc<HeaderEntry>>,
    video: Option<TrackPlaylist>,
    audio: Option<TrackPlaylist>,
    /// Why the stream cannot be packaged, if it cannot.
    error: Option<String>,
    /// Each rendition's progress, for requests waiting for a part or a playlist.
    progress: watch::Sender<(Progress, Progress)>,
    /// The first frame's decode time and clock: the origin every rendition shares.
    origin: Option<(i64, u32)>,
}

impl std::fmt::Debug for HlsPackager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsPackager").field("error", &self.error).finish_non_exhaustive()
    }
}

impl HlsPackager {
    /// A packager cutting parts and segments as `cfg` says.
    pub fn new(cfg: PlaylistConfig) -> Self {
        let (progress, _) = watch::channel(Default::default());
        Self { cfg, header: None, video: None, audio: None, error: None, progress, origin: None }
    }

    /// A rendition's playlist, once there is one.
    pub fn playlist(&self, r: Rendition) -> Option<&TrackPlaylist> {
        match r {
            Rendition::Video => self.video.as_ref(),
            Rendition::Audio => self.audio.as_ref(),
        }
    }

    /// The renditions' progress, to wait on.
    pub fn watch(&self) -> watch::Receiver<(Progress, Progress)> {
        self.progress.subscribe()
    }

    /// Why the stream cannot be packaged as LL-HLS, if it cannot.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The codec parameters in use.
    pub fn header(&self) -> Option<&Arc<HeaderEntry>> {
        self.header.as_ref()
    }

    fn set_header(&mut self, h: &Arc<HeaderEntry>) {
        self.header = Some(h.clone());
        self.error = None;
        let video = h.header.tracks.iter().find(|t| t.codec.kind() == TrackKind::Video && packable(t.codec));
        let audio = h.header.tracks.iter().find(|t| t.codec.kind() == TrackKind::Audio && packable(t.codec));
        let audio_cut = if video.is_some() { Cut::Follow } else { Cut::Duration };
        let make = |slot: &mut Option<TrackPlaylist>, track: Option<&mediamesh_media::TrackInfo>, cut| {
            let Some(t) = track else {
                *slot = None;
                return Ok(());
            };
            match slot {
                Some(p) => p.set_header(&h.header),
                None => {
                    let mut p = TrackPlaylist::new(self.cfg, &h.header, t.id, cut)?;
                    if let Some((dts, clock)) = self.origin {
                        p.set_origin(dts, clock);
                    }
                    *slot = Some(p);
                    Ok(())
                }
            }
        };
        let result =
            make(&mut self.video, video, Cut::Keyframes).and_then(|()| make(&mut self.audio, audio, audio_cut));
        if let Err(e) = result {
            self.error = Some(format!("this stream cannot be played over HLS: {e}"));
            self.video = None;
            self.audio = None;
        } else if self.video.is_none() && self.audio.is_none() {
            let codecs: Vec<&str> = h.header.tracks.iter().map(|t| t.codec.name()).collect();
            self.error =
                Some(format!("this stream cannot be played over HLS: no track HLS carries ({})", codecs.join(",")));
        }
    }
}

impl Packager for HlsPackager {
    fn push(&mut self, e: &Arc<LogEntry>) {
        if self.header.as_ref().is_none_or(|h| !Arc::ptr_eq(h, &e.header)) {
            self.set_header(&e.header);
        }
        let f = &e.frame;
        let clock = e.header.header.track(f.track).map_or(1, |t| t.clock_rate);
        let video_id = self.header.as_ref().and_then(|h| h.header.video()).map(|t| t.id);
        let is_video = video_id == Some(f.track);
        // Renditions start at a video keyframe (or anywhere without video).
        if self.origin.is_none() {
            if video_id.is_some() && !(is_video && f.is_keyframe()) {
                return;
            }
            self.origin = Some((f.dts, clock));
            for p in [&mut self.video, &mut self.audio].into_iter().flatten() {
                p.set_origin(f.dts, clock);
            }
        }
        let before = *self.progress.borrow();
        if is_video {
            if let Some(v) = &mut self.video
                && let Some(started) = v.push(f)
                && let Some(a) = &mut self.audio
            {
                a.segment_boundary(started, clock);
            }
        } else if let Some(a) = self.audio.as_mut().filter(|a| a.track() == f.track) {
            a.push(f);
        }
        let now = (
            self.video.as_ref().map(TrackPlaylist::progress).unwrap_or_default(),
            self.audio.as_ref().map(TrackPlaylist::progress).unwrap_or_default(),
        );
        if now != before {
            self.progress.send_replace(now);
        }
    }

    fn evicted(&mut self, _base: u64) {
        // The playlists keep their own window of segments, whatever the log keeps.
    }
}
