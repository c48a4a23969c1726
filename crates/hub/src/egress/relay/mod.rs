//! Relays: another hub of the cluster watching a stream of a node connected here.
//!
//! The other hub dials this hub's tunnel port with a hub's certificate and a relay Hello
//! naming the node and stream ([`mediamesh_tunnel::wire::Channel::Relay`]). This hub joins its
//! own session of the stream as one more viewer (so the edge sends one copy however many hubs
//! and viewers watch) and sends the stream as an edge's uplink does, through the same sans-IO
//! [`Uplink`]: StreamHeader when the codec parameters change, then each frame as the edge sent
//! it (capture time included; the sequence numbers are the relay's own), with the uplink's
//! heartbeat, reports, send
//! window and codec-aware shedding when the path to the other hub is congested. The other hub
//! ingests it like a data tunnel and answers with Feedback ([`crate::cluster::relay`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mediamesh_tunnel::transport::Writer;
use mediamesh_tunnel::uplink::outbox::{OutboxConfig, Outgoing};
use mediamesh_tunnel::uplink::{Input, Output, Uplink, UplinkConfig};
use mediamesh_tunnel::wire::{ErrorCode, Message, encoded};
use tracing::{debug, info, warn};

use crate::listener::Remote;
use crate::session::log::{HeaderEntry, LogEntry};
use crate::session::{Session, StreamKey, ViewerEnd};
use crate::tunnel::{TunnelCtx, TunnelLink, TunnelSettings};

/// What relays are counted and logged under, beside the viewer protocols.
pub const PROTOCOL: &str = "relay";

/// Most payload bytes taken from the log per read.
const BATCH_BYTES: usize = 1024 * 1024;
/// The relay's queue: as an edge's by default (`uplinkQueueFrames`, `uplinkQueueBytes`).
const QUEUE: OutboxConfig = OutboxConfig { max_frames: 128, max_bytes: 8 * 1024 * 1024 };
/// How often the relay reports its queue and shedding to the other hub.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The hub at the other end of a relay.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Its name, as its Hello says.
    pub hub: String,
    /// Its address.
    pub remote: Remote,
    /// The protocol version the relay speaks.
    pub version: u16,
}

