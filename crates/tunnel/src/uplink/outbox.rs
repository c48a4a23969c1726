//! The uplink's own queue, without I/O or a clock: frames wait here for the data tunnel, and
//! here they are dropped, codec-aware, when the link is down or congested.
//!
//! Policies, each counted under its [`DropReason`]:
//!
//! - **Bounds** (`max_frames`, `max_bytes`): a keyframe that does not fit replaces the whole
//!   queue (it is newer than all of it); any other frame that does not fit is dropped, and the
//!   video frames after it until the next keyframe (they would not decode).
//! - **Disconnected**: while the tunnel is down only the newest group of pictures is kept. A new
//!   tunnel starts at the newest keyframe, or at a fresh one when the source can make one on
//!   request; the stream header always goes first.
//! - **Congestion** ([`CongestionLevel`]): non-reference frames are dropped at the first level;
//!   at the second only keyframes go out, the newest one first.
//! - **Staleness**: a frame that waited longer than `max_age` is dropped (a video frame breaks
//!   the picture chain until the next keyframe).
//!
//! Audio frames are only ever dropped for the bounds and staleness: they are small, and every
//! one decodes on its own.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::{CongestionLevel, DropReason};
use mediamesh_media::{Codec, Frame, StreamHeader, TrackKind};

/// What a frame is, for dropping decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameClass {
    /// A viewer (and a decoder) can start here.
    pub sync: bool,
    /// Belongs to a video track.
    pub video: bool,
    /// No other picture depends on it.
    pub disposable: bool,
}

/// Bounds of an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Most frames held.
    pub max_frames: usize,
    /// Most payload bytes held.
    pub max_bytes: usize,
}

/// What the tunnel sends next.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// Codec parameters for the frames that follow.
    Header(StreamHeader),
    /// A frame.
    Frame(Frame),
}

#[derive(Debug)]
enum Entry {
    Header(StreamHeader),
    Frame { frame: Frame, queued_at: Instant, class: FrameClass },
}

/// The queue of one uplink.
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    queue: VecDeque<Entry>,
    frames: usize,
    bytes: usize,
    /// The header in effect for the newest queued frame.
    header: Option<StreamHeader>,
    /// The header in effect for the front of the queue (the last one sent or discarded).
    in_effect: Option<StreamHeader>,
    /// Video frames are dropped until the next sync point, counted under this reason.
    broken: Option<DropReason>,
    drops: [u64; DropReason::ALL.len()],
    /// Highest H.265 temporal id seen (for non-reference decisions).
    max_tid: u8,
}

impl Outbox {
    /// An empty outbox.
    pub fn new(config: OutboxConfig) -> Self {
        Self {
            config,
            queue: VecDeque::new(),
            frames: 0,
            bytes: 0,
            header: None,
            in_effect: None,
            broken: None,
            drops: [0; DropReason::ALL.len()],
            max_tid: 0,
        }
    }

    /// Frames waiting.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Payload bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether anything (a frame or a header) waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The payload bytes of what goes next (zero for a header), if anything waits.
    pub fn front_bytes(&self) -> Option<usize> {
        self.queue.front().map(|e| match e {
            Entry::Header(_) => 0,
            Entry::Frame { frame, .. } => frame.payload.len(),
        })
    }

    /// How long the oldest waiting frame has waited.
    pub fn head_age(&self, now: Instant) -> Duration {
        self.queue
            .iter()
            .find_map(|e| match e {
                Entry::Frame { queued_at, .. } => Some(now.saturating_duration_since(*queued_at)),
                Entry::Header(_) => None,
            })
            .unwrap_or_default()
    }

    /// Frames dropped so far, by reason ([`DropReason::ALL`] order).
    pub fn drops(&self) -> &[u64; DropReason::ALL.len()] {
        &self.drops
    }

