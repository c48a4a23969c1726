//! Reading a viewer's TCP connection with the kernel's receive timestamps (`SO_TIMESTAMPNS`).
//!
//! A bench viewer notes two times for each frame: when its task got to the frame's last byte
//! (what a player would see, including the wait for this process's share of the CPU), and when
//! the kernel queued that byte on the viewer's socket (what the server's added latency is,
//! without the bench's own viewers' scheduling). On loopback the kernel queues the bytes while
//! the server's write runs, so the second is when the server sent them.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Asks the kernel to timestamp what arrives on `s`. The first socket to ask switches the
/// stack's timestamping on a moment later (a deferred switch), so the first reads after the
/// first `enable` may come unstamped; the bench's warm-up covers that.
pub fn enable(s: &TcpStream) -> io::Result<()> {
    setsockopt(s, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// A viewer's receive buffer: `data[..end]` holds bytes read and not yet consumed.
pub struct Inbox {
    pub data: Vec<u8>,
    pub end: usize,
}

impl Inbox {
    /// A buffer of `capacity` bytes (grown when a message needs more) starting with `leftover`.
    pub fn new(leftover: &[u8], capacity: usize) -> Self {
        let mut data = vec![0u8; capacity.max(leftover.len() * 2)];
        data[..leftover.len()].copy_from_slice(leftover);
        Self { data, end: leftover.len() }
    }

    /// The bytes not yet consumed, from `pos`.
    pub fn unread(&self, pos: usize) -> &[u8] {
        &self.data[pos..self.end]
    }

    /// Moves the bytes from `pos` to the front.
    pub fn compact(&mut self, pos: &mut usize) {
        self.data.copy_within(*pos..self.end, 0);
        self.end -= *pos;
        *pos = 0;
    }

    /// Reads what is available (waiting for something): the byte count (0 at end of stream)
    /// and the kernel's arrival time of the last byte read, in microseconds since the epoch.
    pub async fn fill(&mut self, s: &TcpStream) -> io::Result<(usize, Option<u64>)> {
        if self.end == self.data.len() {
            self.data.resize(self.data.len() * 2, 0);
        }
        loop {
            s.readable().await?;
            let mut got = None;
            let r = s.try_io(Interest::READABLE, || {
                let space = self.data.len() - self.end;
                let read = recv_stamped(s, &mut self.data[self.end..])?;
                got = Some(read);
                // A short read emptied the socket: report "would block" (the bytes are kept in
                // `got`) so that the readiness is cleared and the next read waits for data
                // instead of costing a system call that finds none, as tokio's own reads do.
                if read.0 > 0 && read.0 < space { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(()) }
            });
            if let Some((n, at)) = got {
                self.end += n;
                return Ok((n, at));
            }
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok((0, None)),
            }
        }
    }
}

/// One `recvmsg` into `buf`: bytes read and the timestamp of the last one.
fn recv_stamped(s: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let m = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()).map_err(io::Error::from)?;
    let mut at = None;
    for c in m.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            at = u64::try_from(ts.tv_sec()).ok().map(|s| s * 1_000_000 + ts.tv_nsec().unsigned_abs() / 1000);
        }
    }
    Ok((m.bytes, at))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn pair(l: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let rx = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (tx, _) = l.accept().await.unwrap();
        enable(&rx).unwrap();
        (tx, rx)
    }

    #[tokio::test]
    async fn reads_carry_the_kernels_arrival_time() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Linux switches receive timestamping on for the stack a moment after the first socket
        // asks (a deferred static-key change): until then bytes arrive unstamped. Keep a
        // stamped socket open and send on it until a read carries a timestamp.
        let (mut warm_tx, warm_rx) = pair(&l).await;
        let mut warm = Inbox::new(b"", 64);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            warm_tx.write_all(b"x").await.unwrap();
            if warm.fill(&warm_rx).await.unwrap().1.is_some() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no receive timestamp within 5 s");
            warm.end = 0;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (mut tx, rx) = pair(&l).await;
        let mut inbox = Inbox::new(b"ab", 8);
        let before = crate::viewers::now_us();
        tx.write_all(b"0123456789").await.unwrap();
        let mut got = Vec::new();
        let mut at = None;
        while got.len() < 10 {
            let (n, a) = inbox.fill(&rx).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&inbox.data[inbox.end - n..inbox.end]);
            at = at.or(a);
        }
        let after = crate::viewers::now_us();
        assert_eq!(got, b"0123456789");
        assert_eq!(&inbox.data[..2], b"ab", "leftover bytes stay in front");
        let at = at.expect("a receive timestamp");
        assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
        let mut pos = 5;
        inbox.compact(&mut pos);
        assert_eq!(inbox.unread(0), b"3456789");
        drop(tx);
        assert_eq!(inbox.fill(&rx).await.unwrap().0, 0, "end of stream");
    }
}
