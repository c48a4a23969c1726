//! LL-HLS serving cost: many clients of one stream, each on its own keep-alive HTTP/1.1
//! connection doing what a low-latency player does (a blocking playlist reload for the next
//! part, then that part), against a hub and an edge started as for the fan-out ladder.
//!
//! Delivery time: for each part, the moment the first client got a playlist listing it stands
//! for the moment the part was complete at the hub (the hub answers every waiting reload when
//! the part completes, so the first answer leaves within microseconds of it on loopback); a
//! client's delivery time is when it holds the part's bytes minus that moment.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::report::ProcSample;
use crate::servers::{self, NODE};

/// What the run measured.
#[derive(Debug, serde::Serialize)]
pub struct HlsOutcome {
    /// Clients.
    pub clients: usize,
    /// Seconds measured.
    pub duration_s: f64,
    /// Hub CPU over the window, percent of one core.
    pub hub_cpu_percent: f64,
    /// Hub resident memory added per client, KiB.
    pub rss_kib_per_client: f64,
    /// Parts delivered in the window, all clients.
    pub parts: usize,
    /// Delivery time (part complete at the hub → client holds it), ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
    /// Requests that failed.
    pub errors: usize,
}

/// When each part was first listed, and each client's delivery times (part, when held).
#[derive(Default)]
struct Book {
    listed: HashMap<(u64, u32), Instant>,
    held: Vec<((u64, u32), Instant)>,
    errors: usize,
}

/// One keep-alive HTTP/1.1 connection: GET, then the body (Content-Length).
struct Conn {
    tcp: TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Self { tcp, host: addr.to_owned(), buf: Vec::with_capacity(64 * 1024) })
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<Vec<u8>> {
        self.tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host).as_bytes()).await?;
        let mut chunk = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.tcp.read(&mut chunk).await?;
            if n == 0 {
                bail!("the hub closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            bail!("{path}: {}", head.lines().next().unwrap_or_default());
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no content-length")?;
        while self.buf.len() < head_end + len {
            let n = self.tcp.read(&mut chunk).await?;
            if n == 0 {
                bail!("the hub closed the connection mid-body");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Ok(body)
    }
}

/// The newest part a media playlist lists.
fn newest_part(playlist: &str) -> Option<(u64, u32)> {
    let line = playlist.lines().rev().find(|l| l.starts_with("#EXT-X-PART:"))?;
    let name = line.split("URI=\"").nth(1)?.split('"').next()?;
    let (msn, part) = name.strip_prefix("video-part-")?.strip_suffix(".mp4")?.split_once('.')?;
    Some((msn.parse().ok()?, part.parse().ok()?))
}

/// One client: blocking reload for the part after the last it has, then that part.
async fn client(addr: String, base: String, book: Arc<Mutex<Book>>, stop: CancellationToken) {
    let Ok(mut conn) = Conn::open(&addr).await else {
        book.lock().map(|mut b| b.errors += 1).ok();
        return;
    };
    let mut next: Option<(u64, u32)> = None;
    while !stop.is_cancelled() {
        let path = match next {
            Some((m, p)) => format!("{base}/video.m3u8?_HLS_msn={m}&_HLS_part={p}"),
            None => format!("{base}/video.m3u8"),
        };
        let got = tokio::select! {
            r = conn.get(&path) => r,
            () = stop.cancelled() => return,
        };
        let Some(part) = got.ok().and_then(|b| newest_part(&String::from_utf8_lossy(&b))) else {
            book.lock().map(|mut b| b.errors += 1).ok();
            return;
        };
        let listed = Instant::now();
        // The first client to see a part listed sets its time.
        book.lock().map(|mut b| *b.listed.entry(part).or_insert(listed)).ok();
        match conn.get(&format!("{base}/video-part-{}.{}.mp4", part.0, part.1)).await {
            Ok(_) => {
                let held = Instant::now();
                book.lock().map(|mut b| b.held.push((part, held))).ok();
            }
            Err(_) => {
                book.lock().map(|mut b| b.errors += 1).ok();
                return;
            }
        }
        next = Some((part.0, part.1 + 1));
    }
}

/// Starts a hub and an edge with one stream, `clients` LL-HLS clients, and measures.
pub async fn measure(exe: &Path, dir: &Path, clip: &Path, clients: usize, seconds: f64) -> anyhow::Result<HlsOutcome> {
    let server = servers::start_mediamesh(exe, dir, clip, 1).await?;
    let addr = format!("127.0.0.1:{}", server.stream_port());
    let base = format!("/api/v1/nodes/{NODE}/streams/s0/hls");
    let book = Arc::new(Mutex::new(Book::default()));
    let stop = CancellationToken::new();
    // One client first: the stream starts, and the hub's memory with it is the baseline.
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(client(addr.clone(), base.clone(), book.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let base_sample = ProcSample::take(&server.pids);
    for _ in 1..clients {
        tasks.spawn(client(addr.clone(), base.clone(), book.clone(), stop.clone()));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (t0, before) = (Instant::now(), ProcSample::take(&server.pids));
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let (t1, after) = (Instant::now(), ProcSample::take(&server.pids));
    stop.cancel();
    tasks.join_all().await;
    server.stop().await;
    let b = book.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut ms: Vec<f64> = b
        .held
        .iter()
        .filter(|(_, at)| *at >= t0 && *at <= t1)
        .filter_map(|(part, at)| b.listed.get(part).map(|l| at.duration_since(*l).as_secs_f64() * 1000.0))
        .collect();
    anyhow::ensure!(!ms.is_empty(), "no part delivered in the window ({} errors)", b.errors);
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    let window = t1.duration_since(t0).as_secs_f64();
    Ok(HlsOutcome {
        clients,
        duration_s: window,
        hub_cpu_percent: (after.cpu_s - before.cpu_s) / window * 100.0,
        rss_kib_per_client: (after.rss_kib as f64 - base_sample.rss_kib as f64) / (clients.max(2) - 1) as f64,
        parts: ms.len(),
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: ms[ms.len() - 1],
        errors: b.errors,
    })
}
