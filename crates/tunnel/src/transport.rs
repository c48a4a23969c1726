//! The tunnel protocol over a WebSocket (feature `transport`): one protocol message per binary
//! WebSocket message. Used by both the hub and the edge; generic over the byte stream (TLS).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::liveness::{Heartbeat, HeartbeatAction};
use crate::wire::{DecodeError, ErrorCode, ErrorMsg, Limits, Message, decode_message, encoded};

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The WebSocket (or the TLS/TCP below it) failed.
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    /// A message did not decode.
    #[error("bad message from peer: {0}")]
    Decode(#[from] DecodeError),
    /// The peer sent a text WebSocket message; the protocol is binary only.
    #[error("peer sent a text message; the tunnel protocol is binary")]
    Text,
    /// A write did not complete within the write deadline.
    #[error("write did not complete within {0:?}")]
    WriteTimeout(Duration),
    /// The peer (or the network) closed the connection without a WebSocket close frame.
    #[error("the connection closed abruptly (no close frame)")]
    Abrupt,
}

/// The WebSocket configuration for a tunnel with these limits: frames and messages are capped
/// just above the largest protocol message, so the WebSocket layer refuses anything larger
/// before buffering it.
pub fn ws_config(limits: &Limits) -> WebSocketConfig {
    let max = limits.max_message_len() + 4;
    // The read buffer is allocated whole for every connection, and tungstenite's 128 KiB made
    // up most of an idle edge's cost to a hub (docs/benchmarks.md, "Idle edges"); reads come
    // from rustls's plaintext buffer, so a small one costs copies, not system calls.
    WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max)).read_buffer_size(READ_BUFFER)
}

/// Bytes a link reads from its TLS stream at a time.
const READ_BUFFER: usize = 4 * 1024;

/// When bytes last arrived on a [`Tracked`] stream; cheap to clone and read from anywhere
/// (the receiving half of a split link, a heartbeat task).
#[derive(Debug, Clone)]
pub struct LastRead {
    base: std::time::Instant,
    micros: Arc<AtomicU64>,
}

impl LastRead {
    fn new() -> Self {
        Self { base: std::time::Instant::now(), micros: Arc::new(AtomicU64::new(0)) }
    }

    fn touch(&self) {
        self.micros.store(self.base.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// When bytes last arrived (the wrap time if none have).
    pub fn get(&self) -> std::time::Instant {
        self.base + Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

/// A byte stream that remembers when bytes last arrived, so liveness counts a large frame
/// that is still arriving on a slow link, not only whole messages.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    last_read: LastRead,
}

impl<S> Tracked<S> {
    /// Wraps a stream; call before the WebSocket handshake.
    pub fn new(inner: S) -> Self {
        Self { inner, last_read: LastRead::new() }
    }

    /// When bytes last arrived.
    pub fn last_read(&self) -> std::time::Instant {
        self.last_read.get()
    }

    /// A handle on the time bytes last arrived.
    pub fn last_read_handle(&self) -> LastRead {
        self.last_read.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last_read.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A tunnel connection: typed messages over a WebSocket over a [`Tracked`] stream.
#[derive(Debug)]
pub struct Link<S> {
    ws: WebSocketStream<Tracked<S>>,
    limits: Limits,
    write_deadline: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    /// Wraps an upgraded WebSocket.
    pub fn new(ws: WebSocketStream<Tracked<S>>, limits: Limits, write_deadline: Duration) -> Self {
        Self { ws, limits, write_deadline }
    }

    /// Changes the decode limits (after the Welcome announced the peer's).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.ws.get_ref().inner
    }

    /// Sends one message and flushes it, within the write deadline.
    pub async fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        self.send_raw(encoded(msg)).await
    }

    /// Sends already-encoded message bytes (one whole message).
    pub async fn send_raw(&mut self, bytes: bytes::Bytes) -> Result<(), LinkError> {
        match tokio::time::timeout(self.write_deadline, self.ws.send(WsMessage::Binary(bytes))).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(LinkError::WriteTimeout(self.write_deadline)),
        }
    }

    /// The next protocol message; `Ok(None)` when the peer closed. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<Message>, LinkError> {
        recv_from(&mut self.ws, &self.limits).await
    }

    /// Splits the link so sending (which may wait on a slow link) and receiving run at the
    /// same time.
    pub fn split(self) -> (LinkSender<S>, LinkReceiver<S>) {
        let last_read = self.ws.get_ref().last_read_handle();
        let (sink, stream) = self.ws.split();
        (
            LinkSender { sink, write_deadline: self.write_deadline },
            LinkReceiver { stream, limits: self.limits, last_read },
        )
    }

    /// Takes the heartbeat step due now (call it at [`Heartbeat::next_deadline`]): sends Ping
    /// when it is time. `Err` names why the connection is over (the peer is silent, a send
    /// failed); `peer` names the other side in that message ("hub", "edge").
    pub async fn heartbeat(&mut self, hb: &mut Heartbeat, peer: &str) -> Result<(), String> {
        // Bytes of a message still arriving count as life.
        hb.on_receive(self.ws.get_ref().last_read());
        match hb.poll(std::time::Instant::now()) {
            HeartbeatAction::SendPing { id } => self.send(&Message::Ping { id }).await.map_err(|e| e.to_string()),
            HeartbeatAction::Dead { silent_for } => {
                Err(format!("no traffic from the {peer} for {:.1} s", silent_for.as_secs_f64()))
            }
            HeartbeatAction::Wait => Ok(()),
        }
    }

    /// Accounts a received message to the heartbeat and handles liveness: answers Ping with
    /// Pong, takes RTT samples from Pong. Returns the message if it is anything else.
    pub async fn liveness(&mut self, hb: &mut Heartbeat, msg: Message) -> Result<Option<Message>, LinkError> {
        let now = std::time::Instant::now();
        hb.on_receive(now);
        match msg {
            Message::Ping { id } => self.send(&Message::Pong { id }).await.map(|()| None),
            Message::Pong { id } => {
                hb.on_pong(now, id);
                Ok(None)
            }
            other => Ok(Some(other)),
        }
    }

    /// Sends an Error for the whole connection, then a close frame; best effort.
    pub async fn fail(mut self, code: ErrorCode, message: impl Into<String>) {
        let message = message.into();
        let err = Message::Error(ErrorMsg { code, session: 0, message: message.clone() });
        let _ = self.send(&err).await;
        self.close(CloseCode::Policy, &message).await;
    }

    /// Sends GoAway and a normal close frame; best effort.
    pub async fn go_away(self, reason: impl Into<String>) {
        let reason = reason.into();
        self.finish(&Message::GoAway { reason: reason.clone() }, &reason).await;
    }

    /// Sends a last message (GoAway, EndOfStream) and a normal close frame; best effort.
    pub async fn finish(mut self, last: &Message, reason: &str) {
        let _ = self.send(last).await;
        self.close(CloseCode::Normal, reason).await;
    }

    async fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame { code, reason: close_reason(reason).to_owned().into() };
        let _ = tokio::time::timeout(self.write_deadline, self.ws.close(Some(frame))).await;
    }
}

