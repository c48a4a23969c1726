//! An uplink: one stream session's source and its data tunnel to the hub.
//!
//! Started on AddVideo, stopped on RemoveVideo. While the stream is wanted the source keeps
//! running and the tunnel is redialled whenever it breaks ([`crate::dial::connect`]); frames
//! wait in the [`Outbox`], which keeps only the newest group of pictures while the tunnel is
//! down and sheds load codec-aware when it is congested ([`crate::congestion`]). Sending runs
//! in its own task, so a slow link never stops the uplink from reading the hub's Pings and
//! Feedback or from dropping what has become stale.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mediamesh_tunnel::backoff::Backoff;
use mediamesh_tunnel::liveness::{Heartbeat, HeartbeatAction};
use mediamesh_tunnel::transport::LinkSender;
use mediamesh_tunnel::wire::{
    Channel, DropReason, ErrorCode, Limits, Message, SessionId, UplinkReport, Welcome, encoded,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::EdgeCtx;
use crate::config::StreamConfig;
use crate::congestion::{Congestion, PathEstimator};
use crate::dial::{DialError, EdgeLink, connect};
use crate::outbox::{Outbox, Outgoing};
use crate::source::{self, SourceItem, SourceOutput};
use crate::stats::{SourceState, StreamStats};
use crate::window::SendWindow;

/// How an uplink ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkEnd {
    /// RemoveVideo or shutdown.
    Stopped,
    /// The source failed; the hub should hear why.
    Failed(String),
    /// The hub ended it (it no longer has the session, or closed the tunnel on purpose).
    ClosedByHub(String),
}

impl std::fmt::Display for UplinkEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UplinkEnd::Stopped => f.write_str("stopped"),
            UplinkEnd::Failed(reason) => write!(f, "the source failed: {reason}"),
            UplinkEnd::ClosedByHub(reason) => write!(f, "closed by the hub: {reason}"),
        }
    }
}

/// How often the uplink reports to the hub.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a send held back by path delay is reconsidered (Feedback usually comes first).
const GATE_CHECK: Duration = Duration::from_millis(20);

pub(crate) async fn run(
    ctx: Arc<EdgeCtx>,
    session: SessionId,
    stream: String,
    cfg: StreamConfig,
    cancel: CancellationToken,
) -> UplinkEnd {
    let stats = ctx.stats.clone();
    let stream_stats = stats.stream(&stream);
    stats.uplinks_active.fetch_add(1, Relaxed);
    stream_stats.starts.fetch_add(1, Relaxed);
    stream_stats.set_state(SourceState::Starting);
    let (sink, mut output) = source::channel(ctx.uplink_queue_frames, stats.clone(), stream_stats.clone());
    let end = match source::start(&stream, &cfg, sink, stats.clone()) {
        Err(e) => UplinkEnd::Failed(e.to_string()),
        Ok(handle) => {
            let mut up = Uplink::new(&ctx, session, &stream);
            let end = up.run(&mut output, &cancel).await;
            drop(output);
            handle.stop().await;
            end
        }
    };
    stats.uplinks_active.fetch_sub(1, Relaxed);
    if let UplinkEnd::Failed(_) = &end {
        stream_stats.start_failures.fetch_add(1, Relaxed);
        stream_stats.set_state(SourceState::Failed);
    } else {
        stream_stats.set_state(SourceState::Idle);
    }
    stream_stats.queue_delay_us.store(0, Relaxed);
    stream_stats.rtt_us.store(0, Relaxed);
    info!(%stream, session, %end, "uplink ended");
    end
}

/// Why a connected tunnel ended.
enum TunnelEnd {
    /// The link broke; redial.
    Lost(String),
    /// The uplink is over.
    Done(UplinkEnd),
}

struct Uplink<'a> {
    ctx: &'a EdgeCtx,
    stats: Arc<StreamStats>,
    session: SessionId,
    stream: &'a str,
    outbox: Outbox,
    congestion: Congestion,
    path: PathEstimator,
    window: SendWindow,
    /// Drops already added to the edge-wide counters.
    counted: [u64; DropReason::ALL.len()],
    connects: u32,
    srtt: Option<Duration>,
    /// Whether the source has produced a frame.
    delivered: bool,
}

