//! WebSocket viewers: `GET /api/v1/nodes/{node}/streams/{stream}/ws`, and the WebSocket serving
//! every format carried over one ([`Flavor`]: this viewer format, and MSE).
//!
//! The writer takes a batch of frames from the log and writes it with vectored writes: for each
//! frame, the shared prefix and the shared payload, so a burst costs one system call and no
//! copy. A reader task parses the client's few frames (ping, close) with a size cap.

pub mod format;
pub mod packager;
pub mod wire;

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use self::format::{ViewerEvent, event_frame, frame_slices};
use self::packager::{WsFormat, WsFrame};
use self::wire::ClientFrame;
use self::wire::{
    CLOSE_NORMAL, CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_SERVICE_RESTART, CLOSE_TOO_BIG, ClientFrameError, ClientFrames,
    OP_CLOSE, OP_PING, OP_PONG, close_frame, frame,
};
use super::io::{describe_write_error, write_all_vectored};
use super::mailbox::{Sender, mailbox};
use crate::session::log::{FrameFormat, HeaderEntry, Packaged, PerFrame};
use crate::session::{Sessions, StreamKey, Viewer, ViewerEnd};

/// A format sent to viewers over a WebSocket connection: what differs between them, the
/// serving loop ([`serve`]) being the same.
pub(crate) trait Flavor: FrameFormat {
    /// What the viewers are counted and logged under.
    const PROTOCOL: crate::auth::Protocol;

    /// The format's packaging of stream `key`.
    fn for_stream(key: StreamKey) -> Self;

    /// Appends what a viewer is sent for `batch` to `slices`, borrowing from the batch: what
    /// a change of codec parameters needs (when they differ from `header`, the last ones this
    /// viewer was sent, updated), then each frame's message. Returns the media bytes.
    fn slices<'a>(
        batch: &'a [Arc<Packaged<Self::Out>>],
        header: &mut Option<Arc<HeaderEntry>>,
        slices: &mut Vec<IoSlice<'a>>,
    ) -> u64;

    /// What a data frame (text, binary, continuation) from the viewer asks for.
    fn client_data(frame: &ClientFrame) -> DataAction;
}

/// What a viewer's data frame asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataAction {
    /// Nothing.
    Ignore,
    /// Start again at the newest keyframe, codec parameters first.
    Resync,
    /// Close the connection with this code and reason.
    Refuse {
        /// The WebSocket close code.
        code: u16,
        /// Why, for the viewer.
        reason: String,
    },
}

/// What the reader asks the writer for.
#[derive(Debug)]
enum Control {
    /// Write a control frame (pong, close reply).
    Write(Bytes),
    /// See [`DataAction::Resync`].
    Resync,
}

impl Flavor for WsFormat {
    const PROTOCOL: crate::auth::Protocol = crate::auth::Protocol::Ws;

    fn for_stream(key: StreamKey) -> Self {
        WsFormat::new(key)
    }

    fn slices<'a>(
        batch: &'a [Arc<Packaged<WsFrame>>],
        header: &mut Option<Arc<HeaderEntry>>,
        slices: &mut Vec<IoSlice<'a>>,
    ) -> u64 {
        frame_slices(batch, header, slices)
    }

    fn client_data(_: &ClientFrame) -> DataAction {
        // This format's viewers have nothing to say; what they send anyway is ignored, as it
        // always was.
        DataAction::Ignore
    }
}

