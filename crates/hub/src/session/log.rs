//! The shared, bounded log of recent frames of one stream, read by every viewer.
//!
//! The data tunnel appends each frame once ([`FrameLog::push`]), whatever the number of viewers.
//! Each viewer holds a [`Cursor`] (an index, not a queue): reading clones `Arc`s, never payload
//! bytes. The log keeps at most `max_frames` frames and `max_bytes` payload bytes, and no frame
//! received more than `viewer_max_lag_us` before the newest (a viewer that far behind would
//! jump to a newer keyframe anyway); but it never evicts the newest keyframe's group of
//! pictures while it is below twice the frame and byte bounds, so a new viewer starts at once
//! from a keyframe. "Keyframe" here means a sync point: a video
//! keyframe, or any frame of an audio-only stream.
//!
//! Overflow policy ("resync at keyframe"): a cursor that fell out of the log, or is more than
//! `viewer_max_lag_bytes` behind the newest frame, jumps to the newest keyframe (or waits for
//! the next one) and reports how many frames it skipped. So does a cursor more than
//! `viewer_max_lag_us` behind in time, when a newer keyframe exists (a long group of pictures
//! alone never makes a viewer skip). A slow viewer therefore costs the hub
//! one cursor, never a growing queue, and never slows the source or other viewers.
//!
//! Epochs: each new data tunnel begins an epoch ([`FrameLog::begin_epoch`]). Frames of an epoch
//! before its first sync point are not kept, so delivery resumes at a keyframe; and each track's
//! timestamps are shifted, when needed, so they keep increasing across the break even if the
//! edge's source restarted its clock. By default ([`OutageTimeline::WallClock`]) they also
//! advance by the real length of the break, measured on the capture clock, so a recording keeps
//! wall-clock time; [`OutageTimeline::Squeezed`] leaves one frame interval instead. The first
//! frame kept after a break carries the discontinuity flag.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::{Bytes, BytesMut};
use mediamesh_media::rtp::{DEFAULT_MAX_PAYLOAD, RtpPayload};
use mediamesh_media::{Frame, MediaError, StreamHeader, TrackId, VideoParams};
use tokio::sync::watch;

use crate::payloads::PayloadChunks;

mod timeline;

pub use timeline::OutageTimeline;
use timeline::Timelines;

/// Bounds of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Most frames kept.
    pub max_frames: usize,
    /// Most payload bytes kept.
    pub max_bytes: usize,
    /// How far (payload bytes) a viewer may trail the newest frame before it is resynchronised.
    pub viewer_max_lag_bytes: usize,
    /// How far (hub receive time, µs) a viewer may trail the newest frame before it is
    /// resynchronised, when a newer keyframe exists to jump to.
    pub viewer_max_lag_us: u64,
    /// How timestamps continue across an outage.
    pub timeline: OutageTimeline,
}

/// What a stream's RTP packets share, whichever viewer they go to: sending every viewer the
/// same packets is what lets RTSP viewers share whole interleaved frames. Each RTSP viewer is
/// told, in `RTP-Info`, the sequence number and timestamp it starts at (RFC 2326 §12.33).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpIdentity {
    /// The SSRC of every track's packets (each track has its own RTP session).
    pub ssrc: u32,
    /// Added to a frame's pts for its RTP timestamp.
    pub ts_offset: u32,
    /// The sequence number of each track's first packet.
    pub first_seq: u16,
}

impl RtpIdentity {
    /// Random values (RFC 3550 §5.1: SSRC, initial sequence number and timestamp are random).
    fn random() -> Self {
        let (a, b) = (crate::random_u64(), crate::random_u64());
        Self { ssrc: a as u32, ts_offset: (a >> 32) as u32, first_seq: b as u16 }
    }
}

/// The codec parameters in effect for a run of frames, shared by reference.
#[derive(Debug)]
pub struct HeaderEntry {
    /// The header as the edge sent it.
    pub header: StreamHeader,
    /// Derived video parameters of the first video track.
    pub video: Option<VideoParams>,
    /// The WebSocket header event, built once and shared by every viewer.
    pub ws: OnceLock<Bytes>,
}