impl<'a> Uplink<'a> {
    fn new(ctx: &'a EdgeCtx, session: SessionId, stream: &'a str) -> Self {
        Self {
            ctx,
            stats: ctx.stats.stream(stream),
            session,
            stream,
            outbox: Outbox::new(ctx.outbox),
            congestion: Congestion::new(ctx.congestion),
            path: PathEstimator::default(),
            window: SendWindow::default(),
            counted: [0; DropReason::ALL.len()],
            connects: 0,
            srtt: None,
            delivered: false,
        }
    }

    async fn run(&mut self, out: &mut SourceOutput, cancel: &CancellationToken) -> UplinkEnd {
        let seed = self.session ^ crate::source::unix_micros();
        let mut backoff = Backoff::new(self.ctx.backoff, seed);
        let channel = Channel::Data { session: self.session, stream: self.stream.to_owned() };
        let label = format!("data {}", self.stream);
        loop {
            let attempt = {
                let dialling =
                    connect(&self.ctx.dial, &channel, &mut backoff, &self.ctx.link_up, &label, is_final, None);
                tokio::pin!(dialling);
                loop {
                    tokio::select! {
                        r = &mut dialling => break r,
                        item = out.items.recv() => match item {
                            Some(item) => self.push(item, false),
                            None => return UplinkEnd::Failed(out.failure()),
                        },
                        () = cancel.cancelled() => return UplinkEnd::Stopped,
                    }
                }
            };
            let (link, welcome) = match attempt {
                Ok(x) => x,
                Err(e) => return UplinkEnd::ClosedByHub(format!("the hub refused the data tunnel: {e}")),
            };
            self.connects += 1;
            crate::stats::EdgeStats::inc(&self.ctx.stats.data_connects);
            self.stats.tunnel_connects.fetch_add(1, Relaxed);
            backoff.connected(Instant::now());
            info!(stream = %self.stream, session = self.session, connects = self.connects, "data tunnel open");
            // The new tunnel starts with the header and a keyframe, as fresh as can be had.
            self.outbox.reconnected(out.request_keyframe());
            self.congestion.reset();
            self.path.reset();
            self.window.reset();
            let end = self.pump(link, &welcome, out, cancel).await;
            backoff.disconnected(Instant::now());
            self.count_drops();
            match end {
                TunnelEnd::Done(end) => return end,
                TunnelEnd::Lost(reason) => {
                    crate::stats::EdgeStats::inc(&self.ctx.stats.data_lost);
                    self.stats.tunnel_lost.fetch_add(1, Relaxed);
                    warn!(stream = %self.stream, session = self.session, %reason, "data tunnel lost; redialling");
                }
            }
        }
    }

    fn push(&mut self, item: SourceItem, connected: bool) {
        match item {
            SourceItem::Header(h) => self.outbox.push_header(h),
            SourceItem::Frame(f) => {
                if !std::mem::replace(&mut self.delivered, true) {
                    // The source works: earlier failed starts no longer space out new ones.
                    self.ctx.starts().started(self.stream);
                    self.stats.set_state(SourceState::Running);
                }
                self.stats.frames_in.fetch_add(1, Relaxed);
                self.stats.bytes_in.fetch_add(f.payload.len() as u64, Relaxed);
                self.outbox.push_frame(Instant::now(), f, connected);
            }
        }
        self.count_drops();
    }

    /// Adds the outbox's new drops to the edge-wide counters.
    fn count_drops(&mut self) {
        for (i, n) in self.outbox.drops().iter().enumerate() {
            if *n > self.counted[i] {
                self.ctx.stats.add_drop(DropReason::ALL[i], n - self.counted[i]);
                self.stats.add_drop(DropReason::ALL[i], n - self.counted[i]);
                self.counted[i] = *n;
            }
        }
    }

