//! A TCP impairment proxy: sits between an edge and a hub and makes the link between them
//! slow, late, silent or broken, on command, while both ends keep running.
//!
//! - **delay**: each direction's bytes are held for a fixed time before they are passed on;
//! - **bandwidth**: each direction is paced by a token bucket (16 KiB burst);
//! - **buffer**: what the proxy holds per direction before it stops reading (a router queue);
//! - **stall** (a silent cut): nothing is forwarded and nothing is closed; new connections are
//!   accepted but carry nothing, as when a cable is pulled somewhere along the path;
//! - **cut** (a hard cut): every connection is reset (RST) and new ones are reset at once, until
//!   [`ImpairProxy::restore`];
//! - **reset**: every current connection is reset once, or one chosen by the address the target
//!   sees it from ([`ImpairProxy::reset_upstream`]: only the edge's control channel, say); new
//!   ones work.
//!
//! Everything it does is bounded: one task per connection, at most `buffer` bytes queued per
//! direction.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the proxy does to the link right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Impairment {
    /// Added one-way delay, each direction.
    pub delay: Duration,
    /// Bits per second from the client (edge) to the target (hub); `None` is unlimited.
    pub up_bps: Option<u64>,
    /// Bits per second from the target to the client; `None` is unlimited.
    pub down_bps: Option<u64>,
    /// Bytes the proxy holds per direction before it stops reading.
    pub buffer_bytes: usize,
    /// Forward nothing, close nothing.
    pub stalled: bool,
    /// Reset every connection, old and new.
    pub cut: bool,
}

impl Default for Impairment {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            up_bps: None,
            down_bps: None,
            buffer_bytes: 256 * 1024,
            stalled: false,
            cut: false,
        }
    }
}

/// A running proxy; dropping it stops it and resets its connections.
#[derive(Debug)]
pub struct ImpairProxy {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct State {
    target: SocketAddr,
    config: watch::Sender<Impairment>,
    /// Each connection's kill switch, and its proxy → target socket's local address once
    /// connected (the remote address the target sees).
    conns: Mutex<HashMap<u64, (CancellationToken, Option<SocketAddr>)>>,
    next: AtomicU64,
    accepted: AtomicU64,
    resets: AtomicU64,
}

impl ImpairProxy {
    /// Listens on 127.0.0.1 (port 0) and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), target).await
    }

