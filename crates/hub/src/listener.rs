//! One way in for every port: the stream port (REST API, WebSocket viewers), RTSP and the
//! tunnel.
//!
//! [`serve`] accepts connections on one port. Each port has a [`Gate`]: it admits a connection
//! while the port is under its total and the client's address under its per-address limit,
//! counts what it accepts and refuses, and logs refusals at a bounded rate (a client in a loop
//! must not fill the log). An admitted connection goes, with its typed [`Remote`] address, to
//! the port's protocol in a task of the hub's tracker, so shutdown waits for it; its place at
//! the gate is held until that task ends.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mediamesh_tunnel::settings::Live;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// The hub's ports, as named in logs and in `/metrics` (label `port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// `streamPort`: the REST API, `/metrics` and WebSocket viewers.
    Stream,
    /// `rtsp.port`.
    Rtsp,
    /// `tunnelPort`: edges.
    Tunnel,
    /// `webrtc.port` over TCP: ICE-TCP, for viewers whose network blocks UDP.
    WebrtcTcp,
}

impl Port {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Port::Stream => "stream",
            Port::Rtsp => "rtsp",
            Port::Tunnel => "tunnel",
            Port::WebrtcTcp => "webrtc-tcp",
        }
    }
}

/// A client's address. An IPv4 client reaching an IPv6 socket (`::ffff:a.b.c.d`) is its IPv4
/// address, so one client has one per-address count and one spelling in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Remote(SocketAddr);

impl Remote {
    /// For a connection whose peer address is not known.
    pub const UNKNOWN: Remote = Remote(SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)));

    /// The address `addr` in canonical form.
    pub fn new(addr: SocketAddr) -> Self {
        Self(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
    }

    /// The client's IP address (what per-address limits count).
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }

    /// The address and port.
    pub fn addr(&self) -> SocketAddr {
        self.0
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How many connections a port admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Open connections on the port, from every client together.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_per_ip: usize,
}

impl Admission {
    /// No limit.
    #[cfg(test)]
    pub(crate) const UNLIMITED: Admission = Admission { max_connections: usize::MAX, max_per_ip: usize::MAX };

    /// From configured limits.
    pub(crate) fn new(max_connections: u32, max_per_ip: u32) -> Self {
        Self { max_connections: max_connections as usize, max_per_ip: max_per_ip as usize }
    }
}

/// Each port's admission, as one configuration sets it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admissions {
    pub stream: Admission,
    pub rtsp: Admission,
    pub tunnel: Admission,
}

/// File descriptors kept out of the ports' limits: files, the listeners, outbound requests,
/// and room for an operator's API request when the viewer ports are full.
const FD_RESERVE: usize = 256;

impl Admissions {
    /// Lowers the ports' total limits to fit the open file limit, keeping [`FD_RESERVE`] free,
    /// by fair shares ([`fair_shares`]): a port that asks for less than a third keeps what it asked, and what
    /// it leaves goes to the others, so a flood of viewer connections cannot take the
    /// descriptors the edges need, and a hub for many edges and few viewers gets its edges.
    /// Returns the limits before, if it changed them.
    pub(crate) fn fit_to_fd_limit(&mut self) -> Option<[usize; 3]> {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current?;
        let budget = usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(FD_RESERVE);
        let before = [self.stream.max_connections, self.rtsp.max_connections, self.tunnel.max_connections];
        if before.iter().fold(0usize, |a, b| a.saturating_add(*b)) <= budget {
            return None;
        }
        let [stream, rtsp, tunnel] = fair_shares(before, budget);
        self.stream.max_connections = stream;
        self.rtsp.max_connections = rtsp;
        self.tunnel.max_connections = tunnel;
        Some(before)
    }
}

/// Splits `budget` between `asks` by water-filling: the smallest ask is served first with at
/// most an even share of what is left, and so on; each gets at least one.
fn fair_shares(asks: [usize; 3], budget: usize) -> [usize; 3] {
    let mut order = [0, 1, 2];
    order.sort_by_key(|&i| asks[i]);
    let mut out = [0; 3];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let share = left / (order.len() - k);
        out[i] = asks[i].min(share).max(1);
        left = left.saturating_sub(out[i]);
    }
    out
}

/// Each port's gate.
#[derive(Debug, Clone)]
pub(crate) struct Gates {
    pub stream: Arc<Gate>,
    pub rtsp: Arc<Gate>,
    pub tunnel: Arc<Gate>,
}

impl Gates {
    pub(crate) fn new(a: &Admissions) -> Self {
        Self {
            stream: Gate::new(Port::Stream, a.stream),
            rtsp: Gate::new(Port::Rtsp, a.rtsp),
            tunnel: Gate::new(Port::Tunnel, a.tunnel),
        }
    }

