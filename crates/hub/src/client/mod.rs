//! A WebSocket viewer client: connects to a stream's `…/ws` URL and yields what the hub sends.
//! Used by `mediamesh view`, the tests and the bench.

use std::sync::Arc;

use futures_util::StreamExt;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::egress::ws::format::{TrackJson, ViewerEvent, ViewerFormatError, ViewerFrame, decode_frame};

pub mod whep;

/// Byte streams the client runs over (TCP or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How to connect.
#[derive(Debug, Default, Clone)]
pub struct ConnectOptions {
    /// Trust anchors for `wss://`; `None` uses the system bundle.
    pub roots: Option<RootCertStore>,
    /// A small socket receive buffer (bytes), to make a client that stops reading stall fast.
    pub recv_buffer: Option<u32>,
    /// A token, sent as `Authorization: Bearer`.
    pub token: Option<mediamesh_auth::Secret>,
}

/// Why the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not ws://, wss://, http:// or https:// with a host.
    #[error("bad URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// TCP or TLS failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] mediamesh_tls::TlsError),
    /// The hub refused the request (unknown node or stream, …).
    #[error("the hub answered HTTP {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The hub's message.
        message: String,
    },
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    /// A text event was not valid JSON of a known type.
    #[error("unexpected text message {0:?}")]
    BadEvent(String),
    /// A binary message did not parse.
    #[error(transparent)]
    BadFrame(#[from] ViewerFormatError),
    /// An HTTP exchange (WHEP) failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The WebRTC stack refused something.
    #[error("webrtc: {0}")]
    Rtc(#[from] str0m::RtcError),
    /// The hub's SDP answer did not parse.
    #[error("the hub's SDP answer: {0}")]
    Sdp(#[from] str0m::error::SdpError),
    /// The UDP socket failed.
    #[error("udp: {0}")]
    Udp(std::io::Error),
}

/// Where a URL points: TLS or not, `host:port`, the host, and the rest after `scheme://`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    tls: bool,
    addr: String,
    host: String,
    rest: String,
}

impl Target {
    /// Reads `ws://`, `wss://`, `http://` or `https://` URLs.
    pub(crate) fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::Url { url: url.into(), reason: reason.into() };
        let (tls, rest) = if let Some(r) = url.strip_prefix("wss://").or_else(|| url.strip_prefix("https://")) {
            (true, r)
        } else if let Some(r) = url.strip_prefix("ws://").or_else(|| url.strip_prefix("http://")) {
            (false, r)
        } else {
            return Err(bad("expected ws://, wss://, http:// or https://"));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let addr =
            if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !authority.ends_with(']') {
                authority.to_owned()
            } else {
                format!("{authority}:{}", if tls { 443 } else { 80 })
            };
        let host =
            addr.rsplit_once(':').map_or("", |(h, _)| h).trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Self { tls, addr, host, rest: rest.to_owned() })
    }

    /// The path and query.
    pub(crate) fn path(&self) -> &str {
        self.rest.find('/').map_or("/", |i| &self.rest[i..])
    }

    /// A TCP connection, with TLS for `wss://` and `https://`.
    pub(crate) async fn dial(&self, opts: &ConnectOptions) -> Result<Box<dyn Io>, ClientError> {
        let tcp = connect_tcp(&self.addr, opts.recv_buffer).await?;
        if !self.tls {
            return Ok(Box::new(tcp));
        }
        let roots = match &opts.roots {
            Some(r) => r.clone(),
            None => system_roots()?,
        };
        let cfg = mediamesh_tls::viewer_client_config(roots)?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|_| ClientError::Url { url: self.rest.clone(), reason: "bad host name".into() })?;
        let stream = tokio_rustls::TlsConnector::from(Arc::<rustls::ClientConfig>::clone(&cfg))
            .connect(name, tcp)
            .await
            .map_err(|source| ClientError::Connect { addr: self.addr.clone(), source })?;
        Ok(Box::new(stream))
    }
}

/// Something the hub sent.
#[derive(Debug, Clone)]
pub enum ViewerItem {
    /// Codec parameters for the frames that follow.
    Header(Vec<TrackJson>),
    /// A frame.
    Frame(ViewerFrame),
    /// The viewer was resynchronised, skipping this many frames.
    Skip(u64),
    /// The stream ended.
    End(String),
}

/// A connected viewer.
pub struct ViewerClient {
    ws: WebSocketStream<Box<dyn Io>>,
    /// The close code the hub sent, once the connection closed.
    close_code: Option<u16>,
}

impl std::fmt::Debug for ViewerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewerClient").finish_non_exhaustive()
    }
}

impl ViewerClient {
    /// Connects to a viewer URL (`ws://`, `wss://`; `http(s)://` are accepted as aliases).
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::Url { url: url.into(), reason: reason.into() };
        let target = Target::parse(url)?;
        let io = target.dial(opts).await?;
        let ws_url = format!("{}://{}", if target.tls { "wss" } else { "ws" }, target.rest);
        let mut req = ws_url.into_client_request().map_err(|e| bad(&e.to_string()))?;
        if let Some(token) = &opts.token {
            let value = format!("Bearer {}", token.expose())
                .parse()
                .map_err(|_| bad("the token holds characters a header cannot carry"))?;
            req.headers_mut().insert(tungstenite::http::header::AUTHORIZATION, value);
        }
        match tokio_tungstenite::client_async(req, io).await {
            Ok((ws, _)) => Ok(Self { ws, close_code: None }),
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().to_string();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                    .unwrap_or(body);
                Err(ClientError::Refused { status, message })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The next item; `Ok(None)` when the connection closed.
    pub async fn next(&mut self) -> Result<Option<ViewerItem>, ClientError> {
        loop {
            let Some(msg) = self.ws.next().await else { return Ok(None) };
            match msg? {
                Message::Binary(b) => return Ok(Some(ViewerItem::Frame(decode_frame(b)?))),
                Message::Text(t) => {
                    let ev: ViewerEvent =
                        serde_json::from_str(t.as_str()).map_err(|_| ClientError::BadEvent(t.as_str().to_owned()))?;
                    return Ok(Some(match ev {
                        ViewerEvent::Header { tracks, .. } => ViewerItem::Header(tracks),
                        ViewerEvent::Skip { frames } => ViewerItem::Skip(frames),
                        ViewerEvent::End { reason } => ViewerItem::End(reason),
                    }));
                }
                Message::Close(frame) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return Ok(None);
                }
                _ => continue,
            }
        }
    }

    /// The close code the hub sent (1000 when the stream ended, 1012 when the hub is
    /// restarting and a client should reconnect), once [`ViewerClient::next`] saw the close.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

async fn connect_tcp(addr: &str, recv_buffer: Option<u32>) -> Result<TcpStream, ClientError> {
    let err = |source| ClientError::Connect { addr: addr.to_owned(), source };
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(err)?
        .next()
        .ok_or_else(|| err(std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))?;
    let socket = if target.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).map_err(err)?;
    }
    let stream = socket.connect(target).await.map_err(err)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The system's CA bundle (Debian's path), for `wss://` without `--ca`.
fn system_roots() -> Result<RootCertStore, ClientError> {
    const BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
    Ok(mediamesh_tls::load_roots(std::path::Path::new(BUNDLE))?)
}
