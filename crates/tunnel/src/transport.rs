//! The tunnel protocol over a WebSocket (feature `transport`): one protocol message per binary
//! WebSocket message. Used by both the hub and the edge; generic over the byte stream (TLS).

use std::time::Duration;

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
    WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max))
}

/// A tunnel connection: typed messages over a WebSocket.
#[derive(Debug)]
pub struct Link<S> {
    ws: WebSocketStream<S>,
    limits: Limits,
    write_deadline: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    /// Wraps an upgraded WebSocket.
    pub fn new(ws: WebSocketStream<S>, limits: Limits, write_deadline: Duration) -> Self {
        Self { ws, limits, write_deadline }
    }

    /// Changes the decode limits (after the Welcome announced the peer's).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.ws.get_ref()
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
        loop {
            match self.ws.next().await {
                None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                Some(Ok(WsMessage::Binary(b))) => return Ok(Some(decode_message(b, &self.limits)?)),
                Some(Ok(WsMessage::Text(_))) => return Err(LinkError::Text),
                Some(Ok(_)) => continue, // WebSocket ping/pong frames are answered by tungstenite
                Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(None),
                Some(Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ))) => return Err(LinkError::Abrupt),
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

    /// Takes the heartbeat step due now (call it at [`Heartbeat::next_deadline`]): sends Ping
    /// when it is time. `Err` names why the connection is over (the peer is silent, a send
    /// failed); `peer` names the other side in that message ("hub", "edge").
    pub async fn heartbeat(&mut self, hb: &mut Heartbeat, peer: &str) -> Result<(), String> {
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
        // Close reasons are limited to 123 bytes by RFC 6455.
        let mut end = reason.len().min(120);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame { code, reason: reason[..end].to_owned().into() };
        let _ = tokio::time::timeout(self.write_deadline, self.ws.close(Some(frame))).await;
    }
}
