//! One track's LL-HLS media playlist (RFC 8216bis, low-latency), without I/O: frames in, fMP4
//! parts and segments out, and the playlist text.
//!
//! - A segment starts at a video keyframe once the current one has lasted `segment_min` (for
//!   an audio rendition: at the first frame at or after the time the video's segment started;
//!   for an audio-only stream: once `segment_min` has passed).
//! - A part closes before the frame that would make it longer than `part_target`, and at every
//!   segment start, so every part but the last of a segment lasts close to the target and none
//!   longer. Its frames' durations are exact: a part is packaged only when the frame after it
//!   has arrived.
//! - The playlist keeps `window` complete segments and the one in progress; parts are listed
//!   for the segments within three target durations of the end (RFC 8216bis §4.4.4.9).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use mediamesh_media::fmp4::{Fmp4Error, Muxer, Run, Sample};
use mediamesh_media::{Frame, StreamHeader, TrackId};

/// How a playlist cuts segments and parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaylistConfig {
    /// Longest part (`PART-TARGET`).
    pub part_target: Duration,
    /// Shortest segment before a keyframe may start the next one.
    pub segment_min: Duration,
    /// Complete segments kept and listed.
    pub window: usize,
}

impl Default for PlaylistConfig {
    fn default() -> Self {
        Self { part_target: Duration::from_millis(200), segment_min: Duration::from_secs(1), window: 7 }
    }
}

/// A part: one fMP4 fragment.
#[derive(Debug, Clone)]
pub struct Part {
    /// Seconds.
    pub duration: f64,
    /// Whether it starts with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
    /// `moof` + `mdat`.
    pub data: Bytes,
}

/// A segment: its parts, in order; complete once the next segment started.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Its parts so far.
    pub parts: Vec<Part>,
    /// Whether it is finished (listed with `EXTINF`).
    pub complete: bool,
    /// The init segment it needs (`EXT-X-MAP`), by number.
    pub init: u32,
    /// Capture time of its first frame, µs since the Unix epoch (`EXT-X-PROGRAM-DATE-TIME`).
    pub capture_us: u64,
    /// Its first frame's decode time, in the track's clock.
    start_dts: i64,
}

impl Segment {
    /// Seconds.
    pub fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }
}

/// Where a playlist is: the newest part, and the newest complete segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// `(msn, part index)` of the newest part, once there is one.
    pub part: Option<(u64, u32)>,
    /// The newest complete segment's msn.
    pub segment: Option<u64>,
}

/// A request that waits for a future playlist (`_HLS_msn`, `_HLS_part`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// `_HLS_msn`.
    pub msn: u64,
    /// `_HLS_part`, if given.
    pub part: Option<u32>,
}

/// What to do with a blocking request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAnswer {
    /// The playlist has what was asked for.
    Ready,
    /// Not yet: wait for the next part.
    Wait,
    /// Too far ahead (RFC 8216bis §6.2.5.2: more than two segments past the last): 400.
    TooFar,
}

impl Progress {
    /// Whether the playlist satisfies `b`.
    pub fn answer(&self, b: Block) -> BlockAnswer {
        let last_msn = self.part.map_or(0, |(m, _)| m);
        if b.msn > last_msn + 2 {
            return BlockAnswer::TooFar;
        }
        let ready = match b.part {
            // A segment is "in the playlist" once complete.
            None => self.segment.is_some_and(|s| s >= b.msn),
            // The part, or a later segment's (a part index past the end of a segment that
            // completed meanwhile is answered by the next segment's first part).
            Some(p) => self.part.is_some_and(|(m, i)| (m, i) >= (b.msn, p) || m > b.msn),
        };
        if ready { BlockAnswer::Ready } else { BlockAnswer::Wait }
    }
}

/// Where a playlist's segments start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// At its own keyframes, once `segment_min` has passed (video).
    Keyframes,
    /// Where another rendition's segments started ([`TrackPlaylist::segment_boundary`]): the
    /// audio of a stream with video.
    Follow,
    /// Once `segment_min` has passed (audio-only streams).
    Duration,
}

