//! Relays: another hub of the cluster watching a stream of a node connected here.
//!
//! The other hub dials this hub's tunnel port with a hub's certificate and a relay Hello
//! naming the node and stream ([`mediamesh_tunnel::wire::Channel::Relay`]). This hub joins its
//! own session of the stream as one more viewer (so the edge sends one copy however many hubs
//! and viewers watch) and sends the stream as an edge's data tunnel would: StreamHeader when the
//! codec parameters change, then each frame as the edge sent it, capture time and sequence
//! number included. The other hub's session ingests it like a data tunnel
//! ([`crate::cluster::relay`]).
//!
//! A relay that falls behind is resynchronised at a keyframe under the same policy as every
//! viewer; one that keeps falling behind is sent GoAway, and the other hub dials again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mediamesh_tunnel::transport::{LinkReceiver, LinkSender};
use mediamesh_tunnel::wire::{ErrorCode, Message, encoded};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::listener::Remote;
use crate::session::log::{FrameFormat, HeaderEntry, LogEntry, Packaged, PerFrame};
use crate::session::{StreamKey, ViewerEnd};
use crate::tunnel::{TunnelCtx, TunnelLink, TunnelSettings};

/// What relays are counted and logged under, beside the viewer protocols.
pub const PROTOCOL: &str = "relay";

/// Most payload bytes taken from the log per batch.
const BATCH_BYTES: usize = 1024 * 1024;

/// The relay packaging of one stream: each frame's tunnel message, encoded once for every hub
/// that relays the stream.
#[derive(Debug, Default)]
pub struct RelayFormat;

impl FrameFormat for RelayFormat {
    type Out = Bytes;

    fn package(&mut self, entry: &LogEntry) -> Bytes {
        encoded(&Message::Frame(entry.frame.clone()))
    }
}

/// Serves a relay of `node`'s `stream` to the hub `hub` (as its Hello names it) until that hub
/// closes it, the link fails, or the stream ends.
pub(crate) async fn serve(
    ctx: Arc<TunnelCtx>,
    settings: Arc<TunnelSettings>,
    mut link: TunnelLink,
    hub: String,
    remote: Remote,
    node: String,
    stream: String,
) {
    // Only streams of nodes connected here: a relay of a relay could loop between hubs.
    if let Err(e) = ctx.registry.check_stream(&node, &stream) {
        info!(%hub, error = %e, "relay refused");
        link.fail(ErrorCode::UnknownStream, e.to_string()).await;
        return;
    }
    let key = StreamKey::new(node, stream);
    let mut viewer = match ctx.sessions.join(&key, PROTOCOL, remote) {
        Ok(v) => v,
        Err(refusal) => {
            warn!(%hub, stream = %key, %refusal, "relay refused");
            link.fail(ErrorCode::Internal, refusal.to_string()).await;
            return;
        }
    };
    if link.send(&settings.welcome()).await.is_err() {
        return;
    }
    info!(%hub, stream = %key, "relay opened");
    let (mut tx, rx) = link.split();
    // Pongs the reader wants sent; a full queue drops one, as a late Pong would be.
    let (pongs_tx, mut pongs) = mpsc::channel::<Message>(4);
    let reader = tokio::spawn(read_peer(rx, pongs_tx, settings.heartbeat.timeout));

    let session = viewer.session.clone();
    let packager = session.log.attach(|| PerFrame::new(RelayFormat));
    viewer.cursor = session.log.subscribe();
    let batch_bytes = BATCH_BYTES.min(ctx.sessions.config().log.viewer_max_lag_bytes);
    let mut batch: Vec<Arc<Packaged<Bytes>>> = Vec::new();
    let mut header: Option<Arc<HeaderEntry>> = None;
    let kick = viewer.stats.kick.clone();
    let reason = loop {
        batch.clear();
        let status = session.log.read_packaged(&packager, &mut viewer.cursor, batch_bytes, &mut batch);
        let pending: u64 = batch.iter().map(|p| p.entry.frame.payload.len() as u64).sum();
        if let Err(too_slow) = viewer.account_read(&status, pending) {
            tx.finish(&Message::GoAway { reason: too_slow.clone() }, "too slow").await;
            break too_slow;
        }
        if let Err(e) = send_batch(&mut tx, &batch, &mut header).await {
            viewer.set_end(ViewerEnd::Left);
            break e;
        }
        viewer.account_sent(batch.len() as u64, pending);
        if let Some(reason) = status.ended {
            // This hub going away does not end the stream: the other hub looks for the node
            // again (it falls back to another hub) while its viewers wait.
            let last = if ctx.shutdown.is_cancelled() {
                Message::GoAway { reason: "hub shutting down".into() }
            } else {
                Message::EndOfStream { reason: reason.to_string() }
            };
            tx.finish(&last, "stream ended").await;
            break format!("stream ended: {reason}");
        }
        if status.skipped == 0 && (batch.is_empty() || !status.more) {
            tokio::select! {
                biased;
                p = pongs.recv() => match p {
                    Some(pong) => if let Err(e) = tx.send(&pong).await {
                        break e.to_string();
                    },
                    // The reader ended: the other hub went away, or broke the protocol.
                    None => break reader.await.unwrap_or_else(|e| format!("the relay reader failed: {e}")),
                },
                changed = viewer.cursor.changed() => if !changed { break "session gone".to_owned() },
                () = kick.cancelled() => {
                    viewer.set_end(ViewerEnd::Kicked);
                    tx.finish(&Message::GoAway { reason: "disconnected by an operator".into() }, "kicked").await;
                    break "disconnected by an operator".to_owned();
                }
            }
        }
    };
    let frames = viewer.stats.frames.get();
    drop(viewer);
    drop(packager);
    info!(%hub, stream = %key, %reason, frames, "relay closed");
}

/// Sends a batch: the codec parameters when they change, then each frame's message.
async fn send_batch<S: AsyncRead + AsyncWrite + Unpin>(
    tx: &mut LinkSender<S>,
    batch: &[Arc<Packaged<Bytes>>],
    header: &mut Option<Arc<HeaderEntry>>,
) -> Result<(), String> {
    for p in batch {
        if !header.as_ref().is_some_and(|h| Arc::ptr_eq(h, &p.entry.header)) {
            let msg = Message::StreamHeader(p.entry.header.header.clone());
            tx.send(&msg).await.map_err(|e| e.to_string())?;
            *header = Some(p.entry.header.clone());
        }
        tx.send_raw(p.out.clone()).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Reads what the other hub sends on a relay: Pings (answered through `pongs`), Feedback,
/// and its GoAway. Returns why the relay is over; silence longer than `silence` is an end too
/// (the other hub pings every heartbeat interval).
async fn read_peer<S: AsyncRead + AsyncWrite + Unpin>(
    mut rx: LinkReceiver<S>,
    pongs: mpsc::Sender<Message>,
    silence: Duration,
) -> String {
    loop {
        let msg = match tokio::time::timeout(silence, rx.recv()).await {
            Err(_) => return format!("no traffic from the other hub for {:.1} s", silence.as_secs_f64()),
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return "the other hub closed the relay".into(),
            Ok(Err(e)) => return e.to_string(),
        };
        match msg {
            Message::Ping { id } => {
                let _ = pongs.try_send(Message::Pong { id });
            }
            Message::Pong { .. } | Message::Feedback(_) => {}
            Message::GoAway { reason } => return format!("the other hub closed the relay: {reason}"),
            Message::Error(e) => return format!("the other hub failed ({}): {}", e.code, e.message),
            other => return format!("{} is not allowed from the receiving end of a relay", other.name()),
        }
    }
}
