//! Each track's timeline across epochs: timestamps that keep increasing when a new data tunnel
//! begins, and, by default, advance by the real length of an outage ([`OutageTimeline`]).

use mediamesh_media::{Frame, TrackId};

/// How timestamps continue across an outage (a new epoch whose source clock restarted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OutageTimeline {
    /// The timeline advances by the real gap (from the frames' capture times), so timestamps
    /// keep wall-clock time and RTCP sender reports stay true: what recorders need.
    #[default]
    WallClock,
    /// The gap is squeezed out: the next frame follows the last by one frame interval.
    Squeezed,
}

#[derive(Debug, Clone, Copy)]
struct Timeline {
    offset: i64,
    last_dts: i64,
    /// The last positive dts step, as the gap to leave when a new epoch's clock restarts.
    step: i64,
    /// The epoch the offset was last set for.
    epoch: u64,
    /// The last frame's capture time (edge clock) and receive time (hub clock), µs.
    last_capture_us: u64,
    last_hub_us: u64,
}

impl Timeline {
    /// The real time between the last frame and one captured at `capture_us` and received at
    /// `hub_us`, µs. The capture clock measures it best (a keyframe kept through the outage was
    /// captured before it arrived); the hub's clock stands in when the edge sent no capture
    /// time, or a capture gap that is negative or longer than the hub saw plus a second (an
    /// edge clock that jumped).
    fn gap_us(&self, capture_us: u64, hub_us: u64) -> u64 {
        let hub_gap = hub_us.saturating_sub(self.last_hub_us);
        match capture_us.checked_sub(self.last_capture_us) {
            Some(gap) if capture_us != 0 && self.last_capture_us != 0 && gap <= hub_gap + 1_000_000 => gap,
            _ => hub_gap,
        }
    }
}

/// Each track's timeline.
#[derive(Debug, Default)]
pub(super) struct Timelines(Vec<(TrackId, Timeline)>);

impl Timelines {
    /// Shifts the frame's timestamps so the track's decode times keep increasing across
    /// epochs, and, with [`OutageTimeline::WallClock`], so a break in a source's clock becomes
    /// a gap as long as the outage; within an epoch the source's own timing is kept.
    pub(super) fn continue_timeline(
        &mut self,
        epoch: u64,
        frame: &mut Frame,
        hub_us: u64,
        clock_rate: u32,
        mode: OutageTimeline,
    ) {
        let i = match self.0.iter().position(|(t, _)| *t == frame.track) {
            Some(i) => i,
            None => {
                let tl = Timeline {
                    offset: 0,
                    last_dts: frame.dts,
                    step: 1,
                    epoch,
                    last_capture_us: frame.capture_us,
                    last_hub_us: hub_us,
                };
                self.0.push((frame.track, tl));
                return;
            }
        };
        let tl = &mut self.0[i].1;
        if tl.epoch != epoch {
            tl.epoch = epoch;
            let continued = frame.dts.saturating_add(tl.offset);
            let floor = tl.last_dts.saturating_add(tl.step);
            let wall = tl.last_dts.saturating_add(ticks(tl.gap_us(frame.capture_us, hub_us), clock_rate).max(tl.step));
            let target = match mode {
                // Behind the outage's end by more than a frame: the source's clock restarted.
                OutageTimeline::WallClock if continued.saturating_add(tl.step) < wall => Some(wall),
                _ if continued <= tl.last_dts => Some(floor),
                _ => None,
            };
            if let Some(target) = target {
                tl.offset = target.saturating_sub(frame.dts);
            }
        }
        frame.pts = frame.pts.saturating_add(tl.offset);
        frame.dts = frame.dts.saturating_add(tl.offset);
        if frame.dts > tl.last_dts {
            tl.step = frame.dts - tl.last_dts;
            tl.last_dts = frame.dts;
        }
        tl.last_capture_us = frame.capture_us;
        tl.last_hub_us = hub_us;
    }
}

/// `us` microseconds in ticks of `clock_rate`.
fn ticks(us: u64, clock_rate: u32) -> i64 {
    let t = u128::from(us) * u128::from(clock_rate) / 1_000_000;
    i64::try_from(t).unwrap_or(i64::MAX)
}