/// One frame in the log.
#[derive(Debug)]
pub struct LogEntry {
    /// Position in the log (0 for the first frame of the session).
    pub index: u64,
    /// The frame as received.
    pub frame: Frame,
    /// Codec parameters this frame needs.
    pub header: Arc<HeaderEntry>,
    /// Wall-clock time the hub received it, microseconds since the Unix epoch.
    pub hub_us: u64,
    /// Payload bytes pushed before this frame, for lag accounting.
    bytes_before: u64,
    /// What precedes the payload in a WebSocket viewer's frame message, built by the first
    /// viewer that needs it and shared by all the others.
    pub ws_prefix: OnceLock<Bytes>,
    /// The frame's RTP payloads, packetized once as the frame is appended and shared by every
    /// RTSP viewer.
    pub rtp: Vec<RtpPayload>,
    /// The RTP payload bytes of the frame's packets (for RTCP sender reports' octet count).
    pub rtp_bytes: u32,
    /// The RTP sequence number of the frame's first packet, in its track's sequence space (one
    /// per stream track, shared by every viewer: see [`RtpIdentity`]).
    pub rtp_seq: u16,
    /// The whole frame as RTP packets interleaved on an RTSP connection (RFC 2326 §10.12) on
    /// its track's usual channel, built by the first viewer that needs it and written as one
    /// slice by all of them.
    pub interleaved: OnceLock<Bytes>,
}

impl LogEntry {
    /// Whether a viewer can start at this frame (a video keyframe; any frame of an audio-only
    /// stream).
    pub fn is_sync_point(&self) -> bool {
        self.header.header.is_sync_point(self.frame.track, self.frame.is_keyframe())
    }
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Appended to the log.
    Appended {
        /// Whether viewers can start at it.
        sync_point: bool,
    },
    /// Not kept: the epoch has not reached its first sync point yet.
    AwaitingSyncPoint,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Frames must follow a StreamHeader.
    #[error("frame {seq} arrived before any StreamHeader")]
    NoHeader {
        /// The frame's sequence number.
        seq: u64,
    },
    /// The frame names a track the header does not have.
    #[error("frame {seq} names track {track}, which the StreamHeader does not declare")]
    UnknownTrack {
        /// The frame's sequence number.
        seq: u64,
        /// The track id.
        track: u8,
    },
    /// The log was closed.
    #[error("the stream has ended")]
    Closed,
}

/// Where a viewer is in the log.
#[derive(Debug)]
pub struct Cursor {
    next: u64,
    need_keyframe: bool,
    started: bool,
    signal: watch::Receiver<u64>,
}

impl Cursor {
    /// The index of the next frame this cursor will read.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Waits until the log has changed since the last [`FrameLog::read`] with this cursor.
    /// Returns `false` if the log is gone.
    pub async fn changed(&mut self) -> bool {
        self.signal.changed().await.is_ok()
    }
}

/// What a read found besides frames.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadStatus {
    /// Frames this cursor jumped over to resynchronise.
    pub skipped: u64,
    /// Set when the log is closed and this cursor has read everything.
    pub ended: Option<Arc<str>>,
    /// Frames were left for the next read (the batch reached its byte limit). When false, the
    /// reader can wait for [`Cursor::changed`] without reading again to find nothing.
    pub more: bool,
}

/// Counters describing the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Frames held.
    pub frames: usize,
    /// Payload bytes held.
    pub bytes: usize,
    /// Index the next pushed frame will get.
    pub head: u64,
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Arc<LogEntry>>,
    /// Index of `entries[0]`.
    base: u64,
    bytes: usize,
    /// Payload bytes ever pushed.
    total_bytes: u64,
    last_keyframe: Option<u64>,
    header: Option<Arc<HeaderEntry>>,
    end: Option<Arc<str>>,
    /// The current epoch (one per data tunnel).
    epoch: u64,
    /// Frames are dropped until the epoch's first sync point.
    awaiting_sync: bool,
    /// The next appended frame follows a break.
    discontinuity: bool,
    /// Per track: the timestamp shift and the last decode time, for continuity across epochs.
    timelines: Timelines,
    /// Per track: the RTP sequence number of the next packet.
    rtp_seq: Vec<(TrackId, u16)>,
}

