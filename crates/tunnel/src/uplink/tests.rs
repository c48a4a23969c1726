//! The uplink in simulated time: a camera at 25 fps, a receiver that acknowledges after a
//! chosen delay (or not at all), cuts, stalls and congestion.

use bytes::Bytes;
use mediamesh_media::{Codec, FrameFlags, TrackInfo};

use super::*;
use crate::wire::{ErrorMsg, Feedback};

const MS: Duration = Duration::from_millis(1);
const SPS: &[u8] = b"\x67\x42\xc0\x0d\xda\x05\x07\xec\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0c\x83\xc5\x0a\xa8";
/// A keyframe every 10 frames; between them reference and non-reference frames alternate.
const GOP: u64 = 10;
const FRAME_INTERVAL: Duration = Duration::from_millis(40);

fn header() -> StreamHeader {
    StreamHeader {
        tracks: vec![
            TrackInfo::h264(0, Bytes::from_static(SPS), Bytes::from_static(&[0x68, 0xce, 0x0f, 0x80])),
            TrackInfo::audio(1, Codec::Pcmu, 8000, 1, None),
        ],
    }
}

fn frame(seq: u64, bytes: usize) -> Frame {
    let nal: u8 = match seq % GOP {
        0 => 0x65,
        n if n % 2 == 1 => 0x41,
        _ => 0x01,
    };
    let mut payload = vec![0, 0, 0, 1, nal];
    payload.resize(bytes.max(6), 0x9a);
    Frame {
        track: 0,
        flags: FrameFlags::keyframe(seq.is_multiple_of(GOP)),
        seq,
        pts: seq as i64 * 3600,
        dts: seq as i64 * 3600,
        capture_us: 0,
        payload: Bytes::from(payload),
    }
}

fn config() -> UplinkConfig {
    UplinkConfig {
        outbox: OutboxConfig { max_frames: 200, max_bytes: 8 << 20 },
        congestion: CongestionConfig::default(),
        heartbeat: HeartbeatConfig { interval: 1000 * MS, timeout: 3000 * MS },
        report_interval: 1000 * MS,
    }
}

/// The uplink, a clock, a camera and a receiver whose acknowledgements take `ack_delay`
/// (`None`: the path delivers nothing).
struct Sim {
    up: Uplink,
    now: Instant,
    next_frame: u64,
    next_frame_at: Instant,
    frame_bytes: usize,
    /// Frames on the path: (seq, when they arrive).
    path: VecDeque<(u64, Instant)>,
    ack_delay: Option<Duration>,
    /// The path's rate in bytes per second (`None`: unlimited), and when it is next free.
    rate: Option<u64>,
    link_free_at: Instant,
    /// What the receiver got, in order: `H` header, `K7` keyframe 7, `r8`/`n9` others.
    received: Vec<String>,
    controls: Vec<Message>,
    closed: Option<TunnelEnd>,
    /// When the source was asked for a keyframe.
    keyframes_asked: Vec<Instant>,
}

impl Sim {
    fn new() -> Self {
        let now = Instant::now();
        let mut up = Uplink::new(config());
        up.handle_input(now, Input::Header(header()));
        Self {
            up,
            now,
            next_frame: 0,
            next_frame_at: now,
            frame_bytes: 1000,
            path: VecDeque::new(),
            ack_delay: Some(20 * MS),
            rate: None,
            link_free_at: now,
            received: Vec::new(),
            controls: Vec::new(),
            closed: None,
            keyframes_asked: Vec::new(),
        }
    }

    fn connect(&mut self, fresh_keyframe: bool) {
        self.up.handle_input(self.now, Input::Connected { max_frame_bytes: 1 << 20, fresh_keyframe });
    }

