//! The sending side of a data tunnel, without I/O or a clock: what an edge's uplink does, and
//! what a hub does when it relays a stream to another hub.
//!
//! [`Uplink`] owns the frames waiting to go ([`outbox`]), the shedding level ([`congestion`]),
//! how much may be on the path ([`window`]) and the tunnel's heartbeat. A driver feeds it
//! with [`Uplink::handle_input`] (frames from the source, messages from the receiver, the
//! tunnel coming and going), asks [`Uplink::poll_output`] for control messages and for the
//! end of the tunnel, takes media with [`Uplink::poll_transmit`] whenever its writer has room,
//! and sleeps until [`Uplink::poll_timeout`] or the next input.
//!
//! Only Feedback (an input) opens a closed gate or a full window: time alone makes frames
//! older, never sendable. So the driver need not poll while frames wait; timeouts are the
//! heartbeat's and the report's.

pub mod congestion;
pub mod outbox;
pub mod window;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use mediamesh_media::{Frame, StreamHeader};

use self::congestion::{Congestion, CongestionConfig, PathEstimator};
use self::outbox::{Outbox, OutboxConfig, Outgoing};
use self::window::SendWindow;
use crate::liveness::{Heartbeat, HeartbeatAction, HeartbeatConfig};
use crate::wire::{CongestionLevel, DropReason, ErrorCode, Message, UplinkReport};

/// Settings of an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkConfig {
    /// Bounds of the queue.
    pub outbox: OutboxConfig,
    /// Shedding thresholds and the path gate.
    pub congestion: CongestionConfig,
    /// Ping schedule and dead-peer timeout of each tunnel.
    pub heartbeat: HeartbeatConfig,
    /// How often an [`UplinkReport`] goes to the receiver.
    pub report_interval: Duration,
}

/// What happened, as the driver saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The source's codec parameters changed (or are first known).
    Header(StreamHeader),
    /// The source produced a frame.
    Frame(Frame),
    /// A tunnel is up. `max_frame_bytes` is the receiver's limit from its Welcome;
    /// `fresh_keyframe` says the source was asked for a keyframe and will make one soon.
    Connected {
        /// The largest frame payload the receiver accepts.
        max_frame_bytes: u32,
        /// The source makes a keyframe on request, and was asked.
        fresh_keyframe: bool,
    },
    /// The link read bytes (perhaps part of a message): the receiver is alive.
    Read,
    /// A whole message arrived from the receiver.
    Received(Message),
    /// The tunnel is gone; frames wait for the next one.
    Disconnected,
}

/// What the driver should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this control message ahead of any waiting media.
    Control(Message),
    /// Close the tunnel: it is over for this reason.
    Close(TunnelEnd),
    /// Ask the source for a keyframe: the receiver asked for one, or the queue broke the
    /// picture chain (at most one per [`KEYFRAME_REQUEST_GAP`]).
    WantKeyframe,
}

/// The shortest time between two keyframe requests to the source.
pub const KEYFRAME_REQUEST_GAP: Duration = Duration::from_secs(1);

/// Why a tunnel ended, as the uplink decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Nothing arrived from the receiver for this long: the link is dead; redial.
    Silent(Duration),
    /// The receiver said goodbye.
    GoAway(String),
    /// The receiver reported an error and closed the tunnel.
    Refused {
        /// Its code.
        code: ErrorCode,
        /// Its text.
        message: String,
    },
    /// The receiver sent a message that has no place on a data tunnel.
    Unexpected(&'static str),
}

impl TunnelEnd {
    /// Whether the tunnel's loss is the link's (redial) rather than the receiver's decision.
    pub fn is_link_loss(&self) -> bool {
        matches!(self, TunnelEnd::Silent(_))
    }
}

impl fmt::Display for TunnelEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelEnd::Silent(d) => write!(f, "no traffic from the receiver for {:.1} s", d.as_secs_f64()),
            TunnelEnd::GoAway(reason) => write!(f, "the receiver said goodbye: {reason}"),
            TunnelEnd::Refused { code, message } => write!(f, "{code}: {message}"),
            TunnelEnd::Unexpected(name) => write!(f, "unexpected {name} on a data tunnel"),
        }
    }
}