/// A frame waiting for the next one, which gives its duration.
#[derive(Debug)]
struct Pending {
    frame: Frame,
    duration: u32,
}

/// One track's media playlist.
#[derive(Debug)]
pub struct TrackPlaylist {
    cfg: PlaylistConfig,
    track: TrackId,
    video: bool,
    cut: Cut,
    timescale: u32,
    muxer: Muxer,
    /// Init segments by number (the newest last); older ones go with the segments needing them.
    inits: VecDeque<(u32, Bytes)>,
    segments: VecDeque<Segment>,
    /// Frames of the part in progress; the last one's duration is not known yet.
    pending: Vec<Pending>,
    /// Where the next segment starts (audio follows the video's segments), in this clock.
    boundary: Option<i64>,
    /// The longest segment so far, in seconds (`EXT-X-TARGETDURATION` never shrinks).
    longest: f64,
    /// A segment must start at the next frame (a new header).
    restart: bool,
    /// Bumped whenever the playlist's text changes (a part or a segment begins).
    version: u64,
    /// The last text rendered: its version, prefix and query, and the text. A part's
    /// completion wakes every waiting client at once; they share one rendering.
    rendered: std::sync::Mutex<Option<(u64, String, Bytes)>>,
}

impl TrackPlaylist {
    /// The playlist of `track` of a stream with `header`, cutting segments as `cut` says.
    pub fn new(cfg: PlaylistConfig, header: &StreamHeader, track: TrackId, cut: Cut) -> Result<Self, Fmp4Error> {
        let only = single_track(header, track)?;
        let video = only.tracks[0].codec.kind() == mediamesh_media::TrackKind::Video;
        let timescale = only.tracks[0].clock_rate;
        let muxer = Muxer::new(&only)?;
        let init = muxer.init_segment().clone();
        Ok(Self {
            cfg,
            track,
            video,
            cut,
            timescale,
            muxer,
            inits: VecDeque::from([(0, init)]),
            segments: VecDeque::new(),
            pending: Vec::new(),
            boundary: None,
            longest: 0.0,
            restart: false,
            version: 0,
            rendered: std::sync::Mutex::new(None),
        })
    }

    /// The track it carries.
    pub fn track(&self) -> TrackId {
        self.track
    }

    /// Bits per second over the complete segments (0 before the first completes).
    pub fn bandwidth(&self) -> u64 {
        let (bytes, secs) = self.segments.iter().filter(|s| s.complete).fold((0usize, 0.0), |(b, d), s| {
            (b + s.parts.iter().map(|p| p.data.len()).sum::<usize>(), d + s.duration())
        });
        if secs > 0.0 { (bytes as f64 * 8.0 / secs) as u64 } else { 0 }
    }

    /// The muxer's `CODECS` string for this track.
    pub fn codecs(&self) -> &str {
        self.muxer.codecs()
    }

    /// Sets the time origin shared by every track of the stream.
    pub fn set_origin(&mut self, dts: i64, clock: u32) {
        self.muxer.set_origin(dts, clock);
    }

    /// New codec parameters: a new init segment, and a new segment (with a discontinuity) at
    /// the next frame.
    pub fn set_header(&mut self, header: &StreamHeader) -> Result<(), Fmp4Error> {
        let only = single_track(header, self.track)?;
        self.muxer.set_header(&only)?;
        let next = self.inits.back().map_or(0, |(n, _)| n + 1);
        self.inits.push_back((next, self.muxer.init_segment().clone()));
        self.restart = true;
        Ok(())
    }

    /// Audio: start a segment at the first frame at or after `dts` (in `clock`).
    pub fn segment_boundary(&mut self, dts: i64, clock: u32) {
        let at = if clock == self.timescale {
            dts
        } else {
            (i128::from(dts) * i128::from(self.timescale) / i128::from(clock.max(1))) as i64
        };
        self.boundary = Some(at);
    }

