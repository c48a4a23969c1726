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
//!
//! The log knows no viewer format. Work a format does per frame (RTP packets for RTSP, the
//! WebSocket framing, fMP4 fragments) is a [`Packager`] attached to the log while that format
//! has viewers ([`FrameLog::attach`]): it is fed each frame once, in order, as the frame is
//! appended, keeps its own output, and is detached when the last [`Attached`] handle drops.

use std::any::TypeId;
use std::collections::VecDeque;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use mediamesh_media::{Frame, MediaError, StreamHeader, VideoParams};
use tokio::sync::watch;

mod packager;
mod timeline;

use packager::Slot;
pub use packager::{Attached, FrameFormat, Packaged, Packager, PerFrame};
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

/// The codec parameters in effect for a run of frames, shared by reference.
#[derive(Debug)]
pub struct HeaderEntry {
    /// The header as the edge sent it.
    pub header: StreamHeader,
    /// Derived video parameters of the first video track.
    pub video: Option<VideoParams>,
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
    /// The attached packagers, one per format.
    slots: Vec<Slot>,
}

impl Ring {
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

    /// Where a new viewer starts: the newest keyframe, unless it is already further back than
    /// a viewer may lag (then `None`: it waits for the next one).
    fn start(&self, max_lag_bytes: usize) -> Option<u64> {
        self.last_keyframe.filter(|&k| self.lag_bytes(k) <= max_lag_bytes as u64)
    }

    fn slot(&self, kind: TypeId) -> Option<&Slot> {
        self.slots.iter().find(|s| s.kind == kind)
    }
}

/// The frame log of one stream session.
#[derive(Debug)]
pub struct FrameLog {
    config: LogConfig,
    ring: RwLock<Ring>,
    signal: watch::Sender<u64>,
}

