//! An uplink: one stream session's source and its data tunnel to the hub.
//!
//! Started on AddVideo, stopped on RemoveVideo. While the stream is wanted the source keeps
//! running and the tunnel is redialled whenever it breaks ([`crate::dial::connect`]). What to
//! send, drop and report is decided by the sans-IO [`mediamesh_tunnel::uplink::Uplink`] (the
//! queue keeps only the newest group of pictures while the tunnel is down and sheds load
//! codec-aware when it is congested); this task only moves frames, messages and timers. Sending
//! runs in its own task, so a slow link never stops the uplink from reading the hub's Pings
//! and Feedback or from dropping what has become stale.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mediamesh_tunnel::backoff::Backoff;
use mediamesh_tunnel::transport::Writer;
use mediamesh_tunnel::uplink::outbox::Outgoing;
use mediamesh_tunnel::uplink::{Input, Output, TunnelEnd, Uplink};
use mediamesh_tunnel::wire::{Channel, DropReason, ErrorCode, Message, SessionId, encoded};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::EdgeCtx;
use crate::config::StreamConfig;
use crate::dial::{Aim, DialError, EdgeLink, connect};
use crate::source::{self, SourceItem, SourceOutput};
use crate::stats::{SourceState, StreamStats};

/// How an uplink ended.
#[derive(Debug)]
pub enum UplinkEnd {
    /// RemoveVideo or shutdown.
    Stopped,
    /// The source failed; the hub should hear why.
    Failed(String),
    /// The hub ended the tunnel on purpose (GoAway, an Error, or a message out of place).
    Closed(TunnelEnd),
    /// The hub refused a new data tunnel: it no longer has the session, or the identity
    /// does not allow it.
    Refused(DialError),
}

impl std::fmt::Display for UplinkEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UplinkEnd::Stopped => f.write_str("stopped"),
            UplinkEnd::Failed(reason) => write!(f, "the source failed: {reason}"),
            UplinkEnd::Closed(end) => write!(f, "closed by the hub: {end}"),
            UplinkEnd::Refused(e) => write!(f, "the hub refused the data tunnel: {e}"),
        }
    }
}

/// How often the uplink reports to the hub.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

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
            let mut up = Driver::new(&ctx, session, &stream);
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
enum Pumped {
    /// The link broke; redial.
    Lost(String),
    /// The uplink is over.
    Done(UplinkEnd),
}

/// Moves one uplink's frames, messages and timers between its source, its tunnel and the
/// sans-IO [`Uplink`].
struct Driver<'a> {
    ctx: &'a EdgeCtx,
    stats: Arc<StreamStats>,
    session: SessionId,
    stream: &'a str,
    up: Uplink,
    /// Drops already added to the edge-wide counters.
    counted: [u64; DropReason::ALL.len()],
    /// Whether the source has produced a frame.
    delivered: bool,
}