    fn ticks(&self, d: Duration) -> i64 {
        (d.as_secs_f64() * f64::from(self.timescale)).round() as i64
    }

    /// Takes a frame of this track. Returns the decode time at which it started a segment, if
    /// it did (the video's segments set the audio's boundaries).
    pub fn push(&mut self, frame: &Frame) -> Option<i64> {
        if let Some(last) = self.pending.last_mut() {
            last.duration = frame.dts.saturating_sub(last.frame.dts).clamp(1, i64::from(u32::MAX)) as u32;
        }
        let step = self.pending.last().map_or(0, |p| i64::from(p.duration));
        let start = self.pending.first().map(|p| p.frame.dts);
        let seg_start = self.segments.back().filter(|s| !s.complete).map(|s| s.start_dts).or(start);
        let new_segment = self.restart
            || self.segments.is_empty() && self.pending.is_empty()
            || match self.cut {
                Cut::Keyframes => {
                    frame.is_keyframe()
                        && seg_start.is_none_or(|s| frame.dts.saturating_sub(s) >= self.ticks(self.cfg.segment_min))
                }
                Cut::Follow => self.boundary.is_some_and(|b| frame.dts >= b),
                Cut::Duration => {
                    seg_start.is_some_and(|s| frame.dts.saturating_sub(s) >= self.ticks(self.cfg.segment_min))
                }
            };
        // Close the part before this frame if the part would grow past the target with it
        // (its own duration estimated as the last step), or a segment starts here.
        let close =
            start.is_some_and(|s| new_segment || frame.dts.saturating_sub(s) + step > self.ticks(self.cfg.part_target));
        if close {
            self.close_part();
        }
        let mut started = None;
        if new_segment {
            if let Some(s) = self.segments.back_mut() {
                s.complete = true;
                self.longest = self.longest.max(s.duration());
            }
            let msn = self.segments.back().map_or(0, |s| s.msn + 1);
            let init = self.inits.back().map_or(0, |(n, _)| *n);
            self.segments.push_back(Segment {
                msn,
                parts: Vec::new(),
                complete: false,
                init,
                capture_us: frame.capture_us,
                start_dts: frame.dts,
            });
            self.boundary = None;
            self.restart = false;
            started = Some(frame.dts);
            while self.segments.iter().filter(|s| s.complete).count() > self.cfg.window {
                self.segments.pop_front();
            }
            let oldest = self.segments.front().map_or(0, |s| s.init);
            while self.inits.len() > 1 && self.inits.front().is_some_and(|(n, _)| *n < oldest) {
                self.inits.pop_front();
            }
        }
        self.pending.push(Pending { frame: frame.clone(), duration: step.max(1) as u32 });
        if close || new_segment {
            self.version += 1;
        }
        started
    }

    /// Packages the pending frames as the current segment's next part.
    fn close_part(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let samples: Vec<Sample<'_>> =
            self.pending.iter().map(|p| Sample { frame: &p.frame, duration: p.duration }).collect();
        let duration = self.pending.iter().map(|p| f64::from(p.duration)).sum::<f64>() / f64::from(self.timescale);
        let independent = !self.video || self.pending[0].frame.is_keyframe();
        match self.muxer.fragment(&[Run { track: self.track, samples: &samples }]) {
            Ok(data) => {
                if let Some(s) = self.segments.back_mut() {
                    s.parts.push(Part { duration, independent, data });
                }
            }
            Err(e) => tracing::debug!(error = %e, "a part could not be packaged"),
        }
        self.pending.clear();
    }

    /// Where the playlist is.
    pub fn progress(&self) -> Progress {
        let part = self.segments.iter().rev().find(|s| !s.parts.is_empty()).map(|s| (s.msn, s.parts.len() as u32 - 1));
        let segment = self.segments.iter().rev().find(|s| s.complete).map(|s| s.msn);
        Progress { part, segment }
    }

