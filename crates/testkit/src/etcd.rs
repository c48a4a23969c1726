//! A real etcd (Debian's `etcd-server`) on free loopback ports, for the cluster tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::process::free_ports;

/// A running etcd, killed when dropped.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Its client URL (`http://127.0.0.1:port`).
    pub url: String,
}

impl Etcd {
    /// Starts etcd with its data in `dir`/etcd and waits until it answers.
    pub async fn start(dir: &Path) -> Self {
        crate::require::program("etcd", "etcd-server");
        let [client_port, peer_port] = free_ports();
        let mut etcd = Self {
            child: None,
            dir: dir.join("etcd"),
            client_port,
            peer_port,
            url: format!("http://127.0.0.1:{client_port}"),
        };
        etcd.run().await;
        etcd
    }

    async fn run(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("etcd log file");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port));
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let a = crate::http::request(addr, "GET", "/health", &[]).await;
                if a.status == 200 && a.body.contains("true") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy: {}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it (SIGKILL: as a crash or a network cut looks to its clients).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts it again on the same ports with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}