/// The next protocol message from a WebSocket stream (whole or split).
async fn recv_from<W>(ws: &mut W, limits: &Limits) -> Result<Option<Message>, LinkError>
where
    W: futures_util::Stream<Item = Result<WsMessage, tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
            Some(Ok(WsMessage::Binary(b))) => return Ok(Some(decode_message(b, limits)?)),
            Some(Ok(WsMessage::Text(_))) => return Err(LinkError::Text),
            Some(Ok(_)) => continue, // WebSocket ping/pong frames are answered by tungstenite
            Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(None),
            Some(Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ))) => {
                return Err(LinkError::Abrupt);
            }
            Some(Err(tungstenite::Error::Io(e)))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return Err(LinkError::Abrupt);
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// The sending half of a split [`Link`].
#[derive(Debug)]
pub struct LinkSender<S> {
    sink: SplitSink<WebSocketStream<Tracked<S>>, WsMessage>,
    write_deadline: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LinkSender<S> {
    /// Sends one message and flushes it, within the write deadline.
    pub async fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        self.send_raw(encoded(msg)).await
    }

    /// Sends already-encoded message bytes (one whole message), within the write deadline.
    pub async fn send_raw(&mut self, bytes: bytes::Bytes) -> Result<(), LinkError> {
        match tokio::time::timeout(self.write_deadline, self.sink.send(WsMessage::Binary(bytes))).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(LinkError::WriteTimeout(self.write_deadline)),
        }
    }

    /// Sends a last message (GoAway, EndOfStream) and a normal close frame; best effort.
    pub async fn finish(mut self, last: &Message, reason: &str) {
        let _ = self.send(last).await;
        let frame = CloseFrame { code: CloseCode::Normal, reason: close_reason(reason).to_owned().into() };
        let _ = tokio::time::timeout(self.write_deadline, self.sink.send(WsMessage::Close(Some(frame)))).await;
        let _ = tokio::time::timeout(self.write_deadline, self.sink.close()).await;
    }
}

/// The receiving half of a split [`Link`].
#[derive(Debug)]
pub struct LinkReceiver<S> {
    stream: SplitStream<WebSocketStream<Tracked<S>>>,
    limits: Limits,
    last_read: LastRead,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LinkReceiver<S> {
    /// The next protocol message; `Ok(None)` when the peer closed. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<Message>, LinkError> {
        recv_from(&mut self.stream, &self.limits).await
    }

    /// When bytes last arrived (including bytes of a message still arriving).
    pub fn last_read(&self) -> std::time::Instant {
        self.last_read.get()
    }
}