    /// Applies a reloaded configuration's limits (to connections that arrive from now on).
    pub(crate) fn set(&self, a: &Admissions) {
        self.stream.admission.set(a.stream);
        self.rtsp.admission.set(a.rtsp);
        self.tunnel.admission.set(a.tunnel);
    }

    /// The gates of the ports that are open (RTSP can be off).
    pub(crate) fn serving(&self, rtsp: bool) -> Arc<[Arc<Gate>]> {
        let mut v = vec![self.stream.clone()];
        if rtsp {
            v.push(self.rtsp.clone());
        }
        v.push(self.tunnel.clone());
        v.into()
    }
}

/// Why a connection was refused at the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The port has `max_connections` open.
    PortFull,
    /// The client's address has `max_per_ip` open.
    AddressFull,
}

impl Refused {
    pub(crate) const ALL: [Refused; 2] = [Refused::PortFull, Refused::AddressFull];

    /// The `reason` label in `/metrics`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Refused::PortFull => "port_limit",
            Refused::AddressFull => "address_limit",
        }
    }
}

/// A deadline a client missed: its connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// The TLS handshake (and, on the tunnel port, the upgrade and Hello): `handshakeTimeout`.
    Handshake,
    /// A complete request: `requestTimeout`, `rtsp.requestTimeout`.
    Request,
}

impl Deadline {
    pub(crate) const ALL: [Deadline; 2] = [Deadline::Handshake, Deadline::Request];

    /// The `phase` label in `/metrics`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Deadline::Handshake => "handshake",
            Deadline::Request => "request",
        }
    }
}

/// What a gate has counted since the hub started.
#[derive(Debug, Default)]
pub(crate) struct GateCounters {
    pub accepted: AtomicU64,
    pub refused_port_full: AtomicU64,
    pub refused_address_full: AtomicU64,
    /// `accept` failures (out of file descriptors and the like).
    pub accept_errors: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub request_timeouts: AtomicU64,
}

impl GateCounters {
    pub(crate) fn refused(&self, why: Refused) -> u64 {
        match why {
            Refused::PortFull => self.refused_port_full.load(Ordering::Relaxed),
            Refused::AddressFull => self.refused_address_full.load(Ordering::Relaxed),
        }
    }

    fn timeouts(&self, d: Deadline) -> &AtomicU64 {
        match d {
            Deadline::Handshake => &self.handshake_timeouts,
            Deadline::Request => &self.request_timeouts,
        }
    }

    /// Counts a connection closed for missing `d`.
    pub(crate) fn missed(&self, d: Deadline) {
        self.timeouts(d).fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed for missing `d`.
    pub(crate) fn timed_out(&self, d: Deadline) -> u64 {
        self.timeouts(d).load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Admission to one port.
#[derive(Debug)]
pub(crate) struct Gate {
    port: Port,
    /// What a reload changes; connections already open stay open.
    pub admission: Live<Admission>,
    open: Mutex<Open>,
    pub counters: GateCounters,
    refusals_logged: Mutex<Bounded>,
}

/// A connection's place at its gate; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    pub(crate) fn new(port: Port, admission: Admission) -> Arc<Self> {
        Arc::new(Self {
            port,
            admission: Live::new(admission),
            open: Mutex::default(),
            counters: GateCounters::default(),
            refusals_logged: Mutex::new(Bounded::new(REFUSAL_LOG_EVERY)),
        })
    }

    pub(crate) fn port(&self) -> Port {
        self.port
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // Each critical section is a few map operations; a poisoned map is consistent.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open connections on this port.
    pub(crate) fn open(&self) -> usize {
        self.lock().total
    }

    /// Takes a place for a connection from `ip`, or says why there is none.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let limits = *self.admission.get();
        let mut open = self.lock();
        if open.total >= limits.max_connections {
            self.counters.refused_port_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::PortFull);
        }
        let n = open.per_ip.entry(ip).or_insert(0);
        if *n >= limits.max_per_ip {
            self.counters.refused_address_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::AddressFull);
        }
        *n += 1;
        open.total += 1;
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { gate: self.clone(), ip })
    }

    /// Whether a warning about a client nobody has identified yet may be logged now: at most
    /// one per [`REFUSAL_LOG_EVERY`] per port. `Some(warnings held back since the last one)`.
    pub(crate) fn may_warn(&self) -> Option<u64> {
        self.refusals_logged.lock().unwrap_or_else(PoisonError::into_inner).allow(Instant::now())
    }

    /// Logs a refusal at the bounded rate of [`Gate::may_warn`]; every refusal is counted in
    /// `/metrics`.
    fn log_refusal(&self, remote: Remote, why: Refused) {
        if let Some(suppressed) = self.may_warn() {
            let limits = *self.admission.get();
            let limit = match why {
                Refused::PortFull => limits.max_connections,
                Refused::AddressFull => limits.max_per_ip,
            };
            warn!(port = self.port.name(), %remote, reason = why.name(), limit, suppressed, "connection refused");
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// How often a port logs a refused connection (each is counted).
pub(crate) const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// At most one event per interval; counts the ones it holds back.
#[derive(Debug)]
pub(crate) struct Bounded {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Bounded {
    pub(crate) fn new(every: Duration) -> Self {
        Self { every, last: None, held_back: 0 }
    }

    /// `Some(events held back since the last one allowed)` if an event at `now` may go out.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now.saturating_duration_since(last) < self.every) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// Raises the process's soft limit on open files to its hard limit: each connection is a file
/// descriptor, and the usual soft default (1024) is below what one busy port holds. Returns the
/// soft limit before and after (`None`: unlimited).
pub(crate) fn raise_fd_limit() -> (Option<u64>, Option<u64>) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return (limit.current, limit.current);
    }
    let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => (limit.current, limit.maximum),
        Err(e) => {
            debug!(error = %e, "cannot raise the open file limit");
            (limit.current, limit.current)
        }
    }
}

/// A connection the gate admitted.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub tcp: TcpStream,
    pub remote: Remote,
    /// Numbers the port's connections, for log spans.
    pub id: u64,
    /// The port's gate, to count the deadlines the connection misses.
    pub gate: Arc<Gate>,
}