    async fn pump(
        &mut self,
        mut link: EdgeLink,
        welcome: &Welcome,
        out: &mut SourceOutput,
        cancel: &CancellationToken,
    ) -> TunnelEnd {
        link.set_limits(Limits { max_frame_bytes: welcome.max_frame_bytes });
        let max_frame = welcome.max_frame_bytes as usize;
        let (tx, mut rx) = link.split();
        // One message may wait for the writer; the rest wait in the outbox, where they can
        // still be dropped.
        let (data_tx, data_rx) = mpsc::channel::<Bytes>(1);
        let (ctrl_tx, ctrl_rx) = mpsc::channel::<Control>(8);
        let mut writer = tokio::spawn(write(tx, data_rx, ctrl_rx));
        let mut hb = Heartbeat::new(Instant::now(), self.ctx.heartbeat);
        let mut report = tokio::time::interval(REPORT_INTERVAL);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_age = self.congestion.config().max_frame_age;
        let path_limit = self.congestion.config().path_delay_limit;
        let mut gate = tokio::time::interval(GATE_CHECK);
        gate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            let now = Instant::now();
            let path_delay = self.path.excess(now);
            let delay = self.outbox.head_age(now).max(path_delay);
            let level = self.congestion.update(now, delay);
            self.window.on_delay(now, path_delay, path_limit, self.path.base(), self.path.in_flight());
            // While the path is queueing, or as much is on it as the window allows, frames wait
            // here, where they can still be dropped.
            let can_send = path_delay <= path_limit
                && self.outbox.front_bytes().is_some_and(|b| self.window.allows(self.path.in_flight(), b));
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    finish(&ctrl_tx, &mut writer, Message::GoAway { reason: "stream stopped".into() }).await;
                    return TunnelEnd::Done(UplinkEnd::Stopped);
                }
                r = &mut writer => break TunnelEnd::Lost(r.unwrap_or_else(|e| format!("the writer failed: {e}"))),
                msg = rx.recv() => {
                    if let Some(end) = self.on_message(msg, &mut hb, &ctrl_tx) {
                        break end;
                    }
                }
                () = tokio::time::sleep_until(hb.next_deadline().into()) => {
                    hb.on_receive(rx.last_read());
                    match hb.poll(Instant::now()) {
                        HeartbeatAction::SendPing { id } => {
                            let _ = ctrl_tx.try_send(Control::Send(encoded(&Message::Ping { id })));
                        }
                        HeartbeatAction::Dead { silent_for } => {
                            break TunnelEnd::Lost(format!("no traffic from the hub for {:.1} s", silent_for.as_secs_f64()));
                        }
                        HeartbeatAction::Wait => {}
                    }
                }
                item = out.items.recv() => match item {
                    Some(item) => self.push(item, true),
                    None => {
                        let reason = out.failure();
                        finish(&ctrl_tx, &mut writer, Message::EndOfStream { reason: reason.clone() }).await;
                        return TunnelEnd::Done(UplinkEnd::Failed(reason));
                    }
                },
                permit = data_tx.reserve(), if can_send => {
                    let Ok(permit) = permit else { break TunnelEnd::Lost("the writer stopped".into()) };
                    match self.outbox.pop(Instant::now(), level, max_age) {
                        Some(Outgoing::Header(h)) => permit.send(encoded(&Message::StreamHeader(h))),
                        Some(Outgoing::Frame(f)) if f.payload.len() > max_frame => {
                            warn!(stream = %self.stream, bytes = f.payload.len(), cap = max_frame, "frame larger than the hub accepts; dropped");
                            self.ctx.stats.add_drop(DropReason::TooLarge, 1);
                            self.stats.add_drop(DropReason::TooLarge, 1);
                        }
                        Some(Outgoing::Frame(f)) => {
                            self.path.on_sent(f.seq, f.payload.len(), Instant::now());
                            crate::stats::EdgeStats::inc(&self.ctx.stats.frames_sent);
                            self.ctx.stats.bytes_sent.fetch_add(f.payload.len() as u64, Relaxed);
                            self.stats.frames_out.fetch_add(1, Relaxed);
                            self.stats.bytes_out.fetch_add(f.payload.len() as u64, Relaxed);
                            permit.send(encoded(&Message::Frame(f)));
                        }
                        None => {}
                    }
                    self.count_drops();
                }
                // Re-evaluates the delays while frames wait for the path.
                _ = gate.tick(), if !can_send && !self.outbox.is_empty() => {}
                _ = report.tick() => {
                    let r = self.report(Instant::now());
                    let _ = ctrl_tx.try_send(Control::Send(encoded(&Message::UplinkReport(r))));
                }
            }
        };
        writer.abort();
        end
    }

    /// Handles a message from the hub; `Some` ends the tunnel.
    fn on_message(
        &mut self,
        msg: Result<Option<Message>, mediamesh_tunnel::transport::LinkError>,
        hb: &mut Heartbeat,
        ctrl: &mpsc::Sender<Control>,
    ) -> Option<TunnelEnd> {
        let now = Instant::now();
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => return Some(TunnelEnd::Lost("the hub closed the connection".into())),
            Err(e) => return Some(TunnelEnd::Lost(e.to_string())),
        };
        hb.on_receive(now);
        match msg {
            Message::Ping { id } => {
                let _ = ctrl.try_send(Control::Send(encoded(&Message::Pong { id })));
            }
            Message::Pong { id } => {
                hb.on_pong(now, id);
                self.srtt = hb.srtt();
            }
            Message::Feedback(fb) => {
                let in_flight = self.path.in_flight();
                let acked = self.path.on_feedback(fb.last_seq, now);
                let clear = self.path.excess(now) < self.congestion.config().clear_below;
                self.window.on_ack(acked, in_flight, clear);
                debug!(stream = %self.stream, last_seq = fb.last_seq, frames = fb.frames, "feedback");
            }
            Message::GoAway { reason } => return Some(TunnelEnd::Done(UplinkEnd::ClosedByHub(reason))),
            Message::Error(e) => {
                return Some(TunnelEnd::Done(UplinkEnd::ClosedByHub(format!("{}: {}", e.code, e.message))));
            }
            other => {
                return Some(TunnelEnd::Done(UplinkEnd::Failed(format!(
                    "unexpected {} on a data tunnel",
                    other.name()
                ))));
            }
        }
        None
    }

    fn report(&self, now: Instant) -> UplinkReport {
        self.stats.queue_delay_us.store(self.outbox.head_age(now).as_micros() as u64, Relaxed);
        self.stats.rtt_us.store(self.srtt.map_or(0, |d| d.as_micros() as u64), Relaxed);
        let drops =
            DropReason::ALL.iter().zip(self.outbox.drops()).filter(|(_, n)| **n > 0).map(|(r, n)| (*r, *n)).collect();
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
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Whether a data tunnel refusal is final: the hub no longer has the session (it restarted, or
/// the session ended while the edge was away), or the identity does not allow it.
fn is_final(e: &DialError) -> bool {
    matches!(
        e,
        DialError::Refused {
            code: ErrorCode::UnknownSession | ErrorCode::Unauthorized | ErrorCode::UnknownStream | ErrorCode::Protocol,
            ..
        }
    )
}

type Tx = LinkSender<TlsStream<TcpStream>>;

/// What the uplink asks its writer besides media.
enum Control {
    /// Send these encoded bytes before any waiting media.
    Send(Bytes),
    /// Send this last message, close, and stop.
    Finish(Message),
}

/// Sends control messages first, then media, until a write fails; returns why it stopped.
async fn write(mut tx: Tx, mut data: mpsc::Receiver<Bytes>, mut ctrl: mpsc::Receiver<Control>) -> String {
    loop {
        let next = tokio::select! {
            biased;
            c = ctrl.recv() => c,
            d = data.recv() => d.map(Control::Send),
        };
        match next {
            None => return "the uplink closed".into(),
            Some(Control::Send(b)) => {
                if let Err(e) = tx.send_raw(b).await {
                    return e.to_string();
                }
            }
            Some(Control::Finish(msg)) => {
                let reason = msg.name();
                tx.finish(&msg, reason).await;
                return "finished".into();
            }
        }
    }
}

/// Sends a last message through the writer and waits (briefly) for it to go out.
async fn finish(ctrl: &mpsc::Sender<Control>, writer: &mut tokio::task::JoinHandle<String>, last: Message) {
    if ctrl.send(Control::Finish(last)).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut *writer).await;
    }
    writer.abort();
}
