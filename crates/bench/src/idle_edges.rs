//! Many idle edges on one hub (`--idle-edges N`): what each costs the hub while it only keeps
//! its control channel, and how long all of them take to come back after the hub restarts.
//!
//! The hub runs as its own process; the edges are control channels from this process, each
//! with its own certificate (node `idle-N`), its catalog of one stream, and the real edge's
//! dial, heartbeat (a Ping a second each way) and redial schedule (capped exponential backoff
//! with full jitter). They stream nothing.
//!
//! Measured: the hub's RSS before the edges and with all of them (the difference per edge),
//! its CPU share over `--duration` seconds with all of them idle, and after `kill -9` and a
//! restart of the hub on the same ports, the time until every edge has a control channel again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use mediamesh_edge::dial::{DialConfig, dial};
use mediamesh_tunnel::backoff::{Backoff, BackoffConfig};
use mediamesh_tunnel::liveness::{Heartbeat, HeartbeatConfig};
use mediamesh_tunnel::wire::{CatalogEntry, Channel};
use serde::Serialize;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use crate::report::ProcSample;
use crate::servers::{free_port, spawn_logged, yaml_str};

/// Dials in flight at once while the edges first connect (the hub's handshake deadline must
/// not pass while a connection waits its turn for the CPU).
const DIALS_AT_ONCE: usize = 64;

/// What one run measured.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleEdges {
    /// Edges.
    pub edges: usize,
    /// Seconds until all had connected the first time.
    pub connect_s: f64,
    /// The hub's RSS before the first edge, KiB.
    pub rss_before_kib: u64,
    /// With every edge connected and idle, KiB.
    pub rss_kib: u64,
    /// The difference per edge, KiB.
    pub kib_per_edge: f64,
    /// The hub's CPU share of one core with every edge idle.
    pub cpu_percent: f64,
    /// Seconds from the restarted hub's start until every edge had connected again.
    pub reconnect_s: f64,
}

/// Runs it: `edges` idle edges against a fresh hub, measured over `seconds` (sampled by
/// `perf` with `perf`, whose summary is printed).
pub async fn measure(exe: &Path, dir: &Path, edges: usize, seconds: f64, perf: bool) -> anyhow::Result<IdleEdges> {
    std::fs::create_dir_all(dir)?;
    let pki = mediamesh_tls::dev::write_pki(&dir.join("pki"), &["127.0.0.1".to_owned()], &[])?;
    let ca = mediamesh_tls::dev::DevCa::load(&pki.ca_cert, &dir.join("pki").join("ca.key"))?;
    let tunnel_port = free_port()?;
    let stream_port = free_port()?;
    let hub_yaml = format!(
        "cloudDataStream:\n  streamPort: {stream_port}\n  tunnelPort: {tunnel_port}\n  listenAddress: \"127.0.0.1\"\n\
         \x20 tlsTunnelCAFile: {ca}\n  tlsTunnelCertFile: {hc}\n  tlsTunnelPrivateKeyFile: {hk}\n\
         \x20 tunnelMaxConnections: {max}\n  tunnelMaxConnectionsPerIp: {max}\n  streamMaxConnections: 64\n\
         \x20 rtsp: {{port: 0, udpRtpPort: 0, udpRtcpPort: 0, maxConnections: 16}}\n",
        ca = yaml_str(&pki.ca_cert),
        hc = yaml_str(&pki.hub.cert),
        hk = yaml_str(&pki.hub.key),
        max = edges * 2 + 100,
    );
    let hub_cfg = dir.join("hub.yaml");
    std::fs::write(&hub_cfg, hub_yaml)?;
    let start_hub = |n: u32| {
        let log = dir.join(format!("hub-{n}.log"));
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("hub").arg("--config").arg(&hub_cfg).env("RUST_LOG", "warn");
        spawn_logged(&mut cmd, &log)
    };
    let mut hub = start_hub(1)?;
    let api = format!("127.0.0.1:{stream_port}");
    wait_ready(&api).await?;
    let pid = hub.id().context("the hub exited")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ProcSample::take(&[pid]);

    eprintln!("issuing {edges} edge certificates");
    let certs = dir.join("edges");
    std::fs::create_dir_all(&certs)?;
    let mut configs = Vec::with_capacity(edges);
    for i in 0..edges {
        let node = format!("idle-{i}");
        let pem = ca.issue_edge(&node)?;
        let (cert, key) = (certs.join(format!("{node}.pem")), certs.join(format!("{node}.key")));
        std::fs::write(&cert, &pem.cert)?;
        std::fs::write(&key, &pem.key)?;
        let files = mediamesh_tls::TlsFiles { ca: pki.ca_cert.clone(), cert, key };
        configs.push(DialConfig {
            server: format!("127.0.0.1:{tunnel_port}"),
            server_name: "127.0.0.1".try_into()?,
            tls: mediamesh_tls::tunnel_client_config(&files)?,
            node,
            handshake_timeout: Duration::from_secs(10),
            write_deadline: Duration::from_secs(10),
            unsent_lowat: None,
            ca_file: files.ca.clone(),
            fallbacks: vec![],
        });
    }

    eprintln!("connecting {edges} edges");
    let connected = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(DIALS_AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, cfg) in configs.into_iter().enumerate() {
        let (connected, stop, gate) = (connected.clone(), stop.clone(), gate.clone());
        tasks.spawn(edge(cfg, i as u64, connected, stop, gate));
    }
    let connect_s = wait_count(&connected, edges, Duration::from_secs(600)).await?.as_secs_f64();
    eprintln!("all {edges} connected in {connect_s:.1} s; idle for {seconds} s");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recording = if perf { Some(crate::profile::start(&[pid], dir, seconds)?) } else { None };
    let a = ProcSample::take(&[pid]);
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let b = ProcSample::take(&[pid]);
    if let Some(r) = recording {
        let s = r.finish().await?;
        eprintln!("perf: {:.0} % in the kernel; report {}", s.kernel_percent, s.report.display());
        for (pct, at, sym) in s.top.iter().take(15) {
            eprintln!("  {pct:5.1} %  {at:<20} {sym}");
        }
    }
    let cpu_percent = (b.cpu_s - a.cpu_s) / seconds * 100.0;
    let rss_kib = b.rss_kib;

    eprintln!("kill -9 of the hub, then a restart");
    kill(&mut hub).await;
    wait_count_below(&connected, 1, Duration::from_secs(30)).await?;
    let mut hub = start_hub(2)?;
    let restarted = Instant::now();
    let reconnect_s = wait_count(&connected, edges, Duration::from_secs(600)).await;
    let reconnect_s = reconnect_s.map(|_| restarted.elapsed().as_secs_f64());
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    kill(&mut hub).await;
    let reconnect_s = reconnect_s?;
    Ok(IdleEdges {
        edges,
        connect_s,
        rss_before_kib: before.rss_kib,
        rss_kib,
        kib_per_edge: rss_kib.saturating_sub(before.rss_kib) as f64 / edges.max(1) as f64,
        cpu_percent,
        reconnect_s,
    })
}