    /// Runs the world for `d`, in 1 ms steps, as a driver would.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += MS;
            let now = self.now;
            while self.next_frame_at <= now {
                let f = frame(self.next_frame, self.frame_bytes);
                self.next_frame += 1;
                self.next_frame_at += FRAME_INTERVAL;
                self.up.handle_input(now, Input::Frame(f));
            }
            // The receiver: frames arrive and are acknowledged after the path's delay.
            if self.ack_delay.is_some() && self.up.is_connected() {
                let mut last = None;
                while self.path.front().is_some_and(|(_, at)| *at <= now) {
                    last = self.path.pop_front().map(|(seq, _)| seq);
                }
                if let Some(last_seq) = last {
                    let fb = Feedback { last_seq, frames: 0, bytes: 0 };
                    self.up.handle_input(now, Input::Received(Message::Feedback(fb)));
                }
            }
            if self.up.poll_timeout().is_some_and(|t| t <= now) {
                self.up.handle_timeout(now);
            }
            while let Some(out) = self.up.poll_output() {
                match out {
                    Output::Control(m) => self.controls.push(m),
                    Output::Close(end) => self.closed = Some(end),
                    Output::WantKeyframe => self.keyframes_asked.push(now),
                }
            }
            while let Some(out) = self.up.poll_transmit(now) {
                match out {
                    Outgoing::Header(_) => self.received.push("H".into()),
                    Outgoing::Frame(f) => {
                        let kind = match f.seq % GOP {
                            0 => 'K',
                            n if n % 2 == 1 => 'r',
                            _ => 'n',
                        };
                        self.received.push(format!("{kind}{}", f.seq));
                        if let Some(d) = self.ack_delay {
                            let mut at = now;
                            if let Some(rate) = self.rate {
                                let on_wire = f.payload.len() as u64 * 1_000_000 / rate;
                                at = at.max(self.link_free_at) + Duration::from_micros(on_wire);
                                self.link_free_at = at;
                            }
                            self.path.push_back((f.seq, at + d));
                        }
                    }
                }
            }
        }
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.up.drops()[reason.index()]
    }

    fn pings(&self) -> usize {
        self.controls.iter().filter(|m| matches!(m, Message::Ping { .. })).count()
    }
}

#[test]
fn a_clear_link_carries_every_frame_in_order_and_reports_each_second() {
    let mut s = Sim::new();
    s.connect(false);
    s.run(4000 * MS);
    assert_eq!(s.received[0], "H");
    let frames: Vec<u64> = s.received[1..].iter().map(|f| f[1..].parse().unwrap()).collect();
    assert_eq!(frames, (0..=100).collect::<Vec<_>>(), "every frame of 4 s, in order");
    assert_eq!(s.up.drops().iter().sum::<u64>(), 0);
    let reports = s.controls.iter().filter(|m| matches!(m, Message::UplinkReport(_))).count();
    assert_eq!(reports, 4, "one at the start and one a second");
    assert_eq!(s.pings(), 4, "one a second");
    assert_eq!(s.up.level(), CongestionLevel::Clear);
    // Nothing to do between frames but the heartbeat and the report.
    let next = s.up.poll_timeout().unwrap();
    assert!(next > s.now && next <= s.now + 1000 * MS);
}

#[test]
fn a_cut_keeps_the_newest_group_of_pictures_and_the_new_tunnel_starts_with_it() {
    let mut s = Sim::new();
    s.connect(false);
    s.run(400 * MS);
    let before = s.received.len();
    s.up.handle_input(s.now, Input::Disconnected);
    assert_eq!(s.up.poll_timeout(), None, "no heartbeat without a tunnel");
    // 1.5 s away: frames 11..=47 are made, the newest keyframe is 40.
    s.run(1500 * MS);
    assert_eq!(s.received.len(), before, "nothing goes while cut");
    s.connect(false);
    s.run(MS);
    assert_eq!(s.received[before..before + 2], ["H", "K40"], "header, then the newest keyframe");
    assert_eq!(s.drops(DropReason::Disconnected), 29, "frames 11..40");
    // And live from there on, with a fresh path estimate.
    s.run(400 * MS);
    assert_eq!(s.received.last().map(String::as_str), Some("r57"));
    assert_eq!(s.up.connects(), 2);
}

#[test]
fn a_source_that_makes_keyframes_on_request_starts_the_new_tunnel_with_a_fresh_one() {
    let mut s = Sim::new();
    s.up.handle_input(s.now, Input::Frame(frame(0, 1000)));
    s.up.handle_input(s.now, Input::Frame(frame(1, 1000)));
    s.connect(true);
    assert_eq!(s.drops(DropReason::Disconnected), 2, "the queued group is dropped");
    // The camera's next frame is the keyframe asked for; it starts the tunnel.
    s.run(MS);
    assert_eq!(s.received, ["H", "K0"]);
    assert_eq!(s.drops(DropReason::Disconnected), 2);
}