impl Ring {
    /// The sequence number of a frame's first packet; `packets` are taken after it.
    fn take_rtp_seq(&mut self, track: TrackId, packets: usize, first: u16) -> u16 {
        let i = match self.rtp_seq.iter().position(|(t, _)| *t == track) {
            Some(i) => i,
            None => {
                self.rtp_seq.push((track, first));
                self.rtp_seq.len() - 1
            }
        };
        let seq = self.rtp_seq[i].1;
        // Sequence numbers wrap at 16 bits (RFC 3550 §5.1).
        self.rtp_seq[i].1 = seq.wrapping_add(packets as u16);
        seq
    }

    fn head(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    fn get(&self, index: u64) -> Option<&Arc<LogEntry>> {
        index.checked_sub(self.base).and_then(|i| self.entries.get(i as usize))
    }

    fn lag_bytes(&self, index: u64) -> u64 {
        self.get(index).map_or(0, |e| self.total_bytes - e.bytes_before)
    }

    fn lag_us(&self, index: u64) -> u64 {
        match (self.get(index), self.entries.back()) {
            (Some(e), Some(newest)) => newest.hub_us.saturating_sub(e.hub_us),
            _ => 0,
        }
    }

    /// Whether a viewer at `index` is further behind in time than `max_lag_us` with a newer
    /// keyframe to jump to: it jumps on its next read, so no one reads that frame.
    fn too_late(&self, index: u64, max_lag_us: u64) -> bool {
        self.lag_us(index) > max_lag_us && self.last_keyframe.is_some_and(|k| k > index)
    }
}

/// The frame log of one stream session.
#[derive(Debug)]
pub struct FrameLog {
    config: LogConfig,
    rtp: RtpIdentity,
    ring: RwLock<Ring>,
    /// Chunks for the frames' shared interleaved copies (built by the first RTSP viewer that
    /// needs one), so that they, like the payloads, leave no holes in the allocator's arena.
    copies: Mutex<PayloadChunks>,
    signal: watch::Sender<u64>,
}

impl FrameLog {
    /// An empty log.
    pub fn new(config: LogConfig) -> Self {
        Self {
            config,
            rtp: RtpIdentity::random(),
            ring: RwLock::new(Ring::default()),
            copies: Mutex::new(PayloadChunks::new()),
            signal: watch::Sender::new(0),
        }
    }

    /// What `fill` writes (at most `n` bytes) in the log's chunks for shared frame copies.
    pub(crate) fn shared_copy(&self, n: usize, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
        // A panic while filling leaves the chunks consistent (the next build starts the chunk
        // being filled afresh), so a poisoned lock is still safe to use.
        self.copies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).build(n, fill)
    }

    /// The stream's RTP SSRC, timestamp offset and first sequence number.
    pub fn rtp(&self) -> RtpIdentity {
        self.rtp
    }