/// One idle edge: connects, keeps the heartbeat, and redials as the real edge does.
async fn edge(
    cfg: DialConfig,
    seed: u64,
    connected: Arc<AtomicUsize>,
    stop: CancellationToken,
    gate: Arc<tokio::sync::Semaphore>,
) {
    let mut backoff = Backoff::new(BackoffConfig::default(), seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let catalog = vec![CatalogEntry { name: "cam1".into(), description: "idle".into() }];
    while !stop.is_cancelled() {
        let channel = Channel::Control { instance: seed + 1, catalog: catalog.clone(), running: vec![] };
        let attempt = {
            let Ok(_permit) = gate.acquire().await else { return };
            tokio::select! {
                r = dial(&cfg, channel) => r,
                () = stop.cancelled() => return,
            }
        };
        let Ok((mut link, _welcome)) = attempt else {
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => continue,
                () = stop.cancelled() => return,
            }
        };
        backoff.connected(Instant::now());
        connected.fetch_add(1, Ordering::Relaxed);
        let mut hb = Heartbeat::new(Instant::now(), HeartbeatConfig::default());
        loop {
            tokio::select! {
                msg = link.recv() => match msg {
                    Ok(Some(m)) => {
                        // As the real edge's control channel does.
                        if matches!(m, mediamesh_tunnel::wire::Message::Ping { .. }) {
                            hb.on_peer_ping(Instant::now());
                        }
                        if link.liveness(&mut hb, m).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                },
                () = tokio::time::sleep_until(hb.next_deadline().into()) => {
                    if link.heartbeat(&mut hb, "hub").await.is_err() {
                        break;
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        connected.fetch_sub(1, Ordering::Relaxed);
        backoff.disconnected(Instant::now());
        if stop.is_cancelled() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn wait_ready(api: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::servers::http_get(api, "/healthz").await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the hub did not start within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until `count` reaches `n`; how long it took.
async fn wait_count(count: &AtomicUsize, n: usize, limit: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut last_report = t0;
    while count.load(Ordering::Relaxed) < n {
        anyhow::ensure!(t0.elapsed() < limit, "only {} of {n} edges connected", count.load(Ordering::Relaxed));
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("  {} of {n} connected", count.load(Ordering::Relaxed));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(t0.elapsed())
}

async fn wait_count_below(count: &AtomicUsize, n: usize, limit: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while count.load(Ordering::Relaxed) >= n {
        anyhow::ensure!(t0.elapsed() < limit, "{} edges still think they are connected", count.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn kill(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Prints one run.
pub fn print(r: &IdleEdges) {
    println!(
        "{:>7} {:>10} {:>12} {:>12} {:>10} {:>10} {:>12}",
        "edges", "connect s", "RSS before", "RSS KiB", "KiB/edge", "hub CPU %", "reconnect s"
    );
    println!(
        "{:>7} {:>10.1} {:>12} {:>12} {:>10.1} {:>10.1} {:>12.1}",
        r.edges, r.connect_s, r.rss_before_kib, r.rss_kib, r.kib_per_edge, r.cpu_percent, r.reconnect_s
    );
}