    /// Listens on `listen` and forwards to `target`.
    pub async fn start_on(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Self> {
        // A small receive buffer on the client side, so the proxy (not the kernel below it) is
        // where bytes wait when the link is capped: its buffer is the router queue.
        let socket = socket2::Socket::new(socket2::Domain::for_address(listen), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_recv_buffer_size(RECV_BUFFER)?;
        socket.bind(&listen.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        let listener = TcpListener::from_std(socket.into())?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            target,
            config: watch::Sender::new(Impairment::default()),
            conns: Mutex::default(),
            next: AtomicU64::new(1),
            accepted: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), shutdown.clone()));
        Ok(Self { addr, state, shutdown })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The impairment in effect.
    pub fn impairment(&self) -> Impairment {
        *self.state.config.borrow()
    }

    /// Changes the impairment.
    pub fn update(&self, f: impl FnOnce(&mut Impairment)) {
        let cut_now = self.state.config.send_if_modified(|c| {
            let before = *c;
            f(c);
            *c != before
        }) && self.state.config.borrow().cut;
        if cut_now {
            self.reset_all();
        }
    }

    /// Sets the added one-way delay.
    pub fn set_delay(&self, delay: Duration) {
        self.update(|c| c.delay = delay);
    }

    /// Caps the client → target direction (bits per second; `None` lifts the cap).
    pub fn set_up_bandwidth(&self, bps: Option<u64>) {
        self.update(|c| c.up_bps = bps);
    }

    /// A silent cut: stop forwarding, close nothing.
    pub fn stall(&self) {
        self.update(|c| c.stalled = true);
    }

    /// A hard cut: reset every connection and every new one until [`ImpairProxy::restore`].
    pub fn cut(&self) {
        self.update(|c| c.cut = true);
        self.reset_all();
    }

    /// Ends a stall or a cut.
    pub fn restore(&self) {
        self.update(|c| {
            c.stalled = false;
            c.cut = false;
        });
    }

    /// Resets every current connection once.
    pub fn reset_all(&self) {
        let conns: Vec<CancellationToken> = self.lock().values().map(|(c, _)| c.clone()).collect();
        for c in conns {
            c.cancel();
        }
    }

    /// Resets the one connection the target sees as coming from `upstream`; false if there is
    /// none.
    pub fn reset_upstream(&self, upstream: SocketAddr) -> bool {
        let kill = self.lock().values().find(|(_, a)| *a == Some(upstream)).map(|(c, _)| c.clone());
        kill.map(|c| c.cancel()).is_some()
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// Connections reset by the proxy so far.
    pub fn resets(&self) -> u64 {
        self.state.resets.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (CancellationToken, Option<SocketAddr>)>> {
        self.state.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ImpairProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    loop {
        let (client, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        state.accepted.fetch_add(1, Ordering::Relaxed);
        if state.config.borrow().cut {
            state.resets.fetch_add(1, Ordering::Relaxed);
            reset(client);
            continue;
        }
        let id = state.next.fetch_add(1, Ordering::Relaxed);
        let kill = shutdown.child_token();
        state.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, (kill.clone(), None));
        let state = state.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            if let Ok(Ok(server)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(state.target)).await
            {
                let _ = server.set_nodelay(true);
                if let Some(entry) = state.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(&id)
                {
                    entry.1 = server.local_addr().ok();
                }
                let killed = relay(client, server, &state, &kill).await;
                if killed {
                    state.resets.fetch_add(1, Ordering::Relaxed);
                }
            }
            state.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
        });
    }
}

/// Closes with RST (linger 0).
fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// One direction's queue and pacing.
struct Pipe {
    queue: VecDeque<(Instant, Bytes)>,
    queued: usize,
    tokens: f64,
    refilled: Instant,
    eof: bool,
    shut: bool,
}

const BURST_BYTES: f64 = 16.0 * 1024.0;
/// SO_RCVBUF of accepted connections (the kernel doubles it).
const RECV_BUFFER: usize = 16 * 1024;
const CHUNK: usize = 16 * 1024;

impl Pipe {
    fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            queued: 0,
            tokens: BURST_BYTES,
            refilled: Instant::now(),
            eof: false,
            shut: false,
        }
    }

    fn can_read(&self, imp: &Impairment) -> bool {
        !self.eof && self.queued < imp.buffer_bytes.max(1)
    }

    fn refill(&mut self, now: Instant, bps: Option<u64>) {
        match bps {
            None => self.tokens = BURST_BYTES,
            Some(bps) => {
                let rate = bps as f64 / 8.0;
                self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(BURST_BYTES);
            }
        }
        self.refilled = now;
    }

    /// When the head of the queue may next be written, if anything is queued.
    fn next_write(&self, bps: Option<u64>) -> Option<Instant> {
        let (due, _) = self.queue.front()?;
        let wait_tokens = match bps {
            Some(bps) if self.tokens < 1.0 => {
                Duration::from_secs_f64((1.0 - self.tokens) / (bps as f64 / 8.0).max(1.0))
            }
            _ => Duration::ZERO,
        };
        Some((*due).max(self.refilled + wait_tokens))
    }

    /// The bytes that may be written now (taken from the queue).
    fn take(&mut self, now: Instant, bps: Option<u64>) -> Option<Bytes> {
        self.refill(now, bps);
        let (due, head) = self.queue.front_mut()?;
        if *due > now || self.tokens < 1.0 {
            return None;
        }
        let n = head.len().min(self.tokens as usize).max(1);
        let out = head.split_to(n);
        if head.is_empty() {
            self.queue.pop_front();
        }
        self.queued -= out.len();
        if bps.is_some() {
            self.tokens -= out.len() as f64;
        }
        Some(out)
    }
}