impl FrameLog {
    /// An empty log.
    pub fn new(config: LogConfig) -> Self {
        Self { config, ring: RwLock::new(Ring::default()), signal: watch::Sender::new(0) }
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
        ring.header = Some(Arc::new(HeaderEntry { header, video }));
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
            let entry = Arc::new(LogEntry { index, frame, header, hub_us, bytes_before });
            for slot in &mut ring.slots {
                slot.packager.push(&entry);
            }
            ring.entries.push_back(entry);
            ring.bytes += len;
            ring.total_bytes += len as u64;
            let base = ring.base;
            self.evict(&mut ring);
            if ring.base != base {
                let base = ring.base;
                for slot in &mut ring.slots {
                    slot.packager.evicted(base);
                }
            }
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
        match ring.start(self.config.viewer_max_lag_bytes) {
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
        self.read_from(
            &ring,
            ring.base,
            cursor,
            max_bytes,
            |i| ring.get(i).map(|e| (e.clone(), e.frame.payload.len())),
            out,
        )
    }

    /// Like [`FrameLog::read`], but each frame comes with the attached format's packaging.
    pub fn read_packaged<F: FrameFormat>(
        &self,
        _attached: &Attached<PerFrame<F>>,
        cursor: &mut Cursor,
        max_bytes: usize,
        out: &mut Vec<Arc<Packaged<F::Out>>>,
    ) -> ReadStatus {
        cursor.signal.borrow_and_update();
        let ring = self.read_ring();
        let Some(packaged) = ring.slot(TypeId::of::<PerFrame<F>>()).and_then(|s| s.get::<PerFrame<F>>()) else {
            // Unreachable while `_attached` lives: it keeps the slot.
            return ReadStatus { ended: Some("the format's packager is gone".into()), ..ReadStatus::default() };
        };
        // The packager holds frames from where it was attached on.
        let floor = packaged.first().unwrap_or_else(|| ring.head()).max(ring.base);
        self.read_from(
            &ring,
            floor,
            cursor,
            max_bytes,
            |i| packaged.get(i).map(|p| (p.clone(), p.entry.frame.payload.len())),
            out,
        )
    }

    /// The read shared by every format: applies the overflow policy to the cursor (no frame
    /// before `floor` can be read), then moves frames `get` finds into `out`.
    fn read_from<T>(
        &self,
        ring: &Ring,
        floor: u64,
        cursor: &mut Cursor,
        max_bytes: usize,
        get: impl Fn(u64) -> Option<(T, usize)>,
        out: &mut Vec<T>,
    ) -> ReadStatus {
        let head = ring.head();
        let mut status = ReadStatus::default();
        let max_lag = self.config.viewer_max_lag_bytes as u64;

        let late = ring.too_late(cursor.next, self.config.viewer_max_lag_us);
        let behind = cursor.next < floor || ring.lag_bytes(cursor.next) > max_lag || late;
        if behind {
            let target = ring.last_keyframe.filter(|&k| k > cursor.next && k >= floor && ring.lag_bytes(k) <= max_lag);
            let to = target.unwrap_or(head);
            if cursor.started {
                status.skipped += to - cursor.next;
            }
            cursor.next = to;
            cursor.need_keyframe = target.is_none();
        }
        if cursor.need_keyframe {
            let from = cursor.next.max(floor);
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
        let first = out.len();
        while cursor.next < head && (bytes < max_bytes || out.len() == first) {
            let Some((item, len)) = get(cursor.next) else { break };
            bytes += len;
            out.push(item);
            cursor.next += 1;
        }
        if cursor.next >= head {
            status.ended = ring.end.clone();
        }
        status.more = cursor.next < head;
        status
    }

    /// Attaches a packager of type `P` (made by `make` if none is attached yet) and returns a
    /// handle that keeps it attached. A new packager is fed the frames from where a new viewer
    /// would start, so a viewer that subscribes after attaching finds them packaged.
    pub fn attach<P: Packager>(self: &Arc<Self>, make: impl FnOnce() -> P) -> Attached<P> {
        self.attach_with(make, |_| ()).0
    }

    /// [`FrameLog::attach`], and what `inspect` finds in the packager (under the log's lock).
    pub fn attach_with<P: Packager, R>(
        self: &Arc<Self>,
        make: impl FnOnce() -> P,
        inspect: impl FnOnce(&P) -> R,
    ) -> (Attached<P>, R) {
        let mut ring = self.write_ring();
        let kind = TypeId::of::<P>();
        if let Some(i) = ring.slots.iter().position(|s| s.kind == kind) {
            if let Some(p) = ring.slots[i].get::<P>() {
                let found = inspect(p);
                ring.slots[i].handles += 1;
                return (Attached::new(self.clone()), found);
            }
            // A slot of P's type id holds a P: this cannot be reached, but would be repaired.
            ring.slots.swap_remove(i);
        }
        let mut packager = make();
        let from = ring.start(self.config.viewer_max_lag_bytes).unwrap_or_else(|| ring.head());
        for i in from..ring.head() {
            if let Some(e) = ring.get(i) {
                packager.push(e);
            }
        }
        let found = inspect(&packager);
        ring.slots.push(Slot::new(packager));
        (Attached::new(self.clone()), found)
    }

    /// Counts one more handle on `P`'s packager.
    fn retain(&self, kind: TypeId) {
        if let Some(slot) = self.write_ring().slots.iter_mut().find(|s| s.kind == kind) {
            slot.handles += 1;
        }
    }

    /// Counts one handle less on a packager, and detaches it with the last.
    fn release(&self, kind: TypeId) {
        let mut ring = self.write_ring();
        if let Some(i) = ring.slots.iter().position(|s| s.kind == kind) {
            ring.slots[i].handles -= 1;
            if ring.slots[i].handles == 0 {
                ring.slots.swap_remove(i);
            }
        }
    }

    /// Runs `f` on the attached packager (under the log's read lock: keep it short).
    pub fn with_packager<P: Packager, R>(&self, _attached: &Attached<P>, f: impl FnOnce(&P) -> R) -> Option<R> {
        let ring = self.read_ring();
        ring.slot(TypeId::of::<P>()).and_then(|s| s.get::<P>()).map(f)
    }

    /// The formats attached now, by their packagers' type names (for tests and diagnostics).
    pub fn attached(&self) -> Vec<&'static str> {
        self.read_ring().slots.iter().map(|s| s.name).collect()
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