/// Serves a relay of `node`'s `stream` to the hub `peer` until that hub closes it, the link
/// fails, or the stream ends.
pub(crate) async fn serve(
    ctx: Arc<TunnelCtx>,
    settings: Arc<TunnelSettings>,
    mut link: TunnelLink,
    peer: Peer,
    node: String,
    stream: String,
) {
    let Peer { hub, remote, version } = peer;
    // Only streams of nodes connected here: a relay of a relay could loop between hubs.
    if let Err(e) = ctx.registry.check_stream(&node, &stream) {
        info!(%hub, error = %e, "relay refused");
        link.fail(ErrorCode::UnknownStream, e.to_string()).await;
        return;
    }
    let key = StreamKey::new(node, stream);
    // The edge just came here and the session still has the stream by relay, perhaps from the
    // very hub asking: relaying that back would make a loop. The asking hub retries; by then
    // the edge's data tunnel has replaced the relay.
    if ctx.sessions.get(&key).is_some_and(|s| s.fed_by_relay()) {
        info!(%hub, stream = %key, "relay refused for now: this hub's session of it is itself relayed");
        link.fail(ErrorCode::UnknownStream, format!("{key} is still relayed to this hub; retry")).await;
        return;
    }
    let mut viewer = match ctx.sessions.join(&key, PROTOCOL, remote) {
        Ok(v) => v,
        Err(refusal) => {
            warn!(%hub, stream = %key, %refusal, "relay refused");
            link.fail(ErrorCode::Internal, refusal.to_string()).await;
            return;
        }
    };
    if link.send(&settings.welcome(version)).await.is_err() {
        return;
    }
    info!(%hub, stream = %key, "relay opened");
    let config = UplinkConfig {
        outbox: QUEUE,
        congestion: Default::default(),
        heartbeat: settings.heartbeat,
        report_interval: REPORT_INTERVAL,
    };
    let mut up = Uplink::new(config);
    // Hubs of a cluster share their limits: the other hub takes what this one does.
    let max_frame_bytes = settings.limits.max_frame_bytes;
    up.handle_input(Instant::now(), Input::Connected { max_frame_bytes, fresh_keyframe: false });
    let (tx, mut rx) = link.split();
    let mut writer = Writer::spawn(tx);
    let session = viewer.session.clone();
    viewer.cursor = session.log.subscribe();
    let kick = viewer.stats.kick.clone();
    let mut batch: Vec<Arc<LogEntry>> = Vec::new();
    let mut header: Option<Arc<HeaderEntry>> = None;
    let mut caught_up = false;
    let mut next_seq = 0u64;
    let (mut frames, mut bytes) = (0u64, 0u64);
    let reason = loop {
        // Whatever the log has goes into the uplink's queue, which decides what to send.
        if !caught_up {
            batch.clear();
            let status = session.log.read(&mut viewer.cursor, BATCH_BYTES, &mut batch);
            if let Err(too_slow) = viewer.account_read(&status, 0) {
                writer.control.finish(Message::GoAway { reason: too_slow.clone() }, &mut writer.task).await;
                break too_slow;
            }
            let now = Instant::now();
            for e in &batch {
                if !header.as_ref().is_some_and(|h| Arc::ptr_eq(h, &e.header)) {
                    up.handle_input(now, Input::Header(e.header.header.clone()));
                    header = Some(e.header.clone());
                }
                // A relay numbers its own frames: the edge's numbers start again when this
                // hub's upstream changes (its edge moved), and the uplink's acknowledgements
                // need them to grow.
                let mut frame = e.frame.clone();
                frame.seq = next_seq;
                next_seq += 1;
                up.handle_input(now, Input::Frame(frame));
            }
            if let Some(ended) = status.ended {
                // This hub going away does not end the stream: the other hub looks for the
                // node again (its edge falls back to another hub) while its viewers wait.
                let last = if ctx.shutdown.is_cancelled() {
                    Message::GoAway { reason: "hub shutting down".into() }
                } else {
                    Message::EndOfStream { reason: ended.to_string() }
                };
                writer.control.finish(last, &mut writer.task).await;
                break format!("stream ended: {ended}");
            }
            caught_up = status.skipped == 0 && (batch.is_empty() || !status.more);
        }
        if let Some(end) = drain_outputs(&mut up, &writer, &session) {
            break end;
        }
        let can_send = up.can_transmit(Instant::now());
        let deadline = up.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = kick.cancelled() => {
                viewer.set_end(ViewerEnd::Kicked);
                writer.control.finish(Message::GoAway { reason: "disconnected by an operator".into() }, &mut writer.task).await;
                break "disconnected by an operator".to_owned();
            }
            r = &mut writer.task => {
                viewer.set_end(ViewerEnd::Left);
                break r.unwrap_or_else(|e| format!("the writer failed: {e}"));
            }
            msg = rx.recv() => match msg {
                Ok(Some(m)) => up.handle_input(Instant::now(), Input::Received(m)),
                Ok(None) => break "the other hub closed the relay".to_owned(),
                Err(e) => break e.to_string(),
            },
            () = sleep => {
                // A large message still being read counts as traffic.
                up.handle_input(rx.last_read(), Input::Read);
                up.handle_timeout(Instant::now());
            }
            changed = viewer.cursor.changed(), if caught_up => {
                if !changed {
                    break "session gone".to_owned();
                }
                caught_up = false;
            }
            permit = writer.data.reserve(), if can_send => {
                let Ok(permit) = permit else { break "the writer stopped".to_owned() };
                match up.poll_transmit(Instant::now()) {
                    Some(Outgoing::Header(h)) => permit.send(encoded(&Message::StreamHeader(h))),
                    Some(Outgoing::Frame(f)) => {
                        frames += 1;
                        bytes += f.payload.len() as u64;
                        viewer.account_sent(1, f.payload.len() as u64);
                        permit.send(encoded(&Message::Frame(f)));
                    }
                    None => {}
                }
            }
            // More waits in the log: read it rather than sleep.
            () = std::future::ready(()), if !caught_up => {}
        }
    };
    let dropped: u64 = up.drops().iter().sum();
    drop(viewer);
    info!(%hub, stream = %key, %reason, frames, bytes, dropped, "relay closed");
}

/// Sends the uplink's control messages (Pings, Pongs, reports) and passes its keyframe
/// requests on to this hub's session (and so to the edge); `Some` when it decided the relay is
/// over.
fn drain_outputs(up: &mut Uplink, writer: &Writer, session: &Session) -> Option<String> {
    while let Some(o) = up.poll_output() {
        match o {
            Output::Control(msg) => writer.control.send(encoded(&msg)),
            Output::WantKeyframe => {
                if session.keyframes.request(Instant::now()) {
                    debug!(stream = %session.key, "keyframe asked for by the relay");
                }
            }
            Output::Close(end) => {
                debug!(%end, "relay closed by the uplink");
                return Some(end.to_string());
            }
        }
    }
    None
}
