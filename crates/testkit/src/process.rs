//! Hubs and edges as real processes (the `mediamesh` binary), for tests that restart, kill or
//! move them into network namespaces. Each process is killed when its handle drops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::TestPki;

/// A free TCP port on 127.0.0.1 (bound and released; another process could take it first, which
/// tests accept).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// `N` distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N).filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok()).collect();
    let mut ports = [0; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr().map_or(0, |a| a.port());
    }
    ports
}

/// A `cloudDataStream` file for `pki`'s hub, listening on `listen` with fixed ports, plus
/// `extra` YAML lines (indented by two spaces) inside the block.
pub fn hub_yaml(pki: &TestPki, listen: &str, tunnel_port: u16, stream_port: u16, extra: &str) -> String {
    let h = &pki.main.hub;
    // A hub beyond loopback needs an auth block; tests that are not about auth watch anonymously.
    let open = listen.parse::<std::net::IpAddr>().is_ok_and(|a| !a.is_loopback()) && !extra.contains("auth:");
    let extra = if open { format!("  auth: {{anonymous: [read, api, metrics]}}\n{extra}") } else { extra.to_owned() };
    format!(
        "cloudDataStream:\n  listenAddress: {listen}\n  tunnelPort: {tunnel_port}\n  streamPort: {stream_port}\n  \
         tlsTunnelCAFile: {}\n  tlsTunnelCertFile: {}\n  tlsTunnelPrivateKeyFile: {}\n  linger: 1\n  \
         rtsp: {{port: 0, udpRtpPort: 0, udpRtcpPort: 0}}\n{extra}",
        h.ca.display(),
        h.cert.display(),
        h.key.display()
    )
}

/// An `edgeDataStream` file for `node` with a 320x240 test-pattern stream `cam1`, dialling
/// `server`, plus `extra` YAML lines inside the block.
pub fn edge_yaml(pki: &TestPki, node: &str, server: &str, extra: &str) -> String {
    let f = pki.edge(node);
    format!(
        "edgeDataStream:\n  server: \"{server}\"\n  serverName: localhost\n  nodeName: {node}\n  \
         tlsTunnelCAFile: {}\n  tlsTunnelCertFile: {}\n  tlsTunnelPrivateKeyFile: {}\n  streams:\n    cam1:\n      \
         testPattern: {{width: 320, height: 240, fps: 25, bitrateKbps: 300, gop: 25}}\n{extra}",
        f.ca.display(),
        f.cert.display(),
        f.key.display()
    )
}

/// A running `mediamesh` process.
#[derive(Debug)]
pub struct MeshProcess {
    child: Child,
    /// Its combined log (stderr), for failure messages.
    pub log: PathBuf,
}

impl MeshProcess {
    /// Runs `prefix... bin args...` with the log in `dir`, and waits up to 20 s for a line of
    /// stdout containing `ready` (when given); returns the process and that line.
    pub async fn spawn(
        prefix: &[&str],
        bin: &Path,
        args: &[&str],
        dir: &Path,
        name: &str,
        ready: Option<&str>,
    ) -> (Self, String) {
        Self::spawn_with_env(prefix, bin, args, dir, name, ready, &[]).await
    }

    /// As [`MeshProcess::spawn`], with extra environment variables (set after the default
    /// `RUST_LOG`, so they may override it).
    pub async fn spawn_with_env(
        prefix: &[&str],
        bin: &Path,
        args: &[&str],
        dir: &Path,
        name: &str,
        ready: Option<&str>,
        env: &[(&str, &str)],
    ) -> (Self, String) {
        let log = dir.join(format!("{name}.log"));
        let err = std::fs::File::create(&log).expect("log file");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args).stdout(Stdio::piped()).stderr(err).stdin(Stdio::null()).kill_on_drop(true);
        cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("spawn mediamesh");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut found = String::new();
        if let Some(ready) = ready {
            let wait = async {
                while let Ok(Some(l)) = lines.next_line().await {
                    if l.contains(ready) {
                        return Some(l);
                    }
                }
                None
            };
            match tokio::time::timeout(Duration::from_secs(20), wait).await {
                Ok(Some(l)) => found = l,
                _ => panic!(
                    "{name} did not print {ready:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        }
        // Keep draining stdout so the process never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (Self { child, log }, found)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills it at once (SIGKILL: no goodbye to anyone) and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks it to stop (SIGTERM) and waits up to 10 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            crate::signal(pid, crate::Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// Sends SIGTERM and returns at once (a hub of a cluster then drains).
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            crate::signal(pid, crate::Signal::SIGTERM);
        }
    }

    /// Waits up to `limit` for it to exit by itself; true if it did.
    pub async fn exited(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.child.wait()).await.is_ok()
    }

    /// Resident memory (VmRSS) in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
