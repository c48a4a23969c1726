//! One viewer's RTP numbering, without I/O: which frames it is sent, with which sequence numbers
//! and timestamps.
//!
//! The numbering only goes forward, whatever the log does under it:
//! - a viewer starts at a keyframe;
//! - after an edge reconnect the log resumes at a keyframe; a timestamp that would go back is
//!   moved on, so the browser keeps the same peer connection and decodes on;
//! - a keyframe request (PLI or FIR) is answered from the log's cached keyframe for this viewer
//!   alone: its reader goes back to the newest keyframe and the frames from there to where it
//!   was are sent again, one timestamp tick apart, so the decoder gets the whole reference
//!   chain at once and shows the live frame that follows at its usual time. The replay is
//!   stamped as of when it is sent (the last frame's time plus the time since it went), so a
//!   browser that asks during an outage does not take the replay's old times for "now" and
//!   hold back the live frames after it. At most one replay per [`REPLAY_GAP`]: a browser that
//!   keeps asking gets the next one a second later.

use std::time::{Duration, Instant};

/// The shortest time between two replays for one viewer.
pub(crate) const REPLAY_GAP: Duration = Duration::from_secs(1);

/// What a keyframe request leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyframeAnswer {
    /// Nothing sent yet: the viewer starts at a keyframe anyway.
    NotStarted,
    /// A replay was answered less than [`REPLAY_GAP`] ago.
    TooSoon,
    /// Go back to the newest keyframe; frames before `until` (the reader's position) are replays.
    Replay,
}

/// One viewer's numbering.
#[derive(Debug)]
pub(crate) struct Timeline {
    clock_rate: u32,
    seq: u64,
    /// Added to the source's timestamps.
    offset: i64,
    /// The last decode time sent (mapped), and when.
    last: Option<(i64, Instant)>,
    started: bool,
    /// Frames before this log index are replays.
    replay_until: Option<u64>,
    last_replay: Option<Instant>,
}

impl Timeline {
    /// A numbering for a track with `clock_rate` ticks per second.
    pub(crate) fn new(clock_rate: u32) -> Self {
        Self { clock_rate, seq: 0, offset: 0, last: None, started: false, replay_until: None, last_replay: None }
    }

    /// The RTP timestamp for the frame at log index `index`, sent at `now`, or `None` when it
    /// is not sent.
    pub(crate) fn frame(&mut self, now: Instant, index: u64, keyframe: bool, pts: i64, dts: i64) -> Option<u32> {
        if !self.started {
            if !keyframe {
                return None;
            }
            self.started = true;
        }
        let replaying = match self.replay_until {
            Some(until) if index < until => true,
            Some(_) => {
                self.replay_until = None;
                false
            }
            None => false,
        };
        let mapped = match self.last {
            // A replayed frame: one tick after the last, or as late as the time since the last
            // frame went says.
            Some((last, at)) if replaying => {
                let since = now.saturating_duration_since(at).as_micros();
                let elapsed = i64::try_from(since * u128::from(self.clock_rate) / 1_000_000).unwrap_or(i64::MAX);
                last.saturating_add(elapsed.max(1))
            }
            Some((last, _)) if dts.saturating_add(self.offset) <= last => {
                self.offset = last.saturating_add(1).saturating_sub(dts);
                last.saturating_add(1)
            }
            _ => dts.saturating_add(self.offset),
        };
        // The last replayed frame sets where the next live one must come after, not the offset:
        // live frames keep the source's own spacing.
        self.last = Some((mapped, now));
        // RTP timestamps are the presentation time modulo 2^32.
        Some(mapped.saturating_add(pts.saturating_sub(dts)) as u32)
    }

    /// Whether the first frame has been sent.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// Whether the frame at log index `index` comes again in a replay.
    pub(crate) fn is_replay(&self, index: u64) -> bool {
        self.replay_until.is_some_and(|until| index < until)
    }

