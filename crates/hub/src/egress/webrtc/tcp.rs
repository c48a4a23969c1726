//! ICE over TCP (RFC 6544), for networks that block UDP: a listener on the same port number as
//! the UDP socket, offered to browsers as a passive TCP host candidate. Packets on a connection
//! are framed as RFC 4571 says: a two-byte length, then the packet.
//!
//! A connection belongs to the session named by the user fragment of its first STUN binding
//! request; everything it carries after that goes to that session's queue like a datagram,
//! with the connection's writer to answer on. A connection that names no session, sends a
//! packet larger than a datagram, or says nothing for [`FIRST_PACKET`] is closed.
//! Connections come through the hub's one accept path ([`crate::listener::serve`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::{Datagram, MAX_DATAGRAM, WebRtc, stun_local_ufrag};
use crate::listener::{Accepted, Admission, Gate, Port};

/// Packets waiting to be written to one connection; more are dropped (as UDP would).
const WRITE_QUEUE: usize = 256;
/// How long a new connection has to send its first packet.
const FIRST_PACKET: Duration = Duration::from_secs(10);
/// Connections at once, per session allowed (a browser opens one or two).
const CONNECTIONS_PER_SESSION: usize = 2;

/// Serves ICE-TCP on `listener` until `shutdown`, through the hub's one accept path: its gate
/// admits at most two connections per allowed session, and each connection is a task of
/// `tasks`.
pub(super) async fn serve(rtc: Arc<WebRtc>, listener: TcpListener, shutdown: CancellationToken, tasks: TaskTracker) {
    let gate = rtc.tcp_gate.clone();
    let stop = shutdown.clone();
    crate::listener::serve(listener, gate, shutdown, tasks, move |Accepted { tcp, remote, .. }| {
        let (rtc, stop) = (rtc.clone(), stop.clone());
        async move {
            let _ = tcp.set_nodelay(true);
            let peer = remote.addr();
            tokio::select! {
                reason = connection(&rtc, tcp, peer) => debug!(%peer, reason, "webrtc tcp connection closed"),
                () = stop.cancelled() => {}
            }
        }
    })
    .await;
}

/// The gate of ICE-TCP's port for a hub allowing `max_sessions` WebRTC sessions.
pub(super) fn gate(max_sessions: usize) -> Arc<Gate> {
    let most = max_sessions.saturating_mul(CONNECTIONS_PER_SESSION).max(1);
    Gate::new(Port::WebrtcTcp, Admission { max_connections: most, max_per_ip: most })
}

/// Carries one connection's packets to and from its session; why it ended.
async fn connection(rtc: &WebRtc, stream: TcpStream, peer: SocketAddr) -> &'static str {
    let (mut rd, mut wr) = stream.into_split();
    let (out, mut outgoing) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let writer = async move {
        while let Some(packet) = outgoing.recv().await {
            let Ok(len) = u16::try_from(packet.len()) else { continue };
            let mut framed = Vec::with_capacity(packet.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&packet);
            if wr.write_all(&framed).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut session: Option<(u64, mpsc::Sender<Datagram>)> = None;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let mut len = [0u8; 2];
            let read = rd.read_exact(&mut len);
            let read = if session.is_none() {
                match tokio::time::timeout(FIRST_PACKET, read).await {
                    Ok(r) => r,
                    Err(_) => return "nothing sent",
                }
            } else {
                read.await
            };
            if read.is_err() {
                return "closed by the peer";
            }
            let len = usize::from(u16::from_be_bytes(len));
            if len > MAX_DATAGRAM {
                return "a packet larger than a datagram";
            }
            if rd.read_exact(&mut buf[..len]).await.is_err() {
                return "closed by the peer";
            }
            let bytes = &buf[..len];
            if session.is_none() {
                let found = stun_local_ufrag(bytes).and_then(|u| rtc.lock().by_ufrag.get(u).cloned());
                let Some(found) = found else { return "no session named" };
                session = Some(found);
            }
            let Some((id, tx)) = &session else { return "no session named" };
            let d = Datagram { source: peer, at: Instant::now(), bytes: bytes.to_vec(), tcp: Some(out.clone()) };
            match tx.try_send(d) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(session = id, "webrtc session queue full; packet dropped")
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return "the session ended",
            }
        }
    };
    tokio::select! {
        reason = reader => reason,
        () = writer => "write failed",
    }
}

/// A session's TCP connections, by the browser's address: where its TCP transmits go.
#[derive(Debug, Default)]
pub(super) struct Links(Vec<(SocketAddr, mpsc::Sender<Vec<u8>>)>);

impl Links {
    /// Remembers `peer`'s connection (the newest wins), at most `max` of them.
    pub(super) fn learn(&mut self, peer: SocketAddr, out: &mpsc::Sender<Vec<u8>>, max: usize) {
        if let Some(l) = self.0.iter_mut().find(|(a, _)| *a == peer) {
            l.1 = out.clone();
        } else if self.0.len() < max {
            self.0.push((peer, out.clone()));
        }
    }

    /// Queues `packet` for `peer`'s connection; false if there is none or it is full.
    pub(super) fn send(&self, peer: SocketAddr, packet: &[u8]) -> bool {
        self.0.iter().find(|(a, _)| *a == peer).is_some_and(|(_, tx)| tx.try_send(packet.to_vec()).is_ok())
    }
}