/// Accepts connections on `listener` until `shutdown`; each admitted one runs `handle` in a
/// task of `tasks`, holding its place at `gate` until it ends.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    handle: H,
) where
    H: Fn(Accepted) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let port = gate.port().name();
    let mut next = 1u64;
    let mut errors_logged = Bounded::new(Duration::from_secs(1));
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    gate.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = errors_logged.allow(Instant::now()) {
                        warn!(port, error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let remote = Remote::new(addr);
        let slot = match gate.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                gate.log_refusal(remote, why);
                drop(tcp);
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(port, %remote, error = %e, "cannot set TCP_NODELAY");
        }
        let id = next;
        next += 1;
        let conn = handle(Accepted { tcp, remote, id, gate: gate.clone() });
        tasks.spawn(async move {
            conn.await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_shared_by_water_filling() {
        // Many edges, few viewers: the edges get what the viewers leave.
        assert_eq!(fair_shares([64, 16, 20_100], 19_744), [64, 16, 19_664]);
        // A flood of viewers cannot push the edges under an even share.
        assert_eq!(fair_shares([8192, 4096, 4096], 3000), [1000, 1000, 1000]);
        assert_eq!(fair_shares([8192, 500, 4096], 3000), [1250, 500, 1250]);
        assert_eq!(fair_shares([10, 10, 10], 0), [1, 1, 1]);
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:4000".parse().unwrap();
        let plain: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        assert_eq!(Remote::new(mapped), Remote::new(plain));
        assert_eq!(Remote::new(mapped).to_string(), "192.0.2.7:4000");
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(Remote::new(v6).addr(), v6);
    }

    #[test]
    fn the_gate_counts_per_address_and_in_total() {
        let gate = Gate::new(Port::Rtsp, Admission { max_connections: 3, max_per_ip: 2 });
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refused::AddressFull);
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(c).unwrap_err(), Refused::PortFull);
        assert_eq!(gate.open(), 3);
        drop(a1);
        assert_eq!(gate.open(), 2);
        let _c1 = gate.admit(c).unwrap();
        assert_eq!(gate.counters.accepted.load(Ordering::Relaxed), 4);
        assert_eq!(gate.counters.refused(Refused::AddressFull), 1);
        assert_eq!(gate.counters.refused(Refused::PortFull), 1);
    }

    #[test]
    fn a_lowered_limit_applies_to_new_connections_only() {
        let gate = Gate::new(Port::Stream, Admission::UNLIMITED);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<Slot> = (0..5).map(|_| gate.admit(ip).unwrap()).collect();
        gate.admission.set(Admission { max_connections: 100, max_per_ip: 2 });
        assert_eq!(gate.admit(ip).unwrap_err(), Refused::AddressFull);
        assert_eq!(gate.open(), 5);
        drop(held);
        assert_eq!(gate.open(), 0);
        assert!(gate.admit(ip).is_ok());
    }

    #[test]
    fn bounded_lets_one_event_through_per_interval_and_counts_the_rest() {
        let mut b = Bounded::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(b.allow(t0), Some(0));
        assert_eq!(b.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(b.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(b.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(b.allow(t0 + Duration::from_secs(11)), None);
    }
}