/// Relays until both directions end or `kill` fires; true if killed (reset).
async fn relay(mut client: TcpStream, mut server: TcpStream, state: &State, kill: &CancellationToken) -> bool {
    let mut cfg = state.config.subscribe();
    let (mut up, mut down) = (Pipe::new(), Pipe::new());
    let (mut buf_up, mut buf_down) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let killed = {
        let (mut crd, mut cwr) = client.split();
        let (mut srd, mut swr) = server.split();
        loop {
            let imp = *cfg.borrow_and_update();
            if imp.cut {
                break true;
            }
            if up.shut && down.shut {
                break false;
            }
            let now = Instant::now();
            // Half-closes propagate once everything before them went out.
            if up.eof && up.queue.is_empty() && !up.shut {
                let _ = swr.shutdown().await;
                up.shut = true;
            }
            if down.eof && down.queue.is_empty() && !down.shut {
                let _ = cwr.shutdown().await;
                down.shut = true;
            }
            let live = !imp.stalled;
            let up_at = live.then(|| up.next_write(imp.up_bps)).flatten();
            let down_at = live.then(|| down.next_write(imp.down_bps)).flatten();
            let sleep_until = |t: Option<Instant>| async move {
                match t {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = crd.read(&mut buf_up), if live && up.can_read(&imp) => match r {
                    Ok(0) | Err(_) => up.eof = true,
                    Ok(n) => {
                        up.queue.push_back((now + imp.delay, Bytes::copy_from_slice(&buf_up[..n])));
                        up.queued += n;
                    }
                },
                r = srd.read(&mut buf_down), if live && down.can_read(&imp) => match r {
                    Ok(0) | Err(_) => down.eof = true,
                    Ok(n) => {
                        down.queue.push_back((now + imp.delay, Bytes::copy_from_slice(&buf_down[..n])));
                        down.queued += n;
                    }
                },
                () = sleep_until(up_at) => {
                    while let Some(b) = up.take(Instant::now(), imp.up_bps) {
                        if swr.write_all(&b).await.is_err() {
                            up.shut = true;
                            down.eof = true;
                            break;
                        }
                    }
                }
                () = sleep_until(down_at) => {
                    while let Some(b) = down.take(Instant::now(), imp.down_bps) {
                        if cwr.write_all(&b).await.is_err() {
                            down.shut = true;
                            up.eof = true;
                            break;
                        }
                    }
                }
                r = cfg.changed() => if r.is_err() { break true; },
                () = kill.cancelled() => break true,
            }
        }
    };
    if killed {
        reset(client);
        reset(server);
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(c: &mut TcpStream, n: usize) -> Duration {
        let t0 = std::time::Instant::now();
        c.write_all(&vec![7u8; n]).await.unwrap();
        let mut got = vec![0u8; n];
        c.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|b| *b == 7));
        t0.elapsed()
    }

    #[tokio::test]
    async fn delays_and_paces() {
        let p = ImpairProxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        assert!(roundtrip(&mut c, 100).await < Duration::from_millis(100));
        p.set_delay(Duration::from_millis(100));
        let rt = roundtrip(&mut c, 100).await;
        assert!(rt >= Duration::from_millis(200) && rt < Duration::from_millis(600), "{rt:?}");
        p.set_delay(Duration::ZERO);
        // 200 KB at 1.6 Mbit/s up: about 1 s (the first 16 KiB are a burst).
        p.set_up_bandwidth(Some(1_600_000));
        let rt = roundtrip(&mut c, 200_000).await;
        assert!(rt >= Duration::from_millis(800) && rt < Duration::from_millis(2500), "{rt:?}");
    }

    #[tokio::test]
    async fn stall_is_silent_and_cut_resets() {
        let p = ImpairProxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        roundtrip(&mut c, 10).await;
        p.stall();
        c.write_all(b"hello").await.unwrap();
        let mut b = [0u8; 5];
        assert!(tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut b)).await.is_err(), "silent");
        p.restore();
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b)).await.unwrap().unwrap();
        assert_eq!(&b, b"hello", "held bytes flow after the stall");

        p.cut();
        let r = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await.unwrap();
        assert!(matches!(r, Err(_) | Ok(0)), "reset: {r:?}");
        let mut c2 = TcpStream::connect(p.addr()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), c2.read(&mut b)).await.unwrap();
        assert!(matches!(r, Err(_) | Ok(0)), "new connections are reset while cut: {r:?}");
        p.restore();
        let mut c3 = TcpStream::connect(p.addr()).await.unwrap();
        roundtrip(&mut c3, 10).await;
        assert_eq!(p.connections(), 1);
        assert!(p.resets() >= 2);
    }
}