/// Most payload bytes taken from the log per batch; with the log's lag bound, this bounds what
/// a stalled viewer pins in memory.
const BATCH_BYTES: usize = 1024 * 1024;
/// Largest message a viewer may send (they only need control frames).
const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// How long the goodbye (queued close reply, TLS shutdown) may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one viewer of format `F` on an upgraded connection until it leaves, stalls for longer
/// than `stall`, or the stream ends.
pub(crate) async fn serve<S, F>(io: S, sessions: Arc<Sessions>, mut viewer: Viewer, stall: Duration)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Flavor,
{
    let key = viewer.session.key.clone();
    let (id, session) = (viewer.stats.id, viewer.session.clone());
    let kind = F::PROTOCOL.name();
    info!(stream = %key, viewer = id, remote = %viewer.stats.remote, kind, "websocket viewer joined");
    let (rd, mut wr) = tokio::io::split(io);

    // Control frames the reader wants written (pong, close reply); tiny and rare, so a full
    // queue just drops the pong.
    let (control_tx, mut control_rx) = mailbox::<Control>(4);
    let gone = CancellationToken::new();
    let (kick, reader_gone) = (viewer.stats.kick.clone(), gone.clone());
    let reader = tokio::spawn(async move {
        // An operator's disconnect ends the reader like a client's close: the loop below sees
        // the control channel close (no cost per frame).
        tokio::select! {
            () = read_client::<_, F>(rd, control_tx, reader_gone.clone()) => {}
            () = kick.cancelled() => reader_gone.cancel(),
        }
    });

    // The stream's packager of this format stays attached while this viewer watches; the
    // cursor starts afresh at the newest keyframe it holds.
    let ws = session.log.attach(|| PerFrame::new(F::for_stream(key.clone())));
    viewer.cursor = session.log.subscribe();
    let batch_bytes = BATCH_BYTES.min(sessions.config().log.viewer_max_lag_bytes);
    let mut batch: Vec<Arc<Packaged<F::Out>>> = Vec::new();
    let mut header: Option<Arc<HeaderEntry>> = None;
    let reason = loop {
        batch.clear();
        if control_rx.is_closed() {
            if viewer.stats.kick.is_cancelled() {
                break kicked(&mut wr, &mut viewer).await;
            }
            // The reader ended (the client closed, or sent a bad frame): the goodbye below
            // writes what it queued (the close reply), and no more media goes out.
            break "viewer closed".to_owned();
        }
        // Control frames (pongs) go out when the viewer is caught up, in the wait below.
        let status = session.log.read_packaged(&ws, &mut viewer.cursor, batch_bytes, &mut batch);
        let pending: u64 = batch.iter().map(|p| p.entry.frame.payload.len() as u64).sum();
        if let Err(too_slow) = viewer.account_read(&status, pending) {
            // Say why, then go.
            let bye =
                [event_frame(&ViewerEvent::End { reason: too_slow.clone() }), close_frame(CLOSE_POLICY, "too slow")];
            let mut slices: Vec<IoSlice<'_>> = bye.iter().map(|c| IoSlice::new(c)).collect();
            let _ = write_all_vectored(&mut wr, &mut slices, CLOSE_GRACE).await;
            break too_slow;
        }
        // Events are rare; frames are borrowed from the batch.
        let skip = (status.skipped > 0).then(|| event_frame(&ViewerEvent::Skip { frames: status.skipped }));
        let end = status.ended.as_ref().map(|reason| {
            // A hub that stops (drained, or shut down) says "service restart": the client
            // should reconnect, to another hub if this one is going.
            let close = if sessions.shutdown_token().is_cancelled() {
                close_frame(CLOSE_SERVICE_RESTART, "hub restarting")
            } else {
                close_frame(CLOSE_NORMAL, "stream ended")
            };
            [event_frame(&ViewerEvent::End { reason: reason.to_string() }), close]
        });
        // Allocated per write: glibc's thread cache hands every viewer the same hot block,
        // which measured faster than a vector kept per viewer (docs/benchmarks.md).
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * batch.len() + 4);
        slices.extend(skip.iter().map(|c| IoSlice::new(c)));
        let bytes = F::slices(&batch, &mut header, &mut slices);
        slices.extend(end.iter().flatten().map(|c| IoSlice::new(c)));
        if !slices.is_empty() {
            let written = tokio::select! {
                // The write usually completes at once; polled first, the cancellation future is
                // then never polled (registering it takes a lock).
                biased;
                r = write_all_vectored(&mut wr, &mut slices, stall) => r,
                () = gone.cancelled() => {
                    // Mid-write there is no clean place for an `end` event: just go.
                    if viewer.stats.kick.is_cancelled() {
                        viewer.set_end(ViewerEnd::Kicked);
                        break KICKED.to_owned();
                    }
                    break "viewer closed".to_owned();
                }
            };
            if let Err(e) = written {
                viewer.set_end(ViewerEnd::of_write_error(&e));
                break describe_write_error(&e);
            }
            viewer.account_sent(batch.len() as u64, bytes);
        }
        if let Some(reason) = status.ended {
            break format!("stream ended: {reason}");
        }
        // Caught up: wait for the next frame rather than read again to find nothing.
        if status.skipped == 0 && (batch.is_empty() || !status.more) {
            // No branch for `gone`: the reader drops its sender when it ends, which ends `recv`
            // (a cancellation future here would take a lock per frame).
            tokio::select! {
                biased;
                c = control_rx.recv() => match c {
                    Some(Control::Write(c)) => {
                        if let Err(e) = write_all_vectored(&mut wr, &mut [IoSlice::new(&c)], stall).await {
                            viewer.set_end(ViewerEnd::of_write_error(&e));
                            break describe_write_error(&e);
                        }
                    }
                    Some(Control::Resync) => {
                        debug!(stream = %key, viewer = id, "viewer asked to start again at a keyframe");
                        viewer.cursor = session.log.subscribe();
                        header = None;
                    }
                    None if viewer.stats.kick.is_cancelled() => break kicked(&mut wr, &mut viewer).await,
                    None => break "viewer closed".to_owned(),
                },
                changed = viewer.cursor.changed() => if !changed { break "session gone".to_owned() },
            }
        }
    };
    let (frames, skipped) = (viewer.stats.frames.get(), viewer.stats.skipped.get());
    // Leave the session first: a client that stalls the goodbye must not hold the stream.
    drop(viewer);
    reader.abort();
    let goodbye = async {
        // The reader may have queued a close reply (RFC 6455 §5.5.1) or a protocol-error close.
        let queued: Vec<Bytes> = std::iter::from_fn(|| control_rx.try_recv())
            .filter_map(|c| match c {
                Control::Write(b) => Some(b),
                Control::Resync => None,
            })
            .collect();
        if !queued.is_empty() {
            let mut slices: Vec<IoSlice<'_>> = queued.iter().map(|c| IoSlice::new(c)).collect();
            let _ = write_all_vectored(&mut wr, &mut slices, CLOSE_GRACE).await;
        }
        let _ = wr.shutdown().await;
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
    info!(stream = %key, viewer = id, kind, %reason, frames, skipped, "websocket viewer left");
}