#[test]
fn a_stalled_receiver_is_pinged_then_declared_dead() {
    let mut s = Sim::new();
    s.ack_delay = None;
    s.connect(false);
    s.run(2900 * MS);
    assert_eq!(s.pings(), 2);
    assert_eq!(s.closed, None);
    s.run(100 * MS);
    assert_eq!(s.closed, Some(TunnelEnd::Silent(3000 * MS)));
    assert!(!s.up.is_connected());
    assert!(s.closed.as_ref().is_some_and(TunnelEnd::is_link_loss));
}

#[test]
fn partial_reads_keep_the_receiver_alive() {
    let mut s = Sim::new();
    s.ack_delay = None;
    s.connect(false);
    for _ in 0..10 {
        s.run(1000 * MS);
        s.up.handle_input(s.now, Input::Read);
    }
    assert_eq!(s.closed, None, "a large message still being read is traffic");
}

#[test]
fn a_path_that_stops_acknowledging_closes_the_gate_and_frames_age_at_the_edge() {
    let mut s = Sim::new();
    s.connect(false);
    s.run(400 * MS);
    s.ack_delay = None;
    s.path.clear();
    // Unacknowledged for 100 ms of slack + 150 ms of limit: the gate closes.
    s.run(1500 * MS);
    let sent: Vec<u64> = s.received[1..].iter().map(|f| f[1..].parse().unwrap()).collect();
    let last_sent = *sent.last().unwrap();
    assert!((15..=17).contains(&last_sent), "sending stopped about 250 ms after the path did, at {last_sent}");
    assert!(!s.up.can_transmit(s.now));
    // Waiting frames raise the level: 1.2 s of queue is past both thresholds.
    assert_eq!(s.up.level(), CongestionLevel::DropGop);
    // The path delivers again: the next Feedback opens the gate; what waited longer than the
    // frame age limit is dropped, and sending resumes at a keyframe.
    s.ack_delay = Some(20 * MS);
    s.up.handle_input(s.now, Input::Received(Message::Feedback(Feedback { last_seq: last_sent, frames: 0, bytes: 0 })));
    s.run(MS);
    let resumed = &s.received[sent.len() + 1];
    assert!(resumed.starts_with('K'), "resumes at a keyframe, not {resumed}");
    assert!(s.drops(DropReason::CongestionGop) + s.drops(DropReason::Stale) > 0);
}

#[test]
fn a_slow_path_sheds_non_reference_frames_and_recovers_gradually() {
    let mut s = Sim::new();
    s.connect(false);
    s.run(1000 * MS);
    // Acknowledgements now take 250 ms more than the base: the gate closes and opens with
    // each round of Feedback, frames wait at the edge, and the uplink sheds.
    s.ack_delay = Some(270 * MS);
    s.run(3000 * MS);
    assert_ne!(s.up.level(), CongestionLevel::Clear);
    assert!(s.drops(DropReason::CongestionNonReference) > 0, "{:?}", s.up.drops());
    let received = s.received.len();
    assert!(received > 40, "the link still carries most of the picture: {received}");
    // The path clears; the level falls one step per two clear seconds, never at once.
    s.ack_delay = Some(20 * MS);
    let mut levels = vec![s.up.level()];
    for _ in 0..60 {
        s.run(100 * MS);
        if levels.last() != Some(&s.up.level()) {
            levels.push(s.up.level());
        }
    }
    let expected: &[CongestionLevel] = if levels[0] == CongestionLevel::DropGop {
        &[CongestionLevel::DropGop, CongestionLevel::DropNonReference, CongestionLevel::Clear]
    } else {
        &[CongestionLevel::DropNonReference, CongestionLevel::Clear]
    };
    assert_eq!(levels, expected);
}

#[test]
fn a_narrow_link_is_held_to_the_window_not_buffered_on_the_path() {
    let mut s = Sim::new();
    // 40 kB frames at 25 fps (8 Mbit/s) into a 2 Mbit/s link: the window is cut, and what
    // is on the path stays a few frames while the rest waits, and is shed, at the edge.
    s.frame_bytes = 40_000;
    s.rate = Some(250_000);
    s.connect(false);
    let mut most_on_path = 0;
    for _ in 0..100 {
        s.run(50 * MS);
        most_on_path = most_on_path.max(s.path.len());
    }
    let sent = s.received.len() - 1;
    assert!(sent < 60, "{sent} frames went out of 125");
    assert!(s.up.window_bytes() < window::INITIAL_WINDOW, "window {}", s.up.window_bytes());
    assert!(most_on_path <= 8, "{most_on_path} frames on the path");
    assert!(s.drops(DropReason::CongestionGop) + s.drops(DropReason::CongestionNonReference) > 0);
}