/// One connected tunnel's state.
#[derive(Debug)]
struct Connection {
    heartbeat: Heartbeat,
    max_frame: usize,
    next_report: Instant,
}

/// The sending side of one stream's data tunnels.
#[derive(Debug)]
pub struct Uplink {
    config: UplinkConfig,
    outbox: Outbox,
    congestion: Congestion,
    path: PathEstimator,
    window: SendWindow,
    conn: Option<Connection>,
    outputs: VecDeque<Output>,
    /// Frames larger than the receiver accepts, dropped at sending.
    too_large: u64,
    connects: u32,
    srtt: Option<Duration>,
    /// When the source was last asked for a keyframe.
    keyframe_asked: Option<Instant>,
}

impl Uplink {
    /// An uplink with nothing queued and no tunnel.
    pub fn new(config: UplinkConfig) -> Self {
        Self {
            config,
            outbox: Outbox::new(config.outbox),
            congestion: Congestion::new(config.congestion),
            path: PathEstimator::default(),
            window: SendWindow::default(),
            conn: None,
            outputs: VecDeque::new(),
            too_large: 0,
            connects: 0,
            srtt: None,
            keyframe_asked: None,
        }
    }

    /// Feeds what happened at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Header(h) => self.outbox.push_header(h),
            Input::Frame(f) => self.outbox.push_frame(now, f, self.conn.is_some()),
            Input::Connected { max_frame_bytes, fresh_keyframe } => {
                self.connects += 1;
                // The new tunnel starts with the header and a keyframe, as fresh as can be had.
                self.outbox.reconnected(fresh_keyframe);
                self.congestion.reset();
                self.path.reset();
                self.window.reset();
                self.outputs.clear();
                self.conn = Some(Connection {
                    heartbeat: Heartbeat::new(now, self.config.heartbeat),
                    max_frame: max_frame_bytes as usize,
                    next_report: now,
                });
            }
            Input::Disconnected => {
                self.conn = None;
                self.outputs.clear();
            }
            Input::Read => {
                // `now` is when the bytes were read, perhaps before the last input.
                if let Some(c) = &mut self.conn {
                    c.heartbeat.on_receive(now);
                }
                return;
            }
            Input::Received(msg) => self.on_message(now, msg),
        }
        self.update(now);
    }

    fn on_message(&mut self, now: Instant, msg: Message) {
        let Some(c) = &mut self.conn else { return };
        c.heartbeat.on_receive(now);
        match msg {
            Message::Ping { id } => self.outputs.push_back(Output::Control(Message::Pong { id })),
            Message::Pong { id } => {
                c.heartbeat.on_pong(now, id);
                self.srtt = c.heartbeat.srtt();
            }
            Message::Feedback(fb) => {
                let in_flight = self.path.in_flight();
                let acked = self.path.on_feedback(fb.last_seq, now);
                let clear = self.path.excess(now) < self.congestion.config().clear_below;
                self.window.on_ack(acked, in_flight, clear);
            }
            Message::GoAway { reason } => self.close(TunnelEnd::GoAway(reason)),
            Message::Error(e) => self.close(TunnelEnd::Refused { code: e.code, message: e.message }),
            Message::KeyframeRequest => self.want_keyframe(now),
            other => self.close(TunnelEnd::Unexpected(other.name())),
        }
    }

    /// Asks the source for a keyframe, unless it was asked less than
    /// [`KEYFRAME_REQUEST_GAP`] ago.
    fn want_keyframe(&mut self, now: Instant) {
        if self.keyframe_asked.is_some_and(|t| now < t + KEYFRAME_REQUEST_GAP) {
            return;
        }
        self.keyframe_asked = Some(now);
        self.outputs.push_back(Output::WantKeyframe);
    }

    fn close(&mut self, end: TunnelEnd) {
        self.outputs.push_back(Output::Close(end));
        self.conn = None;
    }

    /// Lets time pass to `now`: Pings, the report, a dead receiver.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.update(now);
        let Some(c) = &mut self.conn else { return };
        match c.heartbeat.poll(now) {
            HeartbeatAction::SendPing { id } => self.outputs.push_back(Output::Control(Message::Ping { id })),
            HeartbeatAction::Dead { silent_for } => return self.close(TunnelEnd::Silent(silent_for)),
            HeartbeatAction::Wait => {}
        }
        if now >= c.next_report {
            c.next_report = now + self.config.report_interval;
            let report = self.report(now);
            self.outputs.push_back(Output::Control(Message::UplinkReport(report)));
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Uplink::handle_timeout`] next has something to do; `None` without a tunnel.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let c = self.conn.as_ref()?;
        Some(c.heartbeat.next_deadline().min(c.next_report))
    }

    /// Whether [`Uplink::poll_transmit`] would hand out media at `now`: a tunnel is up, the
    /// path is not queueing, and the next frame fits the window.
    pub fn can_transmit(&mut self, now: Instant) -> bool {
        if self.conn.is_none() {
            return false;
        }
        self.update(now);
        self.path.excess(now) <= self.config.congestion.path_delay_limit
            && self.outbox.front_bytes().is_some_and(|b| self.window.allows(self.path.in_flight(), b))
    }

    /// The next media message for the tunnel, dropping on the way what the level and age rule
    /// out. Call it when the writer can take a message; `None` when nothing may go now.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Outgoing> {
        if !self.can_transmit(now) {
            return None;
        }
        let max_frame = self.conn.as_ref()?.max_frame;
        let level = self.congestion.level();
        loop {
            match self.outbox.pop(now, level, self.config.congestion.max_frame_age)? {
                Outgoing::Frame(f) if f.payload.len() > max_frame => self.too_large += 1,
                Outgoing::Frame(f) => {
                    self.path.on_sent(f.seq, f.payload.len(), now);
                    return Some(Outgoing::Frame(f));
                }
                header => return Some(header),
            }
        }
    }

    /// Re-evaluates the level and the window for the delays at `now`.
    fn update(&mut self, now: Instant) {
        if self.conn.is_none() {
            return;
        }
        // A chain broken by a full queue or stale frames recovers at the next keyframe: ask for
        // it now rather than wait out the group of pictures. Not while shedding whole groups
        // (keyframes are all that goes then, and more of them would add to the congestion), nor
        // after a reconnect (the driver asked already, when the source makes keyframes at all).
        if self.outbox.broken().is_some_and(|r| matches!(r, DropReason::AwaitingKeyframe | DropReason::Stale)) {
            self.want_keyframe(now);
        }
        let path_delay = self.path.excess(now);
        let delay = self.outbox.head_age(now).max(path_delay);
        self.congestion.update(now, delay);
        let limit = self.config.congestion.path_delay_limit;
        self.window.on_delay(now, path_delay, limit, self.path.base(), self.path.in_flight());
    }

    /// What the uplink reports to the receiver.
    pub fn report(&self, now: Instant) -> UplinkReport {
        let drops = DropReason::ALL.iter().zip(self.drops()).filter(|(_, n)| *n > 0).map(|(r, n)| (*r, n)).collect();
        UplinkReport {
            queue_frames: u32::try_from(self.outbox.frames()).unwrap_or(u32::MAX),
            queue_bytes: self.outbox.bytes() as u64,
            queue_delay_ms: millis(self.outbox.head_age(now)),
            path_delay_ms: millis(self.path.excess(now)),
            rtt_us: self.srtt.map_or(0, |d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX)),
            level: self.congestion.level(),
            connects: self.connects,
            drops,
        }
    }

    /// Frames dropped since the uplink started, by reason ([`DropReason::ALL`] order).
    pub fn drops(&self) -> [u64; DropReason::ALL.len()] {
        let mut d = *self.outbox.drops();
        d[DropReason::TooLarge.index()] += self.too_large;
        d
    }

    /// How long the oldest waiting frame has waited.
    pub fn queue_delay(&self, now: Instant) -> Duration {
        self.outbox.head_age(now)
    }

    /// Smoothed round trip of the tunnels' Ping/Pong, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The shedding level.
    pub fn level(&self) -> CongestionLevel {
        self.congestion.level()
    }

    /// Bytes the window allows on the path.
    pub fn window_bytes(&self) -> usize {
        self.window.bytes()
    }

    /// Tunnels connected so far.
    pub fn connects(&self) -> u32 {
        self.connects
    }

    /// Whether a tunnel is up.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