    fn drop_frame(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// What kind of frame this is, under the current header.
    pub fn classify(&mut self, frame: &Frame) -> FrameClass {
        let Some(track) = self.header.as_ref().and_then(|h| h.track(frame.track)) else {
            return FrameClass { sync: frame.is_keyframe(), video: true, disposable: false };
        };
        let sync = self.header.as_ref().is_some_and(|h| h.is_sync_point(frame.track, frame.is_keyframe()));
        let disposable = match track.codec {
            Codec::H264 => mediamesh_media::h264::is_non_reference(&frame.payload),
            Codec::H265 => {
                if let Some(t) = mediamesh_media::h265::temporal_id(&frame.payload) {
                    self.max_tid = self.max_tid.max(t);
                }
                mediamesh_media::h265::non_reference_temporal_id(&frame.payload).is_some_and(|t| t >= self.max_tid)
            }
            _ => false,
        };
        FrameClass { sync, video: track.codec.kind() == TrackKind::Video, disposable }
    }

    /// Queues a header.
    pub fn push_header(&mut self, header: StreamHeader) {
        self.header = Some(header.clone());
        self.queue.push_back(Entry::Header(header));
    }

    /// Queues a frame that arrived at `now`. While `connected` is false only the newest group
    /// of pictures is kept.
    pub fn push_frame(&mut self, now: Instant, frame: Frame, connected: bool) {
        let class = self.classify(&frame);
        if class.video
            && !class.sync
            && let Some(reason) = self.broken
        {
            self.drop_frame(reason);
            return;
        }
        let len = frame.payload.len();
        let full = self.frames + 1 > self.config.max_frames || self.bytes + len > self.config.max_bytes;
        if class.sync && class.video && (!connected || full) {
            // A keyframe is newer than everything queued; while disconnected, or when it does
            // not fit, it replaces all of it.
            let reason = if connected { DropReason::QueueFull } else { DropReason::Disconnected };
            self.clear_frames(reason);
        } else if full {
            self.drop_frame(DropReason::QueueFull);
            if class.video && !class.disposable {
                self.broken = Some(DropReason::AwaitingKeyframe);
            }
            return;
        }
        if class.video && class.sync {
            self.broken = None;
        }
        self.frames += 1;
        self.bytes += len;
        self.queue.push_back(Entry::Frame { frame, queued_at: now, class });
    }

    /// Drops every queued frame (counting them under `reason`); the header in effect stays at
    /// the front.
    fn clear_frames(&mut self, reason: DropReason) {
        let dropped = self.frames as u64;
        self.drops[reason.index()] += dropped;
        self.queue.clear();
        self.frames = 0;
        self.bytes = 0;
        if let Some(h) = &self.header {
            self.in_effect = Some(h.clone());
            self.queue.push_back(Entry::Header(h.clone()));
        }
    }

    /// A new data tunnel is up. It must start with the header and a keyframe: with
    /// `fresh_keyframe` (the source was asked for one and makes them on request) everything
    /// queued is dropped and the coming keyframe starts it; otherwise the newest queued keyframe
    /// does.
    pub fn reconnected(&mut self, fresh_keyframe: bool) {
        let newest_sync =
            self.queue.iter().rposition(|e| matches!(e, Entry::Frame { class, .. } if class.sync && class.video));
        match newest_sync {
            Some(i) if !fresh_keyframe => {
                let mut dropped = 0;
                let mut kept = VecDeque::with_capacity(self.queue.len() - i + 1);
                for (j, e) in std::mem::take(&mut self.queue).into_iter().enumerate() {
                    match e {
                        Entry::Frame { frame, .. } if j < i => {
                            dropped += 1;
                            self.frames -= 1;
                            self.bytes -= frame.payload.len();
                        }
                        Entry::Header(h) if j < i => self.in_effect = Some(h),
                        other => kept.push_back(other),
                    }
                }
                self.drops[DropReason::Disconnected.index()] += dropped;
                self.queue = kept;
                self.broken = None;
            }
            _ => {
                self.clear_frames(DropReason::Disconnected);
                self.broken = Some(DropReason::Disconnected);
            }
        }
        // The new tunnel needs the header in effect for its first frame before anything else.
        if !matches!(self.queue.front(), Some(Entry::Header(_)))
            && let Some(h) = self.in_effect.clone()
        {
            self.queue.push_front(Entry::Header(h));
        }
    }

    /// Why video frames are being dropped until the next keyframe, if they are.
    pub fn broken(&self) -> Option<DropReason> {
        self.broken
    }

    /// The next thing to send, dropping on the way what the level and age rule out.
    pub fn pop(&mut self, now: Instant, level: CongestionLevel, max_age: Duration) -> Option<Outgoing> {
        loop {
            let entry = self.queue.pop_front()?;
            let (frame, queued_at, class) = match entry {
                Entry::Header(h) => {
                    self.in_effect = Some(h.clone());
                    return Some(Outgoing::Header(h));
                }
                Entry::Frame { frame, queued_at, class } => (frame, queued_at, class),
            };
            self.frames -= 1;
            self.bytes -= frame.payload.len();
            if let Some(reason) = self.broken.filter(|_| class.video && !class.sync) {
                self.drop_frame(reason);
                continue;
            }
            if now.saturating_duration_since(queued_at) > max_age {
                self.drop_frame(DropReason::Stale);
                if class.video && !class.disposable {
                    self.broken = Some(DropReason::Stale);
                }
                continue;
            }
            if class.video {
                match level {
                    CongestionLevel::DropGop if !class.sync => {
                        self.drop_frame(DropReason::CongestionGop);
                        if !class.disposable {
                            self.broken = Some(DropReason::CongestionGop);
                        }
                        continue;
                    }
                    CongestionLevel::DropGop if self.newer_sync_queued() => {
                        self.drop_frame(DropReason::CongestionGop);
                        self.broken = Some(DropReason::CongestionGop);
                        continue;
                    }
                    CongestionLevel::DropNonReference | CongestionLevel::DropGop if class.disposable => {
                        self.drop_frame(DropReason::CongestionNonReference);
                        continue;
                    }
                    _ => {}
                }
                if class.sync {
                    self.broken = None;
                }
            }
            return Some(Outgoing::Frame(frame));
        }
    }

    fn newer_sync_queued(&self) -> bool {
        self.queue.iter().any(|e| matches!(e, Entry::Frame { class, .. } if class.sync && class.video))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mediamesh_media::{FrameFlags, TrackInfo};

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SPS: &[u8] = b"\x67\x42\xc0\x0d\xda\x05\x07\xec\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0c\x83\xc5\x0a\xa8";

    fn header(n: u8) -> StreamHeader {
        StreamHeader {
            tracks: vec![
                TrackInfo::h264(0, Bytes::from_static(SPS), Bytes::from(vec![0x68, 0xce, 0x0f, n])),
                TrackInfo::audio(1, Codec::Pcmu, 8000, 1, None),
            ],
        }
    }

    /// A video frame: `k` keyframe, `r` reference, `n` non-reference.
    fn video(seq: u64, kind: char) -> Frame {
        let nal: &[u8] = match kind {
            'k' => b"\x00\x00\x00\x01\x65\x88",
            'r' => b"\x00\x00\x00\x01\x41\x9a",
            _ => b"\x00\x00\x00\x01\x01\x9e",
        };
        Frame {
            track: 0,
            flags: FrameFlags::keyframe(kind == 'k'),
            seq,
            pts: seq as i64,
            dts: seq as i64,
            capture_us: 0,
            payload: Bytes::from_static(nal),
        }
    }

    fn audio(seq: u64) -> Frame {
        Frame { track: 1, payload: Bytes::from_static(&[0u8; 160]), ..video(seq, 'k') }
    }

    fn outbox() -> Outbox {
        let mut o = Outbox::new(OutboxConfig { max_frames: 8, max_bytes: 1 << 20 });
        o.push_header(header(1));
        o
    }

    fn drain(o: &mut Outbox, now: Instant, level: CongestionLevel) -> Vec<String> {
        std::iter::from_fn(|| o.pop(now, level, Duration::from_secs(1)))
            .map(|out| match out {
                Outgoing::Header(h) => format!("H{}", h.tracks[0].parameter_sets[1][3]),
                Outgoing::Frame(f) if f.track == 1 => format!("a{}", f.seq),
                Outgoing::Frame(f) => format!("{}{}", if f.is_keyframe() { "K" } else { "v" }, f.seq),
            })
            .collect()
    }

    fn drops(o: &Outbox, r: DropReason) -> u64 {
        o.drops()[r.index()]
    }

    #[test]
    fn classifies_by_codec() {
        let mut o = outbox();
        assert_eq!(o.classify(&video(0, 'k')), FrameClass { sync: true, video: true, disposable: false });
        assert_eq!(o.classify(&video(1, 'r')), FrameClass { sync: false, video: true, disposable: false });
        assert_eq!(o.classify(&video(2, 'n')), FrameClass { sync: false, video: true, disposable: true });
        assert_eq!(o.classify(&audio(3)), FrameClass { sync: false, video: false, disposable: false });
    }

    #[test]
    fn each_level_sheds_what_it_should() {
        let t0 = Instant::now();
        let frames = ['k', 'n', 'r', 'n', 'r', 'k', 'n', 'r'];
        let run = |level| {
            let mut o = Outbox::new(OutboxConfig { max_frames: 16, max_bytes: 1 << 20 });
            o.push_header(header(1));
            for (i, k) in frames.iter().enumerate() {
                o.push_frame(t0, video(i as u64, *k), true);
            }
            o.push_frame(t0, audio(100), true);
            (drain(&mut o, t0, level), o)
        };
        let (all, _) = run(CongestionLevel::Clear);
        assert_eq!(all, ["H1", "K0", "v1", "v2", "v3", "v4", "K5", "v6", "v7", "a100"]);
        let (refs, o) = run(CongestionLevel::DropNonReference);
        assert_eq!(refs, ["H1", "K0", "v2", "v4", "K5", "v7", "a100"]);
        assert_eq!(drops(&o, DropReason::CongestionNonReference), 3);
        let (keys, o) = run(CongestionLevel::DropGop);
        assert_eq!(keys, ["H1", "K5", "a100"], "only the newest keyframe, and the audio");
        assert_eq!(drops(&o, DropReason::CongestionGop) + drops(&o, DropReason::CongestionNonReference), 7);
    }

    #[test]
    fn a_congestion_drop_mid_gop_waits_for_the_next_keyframe() {
        let t0 = Instant::now();
        let mut o = outbox();
        for (i, k) in ['k', 'r', 'r'].iter().enumerate() {
            o.push_frame(t0, video(i as u64, *k), true);
        }
        assert_eq!(drain(&mut o, t0, CongestionLevel::Clear), ["H1", "K0", "v1", "v2"]);
        o.push_frame(t0, video(3, 'r'), true);
        assert_eq!(drain(&mut o, t0, CongestionLevel::DropGop), Vec::<String>::new());
        // Clear again, but v4 and v5 would not decode without v3.
        for (i, k) in [(4, 'r'), (5, 'r'), (6, 'k'), (7, 'r')] {
            o.push_frame(t0, video(i, k), true);
        }
        assert_eq!(drain(&mut o, t0, CongestionLevel::Clear), ["K6", "v7"]);
        assert_eq!(drops(&o, DropReason::CongestionGop), 3);
    }

    #[test]
    fn stale_frames_are_dropped_and_break_the_chain() {
        let t0 = Instant::now();
        let mut o = outbox();
        o.push_frame(t0, video(0, 'k'), true);
        o.push_frame(t0, video(1, 'r'), true);
        o.push_frame(t0 + 900 * MS, video(2, 'r'), true);
        o.push_frame(t0 + 900 * MS, audio(3), true);
        o.push_frame(t0 + 1500 * MS, video(4, 'k'), true);
        // At t0 + 1.2 s the first two waited longer than 1 s.
        assert_eq!(drain(&mut o, t0 + 1200 * MS, CongestionLevel::Clear), ["H1", "a3", "K4"]);
        // K0 and v1 waited too long; v2 is fresh but cannot decode without them.
        assert_eq!(drops(&o, DropReason::Stale), 3);
        assert_eq!(drops(&o, DropReason::AwaitingKeyframe) + drops(&o, DropReason::CongestionGop), 0);
        assert_eq!(o.frames(), 0);
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn while_disconnected_only_the_newest_gop_is_kept_and_the_header_goes_first() {
        let t0 = Instant::now();
        let mut o = outbox();
        assert_eq!(drain(&mut o, t0, CongestionLevel::Clear), ["H1"]);
        for (i, k) in ['k', 'r', 'r', 'k', 'r'].iter().enumerate() {
            o.push_frame(t0, video(i as u64, *k), false);
        }
        o.reconnected(false);
        assert_eq!(drain(&mut o, t0, CongestionLevel::Clear), ["H1", "K3", "v4"]);
        assert_eq!(drops(&o, DropReason::Disconnected), 3);
        // With a fresh keyframe on its way, nothing queued is worth sending.
        o.push_frame(t0, video(5, 'r'), false);
        o.reconnected(true);
        o.push_frame(t0, video(6, 'r'), true);
        o.push_frame(t0, video(7, 'k'), true);
        assert_eq!(drain(&mut o, t0, CongestionLevel::Clear), ["H1", "K7"]);
        assert_eq!(drops(&o, DropReason::Disconnected), 5);
    }

    #[test]
    fn a_header_change_in_the_dropped_part_still_reaches_the_new_tunnel() {
        let t0 = Instant::now();
        let mut o = outbox();
        o.push_frame(t0, video(0, 'k'), true);
        assert_eq!(drain(&mut o, t0, CongestionLevel::Clear), ["H1", "K0"]);
        o.push_frame(t0, video(1, 'r'), true);
        o.push_header(header(2));
        o.push_frame(t0, video(2, 'r'), true);
        // The link breaks before any of it went out; no keyframe is queued.
        o.reconnected(true);
        o.push_frame(t0, video(3, 'k'), true);
        assert_eq!(drain(&mut o, t0, CongestionLevel::Clear), ["H2", "K3"]);
    }

    #[test]
    fn bounds_hold_and_a_keyframe_that_does_not_fit_replaces_the_queue() {
        let t0 = Instant::now();
        let mut o = outbox();
        o.push_frame(t0, video(0, 'k'), true);
        for i in 1..20 {
            o.push_frame(t0, video(i, 'r'), true);
            assert!(o.frames() <= 8);
        }
        assert_eq!(drops(&o, DropReason::QueueFull), 1);
        assert_eq!(drops(&o, DropReason::AwaitingKeyframe), 11);
        o.push_frame(t0, video(20, 'k'), true);
        assert_eq!(drain(&mut o, t0, CongestionLevel::Clear), ["H1", "K20"]);
        assert_eq!(drops(&o, DropReason::QueueFull), 9);
    }
}