    // A panic while holding the lock leaves the ring consistent (every mutation is a single
    // push/pop with its counters), so a poisoned lock is still safe to use.
    fn read_ring(&self) -> RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_ring(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the codec parameters for the frames that follow (a repeat of the current ones, as
    /// a reconnected edge sends, changes nothing).
    pub fn set_header(&self, header: StreamHeader) -> Result<(), MediaError> {
        header.validate()?;
        let video = header.video().map(|t| t.video_params()).transpose()?;
        let mut ring = self.write_ring();
        if ring.header.as_ref().is_some_and(|h| h.header == header) {
            return Ok(());
        }
        ring.header = Some(Arc::new(HeaderEntry { header, video, ws: OnceLock::new() }));
        Ok(())
    }

    /// A new data tunnel begins: frames are kept again from its first sync point, and its
    /// timestamps continue the log's.
    pub fn begin_epoch(&self) {
        let mut ring = self.write_ring();
        ring.epoch += 1;
        ring.awaiting_sync = true;
        ring.discontinuity = ring.total_bytes > 0 || !ring.entries.is_empty();
    }

    /// The header currently in effect.
    pub fn header(&self) -> Option<Arc<HeaderEntry>> {
        self.read_ring().header.clone()
    }

    /// Appends a frame, evicting old ones past the bounds, and wakes the viewers.
    pub fn push(&self, mut frame: Frame, hub_us: u64) -> Result<Pushed, PushError> {
        let (head, sync_point) = {
            let mut ring = self.write_ring();
            if ring.end.is_some() {
                return Err(PushError::Closed);
            }
            let header = ring.header.clone().ok_or(PushError::NoHeader { seq: frame.seq })?;
            if header.header.track(frame.track).is_none() {
                return Err(PushError::UnknownTrack { seq: frame.seq, track: frame.track });
            }
            let sync_point = header.header.is_sync_point(frame.track, frame.is_keyframe());
            if ring.awaiting_sync && !sync_point {
                return Ok(Pushed::AwaitingSyncPoint);
            }
            ring.awaiting_sync = false;
            if std::mem::take(&mut ring.discontinuity) {
                frame.flags = frame.flags.with_discontinuity();
            }
            let clock_rate =
                header.header.track(frame.track).map_or(mediamesh_media::VIDEO_CLOCK_RATE, |t| t.clock_rate);
            let epoch = ring.epoch;
            ring.timelines.continue_timeline(epoch, &mut frame, hub_us, clock_rate, self.config.timeline);
            let index = ring.head();
            let len = frame.payload.len();
            if sync_point {
                ring.last_keyframe = Some(index);
            }
            let bytes_before = ring.total_bytes;
            let rtp = match header.header.track(frame.track) {
                Some(t) => mediamesh_media::rtp::packetize(t, &frame, DEFAULT_MAX_PAYLOAD),
                None => Vec::new(),
            };
            let rtp_seq = ring.take_rtp_seq(frame.track, rtp.len(), self.rtp.first_seq);
            ring.entries.push_back(Arc::new(LogEntry {
                index,
                frame,
                header,
                hub_us,
                bytes_before,
                ws_prefix: OnceLock::new(),
                rtp_bytes: rtp.iter().map(|p| p.len() as u32).fold(0, u32::wrapping_add),
                rtp,
                rtp_seq,
                interleaved: OnceLock::new(),
            }));
            ring.bytes += len;
            ring.total_bytes += len as u64;
            self.evict(&mut ring);
            (ring.head(), sync_point)
        };
        self.signal.send_replace(head);
        Ok(Pushed::Appended { sync_point })
    }

    fn evict(&self, ring: &mut Ring) {
        let c = &self.config;
        while let Some(front) = ring.entries.front() {
            let too_old = ring.too_late(front.index, c.viewer_max_lag_us);
            if ring.entries.len() <= c.max_frames && ring.bytes <= c.max_bytes && !too_old {
                break;
            }
            let keeps_gop = ring.last_keyframe == Some(front.index)
                && ring.entries.len() <= 2 * c.max_frames
                && ring.bytes <= 2 * c.max_bytes;
            if keeps_gop {
                break;
            }
            let len = front.frame.payload.len();
            if ring.last_keyframe == Some(front.index) {
                ring.last_keyframe = None;
            }
            ring.entries.pop_front();
            ring.base += 1;
            ring.bytes -= len;
        }
    }

    /// Ends the log: viewers read what is left, then see `reason`.
    pub fn close(&self, reason: &str) {
        let head = {
            let mut ring = self.write_ring();
            if ring.end.is_none() {
                ring.end = Some(reason.into());
            }
            ring.head()
        };
        // Bump the value even if unchanged so every waiting cursor wakes.
        self.signal.send_modify(|h| *h = head);
    }

    /// Whether the log was closed.
    pub fn is_closed(&self) -> bool {
        self.read_ring().end.is_some()
    }

    /// Why the log was closed, once it is.
    pub fn end_reason(&self) -> Option<Arc<str>> {
        self.read_ring().end.clone()
    }

    /// A cursor for a new viewer: at the newest keyframe if the log has one, else waiting for
    /// the next keyframe.
    pub fn subscribe(&self) -> Cursor {
        let ring = self.read_ring();
        let signal = self.signal.subscribe();
        // Start at the newest keyframe unless it is already further back than a viewer may
        // lag; then wait for the next one.
        let start = ring.last_keyframe.filter(|&k| ring.lag_bytes(k) <= self.config.viewer_max_lag_bytes as u64);
        match start {
            Some(k) => Cursor { next: k, need_keyframe: false, started: true, signal },
            None => Cursor { next: ring.head(), need_keyframe: true, started: false, signal },
        }
    }

    /// Moves up to `max_bytes` of frames (at least one if any) from the cursor into `out`.
    pub fn read(&self, cursor: &mut Cursor, max_bytes: usize, out: &mut Vec<Arc<LogEntry>>) -> ReadStatus {
        // Mark the current state as seen before looking, so a push racing with this read
        // still wakes the next `changed()`.
        cursor.signal.borrow_and_update();
        let ring = self.read_ring();
        let head = ring.head();
        let mut status = ReadStatus::default();

        let late = ring.too_late(cursor.next, self.config.viewer_max_lag_us);
        let behind =
            cursor.next < ring.base || ring.lag_bytes(cursor.next) > self.config.viewer_max_lag_bytes as u64 || late;
        if behind {
            let target = ring
                .last_keyframe
                .filter(|&k| k > cursor.next && ring.lag_bytes(k) <= self.config.viewer_max_lag_bytes as u64);
            let to = target.unwrap_or(head);
            if cursor.started {
                status.skipped += to - cursor.next;
            }
            cursor.next = to;
            cursor.need_keyframe = target.is_none();
        }
        if cursor.need_keyframe {
            let from = cursor.next.max(ring.base);
            let key = (from..head).find(|&i| ring.get(i).is_some_and(|e| e.is_sync_point()));
            let to = key.unwrap_or(head);
            if cursor.started {
                status.skipped += to - cursor.next;
            }
            cursor.next = to;
            cursor.need_keyframe = key.is_none();
            cursor.started |= key.is_some();
        }
        let mut bytes = 0;
        while cursor.next < head && (bytes < max_bytes || out.is_empty()) {
            let Some(e) = ring.get(cursor.next) else { break };
            bytes += e.frame.payload.len();
            out.push(e.clone());
            cursor.next += 1;
        }
        if cursor.next >= head {
            status.ended = ring.end.clone();
        }
        status.more = cursor.next < head;
        status
    }

    /// Where an RTSP viewer reading from `position` starts on `track`: the RTP sequence number
    /// of its first packet, and the pts of its first frame if the log holds one yet.
    pub fn first_rtp_from(&self, position: u64, track: TrackId) -> (u16, Option<i64>) {
        let ring = self.read_ring();
        let first = (position.max(ring.base)..ring.head())
            .find_map(|i| ring.get(i).filter(|e| e.frame.track == track).map(|e| (e.rtp_seq, Some(e.frame.pts))));
        first.unwrap_or_else(|| {
            let next = ring.rtp_seq.iter().find(|(t, _)| *t == track).map_or(self.rtp.first_seq, |(_, s)| *s);
            (next, None)
        })
    }

    /// Bytes the cursor trails the newest frame by. A position the log has already evicted
    /// counts as the oldest frame kept (the viewer resynchronises on its next read).
    pub fn lag_bytes(&self, position: u64) -> u64 {
        let ring = self.read_ring();
        ring.lag_bytes(position.max(ring.base))
    }

    /// Current size of the log.
    pub fn stats(&self) -> LogStats {
        let ring = self.read_ring();
        LogStats { frames: ring.entries.len(), bytes: ring.bytes, head: ring.head() }
    }
}

#[cfg(test)]
mod tests;