    /// The next RTP sequence number (extended: str0m takes the roll-over count with it).
    pub(crate) fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    /// A keyframe request at `now` while the reader is at log index `position`.
    pub(crate) fn keyframe_request(&mut self, now: Instant, position: u64) -> KeyframeAnswer {
        if !self.started {
            return KeyframeAnswer::NotStarted;
        }
        if self.last_replay.is_some_and(|t| now < t + REPLAY_GAP) {
            return KeyframeAnswer::TooSoon;
        }
        self.last_replay = Some(now);
        self.replay_until = Some(position);
        KeyframeAnswer::Replay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: i64 = 3600;
    const INTERVAL: Duration = Duration::from_millis(40);

    /// Feeds frames `from..to` of a 25 fps stream with a keyframe every `gop`, each sent at its
    /// own time after `t0`; the timestamps sent.
    fn feed(t: &mut Timeline, t0: Instant, from: u64, to: u64, gop: u64) -> Vec<Option<u32>> {
        (from..to)
            .map(|i| t.frame(t0 + INTERVAL * i as u32, i, i % gop == 0, i as i64 * FRAME, i as i64 * FRAME))
            .collect()
    }

    #[test]
    fn a_viewer_starts_at_a_keyframe_and_then_follows_the_source() {
        let mut t = Timeline::new(90_000);
        let sent = feed(&mut t, Instant::now(), 3, 12, 5);
        assert_eq!(&sent[..2], &[None, None], "frames 3 and 4 come before the first keyframe");
        assert_eq!(sent[2], Some(5 * FRAME as u32));
        assert_eq!(sent[8], Some(11 * FRAME as u32));
        assert_eq!((t.next_seq(), t.next_seq()), (0, 1));
    }

    #[test]
    fn a_replay_is_sent_one_tick_apart_and_live_frames_follow_in_order() {
        let mut t = Timeline::new(90_000);
        let t0 = Instant::now();
        feed(&mut t, t0, 0, 8, 5);
        // Frame 7 went at t0 + 280 ms; the request comes 20 ms later.
        let now = t0 + Duration::from_millis(300);
        assert_eq!(t.keyframe_request(now, 8), KeyframeAnswer::Replay);
        // The reader goes back to keyframe 5: frames 5, 6, 7 again, then 8 on.
        let replay: Vec<_> = (5..8).map(|i| t.frame(now, i, i == 5, i as i64 * FRAME, i as i64 * FRAME)).collect();
        let first = 7 * FRAME as u32 + 1800; // 20 ms after the last frame
        assert_eq!(replay, vec![Some(first), Some(first + 1), Some(first + 2)]);
        let live = feed(&mut t, t0, 8, 10, 5);
        assert_eq!(live, vec![Some(8 * FRAME as u32), Some(9 * FRAME as u32)], "live frames keep their times");
        // Asked again at once: not before a second has passed.
        assert_eq!(t.keyframe_request(now + Duration::from_millis(500), 10), KeyframeAnswer::TooSoon);
        assert_eq!(t.keyframe_request(now + REPLAY_GAP, 10), KeyframeAnswer::Replay);
    }

    #[test]
    fn a_replay_during_an_outage_is_stamped_as_of_when_it_goes() {
        let mut t = Timeline::new(90_000);
        let t0 = Instant::now();
        feed(&mut t, t0, 0, 10, 5);
        // No frame for 3 s: the browser asks for a keyframe, and gets 5..9 again.
        let asked = t0 + INTERVAL * 9 + Duration::from_secs(3);
        assert_eq!(t.keyframe_request(asked, 10), KeyframeAnswer::Replay);
        let first = t.frame(asked, 5, true, 5 * FRAME, 5 * FRAME).unwrap();
        assert_eq!(first, 9 * FRAME as u32 + 270_000, "3 s after the last frame, on the 90 kHz clock");
        for i in 6..10 {
            t.frame(asked, i, false, i as i64 * FRAME, i as i64 * FRAME);
        }
        // The edge is back 0.5 s later; the log advanced its times by the outage.
        let back = 9 * FRAME + 315_000;
        assert_eq!(t.frame(asked + Duration::from_millis(500), 10, true, back, back), Some(back as u32));
    }

    #[test]
    fn a_request_before_the_first_frame_needs_no_replay() {
        let mut t = Timeline::new(90_000);
        let now = Instant::now();
        assert_eq!(t.keyframe_request(now, 0), KeyframeAnswer::NotStarted);
        assert_eq!(t.frame(now, 0, true, 0, 0), Some(0), "the first keyframe is sent as it is");
    }

    #[test]
    fn timestamps_that_go_back_after_an_edge_reconnect_move_on() {
        let mut t = Timeline::new(90_000);
        let t0 = Instant::now();
        feed(&mut t, t0, 0, 10, 5);
        // The edge's clock started again at 0; its first frame is a keyframe.
        let later = t0 + Duration::from_secs(1);
        let after = t.frame(later, 10, true, 0, 0).unwrap();
        assert_eq!(after, 9 * FRAME as u32 + 1);
        let next = t.frame(later, 11, false, FRAME, FRAME).unwrap();
        assert_eq!(next, after + FRAME as u32);
    }

    #[test]
    fn presentation_times_keep_their_distance_from_decode_times() {
        let mut t = Timeline::new(90_000);
        let now = Instant::now();
        // A B-frame stream: decode 0, 1, 2; presentation 1, 3, 2 (in frames).
        let a = t.frame(now, 0, true, FRAME, 0).unwrap();
        let b = t.frame(now, 1, false, 3 * FRAME, FRAME).unwrap();
        let c = t.frame(now, 2, false, 2 * FRAME, 2 * FRAME).unwrap();
        assert_eq!((a, b, c), (FRAME as u32, 3 * FRAME as u32, 2 * FRAME as u32));
    }
}