impl<'a> Driver<'a> {
    fn new(ctx: &'a EdgeCtx, session: SessionId, stream: &'a str) -> Self {
        Self {
            ctx,
            stats: ctx.stats.stream(stream),
            session,
            stream,
            up: Uplink::new(ctx.uplink),
            counted: [0; DropReason::ALL.len()],
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
                let dialling = connect(
                    &self.ctx.dial,
                    Aim::Follow(&self.ctx.hub_address),
                    &channel,
                    &mut backoff,
                    &self.ctx.link_up,
                    &label,
                    is_final,
                    None,
                );
                tokio::pin!(dialling);
                loop {
                    tokio::select! {
                        r = &mut dialling => break r,
                        item = out.items.recv() => match item {
                            Some(item) => self.push(item),
                            None => return UplinkEnd::Failed(out.failure()),
                        },
                        () = cancel.cancelled() => return UplinkEnd::Stopped,
                    }
                }
            };
            let (link, welcome) = match attempt {
                Ok(x) => x,
                Err(e) => return UplinkEnd::Refused(e),
            };
            crate::stats::EdgeStats::inc(&self.ctx.stats.data_connects);
            self.stats.tunnel_connects.fetch_add(1, Relaxed);
            backoff.connected(Instant::now());
            let max_frame_bytes = welcome.max_frame_bytes;
            let fresh_keyframe = out.request_keyframe();
            self.up.handle_input(Instant::now(), Input::Connected { max_frame_bytes, fresh_keyframe });
            let connects = self.up.connects();
            info!(stream = %self.stream, session = self.session, connects, "data tunnel open");
            let end = self.pump(link, max_frame_bytes, out, cancel).await;
            self.up.handle_input(Instant::now(), Input::Disconnected);
            backoff.disconnected(Instant::now());
            self.count_drops();
            match end {
                Pumped::Done(end) => return end,
                Pumped::Lost(reason) => {
                    crate::stats::EdgeStats::inc(&self.ctx.stats.data_lost);
                    self.stats.tunnel_lost.fetch_add(1, Relaxed);
                    warn!(stream = %self.stream, session = self.session, %reason, "data tunnel lost; redialling");
                }
            }
        }
    }

    fn push(&mut self, item: SourceItem) {
        let now = Instant::now();
        match item {
            SourceItem::Header(h) => self.up.handle_input(now, Input::Header(h)),
            SourceItem::Frame(f) => {
                if !std::mem::replace(&mut self.delivered, true) {
                    // The source works: earlier failed starts no longer space out new ones.
                    self.ctx.starts().started(self.stream);
                    self.stats.set_state(SourceState::Running);
                }
                self.stats.frames_in.fetch_add(1, Relaxed);
                self.stats.bytes_in.fetch_add(f.payload.len() as u64, Relaxed);
                self.up.handle_input(now, Input::Frame(f));
            }
        }
        self.count_drops();
    }

    /// Adds the uplink's new drops to the edge-wide counters.
    fn count_drops(&mut self) {
        for (i, n) in self.up.drops().iter().enumerate() {
            if *n > self.counted[i] {
                self.ctx.stats.add_drop(DropReason::ALL[i], n - self.counted[i]);
                self.stats.add_drop(DropReason::ALL[i], n - self.counted[i]);
                if DropReason::ALL[i] == DropReason::TooLarge {
                    warn!(stream = %self.stream, dropped = n - self.counted[i], "frames larger than the hub accepts; dropped");
                }
                self.counted[i] = *n;
            }
        }
    }

    async fn pump(
        &mut self,
        mut link: EdgeLink,
        max_frame_bytes: u32,
        out: &mut SourceOutput,
        cancel: &CancellationToken,
    ) -> Pumped {
        link.set_limits(mediamesh_tunnel::wire::Limits { max_frame_bytes });
        let (tx, mut rx) = link.split();
        let mut writer = Writer::spawn(tx);
        loop {
            while let Some(o) = self.up.poll_output() {
                match o {
                    Output::Control(msg) => {
                        if let Message::UplinkReport(r) = &msg {
                            let now = Instant::now();
                            self.stats.queue_delay_us.store(self.up.queue_delay(now).as_micros() as u64, Relaxed);
                            self.stats.rtt_us.store(u64::from(r.rtt_us), Relaxed);
                        }
                        writer.control.send(encoded(&msg));
                    }
                    Output::WantKeyframe => {
                        out.request_keyframe();
                    }
                    Output::Close(end) if end.is_link_loss() => return Pumped::Lost(end.to_string()),
                    Output::Close(end) => {
                        return Pumped::Done(match end {
                            TunnelEnd::Unexpected(_) => UplinkEnd::Failed(end.to_string()),
                            end => UplinkEnd::Closed(end),
                        });
                    }
                }
            }
            let can_send = self.up.can_transmit(Instant::now());
            let deadline = self.up.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    writer.control.finish(Message::GoAway { reason: "stream stopped".into() }, &mut writer.task).await;
                    return Pumped::Done(UplinkEnd::Stopped);
                }
                r = &mut writer.task => return Pumped::Lost(r.unwrap_or_else(|e| format!("the writer failed: {e}"))),
                msg = rx.recv() => match msg {
                    Ok(Some(m)) => self.up.handle_input(Instant::now(), Input::Received(m)),
                    Ok(None) => return Pumped::Lost("the hub closed the connection".into()),
                    Err(e) => return Pumped::Lost(e.to_string()),
                },
                () = sleep => {
                    // A large message still being read counts as traffic.
                    self.up.handle_input(rx.last_read(), Input::Read);
                    self.up.handle_timeout(Instant::now());
                }
                item = out.items.recv() => match item {
                    Some(item) => self.push(item),
                    None => {
                        let reason = out.failure();
                        writer.control.finish(Message::EndOfStream { reason: reason.clone() }, &mut writer.task).await;
                        return Pumped::Done(UplinkEnd::Failed(reason));
                    }
                },
                permit = writer.data.reserve(), if can_send => {
                    let Ok(permit) = permit else { return Pumped::Lost("the writer stopped".into()) };
                    match self.up.poll_transmit(Instant::now()) {
                        Some(Outgoing::Header(h)) => permit.send(encoded(&Message::StreamHeader(h))),
                        Some(Outgoing::Frame(f)) => {
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
            }
        }
    }
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