#[test]
fn the_receiver_ends_the_tunnel_with_goodbye_or_an_error() {
    let mut s = Sim::new();
    s.connect(false);
    s.up.handle_input(s.now, Input::Received(Message::Ping { id: 7 }));
    assert_eq!(s.up.poll_output(), Some(Output::Control(Message::Pong { id: 7 })));
    s.up.handle_input(s.now, Input::Received(Message::GoAway { reason: "draining".into() }));
    assert_eq!(s.up.poll_output(), Some(Output::Close(TunnelEnd::GoAway("draining".into()))));
    assert!(!s.up.is_connected());
    s.connect(false);
    let e = ErrorMsg { code: ErrorCode::UnknownSession, session: 1, message: "gone".into() };
    s.up.handle_input(s.now, Input::Received(Message::Error(e)));
    let end = TunnelEnd::Refused { code: ErrorCode::UnknownSession, message: "gone".into() };
    assert_eq!(s.up.poll_output(), Some(Output::Close(end)));
    s.connect(false);
    s.up.handle_input(s.now, Input::Received(Message::RemoveVideo { session: 1, stream: "x".into() }));
    assert_eq!(s.up.poll_output(), Some(Output::Close(TunnelEnd::Unexpected("RemoveVideo"))));
}

#[test]
fn frames_larger_than_the_receiver_takes_are_dropped_and_counted() {
    let mut s = Sim::new();
    s.up.handle_input(s.now, Input::Connected { max_frame_bytes: 5000, fresh_keyframe: false });
    s.frame_bytes = 6000;
    s.run(200 * MS);
    assert_eq!(s.received, ["H"]);
    assert_eq!(s.drops(DropReason::TooLarge), 6, "frames 0..=5");
}

#[test]
fn the_receivers_keyframe_requests_reach_the_source_at_most_once_a_second() {
    let mut s = Sim::new();
    s.connect(false);
    s.run(100 * MS);
    assert!(s.keyframes_asked.is_empty(), "a clear link asks for nothing");
    let asked = s.now;
    s.up.handle_input(s.now, Input::Received(Message::KeyframeRequest));
    s.run(MS);
    assert_eq!(s.keyframes_asked, [asked + MS], "passed on at the next step");
    s.up.handle_input(s.now, Input::Received(Message::KeyframeRequest));
    s.run(998 * MS);
    s.up.handle_input(s.now, Input::Received(Message::KeyframeRequest));
    s.run(MS);
    assert_eq!(s.keyframes_asked.len(), 1, "requests within a second of the last are folded into it");
    s.up.handle_input(s.now, Input::Received(Message::KeyframeRequest));
    s.run(MS);
    assert_eq!(s.keyframes_asked.len(), 2);
    assert_eq!(s.closed, None, "a keyframe request is not a protocol error");
}

#[test]
fn a_chain_broken_by_a_full_queue_or_stale_frames_asks_the_source_for_a_keyframe() {
    let mut s = Sim::new();
    s.up = Uplink::new(UplinkConfig { outbox: OutboxConfig { max_frames: 4, max_bytes: 8 << 20 }, ..config() });
    s.up.handle_input(s.now, Input::Header(header()));
    // The path stops acknowledging: the gate closes, the queue fills and drops a reference
    // frame, which breaks the chain until the next keyframe.
    s.connect(false);
    s.run(400 * MS);
    s.ack_delay = None;
    s.path.clear();
    s.run(1500 * MS);
    assert!(s.drops(DropReason::QueueFull) + s.drops(DropReason::Stale) > 0, "{:?}", s.up.drops());
    assert!(!s.keyframes_asked.is_empty(), "the source is asked for the keyframe the chain waits for");
    let gaps: Vec<Duration> = s.keyframes_asked.windows(2).map(|w| w[1] - w[0]).collect();
    // (Seen when the next step polls, up to a step after the uplink decided.)
    assert!(gaps.iter().all(|g| *g >= KEYFRAME_REQUEST_GAP - MS), "{gaps:?}");
}