/// A close reason cut to the 123 bytes RFC 6455 allows, at a character boundary.
fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    use super::*;
    use crate::liveness::HeartbeatConfig;
    use crate::wire::encoded;

    /// A masked client WebSocket binary frame carrying `payload`.
    fn masked_frame(payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x82, 0x80 | 126];
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[tokio::test]
    async fn bytes_of_a_slow_message_keep_the_peer_alive() {
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move {
            let ws = tokio_tungstenite::accept_async(Tracked::new(server_io)).await.unwrap();
            Link::new(ws, Limits::default(), Duration::from_secs(5))
        });
        let req = "ws://hub/t".into_client_request().unwrap();
        let (mut client, _) = tokio_tungstenite::client_async(req, client_io).await.unwrap();
        let mut link = server.await.unwrap();

        let timeout = Duration::from_millis(400);
        let mut hb = Heartbeat::new(Instant::now(), HeartbeatConfig { interval: Duration::from_secs(60), timeout });
        // One message, trickled over three timeouts.
        let frame = masked_frame(&encoded(&Message::GoAway { reason: "x".repeat(1000) }));
        let started = Instant::now();
        let mut sent = 0;
        while sent < frame.len() {
            let end = (sent + 50).min(frame.len());
            client.get_mut().write_all(&frame[sent..end]).await.unwrap();
            sent = end;
            // Let the hub side read what arrived, then check liveness.
            let _ = tokio::time::timeout(Duration::from_millis(100), link.recv()).await;
            assert!(link.heartbeat(&mut hb, "edge").await.is_ok(), "declared dead after {:?}", started.elapsed());
        }
        assert!(started.elapsed() > 3 * timeout, "the message took longer than the timeout");
        // Silence is still death.
        tokio::time::sleep(timeout + Duration::from_millis(100)).await;
        let err = link.heartbeat(&mut hb, "edge").await.unwrap_err();
        assert!(err.contains("no traffic from the edge"), "{err}");
    }
}

/// What a sending tunnel asks its [`Writer`] besides media.
#[derive(Debug)]
pub enum WriterControl {
    /// Send these encoded bytes before any waiting media.
    Send(bytes::Bytes),
    /// Send this last message, close, and stop.
    Finish(Message),
}

/// The writing half of a sending tunnel (an edge's uplink, a hub's relay), in a task of its
/// own: control messages go out before waiting media, and the sender goes on reading Pings and
/// Feedback, and dropping what has become stale, while a write is stuck on a slow link.
/// Dropping it stops the task.
/// Its parts are borrowed apart: a `select!` can wait for room in `data` while another branch
/// finishes through `control` and `task`.
#[derive(Debug)]
pub struct Writer {
    /// Media. One message may wait here; the rest wait in the sender's queue, where they can
    /// still be dropped.
    pub data: tokio::sync::mpsc::Sender<bytes::Bytes>,
    /// Control messages, and the last one.
    pub control: WriterControls,
    /// The task; it ends with why it stopped.
    pub task: tokio::task::JoinHandle<String>,
}

/// The control side of a [`Writer`].
#[derive(Debug)]
pub struct WriterControls(tokio::sync::mpsc::Sender<WriterControl>);

impl WriterControls {
    /// Sends an encoded control message ahead of waiting media. Dropped when eight are already
    /// waiting: they are Pongs and reports, which a stuck link makes moot.
    pub fn send(&self, bytes: bytes::Bytes) {
        let _ = self.0.try_send(WriterControl::Send(bytes));
    }

    /// Sends a last message and waits (two seconds at most) for `task` to send it and stop.
    pub async fn finish(&self, last: Message, task: &mut tokio::task::JoinHandle<String>) {
        if self.0.send(WriterControl::Finish(last)).await.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
        }
    }
}

impl Writer {
    /// Starts writing to `tx`.
    pub fn spawn<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(tx: LinkSender<S>) -> Self {
        let (data, data_rx) = tokio::sync::mpsc::channel(1);
        let (control, control_rx) = tokio::sync::mpsc::channel(8);
        Self { data, control: WriterControls(control), task: tokio::spawn(write_loop(tx, data_rx, control_rx)) }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends control messages first, then media, until a write fails; returns why it stopped.
async fn write_loop<S: AsyncRead + AsyncWrite + Unpin>(
    mut tx: LinkSender<S>,
    mut data: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    mut control: tokio::sync::mpsc::Receiver<WriterControl>,
) -> String {
    loop {
        let next = tokio::select! {
            biased;
            c = control.recv() => c,
            d = data.recv() => d.map(WriterControl::Send),
        };
        match next {
            None => return "the sender closed".into(),
            Some(WriterControl::Send(b)) => {
                if let Err(e) = tx.send_raw(b).await {
                    return e.to_string();
                }
            }
            Some(WriterControl::Finish(msg)) => {
                let reason = msg.name();
                tx.finish(&msg, reason).await;
                return "finished".into();
            }
        }
    }
}