    /// `EXT-X-TARGETDURATION`: the longest segment, rounded up, at least one second.
    pub fn target_duration(&self) -> u64 {
        let in_progress = self.segments.back().map_or(0.0, Segment::duration);
        self.longest.max(in_progress).max(self.cfg.segment_min.as_secs_f64()).ceil().max(1.0) as u64
    }

    /// A part's bytes.
    pub fn part(&self, msn: u64, index: u32) -> Option<&Bytes> {
        self.segment(msn)?.parts.get(index as usize).map(|p| &p.data)
    }

    /// A segment, if the playlist still has it.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        self.segments.get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }

    /// An init segment by number.
    pub fn init(&self, n: u32) -> Option<&Bytes> {
        self.inits.iter().find(|(i, _)| *i == n).map(|(_, b)| b)
    }

    /// [`TrackPlaylist::render`], rendered once per change of the playlist for every client
    /// asking with the same `prefix` and `query`.
    pub fn render_shared(&self, prefix: &str, query: &str) -> Bytes {
        let mut cache = self.rendered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((version, key, text)) = cache.as_ref()
            && *version == self.version
            && key.len() == prefix.len() + query.len()
            && key.starts_with(prefix)
            && key.ends_with(query)
        {
            return text.clone();
        }
        let text = Bytes::from(self.render(prefix, query));
        *cache = Some((self.version, format!("{prefix}{query}"), text.clone()));
        text
    }

    /// The media playlist. `prefix` goes before every URI (the rendition's name and a dash);
    /// `query` after (`?token=…`, or empty).
    pub fn render(&self, prefix: &str, query: &str) -> String {
        let mut out = String::with_capacity(1024);
        let target = self.target_duration();
        let part_target = self.cfg.part_target.as_secs_f64();
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n#EXT-X-PART-INF:PART-TARGET={part_target:.3}\n",
            3.0 * part_target
        );
        let Some(first) = self.segments.front() else { return out };
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", first.msn);
        // Parts are listed for the segments that end within three target durations of the
        // playlist's end.
        let mut tail = 0.0;
        let mut with_parts = self.segments.len();
        for (i, s) in self.segments.iter().enumerate().rev() {
            with_parts = i;
            tail += s.duration();
            if tail > 3.0 * target as f64 {
                break;
            }
        }
        let mut map = None;
        for (i, s) in self.segments.iter().enumerate() {
            if map != Some(s.init) {
                if map.is_some() {
                    out.push_str("#EXT-X-DISCONTINUITY\n");
                }
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{prefix}init-{}.mp4{query}\"", s.init);
                map = Some(s.init);
            }
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339(s.capture_us));
            if i >= with_parts {
                for (n, p) in s.parts.iter().enumerate() {
                    let independent = if p.independent { ",INDEPENDENT=YES" } else { "" };
                    let _ = writeln!(
                        out,
                        "#EXT-X-PART:DURATION={:.5},URI=\"{prefix}part-{}.{n}.mp4{query}\"{independent}",
                        p.duration, s.msn
                    );
                }
            }
            if s.complete {
                let _ = write!(out, "#EXTINF:{:.5},\n{prefix}seg-{}.mp4{query}\n", s.duration(), s.msn);
            }
        }
        if let Some(last) = self.segments.back() {
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{prefix}part-{}.{}.mp4{query}\"",
                last.msn,
                last.parts.len()
            );
        }
        out
    }
}

/// `header` with only `track`.
fn single_track(header: &StreamHeader, track: TrackId) -> Result<StreamHeader, Fmp4Error> {
    let t = header.track(track).ok_or(Fmp4Error::UnknownTrack(track))?;
    Ok(StreamHeader { tracks: vec![t.clone()] })
}

/// An RFC 3339 UTC time with milliseconds, from µs since the Unix epoch.
pub fn rfc3339(us: u64) -> String {
    let secs = us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, us / 1000 % 1000)
}

#[cfg(test)]
mod tests;
