//! The hub's UDP sockets for RTSP viewers that chose UDP: one RTP and one RTCP socket shared
//! by every viewer (as MediaMTX does), and the receiver reports that keep UDP sessions alive.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// When a UDP session last showed life, in ms since [`UdpPair::origin`].
pub(crate) type Liveness = Arc<AtomicU64>;

/// The RTP/RTCP socket pair.
#[derive(Debug)]
pub(crate) struct UdpPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub ports: (u16, u16),
    origin: Instant,
    /// Client RTCP address → the liveness of its session.
    clients: Mutex<HashMap<SocketAddr, Liveness>>,
}

impl UdpPair {
    /// Binds `rtp_port` and `rtcp_port` on `ip`. With both 0, picks a free even port and the
    /// next one, as RTP convention expects.
    pub(crate) async fn bind(ip: IpAddr, rtp_port: u16, rtcp_port: u16) -> std::io::Result<Self> {
        let (rtp, rtcp) = if rtp_port == 0 && rtcp_port == 0 {
            let mut tries = 0;
            loop {
                let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
                let p = rtp.local_addr()?.port();
                if p % 2 == 0
                    && let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, p + 1)).await
                {
                    break (rtp, rtcp);
                }
                tries += 1;
                if tries > 50 {
                    return Err(std::io::Error::other("no free even/odd UDP port pair"));
                }
            }
        } else {
            (
                UdpSocket::bind(SocketAddr::new(ip, rtp_port)).await?,
                UdpSocket::bind(SocketAddr::new(ip, rtcp_port)).await?,
            )
        };
        let ports = (rtp.local_addr()?.port(), rtcp.local_addr()?.port());
        Ok(Self { rtp, rtcp, ports, origin: Instant::now(), clients: Mutex::new(HashMap::new()) })
    }

    /// Milliseconds since the pair was bound (the liveness clock).
    pub(crate) fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Starts tracking receiver reports from a client's RTCP address.
    pub(crate) fn watch(&self, client_rtcp: SocketAddr, liveness: Liveness) {
        self.lock().insert(client_rtcp, liveness);
    }

    /// Stops tracking a client, if `liveness` is still the entry for its address.
    pub(crate) fn unwatch(&self, client_rtcp: SocketAddr, liveness: &Liveness) {
        let mut map = self.lock();
        if map.get(&client_rtcp).is_some_and(|l| Arc::ptr_eq(l, liveness)) {
            map.remove(&client_rtcp);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Liveness>> {
        // Single map operations; a poisoned map is consistent.
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads what clients send (receiver reports; NAT-opening packets) until cancelled.
    pub(crate) async fn receive(self: Arc<Self>, cancel: CancellationToken) {
        let mut buf = vec![0u8; 2048];
        let mut buf2 = vec![0u8; 2048];
        loop {
            tokio::select! {
                r = self.rtcp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r
                        && mediamesh_media::rtp::rtcp::is_rtcp(&buf[..n])
                        && let Some(l) = self.lock().get(&from)
                    {
                        l.store(self.now_ms(), Ordering::Relaxed);
                    }
                }
                // Drain the RTP socket too, so stray packets do not sit in kernel memory.
                _ = self.rtp.recv_from(&mut buf2) => {}
                () = cancel.cancelled() => return,
            }
        }
    }
}

/// Most datagrams per `sendmmsg` call (a frame at 2 Mbit/s is about 8).
pub(crate) const MMSG_BATCH: usize = 32;

/// Sends datagrams, each made of a head and a body slice, to one address, with as few
/// `sendmmsg` calls as the socket allows (no copy): one system call per run of packets instead
/// of one per packet. A datagram the kernel refuses (the call then fails on it, having sent
/// those before it) is skipped and the rest still go, as when each packet had its own call;
/// the first such error is returned at the end.
pub(crate) async fn send_datagrams(
    sock: &UdpSocket,
    datagrams: &[[IoSlice<'_>; 2]],
    to: SocketAddr,
) -> std::io::Result<()> {
    let to = rustix::net::SocketAddrAny::from(to);
    let (mut sent, mut failed) = (0, None);
    while sent < datagrams.len() {
        sock.writable().await?;
        match sock.try_io(Interest::WRITABLE, || sendmmsg_once(sock, &datagrams[sent..], &to)) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                sent += 1;
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// One `sendmmsg` call: how many of the datagrams the kernel took (at least one, or an error).
fn sendmmsg_once(
    sock: &UdpSocket,
    datagrams: &[[IoSlice<'_>; 2]],
    to: &rustix::net::SocketAddrAny,
) -> std::io::Result<usize> {
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags};
    let n = datagrams.len().min(MMSG_BATCH);
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = (0..n).map(|_| SendAncillaryBuffer::default()).collect();
    let mut msgs: Vec<MMsgHdr<'_>> =
        datagrams[..n].iter().zip(controls.iter_mut()).map(|(d, c)| MMsgHdr::new_with_addr(to, d, c)).collect();
    Ok(rustix::net::sendmmsg(sock, &mut msgs, SendFlags::empty())?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn datagrams_arrive_in_order_and_one_the_kernel_refuses_loses_no_other() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        // 70,000 bytes is over UDP's limit: the kernel refuses that one (EMSGSIZE).
        let (big, body) = (vec![7u8; 70_000], [1u8, 2, 3]);
        let heads: Vec<[u8; 2]> = (0..40u8).map(|i| [b'h', i]).collect();
        let datagrams: Vec<[IoSlice<'_>; 2]> = heads
            .iter()
            .enumerate()
            .map(|(i, h)| [IoSlice::new(h), IoSlice::new(if i == 5 { &big } else { &body })])
            .collect();
        let r = send_datagrams(&tx, &datagrams, to).await;
        assert!(r.is_err(), "the refused datagram's error is reported");
        let mut buf = [0u8; 64];
        for i in (0..40u8).filter(|&i| i != 5) {
            let n = tokio::time::timeout(Duration::from_secs(5), rx.recv(&mut buf)).await.unwrap().unwrap();
            assert_eq!(&buf[..n], &[b'h', i, 1, 2, 3], "datagram {i}, in order");
        }
    }
}