/// Reads the client's frames: answers pings, notices close, enforces the size cap.
/// Tells a viewer an operator disconnected it; the reason for the log.
async fn kicked<W: AsyncWrite + Unpin>(wr: &mut W, viewer: &mut Viewer) -> String {
    let bye = [event_frame(&ViewerEvent::End { reason: KICKED.into() }), close_frame(CLOSE_POLICY, KICKED)];
    let mut slices: Vec<IoSlice<'_>> = bye.iter().map(|c| IoSlice::new(c)).collect();
    let _ = write_all_vectored(wr, &mut slices, CLOSE_GRACE).await;
    viewer.set_end(ViewerEnd::Kicked);
    KICKED.to_owned()
}

/// What a viewer an operator disconnected is told.
const KICKED: &str = "disconnected by an operator";

async fn read_client<R: AsyncRead + Unpin, F: Flavor>(mut rd: R, control: Sender<Control>, gone: CancellationToken) {
    let mut parser = ClientFrames::new(MAX_CLIENT_FRAME);
    // Viewers send only control frames (pings, close); the parser gathers a bigger frame across
    // reads. Every viewer holds this buffer for as long as it watches.
    let mut buf = vec![0u8; 512];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        parser.extend(&buf[..n]);
        loop {
            match parser.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) if f.opcode == OP_PING => {
                    let _ = control.try_send(Control::Write(frame(OP_PONG, &f.payload)));
                }
                Ok(Some(f)) if f.opcode == OP_CLOSE => {
                    let _ = control.try_send(Control::Write(close_frame(CLOSE_NORMAL, "")));
                    gone.cancel();
                    return;
                }
                Ok(Some(f)) if f.opcode == OP_PONG => {}
                Ok(Some(f)) => match F::client_data(&f) {
                    DataAction::Ignore => {}
                    DataAction::Resync => {
                        let _ = control.try_send(Control::Resync);
                    }
                    DataAction::Refuse { code, reason } => {
                        debug!(%reason, "closing a viewer that sent a message it may not");
                        let _ = control.try_send(Control::Write(close_frame(code, &reason)));
                        gone.cancel();
                        return;
                    }
                },
                Err(e) => {
                    let code =
                        if matches!(e, ClientFrameError::TooBig { .. }) { CLOSE_TOO_BIG } else { CLOSE_PROTOCOL };
                    debug!(error = %e, "closing a viewer that sent a bad frame");
                    let _ = control.try_send(Control::Write(close_frame(code, &e.to_string())));
                    gone.cancel();
                    return;
                }
            }
        }
    }
    gone.cancel();
}
